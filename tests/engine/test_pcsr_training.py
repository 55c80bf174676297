"""PCSR through the engine: warm-up, three-way split and text replacement, the history in the
checkpoint (not in the weights), exact resume, and isolation of the ground truth (noise mask and
clean pairing) from training."""

import csv

import numpy as np
import pytest
from engine_helpers import assert_same_training, tiny_overrides, use_random_truth_mask
from safetensors.torch import load_file

from noisycorr.config import load_config
from noisycorr.data.synthetic import write_synthetic
from noisycorr.engine import pairs as pairs_mod
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.trainer import train

# 200 pairs in batches of 16. A window of 2: at the first split every noisy pair is ambiguous (PCS 1/2),
# at the second the pairs whose pseudo-label held are refinable.
PCSR_TINY = {"noise.rate": 0.6, "train.epochs": 3, "train.batch_size": 16, "method.warmup_epochs": 1,
             "method.window": 2, "model.embed_size": 16}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcsr")
    write_synthetic(root, seed=3, n_train=40, n_dev=12, n_test=12, n_regions=4, feat_dim=16, n_concepts=12)
    return root


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _cfg(root, out, **extra):
    return load_config("flickr-dev-pcsr", tiny_overrides(root, out, **{**PCSR_TINY, **extra}))


def test_pcsr_refines_with_replaced_captions_and_resumes_exactly(small_root, tmp_path, killed_after_epoch):
    straight = train(_cfg(small_root, tmp_path / "a"))
    rows = _rows(tmp_path / "a")
    assert rows[0]["warmup"] == "1.0" and float(rows[0]["loss_warmup_A"]) > 0
    for row in rows[1:]:
        shares = [float(row[f"share_{g}_A"]) for g in ("clean", "ambiguous", "refinable")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5) and float(row["loss_ambiguous"]) > 0
    assert float(rows[1]["share_refinable_A"]) == 0 and rows[1]["loss_refine_caption"] == ""
    assert float(rows[2]["share_refinable_A"]) > 0 and float(rows[2]["loss_refine_caption"]) > 0
    assert 0.0 <= float(rows[2]["diag_A_replace_caption_precision"]) <= 1.0
    state = load_state(tmp_path / "a" / "checkpoint.pt")["method"]
    assert state["history.text_A"].shape == (200, 2) and (state["history.text_A"] >= 0).all(1).any()
    assert not any(k.startswith("history.") for k in load_file(str(tmp_path / "a" / "best.safetensors")))

    with killed_after_epoch(1):
        train(_cfg(small_root, tmp_path / "b"))
    resumed = train(_cfg(small_root, tmp_path / "b"), resume=True)
    assert resumed["test"] == straight["test"]
    timeless = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in _rows(tmp_path / "b")]
    assert timeless == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]
    assert_same_training(tmp_path / "a", tmp_path / "b", truth_prefixes=())


def test_pcsr_training_is_bit_identical_whatever_the_hidden_ground_truth(small_root, tmp_path, monkeypatch):
    once = {"train.epochs": 2, "method.window": 1}  # every noisy pair refinable at once
    train(_cfg(small_root, tmp_path / "true", **once))
    use_random_truth_mask(monkeypatch)
    real_pairing = pairs_mod.PairTask.pairing

    def permuted_pairing(self, data):  # the clean pairing the diagnostics score against, shuffled
        pair_image, true_image = real_pairing(self, data)
        return pair_image, np.random.default_rng(2).permutation(true_image)

    monkeypatch.setattr(pairs_mod.PairTask, "pairing", permuted_pairing)
    train(_cfg(small_root, tmp_path / "fake", **once))

    assert_same_training(tmp_path / "true", tmp_path / "fake", truth_prefixes=("det_", "diag_"))
    rows_a, rows_b = _rows(tmp_path / "true"), _rows(tmp_path / "fake")
    assert float(rows_a[1]["loss_refine_caption"]) > 0
    assert rows_a[1]["diag_A_replace_caption_precision"] != rows_b[1]["diag_A_replace_caption_precision"]
    assert rows_a[1]["det_A_loss_auc"] != rows_b[1]["det_A_loss_auc"]


def test_replacement_precision_is_scored_against_the_clean_pairing():
    from noisycorr.engine.diagnostics import diagnostics_row, replacement_precision
    from noisycorr.selection import Selection

    pair_image = np.array([0, 0, 1, 1, 0, 1])  # pairs 4 and 5 carry the wrong image
    true_image = np.array([0, 0, 1, 1, 1, 0])
    captions = np.array([-1, -1, -1, -1, 0, 2])  # 4: image 0 + caption 0 (right); 5: image 1 + caption 2 (right)
    assert replacement_precision(captions, "caption", pair_image, true_image) == 1.0
    assert replacement_precision(np.array([-1, -1, -1, -1, 2, 0]), "caption", pair_image, true_image) == 0.0
    images = np.array([-1, -1, -1, -1, 2, 3])  # 4: caption 4 (image 1) + pair 2's image 1 (right); 5: + image 1 (wrong)
    assert replacement_precision(images, "image", pair_image, true_image) == 0.5
    assert np.isnan(replacement_precision(np.full(6, -1), "caption", pair_image, true_image))
    sel = Selection(None, pair_image == true_image, partners={"caption": captions})
    row = diagnostics_row({"A": sel}, pair_image == true_image, (pair_image, true_image))
    assert row["diag_replace_caption_precision"] == 1.0
