"""Vanilla baseline: one backbone trained with the VSE++ hinge triplet loss on every pair.

Faghri et al., "VSE++: Improving Visual-Semantic Embeddings with Hard Negatives", BMVC 2018. Every
training pair is trusted; the loss uses the hardest in-batch negative, optionally after a few
warm-up epochs that average over all negatives (as VSE-infinity does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.data.dataset import PairBatch
from noisycorr.losses import triplet_loss
from noisycorr.methods.base import Method
from noisycorr.registry import register_method


@register_method("vanilla")
class Vanilla(Method):
    """VSE++ hinge triplet loss on all pairs, no noise handling (Faghri et al., BMVC 2018)."""

    citation = (
        "Faghri, Fleet, Kiros, Fidler. VSE++: Improving Visual-Semantic Embeddings with Hard Negatives. BMVC 2018."
    )

    @dataclasses.dataclass
    class Config:
        margin: float = 0.2
        max_violation: bool = True
        mean_warmup_epochs: int = 0  # epochs with the mean-over-negatives loss before hardest negatives

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        super().__init__(cfg, build_backbone)
        self.net = build_backbone()

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "train", streams: Mapping[str, PairBatch] | None = None,
        control: None = None,
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        img = self.net.encode_images(batch.images)
        txt = self.net.encode_texts(batch.tokens, batch.lengths)
        scores = self.net.similarity(img, txt, batch.lengths)
        hardest = self.cfg.max_violation and epoch >= self.cfg.mean_warmup_epochs
        loss = triplet_loss(scores, self.cfg.margin, hardest=hardest)
        return {"triplet": loss}, {"hardest": float(hardest)}
