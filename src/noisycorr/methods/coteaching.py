"""Two co-taught networks with per-epoch mixture splits: the machinery NCR and IN2R share.

Two networks A and B are built from the same backbone factory. At the start of each epoch after the
warm-up, every training pair's mean-negative hinge under each network (a per-sample pass in eval
mode, fixed in-batch negatives) is turned into a clean probability by a two-component mixture and
split at a threshold (:mod:`noisycorr.selection`). Network X then trains on the split made by its
peer (co-teaching): the peer's clean subset is the main stream of X's phase, its noisy subset the
``noisy`` stream. The selections are published in ``self.selections`` for the diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.methods.base import Method, Phase
from noisycorr.methods.context import EpochContext
from noisycorr.selection import Selection, clean_probability, split_clean


class CoTeachingMethod(Method):
    """Base of the two-network methods: networks ``net_a`` / ``net_b``, splits, peer phases.

    The subclass's ``Config`` must have ``margin``, ``warmup_epochs``, ``estimator``, ``monotone``,
    ``p_threshold``, ``min_noisy_fraction`` and ``pass_batch_size``.
    """

    def __init__(self, cfg: Any, build_backbone: Callable[[], Backbone]):
        super().__init__(cfg, build_backbone)
        self.net_a = build_backbone()
        self.net_b = build_backbone()
        # The clean probability of every training pair (CPU) under each network, indexed by sample index.
        self._peer_prob: dict[str, Tensor] = {}

    def nets(self) -> dict[str, Backbone]:
        return {"A": self.net_a, "B": self.net_b}

    @staticmethod
    def peer(name: str) -> str:
        return "B" if name == "A" else "A"

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
            losses = ctx.per_sample(
                lambda b, n=net: self.per_sample_loss(n, b, self.cfg.margin),
                batch_size=self.cfg.pass_batch_size,
                desc=f"per-sample pass {name}",
            )
            prob = clean_probability(
                losses.numpy(), estimator=self.cfg.estimator, seed=ctx.seed, monotone=self.cfg.monotone
            )
            clean = split_clean(prob, threshold=self.cfg.p_threshold, min_noisy_fraction=self.cfg.min_noisy_fraction)
            sel = Selection(prob, clean, losses.numpy())
            self.selections[name] = sel
            logs[f"clean_{name}"] = float(sel.clean.mean())
        self._peer_prob = {name: torch.from_numpy(sel.prob).float() for name, sel in self.selections.items()}
        return logs

    def peer_phases(self, *, with_side: bool) -> list[Phase]:
        """Network X on its peer's clean split; the peer's noisy split alongside when ``with_side``."""
        phases = []
        for name in ("A", "B"):
            split = self.selections[self.peer(name)]
            streams = {"noisy": np.flatnonzero(~split.clean)} if with_side else {}
            phases.append(Phase(name, indices=np.flatnonzero(split.clean), streams=streams))
        return phases
