"""Tiny labelled datasets for the noisy-label tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisycorr.data.labeled import LabeledSplit, write_npz


def clustered_split(n: int, num_classes: int, rs: np.random.RandomState, di: int = 12, dt: int = 6) -> LabeledSplit:
    """Pairs whose image and text features sit near a per-class centre (learnable in a few epochs)."""
    y = rs.randint(0, num_classes, size=n)
    ci = np.random.RandomState(100).randn(num_classes, di) * 2
    ct = np.random.RandomState(200).randn(num_classes, dt) * 2
    images = (ci[y] + rs.randn(n, di)).astype(np.float32)
    texts = (ct[y] + rs.randn(n, dt)).astype(np.float32)
    return LabeledSplit(images, texts, np.eye(num_classes, dtype=bool)[y])


def write_tiny_npz(path: Path, *, n_train: int = 160, n_test: int = 60, num_classes: int = 4, seed: int = 0) -> Path:
    rs = np.random.RandomState(seed)
    splits = {
        "train": clustered_split(n_train, num_classes, rs),
        "test": clustered_split(n_test, num_classes, rs),
    }
    write_npz(path, splits)
    return path


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    """Overrides that make a wiki preset train in about a second on the tiny npz."""
    values = {
        "data.root": str(root),
        "data.layout": "auto",
        "data.val": "train",
        "data.val_size": 30,
        "data.normalize": "none",
        "model.hidden": 32,
        "model.embed_dim": 16,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr": 0.003,
        "train.threads": 1,
        "train.device": "cpu",
        "run.progress": False,
        "run.out_dir": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
