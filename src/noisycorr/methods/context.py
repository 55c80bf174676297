"""What a method may ask of the engine: the Protocols it is written against.

The engine implements them (``noisycorr.engine``); a method imports only these, so no module under
``noisycorr.methods`` imports the engine. Neither context gives access to the ground truth: the
clean pairing, the noise index and the clean labels never reach a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor


@runtime_checkable
class EpochContext(Protocol):
    """The engine's services for :meth:`Method.on_epoch_start` (both tasks).

    Attributes:
        seed: run seed (fixes the order of per-sample passes, seeds mixtures).
        epochs: total training epochs of the run.
        device: where batches and the model are.
        progress: whether progress bars are shown.
    """

    seed: int
    epochs: int
    device: torch.device
    progress: bool

    @property
    def n_samples(self) -> int:
        """Number of training samples (pairs, or labelled items)."""
        ...

    def per_sample(
        self, fn: Callable[[Any], Tensor], *, batch_size: int | None = None, desc: str = "per-sample pass"
    ) -> Tensor:
        """``fn(batch)`` on every training sample in a fixed order, the model in eval mode.

        Args:
            fn: maps a batch on ``device`` to a (b, ...) tensor of per-sample values.
            batch_size: pass batch size (default: the training batch size).

        Returns:
            (N, ...) float tensor on the CPU, row k = sample index k.
        """
        ...


@runtime_checkable
class PairEpochContext(EpochContext, Protocol):
    """The pair task's context: also the batch of any training pairs, by sample index.

    A method that trains a pair with another sample's caption or image (PCSR's replacement) reads
    that sample through ``fetch``: the batch carries what a training batch carries (features, tokens,
    sample index), never an image row.
    """

    def fetch(self, indices: np.ndarray) -> Any:
        """The :class:`~noisycorr.data.dataset.PairBatch` of training samples ``indices`` (b,) int64,
        in that order, without augmentation, on the CPU."""
        ...


@runtime_checkable
class LabelEpochContext(EpochContext, Protocol):
    """The labelled task's context: the whole training split as a method may read it.

    Attributes:
        images: (N, Di) image features on ``device``.
        texts: (N, Dt) text features on ``device``.
        labels: (2, N, C) float *noisy* multi-hot labels (images, texts).
    """

    images: Tensor
    texts: Tensor
    labels: Tensor


class StepControl(Protocol):
    """Handed to a method with ``manual_optimization = True``: it runs backward and steps itself.

    ``backward`` scales the loss under AMP; ``step`` unscales, clips (``train.grad_clip``), steps
    the named optimiser and updates the scaler. A functional inner update (``torch.func``) is the
    method's own business: it computes what it needs and calls ``backward`` on the final loss.
    """

    def optimizer(self, name: str = "main") -> torch.optim.Optimizer:
        """The torch optimiser built from the method's :class:`OptimizerSpec` ``name``."""
        ...

    def lr(self, name: str = "main") -> float:
        """The learning rate of optimiser ``name`` in this epoch."""
        ...

    def zero_grad(self, name: str | None = None) -> None:
        """Clear the gradients of optimiser ``name`` (all optimisers when None)."""
        ...

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)``, scaled when AMP is on."""
        ...

    def step(self, name: str | None = "main") -> None:
        """Clip and step optimiser ``name`` (every optimiser when None, after one backward: one AMP scale update)."""
        ...
