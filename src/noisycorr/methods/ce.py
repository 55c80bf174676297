"""Cross-entropy baseline for noisy labels (the "CE" row of MRL's ablation, Hu et al., CVPR 2021).

Algorithm: an MLP encoder per modality maps features onto the unit sphere; a classifier shared by
both modalities (MRL's: orthogonally initialised, columns renormalised to unit length before every
step) gives logits ``f @ W / tau``; the loss is the cross-entropy of the image logits against the
image's noisy label plus that of the text logits against the text's noisy label. Nothing guards
against wrong labels; it is the reference the robust methods have to beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from noisycorr.methods.labeled_base import LabelBatch, LabelMethod, SharedClassifier, soft_cross_entropy
from noisycorr.registry import register_method


@register_method("ce")
class CrossEntropy(LabelMethod):
    """Cross-entropy on the noisy labels with a shared classifier, no noise handling (MRL's CE baseline)."""

    citation = (
        "Hu, Peng, Zhu, Zhen, Lin. Learning Cross-Modal Retrieval with Noisy Labels. CVPR 2021 "
        "(the CE baseline of its ablation)."
    )

    @dataclasses.dataclass
    class Config:
        tau: float = 1.0  # logits are f @ W / tau

    def __init__(self, cfg: Config, **kwargs: Any):
        super().__init__(cfg, **kwargs)
        self.classifier = SharedClassifier(self.embed_dim, self.num_classes)

    def training_step(
        self, batch: LabelBatch, epoch: int, *, phase: str = "train", streams: Mapping[str, LabelBatch] | None = None,
        control: None = None,
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        self.classifier.renormalize()
        img = self.encode_images(batch.images)
        txt = self.encode_texts(batch.texts)
        loss_img = soft_cross_entropy(self.classifier(img) / self.cfg.tau, batch.image_labels).mean()
        loss_txt = soft_cross_entropy(self.classifier(txt) / self.cfg.tau, batch.text_labels).mean()
        return {"ce": loss_img + loss_txt}, {}
