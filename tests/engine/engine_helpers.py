"""Shared settings for the engine tests."""

from pathlib import Path

import numpy as np

from noisycorr.engine import pairs as pairs_mod


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    """Overrides that make any preset train in a second or two on the tiny folder."""
    values = {
        "data.root": str(root),
        "data.vocab_min_count": 1,
        "model.embed_size": 32,
        "model.word_dim": 16,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr_update": 2,
        "train.threads": 1,
        "run.progress": False,
        "run.out_dir": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def use_random_truth_mask(monkeypatch) -> None:
    """From now on the prepared data carries a random ground-truth mask instead of the real one."""
    real_prepare = pairs_mod.prepare_data

    def prepare_with_another_mask(cfg, **kwargs):
        data = real_prepare(cfg, **kwargs)
        data.clean = np.random.default_rng(1).random(len(data.clean)) > 0.5
        return data

    monkeypatch.setattr(pairs_mod, "prepare_data", prepare_with_another_mask)
