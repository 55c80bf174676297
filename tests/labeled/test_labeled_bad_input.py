"""Issue 22, the noisy-label task (``task: labels`` presets): bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from labeled_helpers import tiny_overrides, write_tiny_npz

from noisycorr.cli.main import main


def _train_argv(npz: Path, out: Path, *extra: str, preset: str = "wiki-mrl") -> list[str]:
    argv = ["train", "-c", preset]
    for item in tiny_overrides(npz, out, **{"train.epochs": 1}) + list(extra):
        argv += ["--set", item]
    return argv


def _expect_error(capsys, argv, *fragments, absent=()):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("noisycorr: error: ") and "\n" not in err and "Traceback" not in err, err
    assert "expected " in err and ", found " in err, err
    for frag in fragments:
        assert frag in err, err
    for path in absent:
        assert not Path(path).exists(), f"{path} was written for bad input"
    return err


@pytest.mark.parametrize("preset", ["wiki-mrl", "wiki-nirnl"])
@pytest.mark.parametrize("setting,fragment", [
    ("train.epochs=0", "train.epochs: expected an integer >= 1"),
    ("train.batch_size=0", "train.batch_size: expected an integer >= 1"),
    ("train.lr=-0.1", "train.lr: expected a number > 0"),
    ("noise.rate=1.5", "noise.rate: expected a number in [0, 1]"),
    ("eval.k=0", "eval.k: expected an integer >= 1"),
])
def test_labels_task_values_out_of_range(capsys, tiny_npz, tmp_path, preset, setting, fragment):
    _expect_error(capsys, _train_argv(tiny_npz, tmp_path / "o", setting, preset=preset), fragment,
                  absent=[tmp_path / "o", tmp_path / "o.npy"])


def test_labels_task_out_dir_under_a_file(capsys, tiny_npz, tmp_path):
    (tmp_path / "afile").write_text("x")
    _expect_error(capsys, _train_argv(tiny_npz, tmp_path / "afile" / "run"), "afile is a file")
    assert (tmp_path / "afile").read_text() == "x"


def test_labels_task_out_dir_not_writable(capsys, tiny_npz, tmp_path, monkeypatch):
    (tmp_path / "shared").mkdir()
    real = os.access
    denied = os.path.realpath(tmp_path / "shared")
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if os.path.realpath(p) == denied and m & os.W_OK
                        else real(p, m, *a, **k))
    _expect_error(capsys, _train_argv(tiny_npz, tmp_path / "shared" / "run"), "without write permission",
                  absent=[tmp_path / "shared" / "run"])


def test_labels_eval_refuses_to_average_runs_of_different_files(capsys, tiny_npz, tmp_path):
    other_npz = write_tiny_npz(tmp_path / "other.npz", seed=5)
    assert main(_train_argv(tiny_npz, tmp_path / "a")) == 0
    assert main(_train_argv(other_npz, tmp_path / "b")) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in sorted((tmp_path / "b").iterdir())}
    err = _expect_error(capsys, ["eval", tmp_path / "a", tmp_path / "b"], "data.root", "other.npz")
    assert str(tmp_path / "a") in err and str(tmp_path / "b") in err
    assert {p: p.read_bytes() for p in sorted((tmp_path / "b").iterdir())} == before
    shutil.rmtree(tmp_path / "b")
