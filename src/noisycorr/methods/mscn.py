"""MSCN: Meta Similarity Correction Network (Han, Miao, Zheng, Luo, "Noisy Correspondence Learning with
Meta Similarity Correction", CVPR 2023).

In plain words: a small meta-net (Linear S->64, ReLU, Linear 64->1, sigmoid) replaces the backbone's
score head: it turns the similarity representation the backbone computes for a pair (SGRAF's 256-d
read-out vector; for VSE the element-wise product of the two unit embeddings times their size, whose
mean is the cosine) into a match probability p. It is taught by a meta set of pairs the user declares clean
(``data.meta_source``) and, each epoch, as many negatives (each meta caption with another meta image),
with a binary cross-entropy. Two networks A and B are warmed up on every pair with the mean-negative
hinge (net and meta-net together). Then every batch is a bi-level step: (1) a *virtual* Adam step of
the backbone on the batch's loss, kept differentiable in the meta-net's weights; (2) the meta-net's
BCE on a meta batch under the virtually updated backbone, and one step of the meta-net; (3) the real
backbone step with the meta-net fixed. The loss is the hardest-negative hinge (``negatives: hardest``,
the authors'; ``mean`` averages over the batch's negatives) with a soft margin
``m * p^2 / (p^2 + (1 - p)^2)`` from the pair's own (detached) score. Each epoch starts with a
purification: the score p of every training pair under network X is fitted with a two-component Beta
mixture whose components start from the meta set's negative and positive score distributions; pairs
with a clean posterior above ``p_threshold`` form X's clean subset, and X's peer trains on it alone.
Evaluation averages the two networks' similarity matrices, each scored by its own meta-net.

Choices the paper leaves open and deviations from the authors' code (hhc1997/MSCN, ``main_MSCN.py``):

- The virtual step is a differentiable Adam (AdamW) step that reads the real optimiser's moments,
  step count and hyper-parameters, after the same gradient clipping as the real step
  (``virtual_step: adam``). The authors' ``MetaAdam.meta_step`` is named Adam but subtracts
  ``lr * grad`` (an SGD step, moments unused): ``virtual_step: sgd`` reproduces that. The authors also
  call ``clip_grad_norm_`` on the pseudo-network, whose ``.grad`` is never filled (a no-op); we clip the
  virtual gradient for real (``train.grad_clip``), as the real step is clipped.
- The virtual step is written with ``torch.func.functional_call`` and ``torch.autograd.grad(...,
  create_graph=True)`` on the backbone's parameters, never by copying modules. ``torch.func.grad``
  cannot transform our caption encoders: the packed GRU kernel needs tensors with storage (torch 2.13:
  "Cannot access data pointer of Tensor that doesn't have storage").
- Meta negatives: each meta caption with a uniformly drawn *other meta image*, drawn afresh each epoch;
  the authors pair random training captions with random training images other than the caption's
  original one. Ours keeps the meta set closed (only user-declared data) and its negatives sure.
- The meta set is whole validation images (all their captions) or the user's file of training pairs;
  the authors draw 2,900 single dev pairs for Flickr30K. See :mod:`noisycorr.data.meta`.
- Soft margin: per pair, ``m_i`` for pair i wherever it is the positive (``margin_of: pair``). The
  authors' (B,) margin broadcasts along the columns of both hinges, so in the caption-retrieval
  direction cell (i, j) takes the *negative* caption j's margin; ``margin_of: authors`` reproduces it.
- The meta-net is trained at the backbone's learning rate during the warm-up and at ``meta_lr`` after
  it (as the authors); the Adam states are not reset at the end of the warm-up (the authors build new
  optimisers).
- The warm-up batch is ``train.batch_size`` (the authors use twice the batch).
- ``negatives: mean`` (not the authors') is for weak warm-ups: the hardest-negative hinge through a frozen
  learned head has degenerate minima that a cosine does not (every score saturated near 1, where the hinge
  is just the margin; every score near 0, where the soft margin and so the hinge vanish), and a backbone
  reaches them in a few dozen steps when most rows still violate the margin (README, MSCN).
- ``score: backbone`` (not the authors'): the backbone's own score (VSE's cosine) retrieves and takes the
  hinge; the meta-net only gives p, for the soft margins and the Beta-mixture split. The authors' meta-net
  replaces SGRAF's learned head ``sim_eval_w``; VSE has no learned head, and a meta-net in the cosine's place
  ranks worse than the cosine (README, MSCN). In this mode the margins in the *virtual* step keep their
  graph in the meta-net's weights (as MW-Net's sample weights), so the meta loss reaches the meta-net through
  the virtual update as well as directly; in the real step they are fixed. The warm-up trains the backbone
  with the plain hinge and the meta-net with its BCE on meta batches over the backbone's detached vectors.
- ``meta_head: residual`` (not the authors') adds a learned multiple of ``mean(v)`` to the meta-net's logit
  and starts its MLP at zero: on VSE, where the meta-net replaces the cosine rather than a learned head,
  a fresh head then ranks as the cosine (README, MSCN). Default ``mlp``, the authors' meta-net.
- The Beta mixture is our EM (:class:`~noisycorr.selection.BetaMixture1D`, method-of-moments M-step,
  10 iterations) instead of pomegranate's ``TrueBetaDistribution``; scores are clipped into
  ``[1e-3, 1 - 1e-3]`` as the authors do. When everything looks clean, the least clean
  ``min_noisy_fraction`` is called noisy (NCR's fallback).
- Training pairs a file-sourced meta set holds apart are left out of every training phase.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from noisycorr.backbones.base import Backbone
from noisycorr.data.dataset import PairBatch
from noisycorr.errors import InputError
from noisycorr.losses import NEGATIVES, triplet_loss
from noisycorr.methods.base import OptimizerSpec, Phase, StepOutput
from noisycorr.methods.context import EpochContext, StepControl
from noisycorr.methods.coteaching import CoTeachingMethod
from noisycorr.registry import register_method
from noisycorr.selection import BetaMixture1D, Selection, split_clean

VIRTUAL_STEPS = ("adam", "sgd")
MARGIN_OF = ("pair", "authors")
META_HEADS = ("mlp", "residual")
SCORES = ("meta", "backbone")
SCORE_EPS = 1e-3  # the authors clip scores into [1e-3, 1 - 1e-3] before the Beta mixture
_META_STREAM = 0x4D53


def mscn_margin(p: Tensor, margin: float) -> Tensor:
    """MSCN's soft margin ``margin * p^2 / (p^2 + (1 - p)^2)`` of (...) match probabilities p."""
    p = p.clamp(0.0, 1.0)
    return margin * p.pow(2) / (p.pow(2) + (1.0 - p).pow(2))


def meta_bce(p: Tensor, labels: Tensor) -> Tensor:
    """The meta loss: mean BCE of (n,) match probabilities p against (n,) 0/1 labels, p clamped off 0 and 1."""
    p = p.float()
    return nn.functional.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), labels.to(p.device))


class MetaNet(nn.Module):
    """The authors' meta-net: Linear(S, hidden), ReLU, Linear(hidden, 1), sigmoid; (..., S) -> (...).

    With ``residual_scale`` (``meta_head: residual``) the logit is ``scale * mean(v) + mlp(v)``, with a
    learned ``scale`` starting at ``residual_scale`` and the MLP's output layer starting at zero: for VSE,
    whose ``mean(v)`` is the cosine, the fresh head ranks pairs exactly as the cosine does.
    """

    def __init__(self, in_dim: int, hidden: int = 64, residual_scale: float | None = None):
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, 1)
        self.scale: nn.Parameter | None = None
        if residual_scale is not None:
            self.scale = nn.Parameter(torch.tensor(float(residual_scale)))
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, vectors: Tensor) -> Tensor:
        logit = self.out(torch.relu(self.hidden(vectors))).squeeze(-1)
        if self.scale is not None:
            logit = logit + self.scale * vectors.mean(-1)
        return torch.sigmoid(logit)


class MetaScored(Backbone):
    """A backbone whose score head is a meta-net on its similarity representation.

    Its ``forward`` (images, tokens, lengths) gives the (B, B) scores of a batch, or with
    ``pairs=True`` the (B,) scores of its pairs, so ``torch.func.functional_call`` can swap weights.

    Args:
        net: a backbone with :meth:`~noisycorr.backbones.base.Backbone.similarity_vectors`.
        hidden: the meta-net's hidden size.
        chunk_pairs: at most this many (image, caption) vectors are held at once by ``similarity``.
        residual_scale: None for the authors' meta-net, else the starting cosine scale of a residual one.
        meta_scores: True: the meta-net is the score (the authors'); False: ``similarity`` and the (B, B)
            scores are the backbone's own, and the meta-net gives only the pair scores p.
    """

    def __init__(
        self, net: Backbone, hidden: int = 64, chunk_pairs: int = 1 << 14, residual_scale: float | None = None,
        meta_scores: bool = True,
    ):
        super().__init__()
        if net.vector_dim <= 0:
            raise InputError("model.backbone", "a backbone with a similarity representation (vse, sgraf) for mscn",
                             type(net).__name__)
        self.net = net
        self.meta = MetaNet(net.vector_dim, hidden, residual_scale)
        self.image_input = net.image_input
        self.chunk_pairs = chunk_pairs
        self.meta_scores = meta_scores

    def encode_images(self, images: Tensor) -> Tensor:
        return self.net.encode_images(images)

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.net.encode_texts(tokens, lengths)

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """(n_img, ...), (n_txt, ...) -> (n_img, n_txt) meta-net scores, in blocks of images (the backbone's
        own scores when ``meta_scores`` is False)."""
        if not self.meta_scores:
            return self.net.similarity(img_emb, txt_emb, txt_lengths)
        rows = max(1, self.chunk_pairs // max(1, txt_emb.shape[0]))
        out = [
            self.meta(self.net.similarity_vectors(img_emb[i : i + rows], txt_emb, txt_lengths))
            for i in range(0, img_emb.shape[0], rows)
        ]
        return torch.cat(out) if out else img_emb.new_zeros(0, txt_emb.shape[0])

    def pair_scores(self, batch: PairBatch) -> Tensor:
        """(B,) meta-net score of each pair (image b, caption b) of ``batch``."""
        return self(batch.images, batch.tokens, batch.lengths, pairs=True)

    def forward(
        self, images: Tensor, tokens: Tensor, lengths: Tensor, pairs: bool = False, both: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, B) scores of the batch; ``pairs``: (B,) meta-net scores p of its pairs; ``both``: the two."""
        img = self.net.encode_images(images)
        txt = self.net.encode_texts(tokens, lengths)
        if pairs:
            return self.meta(self.net.pair_vectors(img, txt, lengths))
        scores = self.similarity(img, txt, lengths)
        if not both:
            return scores
        p = scores.diagonal() if self.meta_scores else self.meta(self.net.pair_vectors(img, txt, lengths))
        return scores, p


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) derivative at 0: a never-seen parameter's second moment is 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def virtual_step(
    params: dict[str, Tensor],
    grads: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    owners: dict[str, nn.Parameter],
    *,
    kind: str = "adam",
    clip: float = 0.0,
) -> dict[str, Tensor]:
    """One differentiable optimiser step: what ``optimizer.step()`` would make of ``params``, as tensors
    that stay functions of ``grads`` (and of whatever the gradients depend on).

    Args:
        params: name -> current value (detached).
        grads: name -> gradient, possibly with a graph (``create_graph=True``).
        optimizer: the real optimiser; its hyper-parameters and, for ``adam``, its moments and step count
            (``torch.optim.Adam`` / ``AdamW`` state; absent state = a first step) are read, never written.
        owners: name -> the parameter ``optimizer`` keys its state and group by.
        kind: ``adam`` (Adam, or AdamW when the group decouples weight decay) or ``sgd`` (``p - lr * g``).
        clip: clip the joint gradient norm to this first, as ``clip_grad_norm_`` (0: no clipping).

    Returns:
        name -> updated value.
    """
    if clip > 0:
        total = torch.stack([g.pow(2).sum() for g in grads.values()]).sum().sqrt()
        coef = (clip / (total + 1e-6)).clamp(max=1.0)
        grads = {k: g * coef for k, g in grads.items()}
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    out = {}
    for name, p in params.items():
        g = grads[name]
        group = group_of[id(owners[name])]
        lr = float(group["lr"])
        if kind == "sgd":
            out[name] = p - lr * g
            continue
        if "betas" not in group:
            raise InputError("train.optimizer", "adam or adamw for method.virtual_step=adam", type(optimizer).__name__)
        beta1, beta2 = group["betas"]
        wd, eps = float(group["weight_decay"]), float(group["eps"])
        decoupled = bool(group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)))
        state = optimizer.state.get(owners[name], {})
        step = float(state["step"]) + 1.0 if "step" in state else 1.0
        m = state.get("exp_avg", torch.zeros_like(p))
        v = state.get("exp_avg_sq", torch.zeros_like(p))
        if wd != 0 and decoupled:
            p = p * (1.0 - lr * wd)
        elif wd != 0:
            g = g + wd * p
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        denom = _safe_sqrt(v) / (1.0 - beta2**step) ** 0.5 + eps
        out[name] = p - (lr / (1.0 - beta1**step)) * m / denom
    return out


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters out of autograd for the block (the real step with the meta-net fixed)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@register_method("mscn")
class MSCN(CoTeachingMethod):
    """Meta Similarity Correction Network: a meta-net score head taught by clean meta pairs through a
    virtual step, soft margins and Beta-mixture purification (Han et al., CVPR 2023)."""

    citation = (
        "Han, Miao, Zheng, Luo. Noisy Correspondence Learning with Meta Similarity Correction. CVPR 2023."
    )
    manual_optimization = True
    uses_meta_set = True

    @dataclasses.dataclass
    class Config:
        margin: float = 0.2
        warmup_epochs: int = 5  # mean-negative hinge on all pairs, nets and meta-nets together
        # co_training: the lr schedule counts the epochs after the warm-up (the authors' num_epochs); run: from 0
        epoch_counting: str = "co_training"
        meta_lr: float = 17e-6  # the meta-nets' Adam lr after the warm-up (warm-up: train.lr), same schedule
        meta_hidden: int = 64
        # mlp: the authors' meta-net; residual: sigmoid(scale * mean(v) + mlp(v)), starting as the cosine (VSE)
        meta_head: str = "mlp"
        # meta: the meta-net is the score (the authors'); backbone: the backbone's score retrieves and takes the
        # hinge, the meta-net gives p for the margins and the split
        score: str = "meta"
        residual_scale: float = 10.0  # the residual head's starting scale (learned)
        meta_interval: int = 1  # a virtual step every k-th batch of a phase
        meta_batch_size: int | None = None  # meta pairs per meta batch (positives and negatives); None: train batch
        virtual_step: str = "adam"  # adam (differentiable Adam/AdamW on the real moments) | sgd (the authors')
        margin_of: str = "pair"  # pair (each positive's own soft margin) | authors (their broadcast)
        negatives: str = "hardest"  # after the warm-up: hardest (the authors') | mean over the batch's negatives
        p_threshold: float = 0.5  # clean when the Beta mixture's clean posterior is above this
        min_noisy_fraction: float = 0.01
        bmm_iterations: int = 10
        pass_batch_size: int | None = None  # per-sample scoring pass batch (default: the training batch)
        eval_chunk_pairs: int = 16384  # (image, caption) representations held at once when scoring a split

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        for key, allowed in (("virtual_step", VIRTUAL_STEPS), ("margin_of", MARGIN_OF), ("negatives", NEGATIVES),
                             ("meta_head", META_HEADS), ("score", SCORES)):
            if getattr(cfg, key) not in allowed:
                raise InputError(f"method.{key}", f"one of {list(allowed)}", repr(getattr(cfg, key)))
        for key in ("meta_interval", "meta_hidden", "eval_chunk_pairs"):
            if int(getattr(cfg, key)) < 1:
                raise InputError(f"method.{key}", "an integer >= 1", repr(getattr(cfg, key)))
        if cfg.meta_batch_size is not None and cfg.meta_batch_size < 2:
            raise InputError("method.meta_batch_size", "an integer >= 2 or null", repr(cfg.meta_batch_size))
        if not cfg.meta_lr > 0:
            raise InputError("method.meta_lr", "a number > 0", repr(cfg.meta_lr))
        if not cfg.residual_scale > 0:
            raise InputError("method.residual_scale", "a number > 0", repr(cfg.residual_scale))
        residual = float(cfg.residual_scale) if cfg.meta_head == "residual" else None
        by_meta = cfg.score == "meta"
        super().__init__(
            cfg, lambda: MetaScored(build_backbone(), cfg.meta_hidden, cfg.eval_chunk_pairs, residual, by_meta)
        )
        self._meta: Any = None  # the context's meta set (MetaPairs), set at each epoch start
        self._held = np.zeros(0, dtype=np.int64)
        self._plan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # meta captions, images, labels
        self._cursor = 0
        self._batches: dict[str, int] = {}

    # ------------------------------------------------------------------ optimisers and phases

    def optimizer_specs(self) -> list[OptimizerSpec]:
        nets = [p for net in (self.net_a, self.net_b) for p in net.net.parameters() if p.requires_grad]
        metas = [p for net in (self.net_a, self.net_b) for p in net.meta.parameters()]
        return [OptimizerSpec("main", nets), OptimizerSpec("meta", metas, lr=self.cfg.meta_lr)]

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        meta = getattr(ctx, "meta", None)
        if meta is None or len(meta) < 2:
            raise InputError("data.meta_source", "a meta set of clean pairs for mscn (val or file)", "none")
        self.plan_meta(meta, ctx, epoch)
        self._batches = {}
        if epoch < self.cfg.warmup_epochs:
            self.selections = {}
            return {"warmup": 1.0}
        return {"warmup": 0.0, **self.purify(ctx)}

    def plan_meta(self, meta: Any, ctx: EpochContext, epoch: int) -> None:
        """This epoch's meta pairs: every positive and one fresh negative per meta caption, shuffled."""
        self._meta = meta
        self._held = np.asarray(meta.held_out, dtype=np.int64)
        self._n = ctx.n_samples
        rng = np.random.default_rng([ctx.seed, epoch, _META_STREAM])
        n = len(meta)
        captions = np.concatenate([np.arange(n), np.arange(n)])
        images = np.concatenate([meta.pair_image, meta.other_images(rng)])
        labels = np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)])
        order = rng.permutation(2 * n)
        self._plan = (captions[order], images[order], labels[order])
        self._cursor = 0

    def _trainable(self) -> np.ndarray:
        keep = np.ones(self._n, dtype=bool)
        keep[self._held] = False
        return keep

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """Warm-up: each network on every pair. Then network X on its peer's clean split only."""
        keep = self._trainable()
        if self.in_warmup(epoch):
            idx = None if keep.all() else np.flatnonzero(keep)
            return [Phase("A", indices=idx), Phase("B", indices=idx)]
        return [Phase(x, indices=np.flatnonzero(self.selections[self.peer(x)].clean & keep)) for x in ("A", "B")]

    # ------------------------------------------------------------------ purification

    @torch.no_grad()
    def meta_scores(self, net: MetaScored, device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's meta positives' and negatives' (n,) scores under ``net`` in eval mode."""
        assert self._plan is not None
        captions, images, labels = self._plan
        was = net.training
        net.eval()
        try:
            scores = torch.cat([
                net.pair_scores(self._meta.batch(captions[i : i + batch_size], images[i : i + batch_size]).to(device))
                for i in range(0, len(captions), batch_size)
            ]).float().cpu().numpy()
        finally:
            net.train(was)
        return scores[labels == 1], scores[labels == 0]

    def clean_probability(self, net: MetaScored, ctx: EpochContext, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """(N,) Beta-mixture clean posterior of every training pair and (N,) its meta-net score p.

        The mixture's components start from the meta negatives' and positives' score distributions.
        """
        p = ctx.per_sample(net.pair_scores, batch_size=self.cfg.pass_batch_size, desc=desc).numpy().astype(np.float64)
        p = np.clip(p, SCORE_EPS, 1.0 - SCORE_EPS)
        pos, neg = self.meta_scores(net, ctx.device, self.cfg.pass_batch_size or 128)
        bmm = BetaMixture1D.from_groups(neg, pos, max_iter=self.cfg.bmm_iterations, eps=SCORE_EPS)
        return bmm.fit(p).posterior(p)[:, 1], p

    def purify(self, ctx: EpochContext) -> dict[str, float]:
        """Each network's clean split of the training pairs; fills ``self.selections``."""
        logs: dict[str, float] = {}
        for name, net in self.nets().items():
            prob, p = self.clean_probability(net, ctx, f"meta scores {name}")
            clean = split_clean(prob, threshold=self.cfg.p_threshold, min_noisy_fraction=self.cfg.min_noisy_fraction)
            self.selections[name] = Selection(prob, clean, 1.0 - p)
            logs[f"clean_{name}"] = float(clean.mean())
            logs[f"meta_score_{name}"] = float(p.mean())
        return logs

    def score_pairs(self, ctx: EpochContext, *, estimator: str | None = None, seed: int = 0) -> np.ndarray:
        """(N,) clean probability: the mean over both networks of the Beta-mixture posterior started from
        the meta set, or of the meta-net score p when the context has no meta set (an audit)."""
        meta = getattr(ctx, "meta", None)
        out = []
        for name, net in self.nets().items():
            if meta is None:
                values = ctx.per_sample(net.pair_scores, batch_size=self.cfg.pass_batch_size, desc=f"scores {name}")
                out.append(values.numpy().astype(np.float64))
                continue
            if self._plan is None or self._meta is not meta:
                self.plan_meta(meta, ctx, ctx.epochs)
            out.append(self.clean_probability(net, ctx, f"meta scores {name}")[0])
        return np.mean(out, axis=0)

    # ------------------------------------------------------------------ the training step

    def _margins(self, scores: Tensor, p: Tensor, keep_graph: bool) -> Tensor:
        m = mscn_margin(p if keep_graph else p.detach(), self.cfg.margin)
        return m[None, :].expand(scores.shape) if self.cfg.margin_of == "authors" else m

    def batch_loss(self, scores: Tensor, p: Tensor, *, virtual: bool = False) -> Tensor:
        """The hinge (hardest or mean negative, ``negatives``) on the (B, B) scores with MSCN's soft margins
        from the pairs' (B,) meta-net scores p (detached, except in a ``virtual`` step with ``score: backbone``,
        where they carry the meta-net's gradient)."""
        keep = virtual and self.cfg.score == "backbone"
        return triplet_loss(scores, self._margins(scores, p, keep), hardest=self.cfg.negatives == "hardest")

    def next_meta_batch(self, size: int) -> tuple[PairBatch, Tensor]:
        """The next ``size`` meta pairs of this epoch's plan (cycling) and their (size,) labels."""
        assert self._plan is not None
        captions, images, labels = self._plan
        take = (self._cursor + np.arange(min(size, len(captions)))) % len(captions)
        self._cursor = int(take[-1]) + 1
        return self._meta.batch(captions[take], images[take]), torch.from_numpy(labels[take])

    def warmup_meta_loss(self, net: MetaScored, size: int, device: torch.device) -> Tensor:
        """The meta-net's BCE on the next meta batch over the backbone's detached pair vectors (scalar)."""
        meta_batch, labels = self.next_meta_batch(self.cfg.meta_batch_size or size)
        meta_batch = meta_batch.to(device)
        with torch.no_grad():
            img = net.net.encode_images(meta_batch.images)
            txt = net.net.encode_texts(meta_batch.tokens, meta_batch.lengths)
            vectors = net.net.pair_vectors(img, txt, meta_batch.lengths)
        return meta_bce(net.meta(vectors), labels)

    def virtual_backbone(
        self, net: MetaScored, batch: PairBatch, optimizer: torch.optim.Optimizer, clip: float
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The backbone after a virtual step on ``batch`` (name -> tensor, differentiable in the meta-net's
        weights) and the buffers the virtual passes used (copies: the real ones are left alone)."""
        owners = {f"net.{k}": p for k, p in net.net.named_parameters() if p.requires_grad}
        params = {k: p.detach().requires_grad_() for k, p in owners.items()}
        buffers = {f"net.{k}": b.clone() for k, b in net.net.named_buffers()}
        scores, p = functional_call(net, {**params, **buffers}, (batch.images, batch.tokens, batch.lengths),
                                    {"both": True})
        loss = self.batch_loss(scores, p, virtual=True)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
        grads = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}
        return virtual_step(params, grads, optimizer, owners, kind=self.cfg.virtual_step, clip=clip), buffers

    def meta_update(self, net: MetaScored, batch: PairBatch, control: StepControl) -> float:
        """The bi-level meta step: a virtual backbone step on ``batch``, the meta-net's BCE on a meta batch
        under the virtual backbone, one meta-net step. Returns the meta loss."""
        clip = float(getattr(control, "grad_clip", 0.0) or 0.0)  # the engine's train.grad_clip, as the real step
        virtual, buffers = self.virtual_backbone(net, batch, control.optimizer("main"), clip)
        meta_batch, labels = self.next_meta_batch(self.cfg.meta_batch_size or len(batch))
        meta_batch = meta_batch.to(batch.images.device)
        meta_inputs = (meta_batch.images, meta_batch.tokens, meta_batch.lengths)
        meta_loss = meta_bce(functional_call(net, {**virtual, **buffers}, meta_inputs, {"pairs": True}), labels)
        control.zero_grad("meta")
        control.backward(meta_loss)
        control.step("meta")
        return float(meta_loss.detach())

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "A", streams: Mapping[str, PairBatch] | None = None,
        control: StepControl | None = None,
    ) -> StepOutput:
        assert control is not None, "MSCN takes over the optimiser steps (manual_optimization)"
        net = self.nets()[phase]
        if self.in_warmup(epoch):
            loss = triplet_loss(net(batch.images, batch.tokens, batch.lengths), self.cfg.margin, hardest=False)
            logs_w: dict[str, float] = {}
            if self.cfg.score == "backbone":  # the hinge does not reach the meta-net: teach it on the meta set
                meta_loss = self.warmup_meta_loss(net, len(batch), batch.images.device)
                logs_w["meta_bce"] = float(meta_loss.detach())
                loss_all = loss + meta_loss
            else:
                loss_all = loss
            control.zero_grad()
            control.backward(loss_all)
            meta_opt = control.optimizer("meta")
            lrs = [g["lr"] for g in meta_opt.param_groups]
            for g in meta_opt.param_groups:  # the meta-net learns at the backbone's rate in the warm-up
                g["lr"] = control.lr("main")
            try:
                control.step(None)  # both optimisers in one step: one AMP scale for the one backward
            finally:
                for g, lr in zip(meta_opt.param_groups, lrs):
                    g["lr"] = lr
            return {f"warmup_{phase}": loss.detach()}, logs_w
        logs: dict[str, float] = {}
        k = self._batches[phase] = self._batches.get(phase, 0) + 1
        if k % self.cfg.meta_interval == 0:
            logs["meta_bce"] = self.meta_update(net, batch, control)
        with _frozen(net.meta):
            scores, p = net(batch.images, batch.tokens, batch.lengths, both=True)
            loss = self.batch_loss(scores, p)
            control.zero_grad("main")
            control.backward(loss)
            control.step("main")
        logs["p_train"] = float(p.detach().float().mean())
        return {f"train_{phase}": loss.detach()}, logs
