"""The contract of a training method: a plug-in ``nn.Module`` driven by the engine.

The engine calls, every epoch:

1. ``on_epoch_start(epoch, ctx)``: the method may run per-sample passes over the training pairs
   (``ctx.per_sample``) and fit its sample selection; it returns values to log and publishes its
   current clean-probability estimates in ``self.selections`` (diagnostics only read them).
2. ``epoch_phases(epoch)``: the loaders of the epoch. Each :class:`Phase` iterates a subset of the
   training pairs (all by default), optionally with a second subset drawn in parallel (``side``).
3. ``training_step(batch, epoch, phase=..., side=...)`` for every batch of every phase. It returns
   ``(losses, logs)`` for one optimiser step, or yields several ``(losses, logs)`` tuples: the engine
   backpropagates and steps after each one, so a later loss sees the updated weights.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from noisycorr.backbones.base import Backbone
from noisycorr.errors import InputError
from noisycorr.losses import triplet_loss

if TYPE_CHECKING:
    from noisycorr.data.dataset import PairBatch
    from noisycorr.engine.context import TrainContext
    from noisycorr.selection import Selection

StepOutput = tuple[dict[str, Tensor], dict[str, float]]
StepResult = StepOutput | Iterator[StepOutput]


@dataclass
class Phase:
    """One pass of an epoch: ``indices`` in shuffled batches, with ``side`` batches alongside.

    Attributes:
        name: handed to :meth:`Method.training_step` (e.g. which network is trained).
        indices: training-pair indices of the main stream; None means every pair.
        side: indices of a second stream drawn in parallel and restarted when exhausted (NCR's
            noisy subset); None for none. The phase lasts as long as the main stream.
    """

    name: str = "train"
    indices: np.ndarray | None = None
    side: np.ndarray | None = None


class Method(nn.Module):
    """A paper's training algorithm over one or more backbones.

    Subclasses set ``citation`` and a ``Config`` dataclass, build their backbones from the factory,
    and implement :meth:`training_step`. The engine owns devices, optimisers, schedules, clipping,
    loaders, checkpoints and logging. A method never sees the ground-truth noise mask.
    """

    citation: ClassVar[str] = ""
    task: ClassVar[str] = "pairs"
    # State-dict key prefixes saved in the resumable checkpoint but not in the exported best weights.
    training_only_state: ClassVar[tuple[str, ...]] = ()

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, cfg: Any, build_backbone: Callable[[], Backbone]):
        super().__init__()
        self.cfg = cfg
        self.selections: dict[str, Selection] = {}

    @classmethod
    def make_config(cls, values: dict[str, Any], source: str = "method") -> Any:
        """Checked ``Config`` from a dict (the YAML ``method`` section without ``name``)."""
        names = [f.name for f in dataclasses.fields(cls.Config)]
        for key in values:
            if key not in names:
                raise InputError(source, f"a key of [method] for {cls.registered_name} among {names}", repr(key))
        return cls.Config(**values)

    @property
    def backbones(self) -> list[Backbone]:
        """The networks whose similarity matrices are averaged at evaluation."""
        return [m for m in self.children() if isinstance(m, Backbone)]

    def on_epoch_start(self, epoch: int, ctx: TrainContext) -> dict[str, float]:
        """Called before each training epoch; returns values to log."""
        return {}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """The passes of this epoch (default: one pass over every training pair)."""
        return [Phase()]

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "train", side: PairBatch | None = None
    ) -> StepResult:
        """One batch: named losses (summed by the engine) and values to log, or a generator of them."""
        raise NotImplementedError

    @torch.no_grad()
    def per_sample_loss(self, net: Backbone, batch: PairBatch, margin: float = 0.2) -> Tensor:
        """(B,) mean-over-negatives hinge of each pair of ``batch`` under ``net`` (NCR's split statistic)."""
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        scores = net.similarity(img, txt, batch.lengths).float()
        return triplet_loss(scores, margin, hardest=False, reduction="none")

    def score_pairs(self, ctx: TrainContext, *, estimator: str = "gmm", seed: int = 0) -> np.ndarray:
        """(N,) probability that each training pair is a true match, 1 = clean.

        Default: per backbone, the per-sample mean hinge over a fixed set of in-batch negatives is
        turned into a clean probability by a two-component mixture; the backbones' probabilities
        are averaged (for co-teaching methods each network was trained on its peer's split).
        """
        from noisycorr.selection import clean_probability

        probs = [
            clean_probability(ctx.per_sample(lambda b, n=net: self.per_sample_loss(n, b)).numpy(),
                              estimator=estimator, seed=seed)
            for net in self.backbones
        ]
        return np.mean(probs, axis=0)

    @classmethod
    def describe(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""
