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
    )


class FakeEpochContext:
    """A minimal :class:`~noisycorr.methods.context.EpochContext` for driving ``on_epoch_start``.

    Its per-sample pass ignores ``fn`` and returns fixed, clearly bimodal losses: the first 3/4 of
    the samples low (clean-looking), the rest high, so a fitted split always has a noisy subset.
    The ``desc`` of every pass is recorded in ``calls``. With ``embed_dim`` > 0 the pass returns
    (N, 1 + 2 * embed_dim): the losses, then fixed random image and caption embeddings, as the pass of
    a method that keeps codebooks (BiCro++).
    """

    def __init__(self, epochs: int, n_samples: int = 40, seed: int = 0, embed_dim: int = 0):
        self.seed = seed
        self.embed_dim = embed_dim
        self.epochs = epochs
        self.device = torch.device("cpu")
        self.progress = False
        n_low = 3 * n_samples // 4
        self.losses = torch.cat([torch.linspace(0.1, 0.2, n_low), torch.linspace(2.0, 2.2, n_samples - n_low)])
        self.calls: list[str] = []

    @property
    def n_samples(self) -> int:
        return len(self.losses)

    def per_sample(self, fn, *, batch_size=None, desc="per-sample pass") -> torch.Tensor:
        self.calls.append(desc)
        if self.embed_dim:
            g = torch.Generator().manual_seed(self.seed)
            return torch.cat([self.losses[:, None], torch.randn(len(self.losses), 2 * self.embed_dim, generator=g)], 1)
        return self.losses.clone()
