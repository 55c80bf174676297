"""The method contract: a plug-in ``nn.Module`` driven by the one training loop of both tasks.

Where a new method's author starts reading. A method is registered with ``@register_method("name")``
(:mod:`noisycorr.registry`), carries a ``citation`` and a ``Config`` dataclass (the YAML ``method``
section, checked key by key), and declares its ``task`` (``"pairs"``: image-caption pairs with
possibly wrong correspondence; ``"labels"``: items with possibly wrong category labels). It never
imports the engine: it is written against the Protocols of :mod:`noisycorr.methods.context`.

Every epoch the engine calls, in order:

1. ``on_epoch_start(epoch, ctx)``: per-sample passes (``ctx.per_sample(fn)``: ``fn`` on every
   training sample in a fixed order, eval mode), fitting a selection; returns values to log.
2. ``epoch_phases(epoch)``: the :class:`Phase` list of the epoch, trained one after the other. A
   phase iterates its ``indices`` (every sample when None) in shuffled batches, and draws a batch
   of each named stream in ``streams`` alongside (restarted when exhausted).
3. ``training_step(batch, epoch, phase=name, streams={stream: batch})`` for every batch. It returns
   ``(losses, logs)`` (or an :class:`Update`) for one optimiser step, or yields several: the engine
   backpropagates the sum of the losses and steps after each one, so a later loss sees the updated
   weights. An :class:`Update` may name which optimisers step.

What the engine asks besides (each has a default):

- ``optimizer_specs()``: the method's optimisers as :class:`OptimizerSpec` (name, parameters, own lr,
  optimiser kind, weight decay, schedule). Default: one ``"main"`` over every trainable parameter.
  Every trainable parameter belongs to exactly one spec; frozen ones (``requires_grad=False``, e.g.
  a distillation teacher) to none. All optimiser states are saved in the checkpoint.
- ``schedule_start()``: the run epoch from which the learning-rate schedules count (default 0). A
  method whose authors run a warm-up *before* their epoch counter starts (NCR, IN2R) returns the
  warm-up length: the warm-up runs at the base lr and ``train.lr_update`` counts the epochs after it.
- ``earlier_stage(cfg)``: a run of other settings that must finish first and whose weights this one
  starts from (a pre-training stage); the same command trains it, or reuses it when it has finished.
- ``manual_optimization = True``: the engine no longer backpropagates or steps; ``training_step``
  gets ``control=`` (:class:`~noisycorr.methods.context.StepControl`: ``backward``, ``step(name)``,
  ``zero_grad``, ``optimizer(name)``, ``lr(name)``) and returns the losses only to be logged. This is
  how a meta-learning step with a functional (``torch.func``) virtual update is written.
- ``eval_backbones()`` and ``eval_similarity(sims)``: the networks evaluated and how their (n_img,
  n_txt) similarity matrices are combined (default: every backbone, mean of the matrices).
- ``diagnostics()``: the method's current beliefs about each training sample, a dict of
  :class:`~noisycorr.selection.Selection` (clean probability, clean split, loss, named groups). The
  engine scores them against the ground truth *for the log only* (``det_*`` / ``diag_*`` columns).
  Default: ``self.selections``. ``epoch_diagnostics()`` is scored the same way after the epoch's
  training (default: nothing), for what the method decided while training (e.g. BiCro's anchors).
- ``score_pairs(ctx)``: the audit's (N,) clean probability of every training pair, computed with
  the method's own settings (``margin``, ``estimator``, ``pass_batch_size``, ``monotone`` of its
  Config when it has them).
- ``uses_meta_set = True``: the method learns from a meta set, a few pairs the user declares clean
  (``data.meta_source``: validation images, which validation then lacks, or a file of training pair
  indices; ``auto`` gives such a method the validation source). The pair task's context then has
  ``meta`` (:class:`~noisycorr.data.meta.MetaPairs`: features, captions and declared image of each
  meta pair, and the training indices a file source holds apart); it is None otherwise.
- Extra trained state (memories, codebooks, histories) is kept in *buffers* (``register_buffer``, of
  fixed shape: a ring with a size counter, an (N, T) history) so it is saved in ``checkpoint.pt``
  and restored on ``--resume``. State-dict prefixes listed in ``training_only_state`` are kept out
  of ``best.safetensors`` (evaluation does not need them).

What a method never sees: the ground-truth noise mask, the clean pairing (batches carry no image
index) or the clean labels. A static test (tests/test_boundaries.py) checks the source of every
method for it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from noisycorr.backbones.base import Backbone
from noisycorr.errors import InputError
from noisycorr.eval.retrieval import average_similarities
from noisycorr.losses import triplet_loss
from noisycorr.methods.context import EpochContext, StepControl

if TYPE_CHECKING:
    from noisycorr.data.dataset import PairBatch
    from noisycorr.selection import Selection

StepOutput = tuple[dict[str, Tensor], dict[str, float]]


@dataclass
class Update:
    """One optimiser update: named losses (summed), values to log, and which optimisers step.

    Attributes:
        losses: scalar losses; their sum is backpropagated.
        logs: floats to average into the epoch's row of ``metrics.csv``.
        optimizers: names of the :class:`OptimizerSpec` to step; None steps every optimiser.
    """

    losses: dict[str, Tensor]
    logs: dict[str, float] = field(default_factory=dict)
    optimizers: tuple[str, ...] | None = None


StepResult = StepOutput | Update | Iterator[StepOutput | Update]


@dataclass
class Phase:
    """One pass of an epoch: ``indices`` in shuffled batches, with a batch of each stream alongside.

    Attributes:
        name: handed to :meth:`Method.training_step` (e.g. which network is trained).
        indices: training-sample indices of the main stream; None means every sample. The phase
            lasts as long as the main stream.
        streams: named index sets drawn in parallel, one batch each per main batch, restarted when
            exhausted (NCR's noisy subset is ``{"noisy": idx}``). Empty streams are not drawn.
    """

    name: str = "train"
    indices: np.ndarray | None = None
    streams: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class OptimizerSpec:
    """An optimiser the method asks the engine for.

    Attributes:
        name: how updates and :class:`StepControl` refer to it.
        params: its parameters (or torch parameter-group dicts).
        lr: base learning rate; None takes ``train.lr``.
        optimizer: ``adam`` | ``adamw`` | ``sgd``; None takes ``train.optimizer``.
        weight_decay: None takes ``train.weight_decay``.
        schedule: ``step`` | ``constant`` | ``cosine``; None takes ``train.schedule``.
        unclipped: parameters of ``params`` that ``train.grad_clip`` leaves alone: the gradient norm
            is computed and clipped over the others only (IN2R clips its encoders, not its refiners).
    """

    name: str
    params: list[Any]
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    unclipped: list[Any] = field(default_factory=list)


class Method(nn.Module):
    """A paper's training algorithm (see the module docstring for the whole contract)."""

    citation: ClassVar[str] = ""
    task: ClassVar[str] = "pairs"
    # State-dict key prefixes saved in the resumable checkpoint but not in the exported best weights.
    training_only_state: ClassVar[tuple[str, ...]] = ()
    # True: training_step gets ``control=`` and runs backward / step itself.
    manual_optimization: ClassVar[bool] = False
    # True: the pair task gives the method a meta set of user-declared clean pairs (``ctx.meta``).
    uses_meta_set: ClassVar[bool] = False

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

    # ------------------------------------------------------------------ what the engine asks

    @property
    def backbones(self) -> list[Backbone]:
        """The backbone submodules, in registration order."""
        return [m for m in self.children() if isinstance(m, Backbone)]

    def optimizer_specs(self) -> list[OptimizerSpec]:
        """The optimisers to build (default: one ``main`` over every trainable parameter)."""
        return [OptimizerSpec("main", [p for p in self.parameters() if p.requires_grad])]

    def schedule_start(self) -> int:
        """The run epoch from which the learning-rate schedules count (default 0: the first).

        Epoch ``e >= start`` gets the schedule's value of ``e - start``; the epochs before ``start``
        get its first value (see :func:`noisycorr.engine.optim.schedule_factor`).
        """
        return 0

    @classmethod
    def earlier_stage(cls, cfg: Any) -> tuple[Any, Any] | None:
        """The run this one starts from, trained first by the same command (default: none).

        Returns ``(stage_cfg, run_cfg)``: the earlier run's config (with its own ``run.out_dir``) and
        this run's config pointing at its weights. The engine reuses a finished earlier run of the
        same settings, resumes a cut one, and trains it otherwise (D2S-VSE's stage 1).
        """
        return None

    def eval_backbones(self) -> list[Backbone]:
        """The networks whose similarities are combined at evaluation (default: every backbone)."""
        return self.backbones

    def eval_similarity(self, sims: list[Tensor]) -> Tensor:
        """Combine one (n_img, n_txt) block per evaluation network into one (default: the mean)."""
        return sims[0] if len(sims) == 1 else average_similarities(sims)

    def diagnostics(self) -> dict[str, Selection]:
        """The current per-sample beliefs to score against the truth in the log (default: ``selections``)."""
        return dict(self.selections)

    def epoch_diagnostics(self) -> dict[str, Selection]:
        """What the method did during the epoch just trained, scored like ``diagnostics`` after the
        epoch's phases (e.g. the pairs BiCro used as anchors). Default: nothing."""
        return {}

    # ------------------------------------------------------------------ the training hooks

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        """Called before each training epoch; returns values to log."""
        return {}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """The passes of this epoch (default: one pass over every training sample)."""
        return [Phase()]

    def training_step(
        self,
        batch: Any,
        epoch: int,
        *,
        phase: str = "train",
        streams: Mapping[str, Any] | None = None,
        control: StepControl | None = None,
    ) -> StepResult:
        """One batch: named losses (summed by the engine) and values to log, or a generator of them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ pair scores (audit)

    @torch.no_grad()
    def per_sample_loss(self, net: Backbone, batch: PairBatch, margin: float = 0.2) -> Tensor:
        """(B,) mean-over-negatives hinge of each pair of ``batch`` under ``net`` (NCR's split statistic)."""
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        scores = net.similarity(img, txt, batch.lengths).float()
        return triplet_loss(scores, margin, hardest=False, reduction="none")

    def score_pairs(self, ctx: EpochContext, *, estimator: str | None = None, seed: int = 0) -> np.ndarray:
        """(N,) probability that each training pair is a true match, 1 = clean.

        Default: per evaluation network, the per-sample mean hinge over a fixed set of in-batch
        negatives is turned into a clean probability by a two-component mixture; the networks'
        probabilities are averaged. The margin, estimator, pass batch size and monotone posterior
        are the method's own (its Config's ``margin``, ``estimator``, ``pass_batch_size``,
        ``monotone`` when it has them); ``estimator`` overrides the method's.
        """
        from noisycorr.selection import clean_probability

        margin = float(getattr(self.cfg, "margin", 0.2))
        estimator = estimator or str(getattr(self.cfg, "estimator", "gmm"))
        monotone = bool(getattr(self.cfg, "monotone", True))
        batch_size = getattr(self.cfg, "pass_batch_size", None)
        probs = [
            clean_probability(
                ctx.per_sample(lambda b, n=net: self.per_sample_loss(n, b, margin), batch_size=batch_size).numpy(),
                estimator=estimator,
                seed=seed,
                monotone=monotone,
            )
            for net in self.eval_backbones()
        ]
        return np.mean(probs, axis=0)

    @classmethod
    def describe(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""
