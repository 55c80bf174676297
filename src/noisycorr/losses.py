"""Ranking losses on a (B, B) image x caption score matrix whose diagonal holds the positive pairs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from noisycorr.errors import InputError

SOFT_MARGINS: dict[str, Callable[[Tensor], Tensor]] = {
    "exponential": lambda y: (torch.pow(10.0, y) - 1.0) / 9.0,
    "linear": lambda y: y,
    "sine": lambda y: torch.sin(math.pi * y - math.pi / 2) / 2 + 0.5,
}


def soft_margin(y: Tensor, margin: float, kind: str = "exponential") -> Tensor:
    """(B,) per-pair margins ``margin * s(y)`` for targets y in [0, 1] (NCR's margin functions)."""
    if kind not in SOFT_MARGINS:
        raise InputError("method.soft_margin", f"one of {sorted(SOFT_MARGINS)}", repr(kind))
    return margin * SOFT_MARGINS[kind](y.clamp(0.0, 1.0))


def hinge_costs(scores: Tensor, margin: float | Tensor) -> tuple[Tensor, Tensor]:
    """Triplet violations of every negative, for both retrieval directions.

    Args:
        scores: (B, B), ``scores[i, j]`` = sim(image i, caption j); pair i is (image i, caption i).
        margin: a scalar; (B,) per-pair margins (pair i's margin applies when it is the anchor); or
            (B, B) per-cell margins, ``m_ij`` for cell (i, j) in both directions (the authors' NCR
            code, whose (B, 1) or (B, B) soft margins broadcast that way).

    Returns:
        ``cost_cap`` (B, B): ``[m_i + S_ij - S_ii]_+``, anchor image i, negative caption j.
        ``cost_img`` (B, B): ``[m_j + S_ij - S_jj]_+``, anchor caption j, negative image i.
        (``m_ij`` in both with a (B, B) margin.) Both have a zero diagonal.
    """
    pos = scores.diagonal()
    m = margin if isinstance(margin, Tensor) else torch.tensor(margin, device=scores.device)
    if m.ndim == 2:
        if m.shape != scores.shape:
            raise ValueError(
                f"a per-cell margin must have the scores' shape {tuple(scores.shape)}, not {tuple(m.shape)}"
            )
        m_row = m_col = m
    else:
        m_row = m.reshape(-1, 1) if m.ndim else m
        m_col = m.reshape(1, -1) if m.ndim else m
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    cost_cap = (m_row + scores - pos.reshape(-1, 1)).clamp(min=0).masked_fill(eye, 0)
    cost_img = (m_col + scores - pos.reshape(1, -1)).clamp(min=0).masked_fill(eye, 0)
    return cost_cap, cost_img


NEGATIVES = ("hardest", "mean")  # method.negatives: the hardest negative of each anchor, or the mean of all


def triplet_loss(
    scores: Tensor, margin: float | Tensor = 0.2, *, hardest: bool = True, reduction: str = "sum"
) -> Tensor:
    """VSE++ hinge triplet loss (Faghri et al., BMVC 2018).

    Args:
        scores: (B, B) similarity matrix, positives on the diagonal.
        margin: scalar, (B,) per-pair soft margins, or (B, B) per-cell margins (see :func:`hinge_costs`).
        hardest: hardest negative per anchor (VSE++); False averages over the B - 1 negatives
            (the warm-up loss of VSE-infinity and NCR).
        reduction: ``"sum"`` (the field's convention), ``"mean"`` or ``"none"`` for (B,) per-pair losses.

    Returns:
        A scalar, or (B,) where pair i's loss is its image-anchor term plus its caption-anchor term.
    """
    cost_cap, cost_img = hinge_costs(scores, margin)
    if hardest:
        per_pair = cost_cap.max(dim=1).values + cost_img.max(dim=0).values
    else:
        n_neg = max(scores.shape[0] - 1, 1)
        per_pair = (cost_cap.sum(dim=1) + cost_img.sum(dim=0)) / n_neg
    if reduction == "none":
        return per_pair
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', not {reduction!r}")


def rce_infonce_loss(scores: Tensor, temperature: float = 0.05, *, eps: float = 1e-7) -> Tensor:
    """Symmetric contrastive loss with a reverse cross-entropy term (IN2R; the RCE form of L2RM).

    Each row of ``scores / temperature`` is a softmax over captions (image -> caption), each column a
    softmax over images. With ``P`` either of the two (B, B) probability tables and the identity as
    the target, the loss of one direction is

    - cross-entropy: ``mean_i -log P[i, i]``;
    - reverse cross-entropy, the target and prediction swapped, with the target's zeros replaced by
      ``eps`` so that its log is finite: ``mean_i -(P[i, i] log(1 + eps) + (1 - P[i, i]) log(eps))``
      (almost ``-log(eps) * (1 - P[i, i])``: bounded, so a mismatched positive cannot dominate).

    and the result is ``0.5 * (rce_i2t + rce_t2i + ce_i2t + ce_t2i)``. The input may be any (B, B)
    score matrix with the positives on its diagonal (image-caption, or two views of one modality);
    the loss is the same for ``scores`` and ``scores.T``.

    Args:
        scores: (B, B) similarities, positives on the diagonal; computed in float32.
        temperature: softmax temperature (IN2R: 0.05).
        eps: the smoothing of the one-hot target inside the reverse cross-entropy.

    Returns:
        A scalar.
    """
    logits = scores.float() / temperature
    total = logits.new_zeros(())
    log_tgt_pos = torch.log1p(torch.tensor(eps, dtype=logits.dtype, device=logits.device))
    log_tgt_neg = torch.log(torch.tensor(eps, dtype=logits.dtype, device=logits.device))
    for table in (logits, logits.t()):
        log_p = torch.log_softmax(table, dim=1).diagonal()
        p = log_p.exp()
        ce = -log_p.mean()
        rce = -(p * log_tgt_pos + (1.0 - p) * log_tgt_neg).mean()
        total = total + ce + rce
    return 0.5 * total


def match_confidence(scores: Tensor, margin: float, top_fraction: float = 0.1, *, normalise: bool = True) -> Tensor:
    """NCR's prediction p in [0, 1] that each pair of a batch is a true match.

    ``p_i = clamp(m - (mean_j cost_cap[i, j] + mean_j cost_img[j, i]) / 2, 0, m)`` over the B - 1
    negatives; with ``normalise``, divided by the mean of the top ``floor(B * top_fraction) + 1``
    values and clamped to 1 (without, in [0, m]: BiCro ranks its anchor candidates by it).

    Args:
        scores: (B, B) similarities, positives on the diagonal.
    """
    cost_cap, cost_img = hinge_costs(scores.float(), margin)
    n_neg = max(scores.shape[0] - 1, 1)
    p = (margin - (cost_cap.sum(1) + cost_img.sum(0)) / (2 * n_neg)).clamp(0.0, margin)
    if not normalise:
        return p
    k = int(scores.shape[0] * top_fraction) + 1
    top = p.topk(min(k, p.numel())).values.mean()
    return (p / top.clamp(min=1e-8)).clamp(max=1.0)


def complementary_contrastive_loss(scores: Tensor, temperature: float = 0.05, *, eps: float = 1e-7) -> Tensor:
    """Complementary contrastive loss, ``log`` form (RCL, Hu et al., TPAMI 2023).

    It learns only from the negatives, which stay negatives whether or not the positive pair is
    mismatched: with ``P`` the row softmax of ``scores / temperature`` (image -> caption) and
    ``Q`` the row softmax of its transpose (caption -> image),

    ``loss = -mean_i sum_{j != i} log(1 - P[i, j]) - mean_j sum_{i != j} log(1 - Q[j, i])``.

    A mismatched positive is never pulled together, only pushed away from the other samples less
    than a negative would be.

    Args:
        scores: (B, B) similarities, positives on the diagonal; computed in float32.
        temperature: softmax temperature (RCL: 0.05).
        eps: keeps ``log(1 - P)`` finite where a negative takes all the probability.

    Returns:
        A scalar.
    """
    logits = scores.float() / temperature
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    total = logits.new_zeros(())
    for table in (logits, logits.t()):
        p = torch.softmax(table, dim=1)
        comp = -torch.log((1.0 - p).clamp_min(eps)).masked_fill(eye, 0.0)
        total = total + comp.sum(dim=1).mean()
    return total
