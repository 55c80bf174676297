"""`noisycorr bench`: the shipped quick spec end to end on a tiny grid (the CI smoke test)."""

import json

import pytest

from noisycorr.cli.main import main

TINY_SET = [
    "data.vocab_min_count=1", "model.embed_size=32", "model.word_dim=16", "train.epochs=2",
    "train.batch_size=32", "train.lr_update=2",
]


def _args(tiny_root, out):
    args = ["bench", "quick", "--out", str(out), "--threads", "1"]
    for value in [f"data.root={tiny_root}", *TINY_SET]:
        args += ["--set", value]
    return args


def test_dry_run_lists_the_cells_and_writes_nothing(tiny_root, tmp_path, capsys):
    assert main([*_args(tiny_root, tmp_path / "b"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out and "synthetic/per_caption-0.6/ncr/seed0" in out
    assert not (tmp_path / "b").exists()


def test_quick_spec_runs_every_cell_in_its_own_process_and_reports(tiny_root, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(_args(tiny_root, out)) == 0
    report = (out / "report" / "quick" / "report.md").read_text()
    assert "synthetic, per_caption noise" in report and "4 of 4 cells finished" in report
    for name in ("summary.csv", "cells.csv", "rsum_synthetic_per_caption.png", "roc_synthetic_per_caption.png"):
        assert (out / "report" / "quick" / name).is_file(), name
    attempts = json.loads((out / "synthetic" / "per_caption-0.6" / "ncr" / "seed0" / "bench.json").read_text())
    assert attempts[0]["returncode"] == 0 and attempts[0]["peak_rss_mib"] > 50
    capsys.readouterr()
    assert main(_args(tiny_root, out)) == 0  # everything finished: nothing runs again
    assert "4 finished, 0 to run" in capsys.readouterr().out

    # mutant killed: the dry run lists a finished cell of other settings as done (the real run refuses it)
    changed = [*_args(tiny_root, out), "--set", "train.lr=0.00037"]
    assert main([*changed, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "changed      synthetic/per_caption-0.6/ncr/seed0" in captured.out
    assert captured.err.startswith("noisycorr: error:") and captured.err.count("\n") == 1
    assert main(changed) == 2 and "changed keys ['lr']" in capsys.readouterr().err


def test_a_bad_spec_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "spec.yaml"
    bad.write_text("out: x\nseeds: [0]\ndatasets: {d: {methods: {m: no-such-preset}}}\n")
    assert main(["bench", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisycorr: error:") and err.count("\n") == 1 and "no-such-preset" in err


@pytest.fixture
def tiny_root(tmp_path_factory):
    from noisycorr.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("tiny-cli")
    write_synthetic(root, seed=3, n_train=96, n_dev=24, n_test=24, n_regions=4, feat_dim=16, n_concepts=12)
    return root
