"""Issue 22: bad input at every entry point is refused before anything is written or trained.

Each test asserts one line ``noisycorr: error: <file>: [<where>: ]expected ..., found ...`` on stderr,
exit code 2, no output created, and every pre-existing file byte-for-byte (and mode) unchanged.
Permissions are simulated by patching ``os.access`` (the tests may run as root, for whom chmod
changes nothing).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import tiny_overrides

from noisycorr.cli.main import main
from noisycorr.data.synthetic import write_synthetic

ERROR = "noisycorr: error: "


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mode."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _expect_error(capsys, argv, *fragments, absent=(), unchanged=()):
    """Run ``argv``: exit 2, one error line holding ``fragments``; ``absent`` paths not created;
    ``unchanged`` folders exactly as before."""
    before = {Path(d): _snapshot(Path(d)) for d in unchanged}
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith(ERROR) and "\n" not in err and "Traceback" not in err, err
    assert "expected " in err and ", found " in err, err
    for frag in fragments:
        assert frag in err, err
    for path in absent:
        assert not Path(path).exists(), f"{path} was written for bad input"
    for folder, snap in before.items():
        assert _snapshot(folder) == snap, f"{folder} changed"
    return err


def _train_argv(root, out, *extra):
    argv = ["train", "-c", "demo"]
    for item in tiny_overrides(root, out, **{"train.epochs": 1}) + list(extra):
        argv += ["--set", item]
    return argv


def _deny(monkeypatch, path: Path, mode: int) -> None:
    """``os.access(path, m)`` answers False for any ``m`` that asks for ``mode`` (another user's folder)."""
    real = os.access
    target = os.path.realpath(path)

    def access(p, m, *args, **kwargs):
        if os.path.realpath(p) == target and m & mode:
            return False
        return real(p, m, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny run (trained once for the module; tests that may change it snapshot it)."""
    base = tmp_path_factory.mktemp("bad-input-run")
    root = base / "data"
    write_synthetic(root, seed=3, n_train=96, n_dev=24, n_test=24, n_regions=4, feat_dim=16, n_concepts=12)
    assert main(_train_argv(root, base / "run")) == 0
    return base / "run"


# --- train -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [0, -3])
def test_train_epochs_below_one(capsys, tiny_root, tmp_path, epochs):
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", f"train.epochs={epochs}"),
                  "train.epochs: expected an integer >= 1", f"found {epochs}", absent=[tmp_path / "o"])


def test_train_batch_size_zero_before_config_vocab_and_noise_files(capsys, tiny_root, tmp_path):
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", "train.batch_size=0", "noise.rate=0.2"),
                  "train.batch_size: expected an integer >= 1", absent=[tmp_path / "o"])


@pytest.mark.parametrize("lr", ["-0.001", "0", ".nan", ".inf"])
def test_train_learning_rate_not_positive(capsys, tiny_root, tmp_path, lr):
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", f"train.lr={lr}"),
                  "train.lr: expected a number > 0", absent=[tmp_path / "o"])


def test_train_noise_rate_above_one(capsys, tiny_root, tmp_path):
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", "noise.rate=1.5"),
                  "noise.rate: expected a number in [0, 1]", "1.5", absent=[tmp_path / "o"])


def test_train_out_dir_under_a_file(capsys, tiny_root, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run"
    _expect_error(capsys, _train_argv(tiny_root, out), "afile is a file", unchanged=[tmp_path])


def test_train_out_dir_that_is_a_file(capsys, tiny_root, tmp_path):
    (tmp_path / "run").write_text("x")
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "run"), "an existing file", unchanged=[tmp_path])


def test_train_out_dir_whose_parent_cannot_be_written(capsys, tiny_root, tmp_path, monkeypatch):
    (tmp_path / "shared").mkdir()
    _deny(monkeypatch, tmp_path / "shared", os.W_OK)
    out = tmp_path / "shared" / "sub" / "run"
    _expect_error(capsys, _train_argv(tiny_root, out), "this user can write", "without write permission",
                  absent=[tmp_path / "shared" / "sub"])


# --- eval --------------------------------------------------------------------------------------------


def test_eval_data_of_another_feature_size(capsys, run_dir, tmp_path):
    other = tmp_path / "d8"
    write_synthetic(other, seed=3, n_train=96, n_dev=24, n_test=24, n_regions=4, feat_dim=8, n_concepts=12)
    _expect_error(capsys, ["eval", run_dir, "--data", other], "test_ims.npy", "(N, 4, 16)",
                  "found shape (24, 4, 8)", unchanged=[run_dir])


@pytest.mark.parametrize("damage,fragment", [
    (b"data: [unclosed\n", "valid YAML"),
    (b"\xff\xfe\x00 not text", "UTF-8"),
    (b"data:\n  root: synthetic\n", "no section"),
])
def test_eval_damaged_config(capsys, run_dir, tmp_path, damage, fragment):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_bytes(damage)
    _expect_error(capsys, ["eval", run], "config.yaml", fragment, unchanged=[run])
    _expect_error(capsys, ["audit", run], "config.yaml", fragment, unchanged=[run])


def test_eval_weights_another_user_cannot_read(capsys, run_dir, monkeypatch):
    _deny(monkeypatch, run_dir / "best.safetensors", os.R_OK)
    _expect_error(capsys, ["eval", run_dir], "best.safetensors", "this user can read", unchanged=[run_dir])


def test_eval_run_folder_another_user_cannot_read(capsys, run_dir, monkeypatch):
    _deny(monkeypatch, run_dir, os.R_OK)
    _expect_error(capsys, ["eval", run_dir], "a run folder this user can read", unchanged=[run_dir])


def test_eval_refuses_to_average_runs_of_different_data(capsys, run_dir, tmp_path):
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other)
    cfg = (other / "config.yaml").read_text()
    data_root = str(run_dir.parent / "data")
    assert data_root in cfg
    (other / "config.yaml").write_text(cfg.replace(data_root, str(tmp_path / "elsewhere")))
    err = _expect_error(capsys, ["eval", run_dir, run_dir, other], "data.root", str(tmp_path / "elsewhere"),
                        unchanged=[run_dir, other])
    assert str(run_dir) in err and str(other) in err


# --- audit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,value,fragment", [("--threshold", "2", "in [0, 1]"), ("--top", "-5", "non-negative")])
def test_audit_options_out_of_range(capsys, run_dir, option, value, fragment):
    _expect_error(capsys, ["audit", run_dir, option, value, "--recompute"], option, fragment,
                  absent=[run_dir / "audit"], unchanged=[run_dir])


def test_audit_threshold_checked_before_training_with_a_preset(capsys, tiny_root, tmp_path):
    argv = ["audit", "-c", "demo", "--threshold", "1.5"]
    for item in tiny_overrides(tiny_root, tmp_path / "o", **{"train.epochs": 1}):
        argv += ["--set", item]
    _expect_error(capsys, argv, "--threshold", absent=[tmp_path / "o"])


def test_audit_read_only_run_folder(capsys, run_dir, monkeypatch):
    _deny(monkeypatch, run_dir, os.W_OK)
    _expect_error(capsys, ["audit", run_dir], "audit", "without write permission", absent=[run_dir / "audit"],
                  unchanged=[run_dir])


def test_audit_report_folder_under_a_file(capsys, run_dir, tmp_path):
    (tmp_path / "afile").write_text("x")
    _expect_error(capsys, ["audit", run_dir, "--report", tmp_path / "afile" / "rep"], "afile is a file",
                  unchanged=[run_dir, tmp_path])


# --- noise, synth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,value", [("--n-images", "0"), ("--captions-per-image", "0"), ("--rate", "1.5")])
def test_noise_make_bad_sizes_write_no_file(capsys, tmp_path, option, value):
    argv = ["noise", "make", "--protocol", "per_caption", "--n-images", "10", "--rate", "0.2",
            "-o", tmp_path / "n.npy", option, value]
    _expect_error(capsys, argv, option, absent=[tmp_path / "n.npy"])


def test_noise_make_into_a_folder_under_a_file(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    argv = ["noise", "make", "--protocol", "per_image", "--n-images", "10", "--rate", "0.2",
            "-o", tmp_path / "afile" / "n.npy"]
    _expect_error(capsys, argv, "afile", unchanged=[tmp_path])


def test_synth_negative_n_train_leaves_no_folder(capsys, tmp_path):
    _expect_error(capsys, ["synth", tmp_path / "s", "--n-train", "-5"], "--n-train", "found -5",
                  absent=[tmp_path / "s"])


def test_synth_into_an_existing_file(capsys, tmp_path):
    (tmp_path / "s").write_text("x")
    _expect_error(capsys, ["synth", tmp_path / "s"], "an existing file", unchanged=[tmp_path])


# --- demo --------------------------------------------------------------------------------------------


def _demo_sets(root):
    values = {k: v for k, v in (s.split("=", 1) for s in tiny_overrides(root, Path("unused")))
              if k not in ("run.out_dir", "train.epochs")}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def test_demo_epochs_zero_is_refused_not_the_default(capsys, tiny_root, tmp_path):
    _expect_error(capsys, ["demo", "--epochs", "0", "--out", tmp_path / "d", *_demo_sets(tiny_root)],
                  "--epochs", "found 0", absent=[tmp_path / "d"])


def test_demo_rate_above_one_before_the_clean_run_trains(capsys, tiny_root, tmp_path):
    _expect_error(capsys, ["demo", "--rate", "1.5", "--out", tmp_path / "d", *_demo_sets(tiny_root)],
                  "--rate", "1.5", absent=[tmp_path / "d"])


def test_demo_into_a_folder_of_a_shorter_demo_says_how_to_start_afresh(capsys, tiny_root, tmp_path):
    out = tmp_path / "d"
    assert main(["demo", "--epochs", "1", "--rate", "0.2", "--out", str(out), *_demo_sets(tiny_root)]) == 0
    capsys.readouterr()
    _expect_error(capsys, ["demo", "--epochs", "2", "--rate", "0.2", "--out", out, *_demo_sets(tiny_root)],
                  "epochs", f"remove {out}", "--out", unchanged=[out])


# --- the atomic writer: shared runs are readable by colleagues ----------------------------------------


def test_every_file_of_a_run_has_the_umask_mode(run_dir):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert "best.safetensors" in modes and "checkpoint.pt" in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_atomic_write_bytes_gives_new_files_the_umask_mode(tmp_path):
    from noisycorr.data.paths import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"2")  # a replaced file gets the mode of a new one
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.bin").read_bytes() == b"2" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_train_refuses_a_noise_file_of_other_length_and_keeps_it(capsys, tiny_root, tmp_path):
    bad = tmp_path / "noise" / "n.npy"
    bad.parent.mkdir()
    np.save(bad, np.arange(10, dtype=np.int64))
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", f"noise.file={bad}", "noise.rate=0.2"),
                  "n.npy", absent=[tmp_path / "o"], unchanged=[bad.parent])
