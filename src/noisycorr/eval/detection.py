"""How well a clean/noisy split finds the truly mismatched training pairs (diagnostics only).

The ground-truth clean mask is known only for synthetic noise. It is compared here with a method's clean
probabilities and its predicted split, and it is never fed back into training. In the precision, recall
and F1 below the positive class is *noisy*: they score the set that a method throws out or relabels.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from noisycorr.errors import InputError

__all__ = ["detection_metrics", "precision_at_top", "roc_points"]


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputError(name, "a 1-D array of shape (N,)", f"shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(name, "real-valued scores (float or int)", f"dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.flatnonzero(np.isnan(arr))
    if bad.size:
        raise InputError(name, "scores without NaN", "NaN", where=f"index {int(bad[0])}")
    return arr


def _mask(x: np.ndarray, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise InputError(name, f"a 1-D mask of shape ({n},) like the scores", f"shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(name, "a bool mask (or 0/1 values)", f"dtype {arr.dtype}")
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise InputError(name, "a bool mask (or 0/1 values)", repr(arr[bad[0]].item()), where=f"index {int(bad[0])}")
    return arr.astype(bool)


def _both_classes(true_clean: np.ndarray) -> bool:
    return bool(true_clean.any()) and not bool(true_clean.all())


def detection_metrics(clean_prob: np.ndarray, predicted_clean: np.ndarray, true_clean: np.ndarray) -> dict[str, float]:
    """Quality of noisy-pair detection.

    Args:
        clean_prob: (N,) clean probability (or any score, higher = more likely clean).
        predicted_clean: (N,) bool, the method's split (True = clean).
        true_clean: (N,) bool, the ground truth (True = the pair is a true match).

    Returns:
        ``auc``: ROC-AUC of ``clean_prob`` for the true clean label (NaN when only one class is present);
        ``precision``, ``recall``, ``f1``: of the predicted noisy set against the true noisy set (0.0
        when undefined); ``predicted_noisy``, ``true_noisy``: shares of the N samples.
    """
    prob = _scores(clean_prob, "clean_prob")
    n = prob.shape[0]
    if n == 0:
        raise InputError("clean_prob", "at least one sample", "an empty array")
    pred_noisy = ~_mask(predicted_clean, "predicted_clean", n)
    true_clean = _mask(true_clean, "true_clean", n)
    true_noisy = ~true_clean

    auc = float(roc_auc_score(true_clean, prob)) if _both_classes(true_clean) else float("nan")
    tp = int(np.count_nonzero(pred_noisy & true_noisy))
    n_pred, n_true = int(pred_noisy.sum()), int(true_noisy.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "auc": auc,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "predicted_noisy": n_pred / n,
        "true_noisy": n_true / n,
    }


def precision_at_top(noisy_score: np.ndarray, true_clean: np.ndarray, fraction: float = 0.1) -> float:
    """Share of truly noisy samples among the most suspicious ones.

    The top ``k = max(1, int(N * fraction))`` samples by ``noisy_score`` are taken, highest first; equal
    scores are taken in index order (lower index first).

    Args:
        noisy_score: (N,) suspicion score, higher = more likely mismatched (e.g. ``1 - clean_prob``).
        true_clean: (N,) bool ground truth, True = true match.
        fraction: share of samples to inspect, in (0, 1].

    Returns:
        Precision in [0, 1].
    """
    score = _scores(noisy_score, "noisy_score")
    n = score.shape[0]
    if n == 0:
        raise InputError("noisy_score", "at least one sample", "an empty array")
    truth = _mask(true_clean, "true_clean", n)
    if not 0.0 < float(fraction) <= 1.0:
        raise InputError("fraction", "a value in (0, 1]", str(fraction))
    k = max(1, int(n * fraction))
    # A stable sort of the negated scores puts the highest first and keeps index order among ties.
    top = np.argsort(-score, kind="stable")[:k]
    return float(np.count_nonzero(~truth[top]) / k)


def roc_points(clean_prob: np.ndarray, true_clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of ``clean_prob`` for the true clean label, for plots.

    Args:
        clean_prob: (N,) clean probability (higher = more likely clean).
        true_clean: (N,) bool ground truth; must contain both clean and noisy samples.

    Returns:
        ``(fpr, tpr)``, two (M,) float64 arrays from (0, 0) to (1, 1).
    """
    prob = _scores(clean_prob, "clean_prob")
    truth = _mask(true_clean, "true_clean", prob.shape[0])
    if not _both_classes(truth):
        raise InputError(
            "true_clean", "both clean and noisy samples", "no noisy sample" if truth.all() else "no clean sample"
        )
    fpr, tpr, _ = roc_curve(truth, prob)
    return fpr.astype(np.float64), tpr.astype(np.float64)
