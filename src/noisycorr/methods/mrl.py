"""MRL: Multimodal Robust Learning (Hu, Peng, Zhu, Zhen, Lin, "Learning Cross-Modal Retrieval with
Noisy Labels", CVPR 2021).

Algorithm: an MLP encoder per modality maps features onto the unit sphere and a classifier shared
by both modalities (orthogonally initialised, columns renormalised to unit length before every
step) scores the classes, ``logits = f @ W``. Two losses are mixed with weight beta:

* Robust Clustering (RC), per modality: with ``p = softmax(logits / tau)``, minimise
  ``log(1 - p_y)``, the log of the probability mass outside the given label. Its gradient fades for
  items the model already disagrees with strongly, so wrong labels pull less than with CE.
* Multimodal Contrastive (MC): over the 2B embeddings of a batch, each item's positive is its pair
  in the other modality and every other item (of either modality) is a negative; the loss is the
  InfoNCE of that positive at temperature tau, counted in both orientations as MRL does (the two are
  equal because the similarity matrix is symmetric, so MC is twice the one-sided value).

Loss = beta * (RC_image + RC_text) + (1 - beta) * MC. MRL's Wikipedia command: beta 0.7, Adam
(0.5, 0.999), lr 1e-4 with cosine decay, batch 100, 30 epochs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from noisycorr.methods.labeled_base import LabelBatch, LabelMethod, SharedClassifier
from noisycorr.registry import register_method


def robust_clustering_loss(logits: Tensor, targets: Tensor, tau: float = 1.0) -> Tensor:
    """MRL's RC loss, mean over the batch of ``log(sum_{c not in y} softmax(logits / tau)_c)``.

    Args:
        logits: (B, C).
        targets: (B, C) multi-hot labels.
        tau: softmax temperature.

    Returns:
        Scalar loss (it is negative; it decreases as the label's probability grows).
    """
    z = logits / tau
    outside = torch.logsumexp(z.masked_fill(targets > 0, float("-inf")), dim=1)
    return (outside - torch.logsumexp(z, dim=1)).mean()


def multimodal_contrastive_loss(image: Tensor, text: Tensor, tau: float = 1.0) -> Tensor:
    """MRL's MC loss over the 2B unit embeddings of a batch.

    Args:
        image: (B, D) unit image embeddings.
        text: (B, D) unit text embeddings; row i is paired with image row i.
        tau: temperature.

    Returns:
        Scalar, twice the mean InfoNCE of each item's cross-modal partner against all other items.
    """
    b = image.shape[0]
    feats = torch.cat([image, text])
    logits = feats @ feats.T / tau
    eye = torch.eye(2 * b, dtype=torch.bool, device=feats.device)
    logits = logits.masked_fill(eye, float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(feats.device)
    return 2.0 * F.cross_entropy(logits, partner)


@register_method("mrl")
class MRL(LabelMethod):
    """Robust clustering loss on a shared classifier plus a multimodal contrastive loss (Hu et al., CVPR 2021)."""

    citation = "Hu, Peng, Zhu, Zhen, Lin. Learning Cross-Modal Retrieval with Noisy Labels. CVPR 2021."

    @dataclasses.dataclass
    class Config:
        beta: float = 0.7  # weight of the RC loss; 1 - beta weighs MC
        tau: float = 1.0  # temperature of both losses

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
        tau = self.cfg.tau
        rc = robust_clustering_loss(self.classifier(img), batch.image_labels, tau)
        rc = rc + robust_clustering_loss(self.classifier(txt), batch.text_labels, tau)
        mc = multimodal_contrastive_loss(img, txt, tau)
        beta = self.cfg.beta
        return {"rc": beta * rc, "mc": (1.0 - beta) * mc}, {}
