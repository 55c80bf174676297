"""The engine's implementation of the epoch contexts a method is written against
(:mod:`noisycorr.methods.context`): per-sample passes over the training samples in a fixed order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from noisycorr import distributed as dist

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
    """The engine's services for a method's epoch hooks (an :class:`~noisycorr.methods.context.EpochContext`).

    It holds no ground truth: ``fetch`` builds the batches a method's own loader would see.

    Attributes:
        method: the module being trained (put in eval mode during passes).
        fetch: sample indices (b,) -> a batch of those samples, without augmentation.
        n: number of training samples.
        batch_size: the default batch of per-sample passes.
        device: where batches go.
        seed: run seed; fixes the pass order.
        epochs: total training epochs of the run.
        progress: show progress bars.
        meta: the meta set of user-declared clean pairs (:class:`~noisycorr.data.meta.MetaPairs`), for
            a method with ``uses_meta_set``; None otherwise.
    """

    method: nn.Module
    fetch: Callable[[np.ndarray], Any]
    n: int
    batch_size: int
    device: torch.device
    seed: int = 0
    epochs: int = 1
    progress: bool = False
    meta: Any = None

    @property
    def n_samples(self) -> int:
        return self.n

    @torch.no_grad()
    def per_sample(
        self, fn: Callable[[Any], Tensor], *, batch_size: int | None = None, desc: str = "per-sample pass"
    ) -> Tensor:
        """``fn`` on every training sample, in a fixed order (independent of loader shuffling).

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
            batches = fixed_batches(self.n, batch_size or self.batch_size, self.seed)
            # Several ranks: batch k is computed by rank k mod world_size, then gathered by index.
            mine = batches[dist.rank() :: dist.world_size()]
            if not mine:  # fewer batches than ranks: run one for the values' shape, keep none of it
                mine = [(batches[0][0], len(batches[0][0]))]
            # Kept values go straight into one buffer: a small tensor kept per batch would pin the
            # batch's freed working memory in the heap (RSS grew ~0.1 MB a batch, 3 GB at 1M pairs).
            index = torch.from_numpy(np.concatenate([idx[first:] for idx, first in mine]))
            values = None
            pos = 0
            for idx, first in tqdm(mine, desc=desc, disable=not self.progress, leave=False):
                batch_values = fn(self.fetch(idx).to(self.device)).detach()
                if values is None:
                    values = torch.empty((len(index), *batch_values.shape[1:]), dtype=torch.float32)
                values[pos : pos + len(idx) - first] = batch_values[first:]
                pos += len(idx) - first
            if dist.active():
                return dist.gather_by_index(index, values, self.n)
            out = torch.zeros((self.n, *values.shape[1:]), dtype=torch.float32)
            out[index] = values
            return out
        finally:
            self.method.train(was_training)


@dataclass
class LabelTrainContext(TrainContext):
    """The labelled task's context: also the whole training split (a
    :class:`~noisycorr.methods.context.LabelEpochContext`).

    Attributes:
        images: (N, Di) image features on ``device``.
        texts: (N, Dt) text features on ``device``.
        labels: (2, N, C) float noisy multi-hot labels.
    """

    images: Tensor | None = None
    texts: Tensor | None = None
    labels: Tensor | None = None


def pair_context(method: nn.Module, dataset: Sequence[Any], **kwargs: Any) -> TrainContext:
    """A context whose batches come from ``dataset.__getitems__`` (a :class:`~noisycorr.data.dataset.PairDataset`)."""
    return TrainContext(method, dataset.__getitems__, len(dataset), **kwargs)
