"""Shared pieces of the method tests."""

import torch

from noisycorr.data.dataset import PairBatch


def random_batch(n: int, offset: int = 0) -> PairBatch:
    """``n`` random pairs (5 regions x 8 features, captions of 3-6 tokens from a 30-word vocabulary),
    sample indices ``offset .. offset + n - 1``; the same arguments give the same batch."""
    g = torch.Generator().manual_seed(n + offset)
    lengths = torch.randint(3, 7, (n,), generator=g)
    tokens = torch.randint(4, 30, (n, 6), generator=g) * (torch.arange(6) < lengths[:, None])
    return PairBatch(
        images=torch.randn(n, 5, 8, generator=g),
        tokens=tokens,
        lengths=lengths,
        index=torch.arange(offset, offset + n),
        image_index=torch.arange(offset, offset + n),
    )
