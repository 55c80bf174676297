"""The pair audit from a run folder: API scores, CLI report files, cleaned copy, bad input."""

import csv

import numpy as np
import pytest
from engine_helpers import tiny_overrides

from noisycorr import find_mismatched_pairs, get_pair_quality_scores
from noisycorr.cli.main import main
from noisycorr.config import load_config
from noisycorr.data.precomp import load_precomp
from noisycorr.engine.trainer import train


@pytest.fixture(scope="module")
def ncr_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    extra = {"noise.rate": 0.4, "train.epochs": 3, "method.warmup_epochs": 1, "train.batch_size": 16}
    train(load_config("demo-ncr", tiny_overrides(tiny_root, out, **extra)))
    return out


def test_scores_are_saved_with_the_run_and_recomputed_identically(ncr_run):
    saved = get_pair_quality_scores(ncr_run)
    again = get_pair_quality_scores(ncr_run, recompute=True)
    assert saved.shape == again.shape and np.allclose(saved, again, atol=1e-6)
    flagged = find_mismatched_pairs(saved, return_indices=True)
    assert np.all(saved[flagged] < 0.5) and np.all(np.diff(saved[flagged]) >= 0)


def test_audit_cli_writes_the_ranked_csv_reports_and_a_loadable_clean_copy(ncr_run, tmp_path, capsys):
    report, copy = tmp_path / "report", tmp_path / "clean"
    assert main(["audit", str(ncr_run), "--report", str(report), "--clean-copy", str(copy), "--top", "5"]) == 0
    for name in ("pairs.csv", "report.md", "report.html", "summary.json"):
        assert (report / name).is_file(), name
    scores = get_pair_quality_scores(ncr_run)
    with open(report / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(scores) and rows[0]["rank"] == "1"
    assert float(rows[0]["score"]) == pytest.approx(scores.min(), abs=1e-6)
    assert "truly_mismatched" in rows[0]  # the run's noise is synthetic, so the truth is reported
    kept = load_precomp(copy, "train", captions_per_image=1)
    assert kept.n_captions == int((scores >= 0.5).sum())
    assert "flagged" in capsys.readouterr().out


def test_audit_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisycorr: error:") and len(err.strip().splitlines()) == 1
