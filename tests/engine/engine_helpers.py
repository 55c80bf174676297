"""Shared settings for the engine tests."""

from pathlib import Path


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    """Overrides that make any preset train in a second or two on the tiny folder."""
    values = {
        "data.root": str(root),
        "data.vocab_min_count": 1,
        "model.embed_size": 32,
        "model.word_dim": 16,
        "model.sim_dim": 16,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr_update": 2,
        "train.threads": 1,
        "run.progress": False,
        "run.out_dir": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
