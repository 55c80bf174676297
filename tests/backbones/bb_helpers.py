"""Helpers for the backbone tests (a uniquely named module, so other test folders cannot shadow it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    return Path(os.environ.get("NOISYCORR_SHARED_DATA", REPO_ROOT / ".." / "shared" / "data")).resolve()


def require_shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set NOISYCORR_SHARED_DATA)")
    return path


def random_captions(lengths: list[int], vocab_size: int, pad_to: int | None = None, seed: int = 0):
    """(B, L) int64 tokens <start> w... <end> padded with 0, and the (B,) lengths."""
    gen = torch.Generator().manual_seed(seed)
    width = pad_to or max(lengths)
    tokens = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, 0], tokens[row, n - 1] = 1, 2
        tokens[row, 1 : n - 1] = torch.randint(4, vocab_size, (n - 2,), generator=gen)
    return tokens, torch.tensor(lengths, dtype=torch.long)


def assert_all_params_have_grad(model: torch.nn.Module) -> None:
    missing = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert not missing, f"parameters without gradient: {missing}"
    dead = [
        name
        for name, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    assert not dead, f"non-finite gradients: {dead}"
