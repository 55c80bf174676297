"""IN2R through the engine: warm-up and co-training with the memory in use, the weights file without
the memory, exact resume, and isolation of the noise mask."""

import csv

import pytest
from engine_helpers import assert_same_training, tiny_overrides, use_random_truth_mask
from safetensors.torch import load_file

from noisycorr.config import load_config
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.runs import evaluate_run
from noisycorr.engine.trainer import train

# 480 pairs in batches of 16; a 64-pair memory is full after a few steps and then overwritten.
IN2R_TINY = {"noise.rate": 0.4, "train.epochs": 3, "train.batch_size": 16, "method.queue_size": 64,
             "method.warmup_epochs": 1}


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(tiny_root, out, **extra):
    return load_config("flickr-dev-in2r", tiny_overrides(tiny_root, out, **{**IN2R_TINY, **extra}))


def test_in2r_warms_up_then_rectifies_with_the_memory_and_resumes_exactly(tiny_root, tmp_path, killed_after_epoch):
    straight = train(_cfg(tiny_root, tmp_path / "a"))
    rows = _rows(tmp_path / "a")
    assert rows[0]["warmup"] == "1.0" and float(rows[0]["loss_warmup"]) > 0 and float(rows[0]["loss_warmup_intra"]) > 0
    assert rows[0]["det_A_auc"] == ""
    for row in rows[1:]:
        assert row["warmup"] == "0.0" and 0.0 <= float(row["det_A_auc"]) <= 1.0
        assert float(row["loss_clean"]) > 0 and float(row["loss_intra"]) > 0 and float(row["enqueued"]) > 0
    # epoch 1: A's memory fills while A trains (B's is still empty), then B's noisy batches query it
    assert float(rows[1]["memory_A"]) == float(rows[1]["memory_B"]) == 0
    assert float(rows[1]["loss_rect_i2t"]) > 0 and float(rows[1]["loss_rect_t2i"]) > 0
    assert float(rows[2]["memory_A"]) == float(rows[2]["memory_B"]) == 64  # filled, capacity kept
    assert float(rows[2]["loss_rect_i2t"]) > 0 and float(rows[2]["loss_rect_t2i"]) > 0

    state = load_state(tmp_path / "a" / "checkpoint.pt")["method"]
    assert int(state["memory.A.size"]) == 64 and state["memory.A.images"].abs().sum() > 0
    weights = load_file(str(tmp_path / "a" / "best.safetensors"))
    assert not any(k.startswith("memory.") for k in weights)
    assert any(k.startswith("refiners.A_i2t.") for k in weights)
    assert evaluate_run(tmp_path / "a")["rsum"] == pytest.approx(straight["test"]["rsum"])

    with killed_after_epoch(1):
        train(_cfg(tiny_root, tmp_path / "b"))
    resumed = train(_cfg(tiny_root, tmp_path / "b"), resume=True)
    assert resumed["test"] == straight["test"]
    timeless = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in _rows(tmp_path / "b")]
    assert timeless == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


def test_in2r_training_is_bit_identical_whatever_the_ground_truth_mask(tiny_root, tmp_path, monkeypatch):
    train(_cfg(tiny_root, tmp_path / "true", **{"train.epochs": 2}))
    use_random_truth_mask(monkeypatch)
    train(_cfg(tiny_root, tmp_path / "fake", **{"train.epochs": 2}))

    assert_same_training(tmp_path / "true", tmp_path / "fake", truth_prefixes=("det_",))
    rows_a, rows_b = _rows(tmp_path / "true"), _rows(tmp_path / "fake")
    assert rows_a[1]["det_A_auc"] != rows_b[1]["det_A_auc"]  # the diagnostics did see the other mask
