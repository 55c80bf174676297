"""Score a method's per-sample beliefs (:meth:`Method.diagnostics`) against the ground truth.

The ground truth is read here and in the final detection scores, nowhere else during training: it
only reaches the log (``det_*``: detection quality of a clean probability; ``diag_*``: the share of
truly clean samples in each named group of a partition;
``diag_*replace_*_precision``: the share of a method's replacement partners that truly match).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from noisycorr.selection import Selection


def replacement_precision(partners: np.ndarray, kind: str, pair_image: np.ndarray, true_image: np.ndarray) -> float:
    """Share of the replaced pairs whose replacement partner truly matches (NaN when none is replaced).

    Args:
        partners: (N,) int, the sample whose caption (``kind="caption"``) or image (``"image"``) pair k
            is trained with; -1 = not replaced.
        pair_image: (N,) the image row each training pair carries (the noisy pairing).
        true_image: (N,) the image row each caption truly belongs to (the clean pairing).
    """
    partners = np.asarray(partners, dtype=np.int64)
    k = np.flatnonzero(partners >= 0)
    if k.size == 0:
        return float("nan")
    j = partners[k]
    if kind == "caption":  # pair k's image with caption j
        hit = true_image[j] == pair_image[k]
    else:  # pair k's caption with pair j's image
        hit = pair_image[j] == true_image[k]
    return float(hit.mean())


def diagnostics_row(
    splits: Mapping[str, Selection], truth: np.ndarray | None,
    pairing: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Log columns for each named split, when the truth is known.

    Args:
        splits: the method's current selections, by name.
        truth: (N,) bool, True where the training sample is truly clean; None when unknown.
        pairing: (N,) image row of each training pair and (N,) true image row of each caption
            (pairs task with synthetic noise), to score the selections' replacement ``partners``.
    """
    if truth is None or not splits:
        return {}
    from noisycorr.eval.detection import detection_metrics

    out: dict[str, float] = {}
    grouped = [name for name, sel in splits.items() if sel.groups]
    for name, sel in splits.items():
        if sel.prob is not None:
            metrics = detection_metrics(sel.prob, sel.clean, truth)
            out.update({f"det_{name}_{k}": round(float(v), 5) for k, v in metrics.items()})
            if sel.loss is not None:
                loss_auc = detection_metrics(-np.asarray(sel.loss, dtype=np.float64), sel.clean, truth)["auc"]
                out[f"det_{name}_loss_auc"] = round(float(loss_auc), 5)
        if sel.groups:
            out["diag_clean_share"] = float(truth.mean())
            prefix = "diag_" if len(grouped) == 1 else f"diag_{name}_"
            for group, mask in sel.groups.items():
                mask = np.asarray(mask, dtype=bool)
                out[f"{prefix}{group}_clean"] = float(truth[mask].mean()) if mask.any() else float("nan")
        if sel.partners and pairing is not None:
            prefix = "diag_" if len(splits) == 1 else f"diag_{name}_"
            for kind, idx in sel.partners.items():
                out[f"{prefix}replace_{kind}_precision"] = replacement_precision(idx, kind, *pairing)
    return out
