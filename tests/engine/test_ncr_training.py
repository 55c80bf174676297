"""NCR through the engine: phases, per-sample passes, diagnostics, and isolation of the noise mask."""

import csv
import json

import numpy as np
import pytest
import torch
from engine_helpers import tiny_overrides, use_random_truth_mask

from noisycorr.config import load_config
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.trainer import train

NCR_TINY = {
    "noise.rate": 0.4,
    "train.epochs": 4,
    "method.warmup_epochs": 1,
    "method.noisy_start": 0.5,  # the noisy subset joins at epoch floor(0.5 * 4) = 2
    "train.batch_size": 16,
}


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# mutant killed: NCR.on_epoch_start ignores noisy_start (noisy_from_epoch stays 0: noisy on after the warm-up)
# mutant killed: noisy_from_epoch = warmup_epochs
# mutant killed: epoch >= noisy_from_epoch replaced by > in NCR.epoch_phases
def test_ncr_trains_end_to_end_with_detection_diagnostics(tiny_root, tmp_path):
    """Warm-up, then co-training with the noisy subset from epoch 2 (the first ``loss_noisy`` in
    metrics.csv), detection diagnostics every co-training epoch, pair scores and both networks' results."""
    results = train(load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "r", **NCR_TINY)))
    rows = _rows(tmp_path / "r")
    assert rows[0]["det_A_auc"] == "" and rows[0]["warmup"] == "1.0"  # warm-up: no split yet
    for row in rows[1:]:
        assert 0.0 <= float(row["det_A_auc"]) <= 1.0 and 0.0 <= float(row["clean_B"]) <= 1.0
        # the monotone clean probability ranks pairs as their loss does
        assert float(row["det_A_auc"]) == pytest.approx(float(row["det_A_loss_auc"]), abs=2e-5)
        assert float(row["loss_clean"]) > 0
    with_noisy = [int(row["epoch"]) for row in rows if row["loss_noisy"] != ""]
    assert with_noisy == [2, 3]  # the noisy subset joined at epoch floor(noisy_start * epochs), not before
    assert all(float(rows[e]["loss_noisy"]) > 0 for e in with_noisy)
    scores = np.load(tmp_path / "r" / "pair_scores.npy")
    assert scores.shape == (len(np.load(tmp_path / "r" / "noise_index.npy")),)
    assert scores.min() >= 0 and scores.max() <= 1
    assert set(results["detection"]) >= {"auc", "precision", "recall", "f1", "precision_top10"}
    assert {"net0_rsum", "net1_rsum", "rsum"} <= set(results["test"])  # ensemble and single networks


def test_training_is_bit_identical_whatever_the_ground_truth_mask(tiny_root, tmp_path, monkeypatch):
    """The mask only reaches the log: replace it by another one and nothing else may change."""
    train(load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "true", **NCR_TINY)))
    use_random_truth_mask(monkeypatch)
    train(load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "fake", **NCR_TINY)))

    a, b = load_state(tmp_path / "true" / "checkpoint.pt"), load_state(tmp_path / "fake" / "checkpoint.pt")
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    scores = [np.load(tmp_path / run / "pair_scores.npy") for run in ("true", "fake")]
    assert np.array_equal(*scores)
    rows_a, rows_b = _rows(tmp_path / "true"), _rows(tmp_path / "fake")
    for ra, rb in zip(rows_a, rows_b, strict=True):
        same = {k for k in ra if not k.startswith("det_") and not k.endswith("_seconds")}
        assert {k: ra[k] for k in same} == {k: rb[k] for k in same}
    # ...while the diagnostics did see the other mask
    assert any(ra["det_A_auc"] != rb["det_A_auc"] for ra, rb in zip(rows_a, rows_b, strict=True))
    res_a = json.loads((tmp_path / "true" / "results.json").read_text())
    res_b = json.loads((tmp_path / "fake" / "results.json").read_text())
    assert res_a["test"] == res_b["test"] and res_a["detection"] != res_b["detection"]


@pytest.mark.parametrize("estimator", ["bmm"])
def test_ncr_runs_with_the_beta_mixture(tiny_root, tmp_path, estimator):
    over = {**NCR_TINY, "train.epochs": 2, "method.estimator": estimator}
    train(load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "r", **over)))
    assert 0.0 <= float(_rows(tmp_path / "r")[-1]["det_B_auc"]) <= 1.0
