"""Mean average precision for labelled cross-modal retrieval (the noisy-label task).

A query retrieves every gallery item of the other modality, ranked by cosine similarity; a gallery
item is relevant when it shares at least one label with the query (single-label: the same class).
AP of a query is the mean of the precisions at the ranks of its relevant items; mAP averages AP over
queries. This is MAP over all retrieved items as in MRL / NIRNL (``fx_calc_map_label`` /
``fx_calc_map_multilabel``). Ties keep gallery order (a stable sort). Queries are processed in
chunks, so memory is O(chunk x gallery).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noisycorr.errors import InputError

EMPTY = ("skip", "zero")


def _as_tensor(x: np.ndarray | Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x)).to(dtype)


def average_precision(sim: Tensor, relevant: Tensor, *, k: int | None = None) -> Tensor:
    """AP of each query row.

    Args:
        sim: (Q, G) similarities, higher first.
        relevant: (Q, G) bool, gallery item relevant to the query.
        k: rank cut-off; None ranks the whole gallery. With a cut-off, AP divides by the relevant
            items found in the top k (the MRL convention) and is 0 when there are none.

    Returns:
        (Q,) float64 AP; NaN for a query without any relevant gallery item.
    """
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    if k is not None:
        order = order[:, :k]
    rel = torch.gather(relevant, 1, order).to(torch.float64)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64, device=rel.device)
    hits = rel.cumsum(1)
    found = hits[:, -1]
    ap = (rel * hits / ranks).sum(1) / found.clamp(min=1)
    has_any = relevant.any(1)
    return torch.where(has_any, ap, torch.full_like(ap, float("nan")))


def map_score(
    query: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    gallery: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    query_labels: Tensor | np.ndarray,
    gallery_labels: Tensor | np.ndarray,
    *,
    k: int | None = None,
    chunk: int = 1024,
    empty: str = "skip",
) -> float:
    """mAP of ``query`` items retrieving ``gallery`` items by cosine similarity.

    Args:
        query: (Q, D) embeddings, or a list of them from several models whose cosine similarity
            matrices are averaged (paired with ``gallery`` of the same length).
        gallery: (G, D) embeddings (or a list).
        query_labels: (Q,) int or (Q, C) multi-hot labels.
        gallery_labels: (G,) int or (G, C) multi-hot labels.
        k: rank cut-off (None: all items).
        chunk: queries scored at a time.
        empty: ``skip`` leaves out queries with no relevant gallery item (the multi-label reference),
            ``zero`` counts them as AP 0 (the single-label reference).

    Returns:
        The mAP in [0, 1] (NaN when every query is skipped).
    """
    if empty not in EMPTY:
        raise InputError("map empty", f"one of {EMPTY}", repr(empty))
    qs = list(query) if isinstance(query, (list, tuple)) else [query]
    gs = list(gallery) if isinstance(gallery, (list, tuple)) else [gallery]
    if len(qs) != len(gs) or not qs:
        raise InputError("map embeddings", "as many query as gallery embedding sets", f"{len(qs)} and {len(gs)}")
    qs = [F.normalize(_as_tensor(q, torch.float32), dim=1) for q in qs]
    gs = [F.normalize(_as_tensor(g, torch.float32), dim=1) for g in gs]
    ql, gl = _labels(query_labels, gallery_labels)
    if ql.shape[0] != qs[0].shape[0] or gl.shape[0] != gs[0].shape[0]:
        raise InputError("map labels", "one label row per item", f"{ql.shape[0]} and {gl.shape[0]} rows")
    aps = []
    for start in range(0, ql.shape[0], chunk):
        rows = slice(start, start + chunk)
        sim = sum(q[rows] @ g.T for q, g in zip(qs, gs)) / len(qs)
        relevant = (ql[rows] @ gl.T) > 0
        aps.append(average_precision(sim, relevant, k=k))
    ap = torch.cat(aps)
    if empty == "zero":
        ap = torch.nan_to_num(ap, nan=0.0)
    ap = ap[~torch.isnan(ap)]
    return float(ap.mean()) if ap.numel() else float("nan")


def _labels(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Both label sets as (N, C) float multi-hot with one C."""
    a_t, b_t = _as_tensor(a, torch.int64), _as_tensor(b, torch.int64)
    if a_t.ndim == 1 or b_t.ndim == 1:
        if a_t.ndim != 1 or b_t.ndim != 1:
            raise InputError("map labels", "both integer or both multi-hot", f"{a_t.ndim}-D and {b_t.ndim}-D")
        c = int(max(a_t.max(), b_t.max())) + 1
        return F.one_hot(a_t, c).float(), F.one_hot(b_t, c).float()
    if a_t.shape[1] != b_t.shape[1]:
        raise InputError("map labels", "the same number of classes", f"{a_t.shape[1]} and {b_t.shape[1]}")
    return a_t.float(), b_t.float()


def cross_modal_map(
    images: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    texts: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    image_labels: Tensor | np.ndarray,
    text_labels: Tensor | np.ndarray | None = None,
    *,
    k: int | None = None,
    chunk: int = 1024,
    empty: str = "skip",
) -> dict[str, float]:
    """mAP in both directions: ``i2t_map`` (images query texts), ``t2i_map``, and their mean ``avg_map``.

    Args:
        images: (N, D) image embeddings (or a list from several models).
        texts: (M, D) text embeddings (or a list).
        image_labels: (N,) or (N, C) labels.
        text_labels: (M,) or (M, C); None reuses ``image_labels`` (paired items).
    """
    text_labels = image_labels if text_labels is None else text_labels
    i2t = map_score(images, texts, image_labels, text_labels, k=k, chunk=chunk, empty=empty)
    t2i = map_score(texts, images, text_labels, image_labels, k=k, chunk=chunk, empty=empty)
    return {"i2t_map": i2t, "t2i_map": t2i, "avg_map": (i2t + t2i) / 2}
