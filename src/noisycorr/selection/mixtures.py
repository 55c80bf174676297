"""Per-sample clean probabilities from a two-component mixture fitted to per-sample losses.

Papers:
- NCR: Huang et al., "Learning with Noisy Correspondence for Cross-modal Matching", NeurIPS 2021.
  Gaussian mixture (scikit-learn, 2 components, 10 EM iterations, reg_covar 5e-4).
- BiCro: Yang et al., "BiCro: Noisy Correspondence Rectification for Multi-modality Data via
  Bi-directional Cross-modal Similarity Consistency", CVPR 2023. Beta mixture, the model introduced by
  Arazo et al., "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019.

Algorithm: mismatched pairs are fitted badly, so their loss is high. The losses of the whole training set
are min-max normalised to [0, 1], a two-component mixture is fitted to them, and the clean probability of
a sample is its posterior under the component with the smaller mean, made non-increasing in the loss
(see ``monotone_in_loss``). A sample is put in the clean
("labeled") set when that probability is strictly above a threshold (0.5). When that would leave no
noisy sample at all, the lowest-probability 1% are moved to the noisy set so that both sets are non-empty.

The Beta mixture is fitted by EM. The E-step computes the posteriors in log space. The M-step matches
each component's Beta distribution to the responsibility-weighted mean and variance (method of moments).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta as beta_dist
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from noisycorr.errors import InputError

__all__ = [
    "ESTIMATORS",
    "BetaMixture1D",
    "Selection",
    "bmm_clean_probability",
    "clean_probability",
    "gmm_clean_probability",
    "minmax_normalise",
    "monotone_in_loss",
    "split_clean",
]

ESTIMATORS: tuple[str, ...] = ("gmm", "bmm")

# The M-step needs 0 < var < mean * (1 - mean). These bounds keep alpha and beta finite and positive when a
# component collapses onto (nearly) one value (concentration alpha + beta capped) or splits towards both
# ends of [0, 1] (alpha + beta kept above 1e-6).
_MAX_CONCENTRATION = 1e6
_MAX_VAR_RATIO = 1.0 - 1e-6
# A component whose total responsibility is below this keeps its previous parameters.
_MIN_MASS = 1e-12


def _as_1d_finite(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputError(name, "a 1-D array of shape (N,)", f"shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(name, "real numbers (float or int)", f"dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(name, "finite values", repr(float(arr[bad[0]])), where=f"index {int(bad[0])}")
    return arr


def minmax_normalise(x: np.ndarray) -> np.ndarray:
    """Rescale values linearly to [0, 1]: the minimum maps to 0, the maximum to 1.

    Args:
        x: (N,) finite values.

    Returns:
        (N,) float64 in [0, 1]. A constant (or empty) array maps to zeros.
    """
    arr = _as_1d_finite(x, "x")
    if arr.size == 0:
        return np.zeros(0, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr)
    # Clip guards against rounding putting a value a hair outside [0, 1].
    return np.clip((arr - lo) / (hi - lo), 0.0, 1.0)


TIE_BREAK = 1e-6  # weight of the loss itself in monotone_in_loss: no ties where the posterior underflows


def monotone_in_loss(x: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Make a clean probability non-increasing in the loss.

    When the clean component is narrower than the noisy one (the usual case), the noisy component's
    wider tail dominates again below the clean mean: the raw posterior of the very lowest losses
    falls, and pairs the model fits best would be ranked as less clean than average ones. Left of the
    posterior's peak ``(x*, p*)`` the probability becomes ``p* + (1 - p*) * (x* - x) / x*``: never below
    the peak, strictly decreasing in x, 1 at zero loss. Right of it, the running maximum from the right
    (equal to the posterior where that already decreases). Finally a ``TIE_BREAK`` (1e-6) share of
    ``1 - x`` is mixed in: far in the noisy tail the posterior underflows to exactly 0 (1,224 of the
    13,975 pairs of a 40 %-noise flickr-dev run), and without it those pairs would tie and an audit
    would list them in index order instead of by loss.

    Args:
        x: (N,) normalised losses in [0, 1].
        prob: (N,) posterior of the clean component at ``x``.

    Returns:
        (N,) float64 in [0, 1], strictly decreasing in x: samples rank exactly as by their loss.
    """
    order = np.argsort(x, kind="stable")
    xs, ps = x[order], prob[order]
    env = np.maximum.accumulate(ps[::-1])[::-1]
    peak = int(np.argmax(ps))
    x_peak, p_peak = float(xs[peak]), float(ps[peak])
    if x_peak > 0.0:
        left = slice(0, peak)
        env[left] = p_peak + (1.0 - p_peak) * (x_peak - xs[left]) / x_peak
    out = np.empty_like(env)
    out[order] = env
    return np.clip((1.0 - TIE_BREAK) * out + TIE_BREAK * (1.0 - x), 0.0, 1.0)


def gmm_clean_probability(
    losses: np.ndarray,
    *,
    seed: int = 0,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    monotone: bool = True,
) -> np.ndarray:
    """NCR's estimator: posterior of the low-mean component of a 2-component GMM on normalised losses.

    The fit is short by design (``max_iter=10`` as in NCR), so scikit-learn's ConvergenceWarning is
    silenced here. ``monotone`` (default) applies :func:`monotone_in_loss`; NCR uses the raw posterior,
    which ranks the lowest losses below average ones (``monotone=False`` gives it).

    Args:
        losses: (N,) per-sample losses (higher = more likely mismatched).
        seed: ``random_state`` of the GaussianMixture; equal seeds give equal results.
        max_iter: EM iterations.
        tol: EM convergence threshold.
        reg_covar: added to the variances.

    Returns:
        (N,) float64 clean probabilities in [0, 1]. When all losses are equal (or N < 2) there is
        nothing to separate and every sample gets 1.0.
    """
    x = minmax_normalise(losses)
    if x.size < 2 or float(x.max()) == 0.0:
        return np.ones_like(x)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x[:, None])
        post = gmm.predict_proba(x[:, None])
    clean = int(np.argmin(gmm.means_[:, 0]))
    prob = np.clip(post[:, clean].astype(np.float64), 0.0, 1.0)
    return monotone_in_loss(x, prob) if monotone else prob


def _moment_params(mean: float, var: float) -> tuple[float, float]:
    """(alpha, beta) of the Beta with this mean and variance, the variance kept where both stay finite."""
    limit = mean * (1.0 - mean)
    var = min(max(var, limit / (_MAX_CONCENTRATION + 1.0)), limit * _MAX_VAR_RATIO)
    common = limit / var - 1.0
    return mean * common, (1.0 - mean) * common


class BetaMixture1D:
    """Two-component Beta mixture on [0, 1], fitted by EM with a weighted method-of-moments M-step.

    Values are clipped into ``[eps, 1 - eps]`` before fitting and evaluation. Initial state: ``init``
    (alphas, betas, weights), by default alphas ``[1, 2]``, betas ``[2, 1]`` (component 0 leans to 0,
    component 1 to 1), weights ``[0.5, 0.5]``; :meth:`from_groups` starts each component from a group of
    samples (MSCN: the meta set's noisy and clean scores). ``fit`` always restarts from this state and
    runs exactly ``max_iter`` EM steps.

    Attributes:
        alphas: (2,) first shape parameters.
        betas: (2,) second shape parameters.
        weights: (2,) mixing weights (sum to 1).
    """

    def __init__(
        self, *, max_iter: int = 10, eps: float = 1e-4,
        init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ):
        if int(max_iter) < 0:
            raise InputError("max_iter", "a non-negative integer", str(max_iter))
        if not 0.0 < float(eps) < 0.5:
            raise InputError("eps", "a value in (0, 0.5)", str(eps))
        self.max_iter = int(max_iter)
        self.eps = float(eps)
        if init is None:
            init = (np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([0.5, 0.5]))
        alphas, betas, weights = (np.asarray(v, dtype=np.float64).copy() for v in init)
        ok = all(v.shape == (2,) and np.isfinite(v).all() and (v > 0).all() for v in (alphas, betas, weights))
        if not ok or not np.isclose(weights.sum(), 1.0):
            raise InputError("init", "(alphas, betas, weights), each 2 positive numbers, weights summing to 1",
                             f"{alphas}, {betas}, {weights}")
        self._init = (alphas, betas, weights)
        self._reset()

    @classmethod
    def from_groups(
        cls, first: np.ndarray, second: np.ndarray, *, max_iter: int = 10, eps: float = 1e-4
    ) -> BetaMixture1D:
        """A mixture whose component k starts at the moment-matched Beta of group k, weights ``[0.5, 0.5]``.

        Args:
            first, second: (n_k,) values in [0, 1], at least 2 each (clipped into ``[eps, 1 - eps]``).
        """
        probe = cls(max_iter=max_iter, eps=eps)
        params = []
        for name, group in (("first", first), ("second", second)):
            x = probe._prepare(group)
            if x.size < 2:
                raise InputError(name, "at least 2 values to initialise a component", f"{x.size}")
            params.append(_moment_params(float(x.mean()), float(x.var())))
        alphas = np.array([params[0][0], params[1][0]])
        betas = np.array([params[0][1], params[1][1]])
        return cls(max_iter=max_iter, eps=eps, init=(alphas, betas, np.array([0.5, 0.5])))

    def _reset(self) -> None:
        self.alphas, self.betas, self.weights = (v.copy() for v in self._init)

    @property
    def means(self) -> np.ndarray:
        """(2,) component means ``alpha / (alpha + beta)``."""
        return self.alphas / (self.alphas + self.betas)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        arr = _as_1d_finite(x, "x")
        outside = np.flatnonzero((arr < 0.0) | (arr > 1.0))
        if outside.size:
            i = int(outside[0])
            raise InputError("x", "values in [0, 1] (normalise losses first)", repr(float(arr[i])), where=f"index {i}")
        return np.clip(arr, self.eps, 1.0 - self.eps)

    def _log_weighted(self, x: np.ndarray) -> np.ndarray:
        """(N, 2) log of weight * density, for already clipped ``x``."""
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)
        return log_w[None, :] + beta_dist.logpdf(x[:, None], self.alphas[None, :], self.betas[None, :])

    def _posterior(self, x: np.ndarray) -> np.ndarray:
        log_l = self._log_weighted(x)
        post = np.exp(log_l - log_l.max(axis=1, keepdims=True))
        return post / post.sum(axis=1, keepdims=True)

    def _m_step(self, x: np.ndarray, resp: np.ndarray) -> None:
        for k in range(2):
            r = resp[:, k]
            mass = float(r.sum())
            if mass < _MIN_MASS:
                continue
            mean = float(np.dot(r, x) / mass)
            var = float(np.dot(r, (x - mean) ** 2) / mass)
            self.alphas[k], self.betas[k] = _moment_params(mean, var)
        self.weights = resp.sum(axis=0) / resp.shape[0]

    def fit(self, x: np.ndarray) -> BetaMixture1D:
        """Fit by EM, starting from the initial state.

        Args:
            x: (N,) values in [0, 1], N >= 1.

        Returns:
            self.
        """
        xc = self._prepare(x)
        if xc.size == 0:
            raise InputError("x", "at least one value", "an empty array")
        self._reset()
        for _ in range(self.max_iter):
            self._m_step(xc, self._posterior(xc))
        return self

    def likelihood(self, x: np.ndarray) -> np.ndarray:
        """Weighted component densities ``weight_k * Beta(x; alpha_k, beta_k)``.

        Args:
            x: (N,) values in [0, 1].

        Returns:
            (N, 2) float64.
        """
        return np.exp(self._log_weighted(self._prepare(x)))

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """Posterior probability of each component.

        Args:
            x: (N,) values in [0, 1].

        Returns:
            (N, 2) float64, rows sum to 1.
        """
        return self._posterior(self._prepare(x))


def bmm_clean_probability(
    losses: np.ndarray, *, max_iter: int = 10, eps: float = 1e-4, monotone: bool = True
) -> np.ndarray:
    """BiCro's estimator: posterior of the low-mean component of a Beta mixture on normalised losses.

    Args:
        losses: (N,) per-sample losses (higher = more likely mismatched).
        max_iter: EM iterations.
        eps: values are clipped into ``[eps, 1 - eps]``.
        monotone: apply :func:`monotone_in_loss` (BiCro uses the raw posterior).

    Returns:
        (N,) float64 clean probabilities in [0, 1]. When all losses are equal (or N < 2) every sample
        gets 1.0.
    """
    x = minmax_normalise(losses)
    if x.size < 2 or float(x.max()) == 0.0:
        return np.ones_like(x)
    bmm = BetaMixture1D(max_iter=max_iter, eps=eps).fit(x)
    clean = int(np.argmin(bmm.means))
    prob = np.clip(bmm.posterior(x)[:, clean], 0.0, 1.0)
    return monotone_in_loss(x, prob) if monotone else prob


def clean_probability(
    losses: np.ndarray, *, estimator: str = "gmm", seed: int = 0, monotone: bool = True
) -> np.ndarray:
    """Clean probability of each sample from its loss, with the named estimator.

    Args:
        losses: (N,) per-sample losses.
        estimator: ``"gmm"`` (NCR) or ``"bmm"`` (BiCro).
        seed: seed of the GMM (the Beta mixture is deterministic and ignores it).
        monotone: make the posterior non-increasing in the loss (:func:`monotone_in_loss`); False
            gives the mixture's raw posterior, as the authors' code uses it.

    Returns:
        (N,) float64 in [0, 1].
    """
    if estimator == "gmm":
        return gmm_clean_probability(losses, seed=seed, monotone=monotone)
    if estimator == "bmm":
        return bmm_clean_probability(losses, monotone=monotone)
    raise InputError("estimator", f"one of {', '.join(ESTIMATORS)}", repr(estimator))


def split_clean(prob: np.ndarray, *, threshold: float = 0.5, min_noisy_fraction: float = 0.01) -> np.ndarray:
    """Split into clean (``prob > threshold``) and noisy, with NCR's fallback when nothing is noisy.

    If every sample is clean, the ``int(N * min_noisy_fraction)`` samples with the lowest probability
    (ties: lower index first) are marked noisy.

    Args:
        prob: (N,) clean probabilities.
        threshold: a sample is clean when its probability is strictly greater.
        min_noisy_fraction: share forced noisy by the fallback, in [0, 1].

    Returns:
        (N,) bool, True = clean.
    """
    p = _as_1d_finite(prob, "prob")
    if not 0.0 <= float(min_noisy_fraction) <= 1.0:
        raise InputError("min_noisy_fraction", "a value in [0, 1]", str(min_noisy_fraction))
    clean = p > threshold
    if clean.size and bool(clean.all()):
        k = int(clean.size * min_noisy_fraction)
        clean[np.argsort(p, kind="stable")[:k]] = False
    return clean


@dataclass
class Selection:
    """What a method currently believes about each training sample: a clean / noisy split.

    The one diagnostics record of both tasks (:meth:`Method.diagnostics`): the engine scores it
    against the ground truth for the log, and nothing else reads the truth.

    Attributes:
        prob: (N,) float64 clean probability; None when the method has no probability (a partition).
        clean: (N,) bool, True = clean (the subset the method trusts).
        loss: (N,) the per-sample statistic the probabilities came from (higher = more likely
            mismatched), kept for diagnostics; None when unknown.
        groups: named (N,) bool masks of the subsets a method trains differently (e.g. NIRNL's
            pure / hard / noisy); None when the split has two sides only.
        partners: replacement partners the method trains samples with (pairs task), by kind:
            ``"caption"``: (N,) int64, pair k is trained with the caption of sample ``partners[k]``
            (its own image kept); ``"image"``: pair k's caption with the image of sample
            ``partners[k]``; -1 where a pair is not replaced. The engine scores their precision
            against the clean pairing for the log (``diag_*replace_{kind}_precision``).
    """

    prob: np.ndarray | None
    clean: np.ndarray
    loss: np.ndarray | None = None
    groups: dict[str, np.ndarray] | None = None
    partners: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.clean = np.asarray(self.clean, dtype=bool)
        if self.prob is not None:
            self.prob = np.asarray(self.prob, dtype=np.float64)
        shape = self.clean.shape if self.prob is None else self.prob.shape
        if self.clean.ndim != 1 or shape != self.clean.shape:
            raise InputError(
                "Selection", "prob and clean of the same shape (N,)", f"{shape} and {self.clean.shape}"
            )
        for name, mask in (self.groups or {}).items():
            if np.shape(mask) != self.clean.shape:
                raise InputError("Selection", f"group {name!r} of shape {self.clean.shape}", str(np.shape(mask)))
        for name, idx in (self.partners or {}).items():
            if name not in ("caption", "image") or np.shape(idx) != self.clean.shape:
                raise InputError("Selection", f"partners 'caption' / 'image' of shape {self.clean.shape}",
                                 f"{name!r} of shape {np.shape(idx)}")

    @classmethod
    def from_losses(
        cls, losses: np.ndarray, *, estimator: str = "gmm", seed: int = 0, threshold: float = 0.5
    ) -> Selection:
        """Estimate clean probabilities from (N,) per-sample losses and split them (see ``split_clean``)."""
        prob = clean_probability(losses, estimator=estimator, seed=seed)
        return cls(prob=prob, clean=split_clean(prob, threshold=threshold))

    @property
    def noisy_fraction(self) -> float:
        """Share of samples in the noisy set (0.0 when there are none)."""
        return float(1.0 - self.clean.mean()) if self.clean.size else 0.0
