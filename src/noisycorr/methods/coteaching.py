"""Two co-taught networks with per-epoch mixture splits: the machinery NCR and IN2R share.

Two networks A and B are built from the same backbone factory. At the start of each epoch after the
warm-up, every training pair's mean-negative hinge under each network (a per-sample pass in eval
mode, fixed in-batch negatives) is turned into a clean probability by a two-component mixture and
split at a threshold (:mod:`noisycorr.selection`). Network X then trains on the split made by its
peer (co-teaching): the peer's clean subset is the main stream of X's phase, its noisy subset the
``noisy`` stream. The selections are published in ``self.selections`` for the diagnostics.

Epoch counting (``epoch_counting`` of the Config): the authors of NCR, BiCro and IN2R run
``warmup_epoch`` epochs and *then* ``num_epochs`` epochs, and their learning-rate step and NCR's
``epoch >= num_epochs // 2`` count the co-training epochs from 0. With ``co_training`` (the default)
we do the same inside one run of ``train.epochs`` = warm-up + co-training epochs: the lr schedule
starts at the end of the warm-up (:meth:`schedule_start`) and fractions of training are fractions
of the co-training epochs (:meth:`epoch_at`). ``run`` counts both from the run's first
epoch, warm-up included (how our flickr-dev presets were measured).

A method whose targets are BiCro's consistency labels (:mod:`noisycorr.methods.consistency`) sets
``self.labeler``; the split pass then also refreshes its codebooks, :meth:`consistency_targets`
computes the labels of a batch from the peer's view, and the anchors picked during an epoch are
published by :meth:`epoch_diagnostics` (their share of truly clean pairs reaches the log as
``diag_anchor_clean``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.distributed import any_across_ranks
from noisycorr.errors import InputError
from noisycorr.losses import match_confidence
from noisycorr.methods.base import Method, Phase
from noisycorr.methods.consistency import ConsistencyLabeler, pass_with_embeddings, peer_view
from noisycorr.methods.context import EpochContext
from noisycorr.selection import Selection, clean_probability, split_clean

EPOCH_COUNTING = ("co_training", "run")  # method.epoch_counting: where the lr schedule and noisy_start count from


class CoTeachingMethod(Method):
    """Base of the two-network methods: networks ``net_a`` / ``net_b``, splits, peer phases.

    The subclass's ``Config`` must have ``margin``, ``warmup_epochs``, ``epoch_counting``,
    ``estimator``, ``monotone``, ``p_threshold``, ``min_noisy_fraction`` and ``pass_batch_size``.
    """

    def __init__(self, cfg: Any, build_backbone: Callable[[], Backbone]):
        if cfg.epoch_counting not in EPOCH_COUNTING:
            raise InputError("method.epoch_counting", f"one of {list(EPOCH_COUNTING)}", repr(cfg.epoch_counting))
        super().__init__(cfg, build_backbone)
        self.net_a = build_backbone()
        self.net_b = build_backbone()
        # The clean probability of every training pair (CPU) under each network, indexed by sample index.
        self._peer_prob: dict[str, Tensor] = {}
        # Which training pairs were anchors during the current epoch (consistency targets only).
        self._anchor_hits: np.ndarray | None = None

    @property
    def consistency_labeler(self) -> ConsistencyLabeler | None:
        """The soft-label component when the method trains with consistency labels, else None."""
        labeler = self._modules.get("labeler")
        return labeler if isinstance(labeler, ConsistencyLabeler) else None

    def nets(self) -> dict[str, Backbone]:
        return {"A": self.net_a, "B": self.net_b}

    @staticmethod
    def peer(name: str) -> str:
        return "B" if name == "A" else "A"

    def schedule_start(self) -> int:
        """The lr schedule counts from the end of the warm-up (``epoch_counting: co_training``) or
        from the run's first epoch (``run``)."""
        return self.cfg.warmup_epochs if self.cfg.epoch_counting == "co_training" else 0

    def epoch_at(self, fraction: float, epochs: int) -> int:
        """The run epoch at ``fraction`` of training: with ``co_training`` counting,
        ``warmup + floor(fraction * (epochs - warmup))`` (the authors' ``epoch >= num_epochs // 2`` for
        0.5), with ``run`` counting ``floor(fraction * epochs)``."""
        start = self.schedule_start()
        return start + int(fraction * max(epochs - start, 0))

    def in_warmup(self, epoch: int) -> bool:
        """Whether ``epoch`` is a warm-up epoch; after it, the splits must have been fitted."""
        if epoch < self.cfg.warmup_epochs:
            return True
        if not self.selections:
            raise RuntimeError(
                f"{type(self).__name__}: epoch {epoch} is past the warm-up but no split was fitted "
                "(on_epoch_start must run fit_selections first)"
            )
        return False

    def fit_selections(self, ctx: EpochContext) -> dict[str, float]:
        """Per-sample pass, mixture and split for each network; fills ``self.selections``.

        Returns:
            ``clean_A`` / ``clean_B``: the fraction of pairs each network calls clean.
        """
        logs: dict[str, float] = {}
        for name, net in self.nets().items():
            values = ctx.per_sample(
                lambda b, n=net: self.pass_values(n, b),
                batch_size=self.cfg.pass_batch_size,
                desc=f"per-sample pass {name}",
            )
            losses = values[:, 0].contiguous() if values.dim() == 2 else values
            labeler = self.consistency_labeler
            if labeler is not None and labeler.uses_codebook:
                logs.update(labeler.refresh(name, values[:, 1:], ctx.seed))
            prob = clean_probability(
                losses.numpy(), estimator=self.cfg.estimator, seed=ctx.seed, monotone=self.cfg.monotone
            )
            clean = split_clean(prob, threshold=self.cfg.p_threshold, min_noisy_fraction=self.cfg.min_noisy_fraction)
            sel = Selection(prob, clean, losses.numpy())
            self.selections[name] = sel
            logs[f"clean_{name}"] = float(sel.clean.mean())
        self._peer_prob = {name: torch.from_numpy(sel.prob).float() for name, sel in self.selections.items()}
        self._anchor_hits = np.zeros(ctx.n_samples, dtype=bool) if self.consistency_labeler is not None else None
        return logs

    def pass_values(self, net: Backbone, batch: Any) -> Tensor:
        """What the split pass computes per pair: (B,) losses, or, when the labeller keeps codebooks,
        (B, 1 + 2D): the loss, then the global image and caption embeddings its refresh reads."""
        labeler = self.consistency_labeler
        if labeler is not None and labeler.uses_codebook:
            return pass_with_embeddings(net, batch, self.cfg.margin)
        return self.per_sample_loss(net, batch, self.cfg.margin)

    def consistency_targets(
        self, phase: str, batch: Any, side: Any | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Soft labels for the batch (and side batch) that network ``phase`` trains on, from its peer.

        The peer scores the batch in eval mode; its most confident pairs (NCR's unnormalised match
        confidence) are the anchor candidates, purified in the peer's score matrix or, with
        ``purify_view: trained``, in network ``phase``'s own (eval mode). Returns (B,) labels and (U,)
        side labels or None.
        """
        labeler = self.consistency_labeler
        assert labeler is not None, "consistency_targets needs self.labeler"
        peer = self.peer(phase)
        scores, img, txt = peer_view(self.nets()[peer], batch)
        confidence = match_confidence(scores, self.cfg.margin, normalise=False)
        side_img = side_txt = None
        if side is not None:
            _, side_img, side_txt = peer_view(self.nets()[peer], side)
        dominance = None
        if labeler.opts.purify and labeler.opts.purify_view == "trained":
            dominance = peer_view(self.nets()[phase], batch)[0]
        y, y_side, anchors = labeler.labels(peer, scores, confidence, img, txt, side_img, side_txt, dominance)
        if self._anchor_hits is not None:
            self._anchor_hits[batch.index.cpu().numpy()[anchors.cpu().numpy()]] = True
        return y, y_side, anchors

    def epoch_diagnostics(self) -> dict[str, Selection]:
        """The pairs used as anchors during the epoch just trained (consistency targets only)."""
        hits = self._anchor_hits
        if hits is not None:  # each rank saw its slice of every batch
            hits = any_across_ranks(hits)
        if hits is None or not hits.any():
            return {}
        return {"anchors": Selection(None, hits, groups={"anchor": hits})}

    def peer_phases(self, *, with_side: bool) -> list[Phase]:
        """Network X on its peer's clean split; the peer's noisy split alongside when ``with_side``."""
        phases = []
        for name in ("A", "B"):
            split = self.selections[self.peer(name)]
            streams = {"noisy": np.flatnonzero(~split.clean)} if with_side else {}
            phases.append(Phase(name, indices=np.flatnonzero(split.clean), streams=streams))
        return phases
