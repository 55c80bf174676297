"""Image-text retrieval ranks and metrics (R@K, median / mean rank, rSum) from a similarity matrix.

The rank of an item is its 0-based position in a *stable descending sort* of the scores: the items
scoring strictly higher come first, and equal scores keep index order. It is computed by counting,
chunk by chunk over image rows, so no argsort of the matrix is ever built and memory stays at one
(chunk, N) block. The matrix may be a torch tensor (CPU or CUDA) or a NumPy array / memmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from noisycorr.errors import InputError

ArrayLike = Tensor | np.ndarray

__all__ = ["average_similarities", "i2t_ranks", "retrieval_metrics", "t2i_ranks"]


def _check_sims(sims: ArrayLike) -> tuple[int, int]:
    if not isinstance(sims, (Tensor, np.ndarray)):
        raise InputError("sims", "a torch.Tensor or numpy.ndarray", type(sims).__name__)
    if sims.ndim != 2:
        raise InputError("sims", "a 2-D (N_img, N_cap) matrix", f"shape {tuple(sims.shape)}")
    is_real = (
        not (sims.dtype.is_complex or sims.dtype == torch.bool)
        if isinstance(sims, Tensor)
        else np.issubdtype(sims.dtype, np.floating) or np.issubdtype(sims.dtype, np.integer)
    )
    if not is_real:
        raise InputError("sims", "real-valued scores (float or int)", f"dtype {sims.dtype}")
    return int(sims.shape[0]), int(sims.shape[1])


def _device(sims: ArrayLike) -> torch.device:
    return sims.device if isinstance(sims, Tensor) else torch.device("cpu")


def _rows(sims: ArrayLike, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` as a tensor: a view for tensors, one chunk-sized copy at most for arrays."""
    if isinstance(sims, Tensor):
        block = sims[start:stop].detach()
    else:
        part = sims[start:stop]
        if not (part.flags.c_contiguous and part.flags.writeable) or isinstance(part, np.memmap):
            part = np.array(part)
        block = torch.from_numpy(part)
    if block.is_floating_point() and bool(torch.isnan(block).any()):
        bad = int(torch.isnan(block).any(dim=1).nonzero()[0, 0]) + start
        raise InputError("sims", "finite or infinite scores, no NaN", "NaN", where=f"image row {bad}")
    return block


def _check_caption_image(caption_image: ArrayLike, n_img: int, n_cap: int, device: torch.device) -> Tensor:
    """Validate ``caption_image`` (N_cap,) against an (n_img, n_cap) matrix; return it as int64 on ``device``."""
    if isinstance(caption_image, Tensor):
        ci = caption_image.detach()
    elif isinstance(caption_image, np.ndarray):
        ci = torch.from_numpy(np.array(caption_image))
    else:
        raise InputError("caption_image", "a torch.Tensor or numpy.ndarray", type(caption_image).__name__)
    if ci.ndim != 1 or ci.shape[0] != n_cap:
        raise InputError(
            "caption_image",
            f"shape ({n_cap},), one image row per caption column of sims",
            f"shape {tuple(ci.shape)}",
        )
    if ci.is_floating_point() or ci.is_complex() or ci.dtype == torch.bool:
        raise InputError("caption_image", "integer image rows", f"dtype {ci.dtype}")
    ci = ci.to(device=device, dtype=torch.int64)
    out_of_range = (ci < 0) | (ci >= n_img)
    if n_cap and bool(out_of_range.any()):
        j = int(out_of_range.nonzero()[0, 0])
        raise InputError(
            "caption_image", f"an image row in [0, {n_img})", str(int(ci[j])), where=f"caption {j}"
        )
    return ci


def _check_chunk(chunk: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError("chunk", "a positive int", repr(chunk))


@torch.no_grad()
def i2t_ranks(sims: ArrayLike, caption_image: ArrayLike, *, chunk: int = 256) -> Tensor:
    """Image-to-text ranks: the rank of the best-ranked ground-truth caption of each image.

    Args:
        sims: (N_img, N_cap) scores, image i against caption j (higher = more similar).
        caption_image: (N_cap,) int, the ground-truth image row of each caption; any number of captions
            per image (5, 1 or irregular), but every image needs at least one.
        chunk: image rows scored at a time; memory is O(chunk * N_cap).

    Returns:
        (N_img,) int64 tensor on the device of ``sims`` (CPU for arrays): the 0-based position, in the
        stable descending sort of row i, of the first caption of image i.

    Raises:
        InputError: bad shapes or dtypes, NaN scores, or an image without any caption.
    """
    n_img, n_cap = _check_sims(sims)
    _check_chunk(chunk)
    device = _device(sims)
    ci = _check_caption_image(caption_image, n_img, n_cap, device)
    counts = torch.bincount(ci, minlength=n_img)
    if n_img and bool((counts == 0).any()):
        i = int((counts == 0).nonzero()[0, 0])
        raise InputError(
            "caption_image", "at least one caption for every image row", "no caption", where=f"image row {i}"
        )
    # Captions grouped by image (CSR): the captions of rows a..b are by_image[offsets[a]:offsets[b]].
    by_image = torch.argsort(ci, stable=True)
    offsets = torch.zeros(n_img + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    offsets_cpu = offsets.cpu()
    col = torch.arange(n_cap, device=device)
    ranks = torch.empty(n_img, dtype=torch.int64, device=device)
    for start in range(0, n_img, chunk):
        stop = min(start + chunk, n_img)
        block = _rows(sims, start, stop)
        caps = by_image[int(offsets_cpu[start]) : int(offsets_cpu[stop])]
        local = ci[caps] - start
        gt = block[local, caps]
        # Best ground-truth score per row, then the lowest caption index that reaches it.
        best = torch.zeros(stop - start, dtype=block.dtype, device=device)
        best = best.scatter_reduce(0, local, gt, reduce="amax", include_self=False)
        cand = torch.where(gt == best[local], caps, n_cap)
        first = torch.full((stop - start,), n_cap, dtype=torch.int64, device=device)
        first = first.scatter_reduce(0, local, cand, reduce="amin", include_self=True)
        thr = best[:, None]
        ahead = torch.where(col[None, :] < first[:, None], block >= thr, block > thr)
        ranks[start:stop] = ahead.sum(dim=1)
    return ranks


@torch.no_grad()
def t2i_ranks(sims: ArrayLike, caption_image: ArrayLike, *, chunk: int = 256) -> Tensor:
    """Text-to-image ranks: the rank of each caption's ground-truth image in its column.

    The counts are accumulated over chunks of image rows (contiguous reads, also for memmaps); a NaN
    ground-truth score is caught there too, since every row is read.

    Args:
        sims: (N_img, N_cap) scores, image i against caption j.
        caption_image: (N_cap,) int, the ground-truth image row of each caption. Images without a
            caption are allowed here (they act as distractors).
        chunk: image rows scored at a time; memory is O(chunk * N_cap).

    Returns:
        (N_cap,) int64 tensor on the device of ``sims``: the 0-based position of image
        ``caption_image[j]`` in the stable descending sort of column j.
    """
    n_img, n_cap = _check_sims(sims)
    _check_chunk(chunk)
    device = _device(sims)
    ci = _check_caption_image(caption_image, n_img, n_cap, device)
    ranks = torch.zeros(n_cap, dtype=torch.int64, device=device)
    if n_cap == 0:
        return ranks
    cols = torch.arange(n_cap, device=device)
    if isinstance(sims, Tensor):
        gt = sims.detach()[ci, cols]
    else:
        gt = torch.from_numpy(np.array(sims[ci.numpy(), cols.numpy()]))
    # Count, chunk by chunk, the images ranked ahead of the ground truth in every column.
    thr = gt[None, :]
    for start in range(0, n_img, chunk):
        stop = min(start + chunk, n_img)
        block = _rows(sims, start, stop)
        row = torch.arange(start, stop, device=device)
        ahead = torch.where(row[:, None] < ci[None, :], block >= thr, block > thr)
        ranks += ahead.sum(dim=0)
    return ranks


def _recall_stats(ranks: np.ndarray, ks: Sequence[int], prefix: str) -> dict[str, float]:
    n = len(ranks)
    out = {f"{prefix}_r{k}": 100.0 * int(np.count_nonzero(ranks < k)) / n for k in ks}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanr"] = float(ranks.mean() + 1)
    return out


def retrieval_metrics(
    sims: ArrayLike, caption_image: ArrayLike, *, ks: Sequence[int] = (1, 5, 10), chunk: int = 256
) -> dict[str, float]:
    """Recall@K, median and mean rank in both directions, and rSum.

    Conventions follow the NCR evaluation used across the field: R@K in percent (share of queries with
    0-based rank < K), ``medr = floor(median(rank)) + 1`` and ``meanr = mean(rank) + 1`` (1-based).
    Ties are broken by the stable descending sort (lower index first); NCR's reversed ascending argsort
    orders ties the other way, which only matters when scores tie exactly.

    Args:
        sims: (N_img, N_cap) scores, image i against caption j.
        caption_image: (N_cap,) int, the ground-truth image row of each caption.
        ks: the recall cut-offs.
        chunk: image rows scored at a time.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "i2t_meanr", "t2i_r1", ..., "t2i_meanr", "rsum"}``
        (one ``*_r{k}`` per cut-off); ``rsum`` is the sum of all the recalls of both directions.

    Raises:
        InputError: as :func:`i2t_ranks`, or bad ``ks``.
    """
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise InputError("ks", "a non-empty sequence of positive ints", repr(ks))
    n_img, n_cap = _check_sims(sims)
    if n_img == 0 or n_cap == 0:
        raise InputError("sims", "at least one image and one caption", f"shape {(n_img, n_cap)}")
    r_i2t = i2t_ranks(sims, caption_image, chunk=chunk).cpu().numpy()
    r_t2i = t2i_ranks(sims, caption_image, chunk=chunk).cpu().numpy()
    out = _recall_stats(r_i2t, ks, "i2t")
    out.update(_recall_stats(r_t2i, ks, "t2i"))
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks)
    return out


@torch.no_grad()
def average_similarities(sims_list: Sequence[ArrayLike]) -> Tensor:
    """Mean of several models' similarity matrices, as two-network methods evaluate (``(A + B) / 2``).

    Args:
        sims_list: one or more (N_img, N_cap) tensors or arrays of the same shape.

    Returns:
        (N_img, N_cap) tensor on the device of the first matrix, in the promoted floating dtype.
    """
    mats = [m if isinstance(m, Tensor) else torch.from_numpy(np.asarray(m)) for m in sims_list]
    if not mats:
        raise InputError("sims_list", "at least one similarity matrix", "an empty sequence")
    shape = tuple(mats[0].shape)
    for i, m in enumerate(mats):
        _check_sims(m)
        if tuple(m.shape) != shape:
            raise InputError(
                "sims_list", f"matrices of one shape {shape}", f"shape {tuple(m.shape)}", where=f"item {i}"
            )
    dtype = mats[0].dtype
    for m in mats[1:]:
        dtype = torch.promote_types(dtype, m.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    device = mats[0].device
    total = mats[0].detach().to(device=device, dtype=dtype, copy=True)
    for m in mats[1:]:
        total += m.detach().to(device=device, dtype=dtype)
    return total / len(mats)
