"""What a method may ask of the engine at epoch boundaries: per-sample passes over the training pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from noisycorr.data.dataset import PairBatch, PairDataset

PASS_STREAM = 7919  # separates the fixed pass order from every epoch's shuffling


def fixed_batches(n: int, batch_size: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Batches of a seeded permutation of ``range(n)`` that is the same every epoch.

    Every batch has ``min(batch_size, n)`` samples, so every sample meets as many in-batch
    negatives: the last batch is filled from the end of the order and only its new samples count.

    Returns:
        ``(indices (b,), first_new)`` pairs: results from position ``first_new`` on are kept.
    """
    order = np.random.default_rng([seed, PASS_STREAM]).permutation(n).astype(np.int64)
    size = min(batch_size, n)
    out = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        out.append((order[stop - size : stop], start - (stop - size)))
    return out


@dataclass
class TrainContext:
    """The engine's services for a method's epoch hooks. It holds no ground truth.

    Attributes:
        method: the module being trained (put in eval mode during passes).
        dataset: the training pairs without augmentation.
        batch_size: the default batch of per-sample passes.
        device: where batches go.
        seed: run seed; fixes the pass order.
        epochs: total training epochs of the run.
        progress: show progress bars.
    """

    method: nn.Module
    dataset: PairDataset
    batch_size: int
    device: torch.device
    seed: int = 0
    epochs: int = 1
    progress: bool = False

    @property
    def n_samples(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def per_sample(
        self, fn: Callable[[PairBatch], Tensor], *, batch_size: int | None = None, desc: str = "per-sample pass"
    ) -> Tensor:
        """``fn`` on every training pair, in a fixed order (independent of loader shuffling).

        Args:
            fn: maps a batch on ``device`` to a (b, ...) tensor of per-sample values.
            batch_size: pass batch size (default: the training batch size); it sets which in-batch
                negatives each sample meets.

        Returns:
            (N, ...) float tensor on the CPU, row k = sample index k.
        """
        was_training = self.method.training
        self.method.eval()
        try:
            out: Tensor | None = None
            batches = fixed_batches(self.n_samples, batch_size or self.batch_size, self.seed)
            for idx, first in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
                values = fn(self.dataset.__getitems__(idx).to(self.device)).detach().float().cpu()
                if out is None:
                    out = torch.zeros((self.n_samples, *values.shape[1:]), dtype=torch.float32)
                out[torch.from_numpy(idx[first:])] = values[first:]
            assert out is not None
            return out
        finally:
            self.method.train(was_training)
