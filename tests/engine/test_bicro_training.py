"""BiCro and BiCro++ through the engine: anchors in the log, codebooks in the checkpoint, exact
resume, the NCR plug-in, and isolation of the noise mask."""

import csv

import pytest
import torch
from engine_helpers import assert_same_training, tiny_overrides, use_random_truth_mask
from safetensors.torch import load_file

from noisycorr.config import load_config
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.trainer import train

TINY = {
    "noise.rate": 0.4,
    "train.epochs": 4,
    "train.batch_size": 16,
    "method.warmup_epochs": 1,
    "method.noisy_start": 0.5,  # the noisy subset joins at epoch 2
}


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(preset, root, out, **extra):
    over = {**TINY, **({"method.codebook_size": 8} if preset == "flickr-dev-bicropp" else {}), **extra}
    return load_config(preset, tiny_overrides(root, out, **over))


# mutant killed: anchors never recorded (no diag_anchor_clean column)
# mutant killed: the anchors column counts the whole batch
# mutant killed: codebooks not refreshed by the split pass
def test_bicropp_trains_with_anchors_and_codebooks_and_resumes_exactly(tiny_root, tmp_path, killed_after_epoch):
    straight = train(_cfg("flickr-dev-bicropp", tiny_root, tmp_path / "a"))
    rows = _rows(tmp_path / "a")
    assert rows[0]["warmup"] == "1.0" and rows[0]["diag_anchor_clean"] == ""
    for row in rows[1:]:
        assert 0.0 <= float(row["diag_anchor_clean"]) <= 1.0  # the share of truly clean anchors
        assert 0.0 < float(row["codebook_used_A"]) <= 1.0 and float(row["loss_clean"]) > 0
        assert 1.0 <= float(row["anchors"]) <= 2.0  # purified from floor(16 / 10) + 1 = 2 candidates per batch
    assert [int(r["epoch"]) for r in rows if r["loss_noisy"] != ""] == [2, 3]
    state = load_state(tmp_path / "a" / "checkpoint.pt")["method"]
    assert state["labeler.img_A"].shape == (8, 32) and int(state["labeler.refreshes"]) == 3
    assert not any(k.startswith("labeler.") for k in load_file(str(tmp_path / "a" / "best.safetensors")))

    with killed_after_epoch(1):
        train(_cfg("flickr-dev-bicropp", tiny_root, tmp_path / "b"))
    resumed = train(_cfg("flickr-dev-bicropp", tiny_root, tmp_path / "b"), resume=True)
    assert resumed["test"] == straight["test"]
    again = load_state(tmp_path / "b" / "checkpoint.pt")["method"]
    assert torch.equal(again["labeler.txt_B"], state["labeler.txt_B"])
    timeless = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in _rows(tmp_path / "b")]
    assert timeless == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


def test_bicro_has_no_codebook_and_the_ncr_plugin_trains_on_consistency_labels(tiny_root, tmp_path):
    train(_cfg("flickr-dev-bicro", tiny_root, tmp_path / "bicro", **{"train.epochs": 3}))
    state = load_state(tmp_path / "bicro" / "checkpoint.pt")["method"]
    assert state["labeler.img_A"].numel() == 0
    last = _rows(tmp_path / "bicro")[-1]
    assert "codebook_used_A" not in last
    assert 1.0 < float(last["anchors"]) <= 2.0  # no purification: 2 per batch of 16, fewer in a short last batch

    plug = {"method.targets": "consistency", "method.codebook_size": 8, "train.epochs": 3}
    train(load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "ncr", **{**TINY, **plug})))
    row = _rows(tmp_path / "ncr")[-1]
    assert 0.0 <= float(row["diag_anchor_clean"]) <= 1.0 and float(row["target_clean"]) > 0
    assert "labeler.img_A" in load_state(tmp_path / "ncr" / "checkpoint.pt")["method"]

    in2r = {k: v for k, v in {**TINY, **plug, "method.queue_size": 64}.items() if k != "method.noisy_start"}
    train(load_config("flickr-dev-in2r", tiny_overrides(tiny_root, tmp_path / "in2r", **in2r)))
    row = _rows(tmp_path / "in2r")[-1]
    assert 0.0 <= float(row["diag_anchor_clean"]) <= 1.0 and float(row["loss_clean"]) > 0


@pytest.mark.parametrize("preset", ["flickr-dev-bicro", "flickr-dev-bicropp"])
def test_training_is_bit_identical_whatever_the_ground_truth_mask(tiny_root, tmp_path, monkeypatch, preset):
    train(_cfg(preset, tiny_root, tmp_path / "true", **{"train.epochs": 3}))
    use_random_truth_mask(monkeypatch)
    train(_cfg(preset, tiny_root, tmp_path / "fake", **{"train.epochs": 3}))

    assert_same_training(tmp_path / "true", tmp_path / "fake")
    rows_a, rows_b = _rows(tmp_path / "true"), _rows(tmp_path / "fake")
    assert any(ra["diag_anchor_clean"] != rb["diag_anchor_clean"] for ra, rb in zip(rows_a, rows_b, strict=True))
