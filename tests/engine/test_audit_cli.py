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


# ------------------------------------------------------------------ audit RUN --data-root: another folder


@pytest.fixture(scope="module")
def clean_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-clean") / "run"
    extra = {"train.epochs": 2, "method.warmup_epochs": 1, "train.batch_size": 16}
    train(load_config("demo-ncr", tiny_overrides(tiny_root, out, **extra)))
    return out


def test_audit_of_another_folder_scores_its_pairs_as_the_run_scores_its_own(clean_run, tiny_root, tmp_path, capsys):
    # Trained without noise, the run's own pairs are the folder's pairs as written: the same scores.
    report = tmp_path / "report"
    assert main(["audit", str(clean_run), "--data-root", str(tiny_root), "--report", str(report), "--top", "3"]) == 0
    scores = np.load(report / "pair_scores.npy")
    own = get_pair_quality_scores(clean_run, recompute=True)
    assert scores.shape == own.shape and np.allclose(scores, own, atol=1e-6)
    with open(report / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(own) and "truly_mismatched" not in rows[0]
    assert [int(r["pair"]) for r in rows] == np.argsort(scores, kind="stable").tolist()
    assert "[train] scored" in capsys.readouterr().out


def test_audit_of_another_folder_scores_the_named_split_into_the_default_folder(ncr_run, tiny_root):
    assert main(["audit", str(ncr_run), "--data-root", str(tiny_root), "--split", "dev"]) == 0
    report = ncr_run / f"audit-{tiny_root.name}-dev"
    scores = np.load(report / "pair_scores.npy")
    assert scores.shape == (load_precomp(tiny_root, "dev").n_captions,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert not (ncr_run / "audit" / "pair_scores.npy").exists()  # the run's own audit is left alone


def _bad_folder(tiny_root, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train_caps.txt").write_bytes((tiny_root / "train_caps.txt").read_bytes())
    ims = np.load(tiny_root / "train_ims.npy")
    np.save(bad / "train_ims.npy", np.concatenate([ims, ims[..., :1]], axis=-1))  # one more feature
    return bad


@pytest.mark.parametrize("case", ["other-dim", "no-folder", "split-alone", "with-data"])
def test_audit_of_another_folder_refuses_bad_input_in_one_line(ncr_run, tiny_root, tmp_path, capsys, case):
    report = tmp_path / "report"
    args = {
        "other-dim": ["--data-root", str(_bad_folder(tiny_root, tmp_path))],
        "no-folder": ["--data-root", str(tmp_path / "missing")],
        "split-alone": ["--split", "dev"],
        "with-data": ["--data-root", str(tiny_root), "--data", str(tiny_root)],
    }[case]
    assert main(["audit", str(ncr_run), "--report", str(report), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisycorr: error:") and len(err.strip().splitlines()) == 1
    assert not (report / "pair_scores.npy").exists()
