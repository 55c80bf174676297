"""Pair quality scores as plain arrays: from per-pair losses to scores, and from scores to decisions.

A score is the estimated probability that a training pair (caption k with its image) is a true
match: 1 = surely clean, 0 = surely mismatched, as cleanlab's label quality scores. Every function
here takes and returns NumPy arrays, has keyword-only options, and checks its input first: bad input
raises :class:`noisycorr.errors.InputError` (a ``ValueError``) with a one-line message that names the
argument, the position, what was expected and what was found.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from noisycorr.errors import InputError
from noisycorr.selection import clean_probability

__all__ = [
    "check_scores",
    "check_unit",
    "find_mismatched_pairs",
    "pair_scores_from_losses",
    "rank_pairs",
    "severity_order",
]

_MAX_SEED = 2**32 - 1  # scikit-learn's random_state bound


class _DefaultThreshold(float):
    """The default threshold 0.5, told apart from an explicit 0.5 so that ``fraction`` alone works."""

    __slots__ = ()


_DEFAULT_THRESHOLD = _DefaultThreshold(0.5)


# --------------------------------------------------------------------------------------------- checks


def _check_losses(losses: Any, name: str = "losses") -> np.ndarray:
    """(N,) float64 copy of a non-empty 1-D array of finite real numbers (not bool)."""
    try:
        arr = np.asarray(losses)
    except ValueError:  # ragged nested lists
        raise InputError(name, "a 1-D array (N,)", "a ragged sequence") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):  # bool is neither
        raise InputError(name, "a 1-D array of real-valued losses", f"dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(name, "a 1-D array (N,)", f"shape {arr.shape}")
    if arr.size == 0:
        raise InputError(name, "at least one pair", "an empty array")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(name, "finite values", repr(float(arr[bad[0]])), where=f"index {int(bad[0])}")
    return arr


def check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """Quality scores, checked.

    Args:
        scores: (N,) finite numbers in [0, 1], N >= 1.
        name: the argument's name, for the error message.

    Returns:
        (N,) float64.

    Raises:
        InputError: not a non-empty 1-D array of finite values in [0, 1] (the first bad index is named).
    """
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, "a 1-D array of numbers in [0, 1]", f"{type(scores).__name__}") from None
    if arr.ndim != 1:
        raise InputError(name, "a 1-D array (N,)", f"shape {arr.shape}")
    if arr.size == 0:
        raise InputError(name, "at least one pair", "an empty array")
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(name, "finite values in [0, 1]", repr(float(arr[k])), where=f"index {k}")
    return arr


def check_unit(value: Any, name: str) -> float:
    """An option in [0, 1] (a threshold or a share), checked; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InputError(name, "a number in [0, 1]", repr(value))
    return float(value)


def _check_index(index: Any, n: int) -> np.ndarray:
    """(n,) int64 positions that are a permutation of 0..n-1."""
    arr = np.asarray(index)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError("index", "integer pair indices", f"dtype {arr.dtype}")
    if arr.shape != (n,):
        raise InputError("index", f"shape ({n},), one pair index per loss", f"shape {arr.shape}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if bad.size:
        k = int(bad[0])
        raise InputError("index", f"pair indices in [0, {n})", str(int(arr[k])), where=f"position {k}")
    first = np.zeros(n, dtype=bool)
    first[np.unique(arr, return_index=True)[1]] = True
    repeats = np.flatnonzero(~first)
    if repeats.size:
        k = int(repeats[0])
        raise InputError("index", "each pair index once", f"{int(arr[k])} again", where=f"position {k}")
    return arr


# ------------------------------------------------------------------------------------------ scoring


def pair_scores_from_losses(
    losses: np.ndarray,
    *,
    index: np.ndarray | None = None,
    estimator: str = "gmm",
    seed: int = 0,
    monotone: bool = True,
) -> np.ndarray:
    """Quality scores from per-pair losses: the clean probability of a two-component mixture.

    A mismatched pair is fitted badly, so its loss is high; the losses are normalised and a mixture is
    fitted by :func:`noisycorr.selection.clean_probability`, as a method's ``score_pairs`` does for one
    network. The result is a score per pair in the order of the pair indices.

    Args:
        losses: (N,) finite per-pair losses, higher = more likely mismatched.
        index: (N,) integer pair index of each loss, a permutation of 0..N-1 (a per-sample pass
            gathered across processes arrives in any order); None: ``losses[k]`` is pair k.
        estimator: ``"gmm"`` (NCR) or ``"bmm"`` (BiCro).
        seed: seed of the GMM, an integer in [0, 2**32 - 1]; equal seeds give equal scores.
        monotone: make the score non-increasing in the loss, so pairs rank exactly as by their loss.

    Returns:
        (N,) float64 scores in [0, 1], 1 = surely a true match; entry k is pair k.

    Raises:
        InputError: losses that are not a non-empty 1-D array of finite numbers; an index of another
            length, dtype or range, or with a repeated entry; an unknown estimator; a bad seed.
    """
    x = _check_losses(losses)
    if index is not None:
        ordered = np.empty_like(x)
        ordered[_check_index(index, x.size)] = x
        x = ordered
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= _MAX_SEED:
        raise InputError("seed", f"an integer in [0, {_MAX_SEED}]", repr(seed))
    return clean_probability(x, estimator=estimator, seed=int(seed), monotone=bool(monotone))


# ------------------------------------------------------------------------------------- flag and rank


def severity_order(scores: np.ndarray) -> np.ndarray:
    """Pair indices, most suspicious first: lowest score first, ties by lower index.

    Args:
        scores: (N,) already checked scores (see :func:`check_scores`).

    Returns:
        (N,) int64 pair indices.
    """
    return np.argsort(scores, kind="stable")


def find_mismatched_pairs(
    scores: np.ndarray,
    *,
    threshold: float | None = _DEFAULT_THRESHOLD,
    fraction: float | None = None,
    return_indices: bool = False,
) -> np.ndarray:
    """Flag the pairs that are suspected mismatches.

    A score is the model's posterior probability that the pair is a true match, so the default
    ``threshold=0.5`` flags exactly the pairs that are more likely mismatched than not
    (``score < 0.5``). A lower threshold flags fewer, surer mismatches; a higher one catches more at
    the cost of flagging clean pairs.

    Exactly one rule is used: with ``fraction``, the ``round(fraction * N)`` lowest-scoring pairs are
    flagged (Python rounding, halves to even; ties at the cut go to the lower index), whatever their
    scores; otherwise pairs with ``score < threshold`` are flagged. Passing ``fraction`` replaces the
    default threshold; passing both explicitly, or ``threshold=None`` without a fraction, is an error.

    Args:
        scores: (N,) quality scores in [0, 1], 1 = surely a true match.
        threshold: flag ``score < threshold``; in [0, 1].
        fraction: flag this share of the pairs, in [0, 1] (0 flags none).
        return_indices: return the flagged indices instead of a mask.

    Returns:
        (N,) bool mask, True = suspected mismatch; or with ``return_indices`` the (n_flagged,) int64
        flagged indices ranked by severity: lowest score first, ties by lower index.

    Raises:
        InputError: neither or both of ``threshold`` / ``fraction``, or one that is not a number in
            [0, 1]; scores that are not a non-empty 1-D array of finite values in [0, 1].
    """
    explicit_threshold = threshold is not None and threshold is not _DEFAULT_THRESHOLD
    if fraction is not None and explicit_threshold:
        raise InputError("threshold / fraction", "one of the two", f"both ({threshold!r} and {fraction!r})")
    if fraction is None and threshold is None:
        raise InputError("threshold / fraction", "one of the two", "both None")
    s = check_scores(scores)
    order = severity_order(s)
    if fraction is not None:
        flagged = order[: int(round(check_unit(fraction, "fraction") * s.size))]
    else:
        flagged = order[s[order] < check_unit(threshold, "threshold")]
    if return_indices:
        return flagged.astype(np.int64)
    mask = np.zeros(s.size, dtype=bool)
    mask[flagged] = True
    return mask


def rank_pairs(scores: np.ndarray) -> np.ndarray:
    """Suspicion rank of every pair: 1 = most suspicious (lowest score), ties by lower index.

    Args:
        scores: (N,) quality scores in [0, 1].

    Returns:
        (N,) int64 ranks, a permutation of 1..N.

    Raises:
        InputError: scores that are not a non-empty 1-D array of finite values in [0, 1].
    """
    s = check_scores(scores)
    ranks = np.empty(s.size, dtype=np.int64)
    ranks[severity_order(s)] = np.arange(1, s.size + 1, dtype=np.int64)
    return ranks
