"""PCSR: Pseudo-label Consistency-Guided Sample Refinement (Liu, Liu, Feng, Huang, "Pseudo-label
Consistency-Guided Sample Refinement for Noisy Correspondence Learning", AAAI 2026, arXiv 2509.15623).
No public code; this is our reading of the abstract (../shared/reference/methods.md, section 2.15).

In plain words: two networks A and B are warmed up on every pair (NCR's mean-negative hinge). Then,
every epoch, each network splits the pairs three ways:

1. *Confidence*: its per-sample mean-negative hinge is fitted with a two-component mixture (the
   engine's selection, as NCR); a pair whose clean probability exceeds ``p_threshold`` is clean, the
   others are noisy.
2. *Pseudo-labels*: for the image of every noisy pair, the network searches the whole training set
   for the caption it matches best (cosine of global embeddings, chunked over queries and keys);
   that caption's sample index is the pair's pseudo-label of this epoch. With ``replace: image`` or
   ``both``, each noisy caption also gets the training pair whose image it matches best. The labels
   of the last ``window`` epochs are kept per pair (a buffer saved in the checkpoint).
3. *Pseudo-label Consistency Score* (PCS): how stable that history is. A noisy pair is *refinable*
   when its PCS reaches ``pcs_threshold``, else *ambiguous*.

Adaptive Pair Optimization: network X trains on the groups of its peer (co-teaching; ``coteaching:
false`` uses its own), in one update per batch that sums: the hinge on a batch of clean pairs
(``clean_loss``); a robust loss on a batch of ambiguous pairs (RCL's complementary contrastive loss,
which learns only from the negatives); and the clean pairs' hinge on a batch of refinable pairs, each
trained with its replacement: its own image with the caption its pseudo-label points to (text
replacement), and/or its own caption with the pseudo-label's image. Replacement targets come only
from the networks' own search over the training embeddings; the training data's pairing is never
read (the diagnostics score their precision against the injected noise, for the log only).
Evaluation averages both networks.

Our reading of what the abstract leaves open (each is a Config option, ablated in
``configs/bench/pcsr-ablation-flickr-dev.yaml``):

- ``clean_loss`` (``mean``): the abstract's "direct training" of clean pairs and of replaced pairs:
  the hinge averaged over the in-batch negatives (VSE-infinity's and NCR's warm-up loss). The
  hardest-negative hinge (``hardest``) collapsed on flickr-dev at 60 % noise, where the confidence
  split's clean side is still ~43 % mismatched (validation rSum 172 at the end of the warm-up, 136
  and 123 after the next two epochs, seed 0); ``soft`` is NCR's soft margin (target ``w + (1 - w) p``
  of the peer's clean probability w and the network's confidence p; replaced pairs get w = 1).
- ``window`` (3): epochs of pseudo-label history.
- ``pcs`` (``agree``): PCS = the share of the window's labels equal to the latest one (``run``: the
  length of the streak of labels equal to the latest, ending now, over the window). An epoch in
  which a pair was clean, or before the history filled, holds no label and never agrees, so a pair
  must be noisy and consistent for the whole window to reach 1.
- ``pcs_threshold`` (1.0): refinable when PCS >= it (> 1 turns the refinement off: every noisy pair
  is ambiguous).
- ``robust_loss`` (``ccl``): the ambiguous pairs' loss: ``ccl`` (RCL's complementary contrastive,
  ``log`` form), ``rce`` (IN2R's cross-entropy + reverse cross-entropy), ``hinge`` (the clean
  pairs' loss: no robustness), ``none`` (ambiguous pairs are dropped).
- ``replace`` (``text``): the abstract's "text replacement"; ``image`` replaces the image instead,
  ``both`` trains both replacements. The PCS is read from the text history unless ``replace:
  image``.
- Pseudo-labels are searched with the cosine of the networks' global embeddings (exact for the
  VSE / global backbones; a shortcut for SGRAF, whose head would be too costly over the training set).
- The search may return the pair's own caption: the pair then trains as it is.
- A batch with the same replacement twice keeps the first (a duplicate would be its own negative).
- Replacement captions / images are read without augmentation (``ctx.fetch``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.backbones.ops import l2norm
from noisycorr.data.dataset import PairBatch
from noisycorr.errors import InputError
from noisycorr.losses import (
    complementary_contrastive_loss,
    match_confidence,
    rce_infonce_loss,
    soft_margin,
    triplet_loss,
)
from noisycorr.methods.base import Phase, StepOutput
from noisycorr.methods.consistency import pass_with_embeddings
from noisycorr.methods.context import EpochContext
from noisycorr.methods.coteaching import CoTeachingMethod
from noisycorr.methods.memory import SizedByCheckpoint, nearest_neighbours
from noisycorr.methods.ncr import warmup_loss
from noisycorr.registry import register_method
from noisycorr.selection import ESTIMATORS, Selection, clean_probability, split_clean

__all__ = ["PCSR", "PseudoLabelHistory", "best_partner", "consistency_score", "three_way_split"]

PCS_KINDS = ("agree", "run")
ROBUST_LOSSES = ("ccl", "rce", "hinge", "none")
CLEAN_LOSSES = ("mean", "hardest", "soft")
REPLACE = ("text", "image", "both")
GROUPS = ("clean", "ambiguous", "refinable")


@torch.no_grad()
def best_partner(queries: Tensor, keys: Tensor, *, query_chunk: int = 2048, key_chunk: int = 16384) -> Tensor:
    """(Q,) index of the key with the largest cosine to each query.

    Blocks of ``query_chunk`` queries against blocks of ``key_chunk`` keys, so memory is bounded by
    (query_chunk, key_chunk + 1) scores whatever Q and N.

    Args:
        queries: (Q, D) embeddings.
        keys: (N, D) embeddings, N >= 1.
    """
    q, k = l2norm(queries.float()), l2norm(keys.float())
    out = [
        nearest_neighbours(q[i : i + query_chunk], k, 1, chunk=key_chunk)[:, 0]
        for i in range(0, q.shape[0], query_chunk)
    ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=queries.device)


def consistency_score(history: Tensor, kind: str = "agree") -> Tensor:
    """(N,) Pseudo-label Consistency Score in [0, 1] of an (N, W) label history, oldest column first.

    -1 marks an epoch without a label; it never agrees, and a pair whose latest entry is -1 scores 0.

    Args:
        history: (N, W) int64.
        kind: ``agree``: share of the W labels equal to the latest one; ``run``: length of the
            trailing streak of labels equal to the latest one, over W.
    """
    if kind not in PCS_KINDS:
        raise InputError("method.pcs", f"one of {list(PCS_KINDS)}", repr(kind))
    latest = history[:, -1:]
    same = (history == latest) & (latest >= 0)
    w = history.shape[1]
    if kind == "agree":
        return same.float().sum(1) / w
    # trailing streak: positions after the last disagreement, counted from the end
    broken = (~same).flip(1).long().cumsum(1) > 0
    return (~broken).float().sum(1) / w


def three_way_split(clean: np.ndarray, pcs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """(N,) bool masks ``clean`` / ``ambiguous`` (noisy, PCS < threshold) / ``refinable`` (noisy, PCS >= threshold)."""
    clean = np.asarray(clean, dtype=bool)
    stable = np.asarray(pcs) >= threshold
    return {"clean": clean, "ambiguous": ~clean & ~stable, "refinable": ~clean & stable}


class PseudoLabelHistory(SizedByCheckpoint):
    """Per-pair pseudo-labels of the last W epochs for each network and direction, as buffers.

    Buffers ``{direction}_{net}`` (N, W) int64, oldest column first, -1 = no label (empty until the
    first :meth:`push`, then sized by the training set), so they are saved in the checkpoint and a
    resumed run continues with the same history.
    """

    def __init__(self, window: int, names: tuple[str, ...] = ("A", "B"), directions: tuple[str, ...] = ("text",)):
        super().__init__()
        self.window = int(window)
        for d in directions:
            for name in names:
                self.register_buffer(f"{d}_{name}", torch.zeros(0, self.window, dtype=torch.long))

    def get(self, direction: str, name: str) -> Tensor:
        return getattr(self, f"{direction}_{name}")

    @torch.no_grad()
    def push(self, direction: str, name: str, labels: Tensor) -> Tensor:
        """Append this epoch's (N,) labels (-1 = none), dropping the oldest column; returns the (N, W) history."""
        old = self.get(direction, name)
        if old.shape[0] != labels.shape[0]:
            old = torch.full((labels.shape[0], self.window), -1, dtype=torch.long, device=old.device)
        new = torch.cat([old[:, 1:], labels.to(old).reshape(-1, 1)], dim=1)
        setattr(self, f"{direction}_{name}", new)
        return new


@register_method("pcsr")
class PCSR(CoTeachingMethod):
    """Pseudo-label consistency: clean / ambiguous / refinable pairs, robust loss and text replacement (AAAI 2026)."""

    citation = (
        "Liu, Liu, Feng, Huang. Pseudo-label Consistency-Guided Sample Refinement for Noisy Correspondence "
        "Learning. AAAI 2026. arXiv:2509.15623"
    )
    training_only_state = ("history.",)

    @dataclasses.dataclass
    class Config:
        margin: float = 0.2  # hinge of clean and refined pairs, and the split statistic
        clean_loss: str = "mean"  # clean and refined pairs: mean (over negatives) | hardest | soft (NCR's margin)
        warmup_epochs: int = 2  # NCR's mean-negative hinge on all pairs, each network alone
        epoch_counting: str = "co_training"  # co_training | run (see CoTeachingMethod)
        estimator: str = "gmm"  # clean-probability estimator: gmm | bmm
        monotone: bool = True  # clean probability made non-increasing in the loss
        p_threshold: float = 0.5  # clean if the clean probability is above this
        min_noisy_fraction: float = 0.01  # when everything looks clean, the least clean 1 % is called noisy
        pass_batch_size: int | None = None  # per-sample pass batch (default: the training batch size)
        coteaching: bool = True  # network X trains on its peer's groups; False: on its own
        window: int = 3  # epochs of pseudo-label history
        pcs: str = "agree"  # agree (share of the window equal to the latest label) | run (trailing streak)
        pcs_threshold: float = 1.0  # a noisy pair is refinable when PCS >= this; > 1: never
        robust_loss: str = "ccl"  # ambiguous pairs: ccl (RCL) | rce (IN2R's) | hinge | none
        temperature: float = 0.05  # of the robust loss's softmax
        ambiguous_weight: float = 1.0
        replace: str = "text"  # refinable pairs: text (caption replaced) | image | both
        refine_weight: float = 1.0
        search_chunk: int = 2048  # queries per block of the pseudo-label search (keys: 16,384 per block)

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        checks = (
            ("estimator", cfg.estimator in ESTIMATORS, f"one of {list(ESTIMATORS)}"),
            ("window", int(cfg.window) >= 1, "a positive integer"),
            ("pcs", cfg.pcs in PCS_KINDS, f"one of {list(PCS_KINDS)}"),
            ("pcs_threshold", cfg.pcs_threshold >= 0, "a value >= 0"),
            ("robust_loss", cfg.robust_loss in ROBUST_LOSSES, f"one of {list(ROBUST_LOSSES)}"),
            ("clean_loss", cfg.clean_loss in CLEAN_LOSSES, f"one of {list(CLEAN_LOSSES)}"),
            ("replace", cfg.replace in REPLACE, f"one of {list(REPLACE)}"),
            ("temperature", cfg.temperature > 0, "a positive value"),
            ("search_chunk", int(cfg.search_chunk) >= 1, "a positive integer"),
        )
        for key, ok, expected in checks:
            if not ok:
                raise InputError(f"method.{key}", expected, repr(getattr(cfg, key)))
        super().__init__(cfg, build_backbone)
        self.history = PseudoLabelHistory(cfg.window, directions=self.directions)
        self._fetch: Callable[[np.ndarray], PairBatch] | None = None

    @property
    def directions(self) -> tuple[str, ...]:
        """Which pseudo-labels are searched: ``text`` (a caption for each noisy image), ``image``."""
        return {"text": ("text",), "image": ("image",), "both": ("text", "image")}[self.cfg.replace]

    def source(self, name: str) -> str:
        """The network whose groups network ``name`` trains on (its peer under co-teaching)."""
        return self.peer(name) if self.cfg.coteaching else name

    # ---------------------------------------------------------------- epoch hooks

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        fetch = getattr(ctx, "fetch", None)
        if fetch is None:
            raise InputError("ctx", "a pair context with fetch (PairEpochContext)", type(ctx).__name__)
        self._fetch = fetch
        if epoch < self.cfg.warmup_epochs:
            self.selections = {}
            return {"warmup": 1.0}
        logs: dict[str, float] = {"warmup": 0.0}
        for name, net in self.nets().items():
            values = ctx.per_sample(
                lambda b, n=net: pass_with_embeddings(n, b, self.cfg.margin),
                batch_size=self.cfg.pass_batch_size, desc=f"per-sample pass {name}",
            )
            sel, sel_logs = self._select(name, values, ctx.seed)
            self.selections[name] = sel
            logs.update(sel_logs)
        return logs

    def _select(self, name: str, values: Tensor, seed: int = 0) -> tuple[Selection, dict[str, float]]:
        """Network ``name``'s three-way split from its pass values (N, 1 + 2D): loss, image, caption embeddings."""
        cfg = self.cfg
        losses = values[:, 0].contiguous().numpy()
        d = (values.shape[1] - 1) // 2
        g_img, g_txt = values[:, 1 : 1 + d], values[:, 1 + d :]
        prob = clean_probability(losses, estimator=cfg.estimator, seed=seed, monotone=cfg.monotone)
        clean = split_clean(prob, threshold=cfg.p_threshold, min_noisy_fraction=cfg.min_noisy_fraction)
        noisy = torch.from_numpy(np.flatnonzero(~clean))
        latest: dict[str, Tensor] = {}
        for direction in self.directions:
            queries, keys = (g_img, g_txt) if direction == "text" else (g_txt, g_img)
            labels = torch.full((values.shape[0],), -1, dtype=torch.long)
            labels[noisy] = best_partner(queries[noisy], keys, query_chunk=int(cfg.search_chunk)).cpu()
            hist = self.history.push(direction, name, labels)
            latest[direction] = hist[:, -1].cpu()
        primary = "image" if cfg.replace == "image" else "text"
        pcs = consistency_score(self.history.get(primary, name), cfg.pcs).cpu().numpy()
        groups = three_way_split(clean, pcs, cfg.pcs_threshold)
        refinable = torch.from_numpy(groups["refinable"])
        partners = {
            {"text": "caption", "image": "image"}[d]: torch.where(refinable, lab, torch.full_like(lab, -1)).numpy()
            for d, lab in latest.items()
        }
        n = max(len(clean), 1)
        logs = {f"share_{g}_{name}": float(m.sum() / n) for g, m in groups.items()}
        logs[f"pcs_noisy_{name}"] = float(pcs[~clean].mean()) if (~clean).any() else float("nan")
        return Selection(prob, clean, losses, groups=groups, partners=partners), logs

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """Warm-up: each network on all pairs. Then network X on the clean pairs of its source
        (:meth:`source`), with its ambiguous and refinable pairs drawn alongside."""
        if self.in_warmup(epoch):
            return [Phase("A"), Phase("B")]
        phases = []
        for name in ("A", "B"):
            groups = self.selections[self.source(name)].groups or {}
            streams = {g: np.flatnonzero(groups[g]) for g in ("ambiguous", "refinable")}
            if self.cfg.robust_loss == "none":
                streams.pop("ambiguous")
            phases.append(Phase(name, indices=np.flatnonzero(groups["clean"]), streams=streams))
        return phases

    # ---------------------------------------------------------------- training

    @staticmethod
    def _scores(net: Backbone, batch: PairBatch) -> Tensor:
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        return net.similarity(img, txt, batch.lengths)

    def replaced(self, name: str, batch: PairBatch, kind: str) -> PairBatch | None:
        """The refinable ``batch`` as network ``name`` trains it: each pair with the caption
        (``kind="caption"``) or image (``"image"``) of the sample its source's pseudo-label points to.

        Pairs repeating an earlier pair's replacement are left out; None when fewer than 2 remain.
        """
        if self._fetch is None:
            raise RuntimeError("PCSR: replacement before on_epoch_start gave the method the context")
        partners = (self.selections[self.source(name)].partners or {})[kind]
        target = partners[batch.index.cpu().numpy()]
        if (target < 0).any():
            raise RuntimeError("PCSR: a refinable pair without a pseudo-label")
        _, first = np.unique(target, return_index=True)
        keep = np.sort(first)
        if len(keep) < 2:
            return None
        other = self._fetch(target[keep]).to(batch.images.device)
        sel = torch.from_numpy(keep).to(batch.images.device)
        if kind == "caption":
            lengths = other.lengths
            tokens = other.tokens[:, : int(lengths.max())]
            return PairBatch(batch.images[sel], tokens, lengths, batch.index[sel])
        return PairBatch(other.images, batch.tokens[sel], batch.lengths[sel], batch.index[sel])

    def direct(self, scores: Tensor, w: Tensor | None = None) -> Tensor:
        """The clean (and replaced) pairs' hinge on their (B, B) scores (``clean_loss``); ``w`` (B,) the
        pairs' clean probability for ``soft`` (None: 1)."""
        kind, m = self.cfg.clean_loss, self.cfg.margin
        if kind == "mean":
            return triplet_loss(scores, m, hardest=False)
        if kind == "soft" and w is not None:
            p = match_confidence(scores.detach(), m)
            return triplet_loss(scores, soft_margin(w + (1.0 - w) * p, m), hardest=True)
        return triplet_loss(scores, m, hardest=True)

    def robust(self, scores: Tensor) -> Tensor:
        """The ambiguous pairs' loss on their (B, B) scores (``robust_loss``)."""
        kind = self.cfg.robust_loss
        if kind == "ccl":
            return complementary_contrastive_loss(scores, self.cfg.temperature)
        if kind == "rce":
            return rce_infonce_loss(scores, self.cfg.temperature)
        return self.direct(scores)

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "A", streams: Mapping[str, PairBatch] | None = None,
        control: Any = None,
    ) -> StepOutput:
        net = self.nets()[phase]
        if self.in_warmup(epoch):
            return {f"warmup_{phase}": warmup_loss(self._scores(net, batch), self.cfg.margin)}, {}
        streams = streams or {}
        prob = self.selections[self.source(phase)].prob
        w = torch.from_numpy(prob[batch.index.cpu().numpy()]).float().to(batch.images.device)
        losses = {"clean": self.direct(self._scores(net, batch), w)}
        logs: dict[str, float] = {}
        amb = streams.get("ambiguous")
        if amb is not None and len(amb) > 1 and self.cfg.robust_loss != "none":
            losses["ambiguous"] = self.cfg.ambiguous_weight * self.robust(self._scores(net, amb))
        ref = streams.get("refinable")
        if ref is not None and len(ref) > 1:
            for kind in ("caption", "image"):
                if kind not in (self.selections[self.source(phase)].partners or {}):
                    continue
                refined = self.replaced(phase, ref, kind)
                if refined is None:
                    continue
                losses[f"refine_{kind}"] = self.cfg.refine_weight * self.direct(self._scores(net, refined))
                logs[f"refined_{kind}"] = float(len(refined))
        return losses, logs
