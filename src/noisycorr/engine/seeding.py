"""Deterministic seeding: one seed per run, re-derived at every epoch so a resumed run replays exactly."""

from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for ``epoch`` of a run seeded with ``seed``."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
