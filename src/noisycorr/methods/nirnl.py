"""NIRNL: Neighbor-aware Instance Refining with Noisy Labels (Liu, Pu, Xu, Chen, Liu, Sun, "Neighbor-aware
Instance Refining with Noisy Labels for Cross-Modal Retrieval", AAAI 2026).

Algorithm, every epoch:

1. Class prototypes. Embed the whole training set; for each class, take the image and text
   embeddings of the items carrying that (noisy) label and compute their free-support Wasserstein
   barycenter (entropic optimal transport solved by Sinkhorn iterations). With one support point per
   class, the default, the barycenter is the mean of those embeddings. Class probabilities of an
   embedding f are ``softmax(f @ prototypes.T)``.
2. Neighbour-aware instance refining (NIR). In each modality separately, every training item takes
   the labels of its k nearest training neighbours (cosine, itself excluded) and averages them into
   a vote. An item *agrees* in a modality when the vote's top class is one of its given labels. A pair
   is *pure* when it agrees in both modalities, *hard* when in exactly one, *noisy* when in neither.
3. Training, subset after subset (pure, then hard, then noisy), in shuffled batches, each loss plus
   ``alpha`` times the cross-modal margin preserving (CMP) loss, a bidirectional hinge
   ``mean_ij [margin + S_ij - S_ii]_+`` over the batch similarity matrix S (both directions):
   - pure: cross-entropy of the image and of the text probabilities against the given label;
   - hard: the same cross-entropies, each class weighted by ``w = 1 - (1 - p_img)(1 - p_txt)``
     (detached), the probability that at least one modality predicts the class;
   - noisy: a pseudo-label, the one-hot argmax of the same ``w``; L1 distance between it and each
     modality's probabilities.

Schedule of the authors' code: batch 256, 100 epochs, Adam lr 1e-4, alpha 0.9, margin 0.9, k 10,
entropic regularisation 5, one barycenter per class. The weight update of the barycenter masses
(Cuturi & Doucet's outer loop) is not run: masses stay uniform, which changes nothing with one
support point per class.

A class that no training item carries (no image and no text label, after the noise) has no
barycenter: the authors' code stops there (``k_barycenter`` draws a support point from an empty set,
train_model_knn_v2.py:299, 310). Here it is skipped: its logit is masked out of every softmax (it gets
probability 0, it is never a pseudo-label) and the epoch's log row counts it as ``empty_classes``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noisycorr.methods.base import Phase
from noisycorr.methods.context import LabelEpochContext
from noisycorr.methods.labeled_base import HARD, NOISY, PURE, LabelBatch, LabelMethod, soft_cross_entropy
from noisycorr.registry import register_method
from noisycorr.selection import Selection

EMPTY_CLASS_LOGIT = -1e4  # the logit of a class without a barycenter: softmax probability 0


def sinkhorn(a: Tensor, b: Tensor, cost: Tensor, reg: float, *, max_iter: int = 1000, tol: float = 1e-9) -> Tensor:
    """Entropic optimal transport plan between two discrete measures (log-domain Sinkhorn).

    Minimises ``<T, cost> - reg * H(T)`` over plans T with row sums ``a`` and column sums ``b``.

    Args:
        a: (n,) source masses (sum 1).
        b: (m,) target masses (sum 1).
        cost: (n, m) transport costs.
        reg: entropic regularisation (> 0).
        max_iter: iteration cap.
        tol: stop when the L1 error of the row marginals falls below it.

    Returns:
        (n, m) plan.
    """
    cost = cost.to(torch.float64)
    log_a, log_b = a.to(torch.float64).log(), b.to(torch.float64).log()
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for it in range(max_iter):
        f = reg * (log_a - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        g = reg * (log_b - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
        if it % 10 == 9:
            rows = torch.exp((f[:, None] + g[None, :] - cost) / reg).sum(1)
            if (rows - a.to(torch.float64)).abs().sum() < tol:
                break
    return torch.exp((f[:, None] + g[None, :] - cost) / reg)


def wasserstein_barycenter(
    points: Tensor,
    k: int = 1,
    *,
    reg: float = 5.0,
    step: float = 0.5,
    tol: float = 1e-2,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Free-support Wasserstein barycenter of an empirical measure with ``k`` uniform support points.

    Starts from ``k`` random points of the measure and moves the support towards the
    transport-weighted means: ``H <- (1 - step) H + step * (T @ points) / a`` with T the Sinkhorn plan
    for the Euclidean cost (Cuturi & Doucet, ICML 2014), until H moves less than ``tol``.

    Args:
        points: (m, D) samples with uniform mass.
        k: support size.
        reg: entropic regularisation of the Sinkhorn plan.
        step: relaxation of the support update.
        tol: stop when ``||H - H_prev||`` falls below it.
        max_iter: cap on support updates.
        generator: RNG of the initial support (the global one when None).

    Returns:
        (k, D) support points (for k = 1, the mean of ``points`` up to ``tol``).
    """
    m = points.shape[0]
    x = points.to(torch.float64)
    start = torch.randint(0, m, (k,), generator=generator).to(points.device)
    h = x[start].clone()
    a = torch.full((k,), 1.0 / k, dtype=torch.float64, device=points.device)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64, device=points.device)
    for _ in range(max_iter):
        plan = sinkhorn(a, b, torch.cdist(h, x), reg)
        prev = h
        h = (1 - step) * h + step * (plan @ x) / a[:, None]
        if torch.linalg.norm(h - prev) < tol:
            break
    return h.to(points.dtype)


def margin_ranking_loss(image: Tensor, text: Tensor, margin: float) -> Tensor:
    """NIRNL's CMP loss: the bidirectional hinge averaged over all B x B entries.

    Args:
        image: (B, D) unit image embeddings.
        text: (B, D) unit text embeddings, row i paired with image row i.
        margin: hinge margin.

    Returns:
        Scalar ``mean_ij [m + S_ij - S_ii]_+ + mean_ij [m + S_ji - S_ii]_+`` with the diagonal terms
        (constant m) left out of the sum but not of the count.
    """
    sim = image @ text.T
    pos = sim.diag()[:, None]
    off = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    i2t = (margin + sim - pos).clamp(min=0) * off
    t2i = (margin + sim.T - pos).clamp(min=0) * off
    return i2t.mean() + t2i.mean()


def knn_label_votes(feats: Tensor, labels: Tensor, k: int, *, chunk: int = 2048) -> Tensor:
    """Average label of each item's k nearest neighbours (cosine, the item itself excluded).

    Args:
        feats: (N, D) unit embeddings.
        labels: (N, C) multi-hot labels.
        k: neighbours.
        chunk: rows scored at a time.

    Returns:
        (N, C) votes in [0, 1].
    """
    n = feats.shape[0]
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        sim = feats[start : start + chunk] @ feats.T
        rows = torch.arange(sim.shape[0], device=sim.device)
        sim[rows, rows + start] = float("-inf")
        idx = sim.topk(k, dim=1).indices
        out.append(labels[idx].float().mean(1))
    return torch.cat(out)


def refine_partition(image_votes: Tensor, text_votes: Tensor, image_labels: Tensor, text_labels: Tensor) -> Tensor:
    """NIR split: PURE when both modalities' top vote is a given label, HARD when one is, NOISY when none.

    Args:
        image_votes: (N, C) kNN votes in the image space.
        text_votes: (N, C) kNN votes in the text space.
        image_labels: (N, C) given multi-hot labels of the images.
        text_labels: (N, C) given multi-hot labels of the texts.

    Returns:
        (N,) int8 codes (``PURE``, ``HARD``, ``NOISY``).
    """
    img_ok = image_labels.gather(1, image_votes.argmax(1, keepdim=True)).squeeze(1) > 0
    txt_ok = text_labels.gather(1, text_votes.argmax(1, keepdim=True)).squeeze(1) > 0
    codes = torch.full(img_ok.shape, NOISY, dtype=torch.int8, device=img_ok.device)
    codes[img_ok ^ txt_ok] = HARD
    codes[img_ok & txt_ok] = PURE
    return codes


@register_method("nirnl")
class NIRNL(LabelMethod):
    """Neighbour-voted pure / hard / noisy split with per-subset losses and CMP (Liu et al., AAAI 2026)."""

    citation = (
        "Liu, Pu, Xu, Chen, Liu, Sun. Neighbor-aware Instance Refining with Noisy Labels for Cross-Modal "
        "Retrieval. AAAI 2026."
    )
    encoder_out_bias = False
    encoder_uniform_out = True

    @dataclasses.dataclass
    class Config:
        alpha: float = 0.9  # weight of the CMP ranking loss
        label_weight: float = 1.0  # weight of the per-subset label loss (the authors' lamda)
        margin: float = 0.9
        top_k: int = 10  # neighbours of the kNN vote
        reg: float = 5.0  # entropic regularisation of the barycenter's Sinkhorn plans
        barycenters_per_class: int = 1
        barycenter_step: float = 0.5
        barycenter_tol: float = 1e-2
        hard_weight: bool = True  # weight the hard subset's cross-entropy by w
        train_hard: bool = True
        train_noisy: bool = True

    def __init__(self, cfg: Config, **kwargs: Any):
        super().__init__(cfg, **kwargs)
        self.prototypes: Tensor | None = None  # (C * k, D), recomputed every epoch, not saved
        self._codes: Tensor | None = None
        self._present: Tensor | None = None  # (C,) bool: classes with a barycenter this epoch

    def class_logits(self, feats: Tensor) -> Tensor:
        """(B, D) unit embeddings -> (B, C) logits (the best of each class's barycenters)."""
        if self.prototypes is None:
            raise RuntimeError("NIRNL prototypes are computed in on_epoch_start")
        logits = feats @ self.prototypes.T
        k = self.cfg.barycenters_per_class
        logits = logits.view(feats.shape[0], -1, k).amax(2) if k > 1 else logits
        if self._present is not None and not bool(self._present.all()):
            # finite, so that a zero target times its log-probability stays 0 in the cross-entropy
            logits = logits.masked_fill(~self._present.to(logits.device), EMPTY_CLASS_LOGIT)
        return logits

    @torch.no_grad()
    def compute_prototypes(self, image: Tensor, text: Tensor, image_labels: Tensor, text_labels: Tensor) -> Tensor:
        """Barycenters of each class's image and text embeddings: (N, D) x2, (N, C) x2 -> (C * k, D).

        A class with no item has zero rows here, a placeholder that :meth:`class_logits` masks out
        once ``on_epoch_start`` has recorded which classes are present."""
        k = self.cfg.barycenters_per_class
        protos = []
        for c in range(image_labels.shape[1]):
            pts = torch.cat([image[image_labels[:, c] > 0], text[text_labels[:, c] > 0]])
            if pts.shape[0] == 0:
                protos.append(torch.zeros(k, image.shape[1], device=image.device, dtype=image.dtype))
                continue
            protos.append(
                wasserstein_barycenter(
                    pts, k, reg=self.cfg.reg, step=self.cfg.barycenter_step, tol=self.cfg.barycenter_tol
                )
            )
        return torch.cat(protos)

    def on_epoch_start(self, epoch: int, ctx: LabelEpochContext) -> dict[str, float]:  # type: ignore[override]
        img = self.embed(ctx.images, self.encode_images)
        txt = self.embed(ctx.texts, self.encode_texts)
        img_lab, txt_lab = ctx.labels[0], ctx.labels[1]
        self.prototypes = self.compute_prototypes(img, txt, img_lab, txt_lab)
        self._present = ((img_lab > 0).any(0) | (txt_lab > 0).any(0)).to(self.prototypes.device)
        votes_img = knn_label_votes(img, img_lab, self.cfg.top_k)
        votes_txt = knn_label_votes(txt, txt_lab, self.cfg.top_k)
        self._codes = refine_partition(votes_img, votes_txt, img_lab, txt_lab)
        n = float(ctx.n_samples)
        return {
            **{
                f"share_{name}": float((self._codes == code).sum()) / n
                for name, code in (("pure", PURE), ("hard", HARD), ("noisy", NOISY))
            },
            "empty_classes": float((~self._present).sum()),
        }

    def partition(self) -> np.ndarray | None:
        """(N,) int8 subset code (PURE / HARD / NOISY) of each training item, once computed."""
        return None if self._codes is None else self._codes.cpu().numpy()

    def diagnostics(self) -> dict[str, Selection]:
        codes = self.partition()
        if codes is None:
            return {}
        groups = {name: codes == code for name, code in (("pure", PURE), ("hard", HARD), ("noisy", NOISY))}
        return {"nir": Selection(prob=None, clean=groups["pure"], groups=groups)}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        codes = self.partition()
        if codes is None:
            return [Phase("pure")]
        phases = [Phase("pure", np.flatnonzero(codes == PURE))]
        if self.cfg.train_hard:
            phases.append(Phase("hard", np.flatnonzero(codes == HARD)))
        if self.cfg.train_noisy:
            phases.append(Phase("noisy", np.flatnonzero(codes == NOISY)))
        return [p for p in phases if p.indices is not None and p.indices.shape[0] > 1]

    def training_step(
        self, batch: LabelBatch, epoch: int, *, phase: str = "pure", streams: Mapping[str, LabelBatch] | None = None,
        control: None = None,
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        img = self.encode_images(batch.images)
        txt = self.encode_texts(batch.texts)
        logit_img, logit_txt = self.class_logits(img), self.class_logits(txt)
        if phase == "noisy":
            p_img, p_txt = logit_img.softmax(1), logit_txt.softmax(1)
            either = 1 - (1 - p_img) * (1 - p_txt)
            pseudo = F.one_hot(either.argmax(1), p_img.shape[1]).to(p_img.dtype).detach()
            label = (pseudo - p_img).abs().sum(1) + (pseudo - p_txt).abs().sum(1)
        else:
            weight = None
            if phase == "hard" and self.cfg.hard_weight:
                with torch.no_grad():
                    weight = 1 - (1 - logit_img.softmax(1)) * (1 - logit_txt.softmax(1))
            label = soft_cross_entropy(logit_img, batch.image_labels, weight)
            label = label + soft_cross_entropy(logit_txt, batch.text_labels, weight)
        cmp = margin_ranking_loss(img, txt, self.cfg.margin)
        return {phase: self.cfg.label_weight * label.mean(), "cmp": self.cfg.alpha * cmp}, {}
