"""Bidirectional similarity consistency: BiCro's soft correspondence labels and BiCro++'s refinements.

BiCro (Yang et al., CVPR 2023): similar images should have similar captions, and similar captions
similar images. Take a few *anchor* pairs of the batch believed clean. For pair k, find its nearest
anchor a by image cosine; if the pair is a true match, its caption should be about as close to a's
caption as its image is to a's image, so ``min(x / y, y / x)`` with x, y the image-side and the
caption-side cosines measures how consistent the pair is (1 = fully). The same from the caption side
(nearest anchor by caption, compared on images); the mean of both directions is the pair's
*consistency* c in [0, 1]. A pair of the clean subset gets the label ``0.5 + c / 2`` (anchors 1), a
pair of the noisy subset ``c``; a label at or below ``noise_threshold`` becomes 0. The label scales
the margin of the hinge loss (NCR's soft margin). The global features are the backbone's
:meth:`~noisycorr.backbones.base.Backbone.global_embeddings` (for SGRAF: mean region and mean word
embedding, as in the authors' code). A non-positive cosine counts as no consistency (ratio 0).

BiCro++ (Yang et al., TPAMI 2026; abstract only, no public code). What follows is **our reading**
of the abstract's two components, not the authors' design:

- *Diagonal-Dominance Purification*: an anchor candidate (one of the ``floor(B * anchor_fraction)
  + 1`` most confident pairs of the batch, as in BiCro) is kept only when its own score dominates
  its row and its column of the batch's similarity matrix: ``S_kk - max_{j != k} S_kj > tol`` and
  ``S_kk - max_{j != k} S_jk > tol`` (``dominance_tol``). When no candidate passes, the one with the
  largest dominance is kept, so a batch always has an anchor. The matrix is the labelling peer's
  (``purify_view: peer``, the default). ``purify_view: trained`` (ours, beyond the abstract) reads
  the network being trained instead: the peer's own matrix tends to crown the noisy pairs it has
  memorised, a second network has memorised others (``benchmarks/probe_anchor_purity.py`` measures
  both views on a run).
- *Hybrid-level Codebook Alignment*: a codebook per modality (and per network): spherical k-means
  with ``codebook_size`` codewords over the global image embeddings, and separately the caption
  embeddings, of every training pair, refreshed at the start of each co-training epoch from the
  split pass and warm-started from the previous epoch's codewords (so the codebook is trained state,
  saved in the checkpoint). Each embedding is quantised softly: the softmax over its cosines to the
  codewords at ``codebook_temperature`` weighs the codewords, the sum renormalised. The same
  bidirectional consistency measured on quantised embeddings is the *cluster-level* consistency; the
  label's consistency is ``(1 - codebook_weight) * instance + codebook_weight * cluster``. We chose
  k-means over an EMA-learned codebook: it has no extra learning rate, is deterministic under a seed,
  and costs one pass the split already makes; the EMA variant is not implemented.

``center`` (ours, off by default): in a trained joint space the cosines of every pair to its nearest
anchor are high in both modalities, so their ratio is near 1 for matched and mismatched pairs
alike; subtracting the clean batch's mean embedding first spreads the cosines out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.backbones.ops import l2norm
from noisycorr.errors import InputError
from noisycorr.losses import triplet_loss
from noisycorr.methods.memory import SizedByCheckpoint

_EPS = 1e-8
PURIFY_VIEWS = ("peer", "trained")


@dataclasses.dataclass
class ConsistencyOptions:
    """The soft-label options (BiCro++'s defaults); a base of the ``Config`` of every method using them."""

    anchor_fraction: float = 0.1  # anchor candidates: the top floor(B * this) + 1 pairs of a batch by confidence
    noise_threshold: float = 0.5  # a soft label at or below this becomes 0 (BiCro's noise_tem)
    purify: bool = True  # BiCro++: keep only diagonally dominant anchors
    dominance_tol: float = 0.0  # how much an anchor's own score must beat its row and its column by
    purify_view: str = "peer"  # whose score matrix purifies: the labelling peer's, or the trained network's (ours)
    codebook_size: int = 64  # BiCro++: k-means codewords per modality and network; 0 = instance level only
    codebook_weight: float = 0.5  # share of the cluster-level consistency in the label; 0 = instance level only
    codebook_iters: int = 10  # k-means iterations per refresh
    codebook_temperature: float = 0.05  # of the softmax that assigns an embedding to the codewords
    center: bool = False  # ours: cosines after subtracting the clean batch's mean embedding (the codewords' mean)


def check_options(opts: Any) -> None:
    """One-line errors for out-of-range soft-label options."""
    if not 0.0 < opts.anchor_fraction <= 1.0:
        raise InputError("method.anchor_fraction", "a value in (0, 1]", repr(opts.anchor_fraction))
    if not 0.0 <= opts.noise_threshold < 1.0:
        raise InputError("method.noise_threshold", "a value in [0, 1)", repr(opts.noise_threshold))
    if int(opts.codebook_size) < 0:
        raise InputError("method.codebook_size", "a non-negative integer", repr(opts.codebook_size))
    if not 0.0 <= opts.codebook_weight <= 1.0:
        raise InputError("method.codebook_weight", "a value in [0, 1]", repr(opts.codebook_weight))
    if opts.codebook_weight > 0 and int(opts.codebook_size) == 0:
        raise InputError("method.codebook_size", "> 0 when codebook_weight > 0", repr(opts.codebook_size))
    if int(opts.codebook_iters) < 1:
        raise InputError("method.codebook_iters", "a positive integer", repr(opts.codebook_iters))
    if opts.purify_view not in PURIFY_VIEWS:
        raise InputError("method.purify_view", f"one of {list(PURIFY_VIEWS)}", repr(opts.purify_view))
    if opts.codebook_temperature <= 0:
        raise InputError("method.codebook_temperature", "a positive value", repr(opts.codebook_temperature))


# ---------------------------------------------------------------------------- instance level


def nearest_anchor_ratio(near: Tensor, other: Tensor) -> Tensor:
    """Consistency of one direction: each row's nearest anchor by ``near``, compared on ``other``.

    Args:
        near: (B, A) cosines of each sample to each anchor in the modality that picks the anchor.
        other: (B, A) cosines in the other modality.

    Returns:
        (B,) ``min(x, y) / max(x, y)`` with x = the nearest anchor's cosine in ``near`` and y its
        cosine in ``other``; 0 where either is not positive.
    """
    idx = near.argmax(dim=1, keepdim=True)
    x = near.gather(1, idx).squeeze(1)
    y = other.gather(1, idx).squeeze(1)
    ratio = torch.minimum(x, y) / torch.maximum(x, y).clamp_min(_EPS)
    return torch.where((x > 0) & (y > 0), ratio, torch.zeros_like(ratio))


def anchor_consistency(img: Tensor, txt: Tensor, anchor_img: Tensor, anchor_txt: Tensor) -> Tensor:
    """(B,) bidirectional consistency of B pairs with A anchor pairs, in [0, 1].

    Args:
        img, txt: (B, D) global embeddings of the pairs.
        anchor_img, anchor_txt: (A, D) global embeddings of the anchors, A >= 1.
    """
    sim_img = l2norm(img.float()) @ l2norm(anchor_img.float()).t()
    sim_txt = l2norm(txt.float()) @ l2norm(anchor_txt.float()).t()
    return (nearest_anchor_ratio(sim_img, sim_txt) + nearest_anchor_ratio(sim_txt, sim_img)) / 2


def diagonal_dominance(scores: Tensor) -> Tensor:
    """(B,) how much each pair's own score beats the best other score of its row and of its column.

    ``S_kk - max(max_{j != k} S_kj, max_{j != k} S_jk)``; +inf for a batch of one.
    """
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    off = scores.float().masked_fill(eye, float("-inf"))
    rival = torch.maximum(off.max(dim=1).values, off.max(dim=0).values)
    return scores.float().diagonal() - rival


def select_anchors(
    confidence: Tensor, scores: Tensor | None = None, *, fraction: float = 0.1, purify: bool = False,
    tol: float = 0.0,
) -> Tensor:
    """(B,) bool: the batch's anchors.

    The ``floor(B * fraction) + 1`` most confident pairs; with ``purify`` only those of them that are
    diagonally dominant by more than ``tol`` in ``scores`` (the most dominant one when none is).

    Args:
        confidence: (B,) e.g. NCR's match confidence.
        scores: (B, B) similarities, positives on the diagonal; needed with ``purify``.
    """
    n = confidence.shape[0]
    cand = confidence.topk(min(int(n * fraction) + 1, n)).indices
    if purify:
        if scores is None:
            raise ValueError("select_anchors: purify needs the batch's score matrix")
        dom = diagonal_dominance(scores)[cand]
        keep = cand[dom > tol]
        cand = keep if keep.numel() else cand[dom.argmax()].reshape(1)
    mask = torch.zeros(n, dtype=torch.bool, device=confidence.device)
    mask[cand] = True
    return mask


def clean_labels(consistency: Tensor, anchors: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) labels of clean-subset pairs: 1 on anchors, else ``0.5 + c / 2``; 0 where not above ``threshold``."""
    y = torch.where(anchors, torch.ones_like(consistency), 0.5 + consistency / 2)
    return torch.where(y > threshold, y, torch.zeros_like(y)).clamp(0.0, 1.0)


def noisy_labels(consistency: Tensor, threshold: float = 0.5) -> Tensor:
    """(B,) labels of noisy-subset pairs: c, 0 where not above ``threshold``."""
    return torch.where(consistency > threshold, consistency, torch.zeros_like(consistency)).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------- cluster level


def _assign(x: Tensor, codebook: Tensor, chunk: int = 16384) -> Tensor:
    """(N,) index of each unit row's nearest codeword (cosine), in row blocks of ``chunk``."""
    return torch.cat([(x[i:i + chunk] @ codebook.t()).argmax(1) for i in range(0, x.shape[0], chunk)])


def spherical_kmeans(
    x: Tensor, k: int, *, iters: int = 10, generator: torch.Generator | None = None, init: Tensor | None = None
) -> Tensor:
    """Spherical k-means: (N, D) points -> (k, D) unit codewords.

    Starts from ``init`` (unit rows, e.g. the previous epoch's codebook) or from a k-means++ draw
    with ``generator`` (distance ``1 - cosine``). A codeword left without points keeps its place.
    """
    x = l2norm(x.float())
    n = x.shape[0]
    if n == 0:
        raise ValueError("spherical_kmeans: no points")
    if init is not None:
        centres = l2norm(init.float().clone())
    else:
        first = int(torch.randint(n, (1,), generator=generator))
        centres = x[first].unsqueeze(0)
        dist = (1.0 - x @ centres[0]).clamp_min(0.0)
        for _ in range(1, k):
            total = float(dist.sum())
            pick = int(torch.multinomial(dist / total, 1, generator=generator)) if total > 0 else int(
                torch.randint(n, (1,), generator=generator))
            centres = torch.cat([centres, x[pick].unsqueeze(0)])
            dist = torch.minimum(dist, (1.0 - x @ x[pick]).clamp_min(0.0))
    for _ in range(iters):
        assign = _assign(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=centres.shape[0])
        centres = torch.where((counts > 0).unsqueeze(1), l2norm(sums), centres)
    return centres


def soft_quantise(x: Tensor, codebook: Tensor, temperature: float) -> Tensor:
    """(B, D) -> (B, D): the softmax-weighted sum of the (K, D) codewords, renormalised."""
    weights = torch.softmax(l2norm(x.float()) @ codebook.t() / temperature, dim=1)
    return l2norm(weights @ codebook)


# ---------------------------------------------------------------------------- the labeller


@torch.no_grad()
def pass_with_embeddings(net: Backbone, batch: Any, margin: float) -> Tensor:
    """(B, 1 + 2D): the mean-negative hinge of each pair (NCR's split statistic), then its global
    image and caption embeddings (for the codebooks)."""
    img = net.encode_images(batch.images)
    txt = net.encode_texts(batch.tokens, batch.lengths)
    loss = triplet_loss(net.similarity(img, txt, batch.lengths).float(), margin, hardest=False, reduction="none")
    g_img, g_txt = net.global_embeddings(img, txt, batch.lengths)
    return torch.cat([loss.unsqueeze(1), g_img.float(), g_txt.float()], dim=1)


@torch.no_grad()
def peer_view(net: Backbone, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
    """A network's view of a batch in eval mode: (B, B) scores, (B, D) image and caption global embeddings."""
    was = net.training
    net.eval()
    try:
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        scores = net.similarity(img, txt, batch.lengths).float()
        g_img, g_txt = net.global_embeddings(img, txt, batch.lengths)
        return scores, g_img.float(), g_txt.float()
    finally:
        net.train(was)


class ConsistencyLabeler(SizedByCheckpoint):
    """Soft correspondence labels from a network's view of a batch; holds that network's codebooks.

    Buffers ``img_{name}`` / ``txt_{name}`` (K, D) are the codebooks of network ``name`` (empty until
    the first refresh), ``refreshes`` counts refreshes (it seeds the next k-means++ draw).
    """

    def __init__(self, opts: Any, names: tuple[str, ...] = ("A", "B")):
        super().__init__()
        check_options(opts)
        self.opts = opts
        self.names = names
        for name in names:
            self.register_buffer(f"img_{name}", torch.zeros(0, 0))
            self.register_buffer(f"txt_{name}", torch.zeros(0, 0))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))

    @property
    def uses_codebook(self) -> bool:
        return int(self.opts.codebook_size) > 0 and float(self.opts.codebook_weight) > 0

    def codebooks(self, name: str) -> tuple[Tensor, Tensor]:
        return getattr(self, f"img_{name}"), getattr(self, f"txt_{name}")

    def refresh(self, name: str, extras: Tensor, seed: int) -> dict[str, float]:
        """Update network ``name``'s codebooks from its split pass: (N, 2D) image then caption embeddings.

        Returns:
            ``codebook_used_{name}``: the share of image and caption codewords that own a point.
        """
        d = extras.shape[1] // 2
        k = min(int(self.opts.codebook_size), extras.shape[0])
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(self.refreshes))
        used = []
        for part, points in (("img", extras[:, :d]), ("txt", extras[:, d:])):
            old = getattr(self, f"{part}_{name}")
            init = old.cpu() if old.shape == (k, d) else None
            codebook = spherical_kmeans(points, k, iters=int(self.opts.codebook_iters), generator=generator, init=init)
            used.append(torch.unique(_assign(l2norm(points.float()), codebook)).numel() / k)
            setattr(self, f"{part}_{name}", codebook.to(old.device))
        if name == self.names[-1]:
            self.refreshes += 1
        return {f"codebook_used_{name}": float(np.mean(used))}

    def consistency(
        self, name: str, img: Tensor, txt: Tensor, anchor_img: Tensor, anchor_txt: Tensor,
        offset: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """(B,) hybrid consistency with network ``name``'s codebooks (instance level only without them).

        ``offset``: (D,) image and caption vectors subtracted before the instance-level cosines
        (``center``); the cluster level then subtracts the codewords' mean.
        """
        oi, ot = offset if offset is not None else (0.0, 0.0)
        c = anchor_consistency(img - oi, txt - ot, anchor_img - oi, anchor_txt - ot)
        if not self.uses_codebook:
            return c
        cb_img, cb_txt = self.codebooks(name)
        if cb_img.numel() == 0:
            raise RuntimeError(f"ConsistencyLabeler: network {name}'s codebooks are used before their first refresh")
        tau = float(self.opts.codebook_temperature)
        qi, qt = (cb_img.mean(0), cb_txt.mean(0)) if offset is not None else (0.0, 0.0)
        c_code = anchor_consistency(
            soft_quantise(img, cb_img, tau) - qi, soft_quantise(txt, cb_txt, tau) - qt,
            soft_quantise(anchor_img, cb_img, tau) - qi, soft_quantise(anchor_txt, cb_txt, tau) - qt,
        )
        w = float(self.opts.codebook_weight)
        return (1.0 - w) * c + w * c_code

    def labels(
        self, name: str, scores: Tensor, confidence: Tensor, img: Tensor, txt: Tensor,
        side_img: Tensor | None = None, side_txt: Tensor | None = None, dominance_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Soft labels of a clean batch (and of a noisy side batch) from network ``name``'s view.

        Args:
            scores: (B, B) the clean batch's similarities; confidence: (B,) its match confidence.
            img, txt: (B, D) its global embeddings; side_img, side_txt: (U, D) the side batch's, or None.
            dominance_scores: (B, B) the matrix purification reads (``purify_view: trained``); default ``scores``.

        Returns:
            (B,) clean-batch labels, (U,) side labels or None, (B,) bool anchors.
        """
        o = self.opts
        dom = scores if dominance_scores is None else dominance_scores
        anchors = select_anchors(confidence, dom, fraction=o.anchor_fraction, purify=o.purify, tol=o.dominance_tol)
        a_img, a_txt = img[anchors], txt[anchors]
        offset = (img.mean(0), txt.mean(0)) if o.center else None
        y = clean_labels(self.consistency(name, img, txt, a_img, a_txt, offset), anchors, o.noise_threshold)
        y_side = None
        if side_img is not None and side_txt is not None:
            c_side = self.consistency(name, side_img, side_txt, a_img, a_txt, offset)
            y_side = noisy_labels(c_side, o.noise_threshold)
        return y, y_side, anchors
