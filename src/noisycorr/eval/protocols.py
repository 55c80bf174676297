"""The standard test protocols of image-text retrieval (Flickr30K 1K, MS-COCO 5-fold 1K and 5K, CC152K).

A protocol says which image/caption blocks of a test split are scored and how their metrics are
combined. Given a similarity *function* it asks only for the blocks it needs, so the COCO 5-fold
protocol never scores the off-fold image/caption pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from noisycorr.errors import InputError
from noisycorr.eval.retrieval import retrieval_metrics

_RECALL_KEY = re.compile(r"(i2t|t2i)_r\d+")

SimsFn = Callable[[slice, slice], Tensor | np.ndarray]

__all__ = ["PROTOCOLS", "Protocol", "SimsFn", "evaluate_protocol"]


@dataclass(frozen=True)
class Protocol:
    """A test protocol.

    Attributes:
        name: key in :data:`PROTOCOLS`.
        n_images: images the split must have, or None for any size.
        captions_per_image: captions per image the split must have, or None for any.
        n_folds: consecutive equal folds of images (and of their captions), evaluated separately.
        description: where the protocol is used.
    """

    name: str
    n_images: int | None
    captions_per_image: int | None
    n_folds: int
    description: str


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("single", None, None, 1, "the whole split as one block, any size (validation, custom data)"),
        Protocol("1k", 1000, None, 1, "1,000 test images as one block (Flickr30K 1K test: 1000 x 5000)"),
        Protocol(
            "coco5fold1k",
            5000,
            5,
            5,
            "MS-COCO 1K: mean over 5 folds of 1000 images / 5000 captions of the 5K testall split",
        ),
        Protocol("coco5k", 5000, 5, 1, "MS-COCO 5K: all 5000 testall images / 25000 captions as one block"),
        Protocol("cc152k", 1000, 1, 1, "CC152K test: 1000 images, one caption each"),
    )
}


def _check_split(
    caption_image: Tensor | np.ndarray, spec: Protocol, captions_per_image: int
) -> tuple[np.ndarray, int, int]:
    """Validate split sizes against ``spec``; return caption_image as an int64 array, N_img, N_cap."""
    if (
        isinstance(captions_per_image, bool)
        or not isinstance(captions_per_image, int)
        or captions_per_image < 1
    ):
        raise InputError("captions_per_image", "a positive int", repr(captions_per_image))
    if spec.captions_per_image is not None and captions_per_image != spec.captions_per_image:
        raise InputError(
            "captions_per_image",
            f"{spec.captions_per_image} for protocol {spec.name!r}",
            str(captions_per_image),
        )
    ci = (
        caption_image.detach().cpu().numpy()
        if isinstance(caption_image, Tensor)
        else np.asarray(caption_image)
    )
    if ci.ndim != 1 or not (np.issubdtype(ci.dtype, np.integer) or ci.size == 0):
        raise InputError(
            "caption_image", "a 1-D integer array, one image row per caption", f"{ci.dtype} {ci.shape}"
        )
    n_cap = int(ci.shape[0])
    if n_cap == 0 or n_cap % captions_per_image:
        raise InputError(
            "caption_image",
            f"a positive multiple of captions_per_image={captions_per_image} captions",
            f"{n_cap} captions",
        )
    n_img = n_cap // captions_per_image
    if spec.n_images is not None and n_img != spec.n_images:
        raise InputError(
            "caption_image",
            f"{spec.n_images} images x {captions_per_image} captions for protocol {spec.name!r}",
            f"{n_img} images ({n_cap} captions)",
        )
    return ci.astype(np.int64, copy=False), n_img, n_cap


def _fold_metrics(sims_fn: SimsFn, ci: np.ndarray, img: slice, cap: slice, fold: int) -> dict[str, float]:
    local = ci[cap] - img.start
    n_img = img.stop - img.start
    outside = (local < 0) | (local >= n_img)
    if outside.any():
        j = int(np.flatnonzero(outside)[0]) + cap.start
        raise InputError(
            "caption_image",
            f"an image row in [{img.start}, {img.stop}) (fold {fold})",
            str(int(ci[j])),
            where=f"caption {j}",
        )
    sims = sims_fn(img, cap)
    shape = (n_img, cap.stop - cap.start)
    if not isinstance(sims, (Tensor, np.ndarray)) or tuple(sims.shape) != shape:
        found = f"shape {tuple(sims.shape)}" if hasattr(sims, "shape") else type(sims).__name__
        raise InputError("sims_fn", f"a {shape} block for images {img} and captions {cap}", found)
    return retrieval_metrics(sims, local)


def evaluate_protocol(
    sims_fn: SimsFn | Tensor | np.ndarray,
    caption_image: Tensor | np.ndarray,
    protocol: str,
    *,
    captions_per_image: int,
) -> dict[str, Any]:
    """Evaluate a test split under a standard protocol.

    Folds are consecutive: fold f holds images ``f*n : (f+1)*n`` and captions
    ``f*n*cpi : (f+1)*n*cpi`` (``n`` = images per fold), and every caption of a fold must belong to an
    image of that fold. Metrics are averaged over folds (medr / meanr too, like NCR), and ``rsum`` is
    the sum of the averaged recalls.

    Note:
        NCR's evaluation code (and the forks that copy it) *prints* ``mean(ar) * 6`` as "rsum" in the
        COCO 5-fold branch, i.e. six times the mean image-to-text recall, not the rSum. Numbers read
        from such logs must be recomputed from the printed R@K; this function returns the true rSum.

    Args:
        sims_fn: ``sims_fn(img_slice, cap_slice) -> (n_img, n_cap)`` scores of those images against
            those captions; only the blocks the protocol needs are asked for. A full (N_img, N_cap)
            tensor or array is also accepted.
        caption_image: (N_cap,) int, the ground-truth image row of each caption.
        protocol: a key of :data:`PROTOCOLS`.
        captions_per_image: captions per image of the split; N_img = N_cap / captions_per_image.

    Returns:
        The keys of :func:`retrieval_metrics` (fold means), plus ``"folds"``: the list of per-fold
        metric dicts when the protocol has more than one fold.

    Raises:
        InputError: unknown protocol, split sizes that do not fit it, captions outside their fold, or a
            block of the wrong shape.
    """
    if protocol not in PROTOCOLS:
        raise InputError("protocol", f"one of {sorted(PROTOCOLS)}", repr(protocol))
    spec = PROTOCOLS[protocol]
    ci, n_img, n_cap = _check_split(caption_image, spec, captions_per_image)
    if isinstance(sims_fn, (Tensor, np.ndarray)):
        full = sims_fn
        if tuple(full.shape) != (n_img, n_cap):
            raise InputError(
                "sims",
                f"shape ({n_img}, {n_cap}) ({n_cap} captions, {captions_per_image} per image)",
                f"shape {tuple(full.shape)}",
            )
        def score_block(img: slice, cap: slice) -> Tensor | np.ndarray:
            return full[img, cap]
    else:
        score_block = sims_fn
    if n_img % spec.n_folds:
        raise InputError("caption_image", f"a number of images divisible by {spec.n_folds} folds", str(n_img))
    per_fold = n_img // spec.n_folds
    folds = []
    for f in range(spec.n_folds):
        img = slice(f * per_fold, (f + 1) * per_fold)
        cap = slice(f * per_fold * captions_per_image, (f + 1) * per_fold * captions_per_image)
        folds.append(_fold_metrics(score_block, ci, img, cap, f))
    if spec.n_folds == 1:
        return dict(folds[0])
    out: dict[str, Any] = {key: sum(m[key] for m in folds) / len(folds) for key in folds[0] if key != "rsum"}
    out["rsum"] = sum(v for key, v in out.items() if _RECALL_KEY.fullmatch(key))
    out["folds"] = folds
    return out
