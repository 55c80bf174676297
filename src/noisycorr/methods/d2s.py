"""D2S-VSE: dense-to-sparse feature distillation (Liu et al., "Dense-to-Sparse Feature Distilled Visual
Semantic Embedding", ICCV 2025, arXiv 2503.14953), as a text-side enhancement of a base method.

In plain words: a short caption carries less about its image than a long, dense description does.
Stage 1 trains the backbone on (image, dense text) pairs, so that its embeddings hold more of the
image. Stage 2 starts from those weights and trains on the ordinary (sparse) captions while a
frozen copy of the stage-1 text encoder, the teacher, embeds each pair's dense text; the student's
caption embedding is pulled towards it with ``1 - cos(student, teacher)``. Evaluation uses the
student's caption embedding, as the authors do.

How it sits in the library:

- The dense texts are data (``data.dense_captions``, :mod:`noisycorr.data.dense`): each training
  pair carries the dense text of the image it is paired with *as given*. With ``standin`` each
  stage builds the stand-in from its own (noisy) training pairing into its run folder;
  ``standin-consensus`` leaves out the captions that disagree with the others of their image.
- Stage 1 is a run of its own: the base method (``vanilla`` or ``ncr``) with
  ``data.train_text=dense`` for ``stage1_epochs`` epochs, in ``stage1_dir`` (default
  ``<run.out_dir>/stage1``). The engine trains it before stage 2 in the same command, resumes it
  when it was cut, and reuses it when it has finished (:meth:`~noisycorr.methods.base.Method.earlier_stage`);
  runs that share a ``stage1_dir`` (e.g. the two student heads) share their stage 1.
- Stage 2 is the base method unchanged, on backbones wrapped in
  :class:`~noisycorr.backbones.distill.DistilledText` (student head + frozen teacher), with the
  distillation loss added to the first update of every training step. Under NCR (``d2s-ncr``) a
  pair's distillation is weighted, after the warm-up, by the clean probability its peer gives it:
  distilling a mismatched caption towards its image's text would pull it to the wrong image.

Differences from the authors' code (liuyyy111/d2s-vse): precomputed region features and a BiGRU
instead of raw images, a ViT and BERT; one optimiser over everything at the base method's lr; the
prompt student is a residual offset on the stage-1 caption vector rather than a fresh embedding
(see :mod:`noisycorr.backbones.distill`); ``student_head: plain`` distils into the backbone's own
caption embedding.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.backbones.distill import DistilledText
from noisycorr.data.dense import DensePairBatch
from noisycorr.errors import InputError
from noisycorr.methods.base import StepOutput, Update
from noisycorr.methods.context import EpochContext
from noisycorr.methods.ncr import NCR
from noisycorr.methods.vanilla import Vanilla
from noisycorr.registry import register_method

D2S_CITATION = (
    "Liu, Fang, Zhang, Liu, Zhang. Dense-to-Sparse Feature Distilled Visual Semantic Embedding. ICCV 2025 "
    "(arXiv 2503.14953)."
)


@dataclasses.dataclass
class D2SOptions:
    """The D2S keys of the ``method`` section (besides the base method's)."""

    stage1_epochs: int = 4  # epochs of stage 1 (image <-> dense text), a run of its own
    stage1_dir: str | None = None  # where stage 1 runs; None: <run.out_dir>/stage1. A finished run there is reused
    stage1_weights: str | None = None  # stage-1 weights (safetensors); set: no stage 1 is run, these are loaded
    student_head: str = "prompt"  # prompt (learned prompts + decoder over the words) | plain (the backbone's own)
    prompt_tokens: int = 16
    prompt_layers: int = 1
    prompt_heads: int = 4
    distill_weight: float = 1.0  # weight of 1 - cos(student, teacher)


class DenseToSparse:
    """The D2S part of a method: put before the base method class (``class X(DenseToSparse, Base)``).

    The subclass names its base method's registered name in ``stage_one_method`` and may override
    :meth:`distill_weights`.
    """

    stage_one_method: ClassVar[str] = "vanilla"
    cfg: Any

    def __init__(self, cfg: Any, build_backbone: Callable[[], Backbone]):
        if cfg.stage1_epochs < 1:
            raise InputError("method.stage1_epochs", "at least 1", repr(cfg.stage1_epochs))
        if cfg.distill_weight < 0:
            raise InputError("method.distill_weight", "a weight >= 0", repr(cfg.distill_weight))

        def build() -> DistilledText:
            return DistilledText(build_backbone(), head=cfg.student_head, n_prompts=cfg.prompt_tokens,
                                 layers=cfg.prompt_layers, heads=cfg.prompt_heads)

        super().__init__(cfg, build)  # type: ignore[call-arg]
        # True once the stage-1 weights are in the student and the teacher (saved, so a resume keeps them).
        self.register_buffer("stage1_loaded", torch.zeros((), dtype=torch.bool))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ the two stages

    @classmethod
    def earlier_stage(cls, cfg: Any) -> tuple[Any, Any] | None:
        """Stage 1 (the base method on the dense texts) and this run's config pointing at its best weights."""
        method = dict(cfg.method)
        opts = cls.make_config({k: v for k, v in method.items() if k != "name"})  # type: ignore[attr-defined]
        if opts.stage1_weights:
            return None
        if not cfg.data.dense_captions:
            raise InputError("data.dense_captions", f"a dense-text file for method {method['name']!r} "
                             "(or standin: the run builds the stand-in from its own pairing)", "none")
        stage = copy.deepcopy(cfg)
        base_keys = {f.name for f in dataclasses.fields(super().Config)}  # type: ignore[misc]
        stage.method = {"name": cls.stage_one_method, **{k: v for k, v in method.items() if k in base_keys}}
        stage.data.train_text = "dense"
        stage.train.epochs = opts.stage1_epochs
        stage.run.out_dir = opts.stage1_dir or str(Path(cfg.run.out_dir) / "stage1")
        run = copy.deepcopy(cfg)
        run.method = {**method, "stage1_weights": str(Path(stage.run.out_dir) / "best.safetensors")}
        return stage, run

    def students(self) -> dict[str, DistilledText]:
        """The wrapped networks by attribute name (``net``; ``net_a`` / ``net_b`` under NCR)."""
        return {n: m for n, m in self.named_children() if isinstance(m, DistilledText)}  # type: ignore[attr-defined]

    def load_stage1(self, path: str | Path | None) -> None:
        """Load the stage-1 run's weights into every student backbone and its teacher."""
        from safetensors.torch import load_file

        if not path:
            raise InputError("method.stage1_weights", "the stage-1 weights (set by the engine's stage plan)", "none")
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(path, "the best weights of the finished stage-1 run", "no such file")
        tensors = load_file(str(path))
        for name, net in self.students().items():
            prefix = f"{name}."
            part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                net.base.load_state_dict(part)
                net.teacher.load_state_dict(part)
            except RuntimeError:
                raise InputError(path, f"stage-1 weights of {prefix}* for this backbone", "other tensors") from None
        self.stage1_loaded.fill_(True)

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        logs = {}
        if not bool(self.stage1_loaded):
            self.load_stage1(self.cfg.stage1_weights)
            logs["stage1_loaded"] = 1.0
        self._teach_all(ctx)
        return {**logs, **super().on_epoch_start(epoch, ctx)}  # type: ignore[misc]

    def _teach_all(self, ctx: EpochContext) -> None:
        """Embed every pair's dense text with each (frozen) teacher once, in the context's fixed order, so
        that a resumed run looks up the very vectors of an uninterrupted one."""
        for name, net in self.students().items():
            if net.has_taught:
                continue

            def teach(batch: Any, net: DistilledText = net) -> Tensor:
                dense = _dense(batch)
                return net.teach(dense.dense_tokens, dense.dense_lengths)

            net.keep_taught(ctx.per_sample(teach, desc=f"teacher {name}").to(ctx.device))

    # ------------------------------------------------------------------ stage 2: the distillation

    def distill_weights(self, phase: str, batch: DensePairBatch, epoch: int) -> Tensor | None:
        """(B,) weight of each pair's distillation loss, or None for 1 (default)."""
        return None

    def distillation(self, phase: str, batch: Any, epoch: int) -> tuple[Tensor, dict[str, float]]:
        """``distill_weight`` x the mean over the batch of ``w * (1 - cos(student, teacher))``; pairs
        without a dense text count 0."""
        batch = _dense(batch)
        students = self.students()
        net = next(iter(students.values())) if len(students) == 1 else self.nets()[phase]  # type: ignore[attr-defined]
        student = net.cached_texts(batch.tokens)
        if student is None:
            student = net.encode_texts(batch.tokens, batch.lengths)
        teacher = net.taught(batch.index)
        if teacher is None:
            teacher = net.teach(batch.dense_tokens, batch.dense_lengths)
        cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)  # (B,)
        weight = batch.dense_valid.to(cos.dtype)
        extra = self.distill_weights(phase, batch, epoch)
        if extra is not None:
            weight = weight * extra.to(cos.dtype)
        loss = (weight * (1.0 - cos)).sum() / max(len(batch), 1)
        valid = batch.dense_valid
        mean_cos = float(cos.detach()[valid].mean()) if bool(valid.any()) else float("nan")
        return self.cfg.distill_weight * loss, {"distill_cos": mean_cos}

    def training_step(
        self, batch: Any, epoch: int, *, phase: str = "train", streams: Mapping[str, Any] | None = None,
        control: Any = None,
    ) -> Any:
        """The base method's step; the distillation of ``batch`` joins its first update."""
        result = super().training_step(batch, epoch, phase=phase, streams=streams, control=control)  # type: ignore[misc]
        if isinstance(result, (tuple, Update)):
            return self._with_distillation(result, phase, batch, epoch)
        return self._distil_first(result, phase, batch, epoch)

    def _distil_first(self, updates: Iterator[Any], phase: str, batch: Any, epoch: int) -> Iterator[Any]:
        first = True
        for update in updates:
            yield self._with_distillation(update, phase, batch, epoch) if first else update
            first = False

    def _with_distillation(self, update: StepOutput | Update, phase: str, batch: Any, epoch: int) -> Any:
        loss, logs = self.distillation(phase, batch, epoch)
        if isinstance(update, Update):
            return Update({**update.losses, "distill": loss}, {**update.logs, **logs}, update.optimizers)
        losses, base_logs = update
        return {**losses, "distill": loss}, {**base_logs, **logs}


def _dense(batch: Any) -> DensePairBatch:
    if not isinstance(batch, DensePairBatch):
        raise InputError("data.dense_captions", "training batches with dense texts (set data.dense_captions)",
                         type(batch).__name__)
    return batch


@register_method("d2s")
class D2S(DenseToSparse, Vanilla):
    """D2S-VSE on the VSE++ baseline: dense-text pre-training, then dense-to-sparse distillation (ICCV 2025)."""

    citation = D2S_CITATION
    stage_one_method = "vanilla"
    training_only_state = ("net.teacher.",)

    @dataclasses.dataclass
    class Config(D2SOptions, Vanilla.Config):
        pass


@register_method("d2s-ncr")
class D2SNCR(DenseToSparse, NCR):
    """D2S-VSE under NCR: co-teaching with GMM splits, each network distilled from its own frozen teacher."""

    citation = D2S_CITATION + " With: " + NCR.citation
    stage_one_method = "ncr"
    training_only_state = ("net_a.teacher.", "net_b.teacher.")

    @dataclasses.dataclass
    class Config(D2SOptions, NCR.Config):
        distill_by_clean: bool = True  # after the warm-up, weight each pair's distillation by its peer's clean prob

    def distill_weights(self, phase: str, batch: DensePairBatch, epoch: int) -> Tensor | None:
        """The peer network's clean probability of each pair (after the warm-up, with ``distill_by_clean``)."""
        if not self.cfg.distill_by_clean or epoch < self.cfg.warmup_epochs or not self._peer_prob:
            return None
        return self._peer_prob[self.peer(phase)][batch.index.cpu()].to(batch.images.device)
