"""Score a method's per-sample beliefs (:meth:`Method.diagnostics`) against the ground truth.

The ground truth is read here and in the final detection scores, nowhere else during training: it
only reaches the log (``det_*``: detection quality of a clean probability; ``diag_*``: the share of
truly clean samples in each named group of a partition).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from noisycorr.selection import Selection


def diagnostics_row(splits: Mapping[str, Selection], truth: np.ndarray | None) -> dict[str, float]:
    """Log columns for each named split, when the truth is known.

    Args:
        splits: the method's current selections, by name.
        truth: (N,) bool, True where the training sample is truly clean; None when unknown.
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
    return out
