"""Clean-probability estimators (GMM, Beta mixture), min-max normalisation and the clean/noisy split."""

from __future__ import annotations

import numpy as np
import pytest

from noisycorr.errors import InputError
from noisycorr.selection import (
    BetaMixture1D,
    Selection,
    bmm_clean_probability,
    clean_probability,
    gmm_clean_probability,
    minmax_normalise,
    monotone_in_loss,
    split_clean,
)


def beta_sample(n_low: int, n_high: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n_low draws of Beta(2, 8) then n_high of Beta(8, 2); returns values and the 'from Beta(2, 8)' mask."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.beta(2, 8, n_low), rng.beta(8, 2, n_high)])
    return x, np.arange(n_low + n_high) < n_low


def two_cluster_losses(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """800 low losses around 1 and 200 high ones around 3, shuffled; returns losses and the clean mask."""
    rng = np.random.default_rng(seed)
    losses = np.concatenate([rng.normal(1.0, 0.1, 800), rng.normal(3.0, 0.2, 200)])
    clean = np.arange(1000) < 800
    perm = rng.permutation(1000)
    return losses[perm], clean[perm]


# ---------------------------------------------------------------- minmax_normalise


def test_minmax_maps_range_to_unit_interval():
    out = minmax_normalise(np.array([2.0, 4.0, 6.0, 3.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 0.25])
    assert out.dtype == np.float64


def test_minmax_negative_and_int_input():
    out = minmax_normalise(np.array([-3, -1, 1]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    assert out.dtype == np.float64


@pytest.mark.parametrize("x", [np.full(7, 3.25), np.array([5.0]), np.zeros(0)])
def test_minmax_constant_single_and_empty_give_zeros(x):
    out = minmax_normalise(x)
    assert out.shape == x.shape
    assert np.all(out == 0.0)


@pytest.mark.parametrize("x", [np.ones((2, 3)), np.array([1.0, np.nan]), np.array([0.0, np.inf])])
def test_minmax_rejects_bad_input(x):
    with pytest.raises(InputError):
        minmax_normalise(x)


# ---------------------------------------------------------------- BetaMixture1D


def test_beta_mixture_initial_state():
    bmm = BetaMixture1D()
    np.testing.assert_array_equal(bmm.alphas, [1.0, 2.0])
    np.testing.assert_array_equal(bmm.betas, [2.0, 1.0])
    np.testing.assert_array_equal(bmm.weights, [0.5, 0.5])
    assert bmm.max_iter == 10 and bmm.eps == 1e-4


@pytest.mark.parametrize(("n_low", "n_high"), [(3000, 2000), (4000, 1000)])
def test_beta_mixture_recovers_known_components(n_low, n_high):
    x, low = beta_sample(n_low, n_high)
    bmm = BetaMixture1D(max_iter=100).fit(x)
    np.testing.assert_allclose(bmm.means, [0.2, 0.8], atol=0.02)
    np.testing.assert_allclose(bmm.weights, [n_low / len(x), n_high / len(x)], atol=0.03)
    post = bmm.posterior(x)
    assert post.shape == (len(x), 2)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)
    assert np.mean((post[:, 0] > 0.5) == low) > 0.95


def test_beta_mixture_heavily_unbalanced_still_separates():
    # 90/10: the moment-matching EM from BiCro's start point need not reach the true weights here,
    # but the low component and the classification must still be right.
    x, low = beta_sample(4500, 500)
    bmm = BetaMixture1D(max_iter=100).fit(x)
    assert bmm.means[0] == pytest.approx(0.2, abs=0.02)
    assert bmm.means[1] > 0.4
    assert np.mean((bmm.posterior(x)[:, 0] > 0.5) == low) > 0.95


def test_beta_mixture_posterior_is_normalised_likelihood():
    x, _ = beta_sample(300, 200, seed=1)
    bmm = BetaMixture1D().fit(x)
    lik = bmm.likelihood(x)
    assert lik.shape == (500, 2) and np.all(lik >= 0)
    np.testing.assert_allclose(bmm.posterior(x), lik / lik.sum(axis=1, keepdims=True), rtol=1e-10)


def test_beta_mixture_likelihood_integrates_to_weights():
    x, _ = beta_sample(3000, 2000)
    bmm = BetaMixture1D(max_iter=100).fit(x)
    assert np.all(bmm.alphas > 1) and np.all(bmm.betas > 1)  # densities bounded: a grid integral is accurate
    grid = np.linspace(0.0, 1.0, 20001)
    integral = np.trapezoid(bmm.likelihood(grid), grid, axis=0)
    np.testing.assert_allclose(integral, bmm.weights, atol=1e-3)


def test_beta_mixture_fit_restarts_from_init():
    x, _ = beta_sample(300, 200, seed=2)
    bmm = BetaMixture1D()
    first = bmm.fit(x).alphas.copy()
    bmm.fit(np.linspace(0.0, 1.0, 50))
    np.testing.assert_array_equal(bmm.fit(x).alphas, first)


@pytest.mark.parametrize(
    "x",
    [
        np.full(20, 0.3),
        np.r_[np.zeros(10), np.ones(10)],
        np.r_[np.zeros(99), 1.0],
        np.array([0.5]),
        np.r_[np.full(100, 0.2), 0.9],
    ],
    ids=["constant", "two-ends", "one-outlier", "single", "spike-plus-one"],
)
def test_beta_mixture_degenerate_data_stays_finite(x):
    bmm = BetaMixture1D(max_iter=20).fit(x)
    for p in (bmm.alphas, bmm.betas, bmm.weights):
        assert np.all(np.isfinite(p)) and np.all(p >= 0)
    assert np.all(bmm.alphas > 0) and np.all(bmm.betas > 0)
    assert bmm.weights.sum() == pytest.approx(1.0)
    probe = np.linspace(0.0, 1.0, 11)
    post = bmm.posterior(probe)
    assert np.all(np.isfinite(post)) and np.all(np.isfinite(bmm.likelihood(probe)))
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("x", [np.array([0.2, 1.5]), np.array([-0.1, 0.5]), np.zeros(0), np.ones((3, 1))])
def test_beta_mixture_rejects_bad_input(x):
    with pytest.raises(InputError):
        BetaMixture1D().fit(x)


# ---------------------------------------------------------------- clean-probability estimators


@pytest.mark.parametrize("estimator", ["gmm", "bmm"])
def test_low_loss_gets_high_clean_probability(estimator):
    losses, clean = two_cluster_losses()
    prob = clean_probability(losses, estimator=estimator)
    assert prob.shape == (1000,) and prob.dtype == np.float64
    assert np.all((prob >= 0) & (prob <= 1))
    assert prob[clean].mean() > 0.9
    assert prob[~clean].mean() < 0.1
    assert prob[np.argmin(losses)] > prob[np.argmax(losses)]
    assert np.mean((prob > 0.5) == clean) > 0.97


def skewed_losses(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A narrow clean pile near zero and a wide noisy bump: the raw GMM posterior falls at the far left."""
    rng = np.random.default_rng(seed)
    clean = np.abs(rng.normal(0.0, 0.02, 1400))
    noisy = np.clip(rng.normal(0.35, 0.2, 600), 0.01, None)
    return np.concatenate([clean, noisy]), np.arange(2000) < 1400


@pytest.mark.parametrize("fn", [gmm_clean_probability, bmm_clean_probability])
def test_clean_probability_never_rises_with_the_loss(fn):
    losses, _ = skewed_losses()
    prob = fn(losses)
    order = np.argsort(losses, kind="stable")
    assert np.all(np.diff(prob[order]) <= 1e-12)
    # strictly decreasing left of the posterior's peak: the lowest losses are not tied
    assert prob[order[0]] > prob[order[len(order) // 10]]


def test_raw_gmm_posterior_is_not_monotone_on_skewed_losses():
    losses, clean = skewed_losses()
    raw = gmm_clean_probability(losses, monotone=False)
    fixed = gmm_clean_probability(losses)
    assert raw[np.argmin(losses)] < raw.max()  # the artefact monotone_in_loss removes
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(clean, fixed) == pytest.approx(roc_auc_score(clean, -losses))
    np.testing.assert_array_equal(raw > 0.5, fixed > 0.5)


def test_monotone_in_loss_keeps_a_decreasing_posterior():
    x = np.array([0.3, 0.0, 0.1, 0.9, 0.5])
    prob = 1.0 - x
    np.testing.assert_allclose(monotone_in_loss(x, prob), prob)


def test_underflowed_posteriors_still_rank_by_loss():
    # a narrow clean cluster and far outliers: the raw posterior of the outliers is exactly 0
    rng = np.random.default_rng(11)
    losses = np.concatenate([rng.normal(0.1, 0.005, 500), rng.uniform(0.5, 1.0, 200)])
    raw = gmm_clean_probability(losses, monotone=False)
    assert np.count_nonzero(raw == 0.0) > 10
    prob = gmm_clean_probability(losses)
    order = np.argsort(losses)
    assert np.all(np.diff(prob[order]) < 0.0)
    np.testing.assert_array_equal(raw > 0.5, prob > 0.5)


def test_gmm_is_deterministic_for_a_seed():
    losses, _ = two_cluster_losses(seed=3)
    a = gmm_clean_probability(losses, seed=7)
    b = gmm_clean_probability(losses.copy(), seed=7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fn", [gmm_clean_probability, bmm_clean_probability])
def test_estimators_ignore_affine_rescaling_of_losses(fn):
    losses, _ = two_cluster_losses(seed=4)
    np.testing.assert_allclose(fn(losses), fn(10.0 * losses - 3.0), atol=1e-6)


@pytest.mark.parametrize("fn", [gmm_clean_probability, bmm_clean_probability])
@pytest.mark.parametrize("losses", [np.full(10, 2.0), np.array([1.0])])
def test_estimators_constant_losses_are_all_clean(fn, losses):
    np.testing.assert_array_equal(fn(losses), np.ones(len(losses)))


def test_clean_probability_dispatch():
    losses, _ = two_cluster_losses(seed=5)
    np.testing.assert_array_equal(
        clean_probability(losses, estimator="gmm", seed=2), gmm_clean_probability(losses, seed=2)
    )
    np.testing.assert_array_equal(clean_probability(losses, estimator="bmm"), bmm_clean_probability(losses))
    with pytest.raises(ValueError, match="gmm"):
        clean_probability(losses, estimator="kmeans")


# ---------------------------------------------------------------- split_clean and Selection


def test_split_threshold_is_strict():
    prob = np.array([0.5, np.nextafter(0.5, 1.0), 0.2, 0.9, 0.5])
    np.testing.assert_array_equal(split_clean(prob), [False, True, False, True, False])
    np.testing.assert_array_equal(split_clean(prob, threshold=0.2), [True, True, False, True, True])


def test_split_no_fallback_when_something_is_noisy():
    prob = np.full(400, 0.9)
    prob[123] = 0.5
    clean = split_clean(prob)
    assert np.flatnonzero(~clean).tolist() == [123]


def test_split_fallback_marks_lowest_one_percent():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.51, 1.0, 250)
    clean = split_clean(prob)
    assert (~clean).sum() == int(250 * 0.01) == 2
    assert set(np.flatnonzero(~clean)) == set(np.argsort(prob)[:2])
    assert prob[~clean].max() < prob[clean].min()


def test_split_fallback_ties_take_lower_indices():
    clean = split_clean(np.full(300, 0.8))
    assert np.flatnonzero(~clean).tolist() == [0, 1, 2]


def test_split_fallback_rounds_down():
    assert split_clean(np.full(99, 0.9)).all()  # int(99 * 0.01) == 0
    clean = split_clean(np.linspace(0.9, 0.6, 20), min_noisy_fraction=0.25)
    assert np.flatnonzero(~clean).tolist() == [15, 16, 17, 18, 19]


def test_split_rejects_bad_input():
    with pytest.raises(InputError):
        split_clean(np.ones((2, 2)))
    with pytest.raises(InputError):
        split_clean(np.ones(3), min_noisy_fraction=1.5)


@pytest.mark.parametrize("estimator", ["gmm", "bmm"])
def test_selection_from_losses(estimator):
    losses, truth = two_cluster_losses(seed=6)
    sel = Selection.from_losses(losses, estimator=estimator, seed=1)
    np.testing.assert_array_equal(sel.prob, clean_probability(losses, estimator=estimator, seed=1))
    np.testing.assert_array_equal(sel.clean, sel.prob > 0.5)
    assert sel.noisy_fraction == pytest.approx(1.0 - sel.clean.mean())
    assert abs(sel.noisy_fraction - 0.2) < 0.03
    strict = Selection.from_losses(losses, estimator=estimator, seed=1, threshold=0.99)
    assert strict.noisy_fraction >= sel.noisy_fraction


def test_selection_validates_shapes():
    with pytest.raises(ValueError):
        Selection(prob=np.ones(3), clean=np.ones(4, dtype=bool))
    assert Selection(prob=np.zeros(0), clean=np.zeros(0, dtype=bool)).noisy_fraction == 0.0
