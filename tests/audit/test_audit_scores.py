"""The array functions of the audit: scores from losses, flags, ranks, and their input checks."""

import re

import numpy as np
import pytest

from noisycorr.audit.scores import find_mismatched_pairs, pair_scores_from_losses, rank_pairs
from noisycorr.errors import InputError
from noisycorr.selection import clean_probability


def _oracle_order(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def _two_clusters(n_clean: int = 40, n_bad: int = 10, seed: int = 0) -> np.ndarray:
    """Per-pair losses: low for the first ``n_clean`` pairs, high for the last ``n_bad``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([0.1 + 0.05 * rng.random(n_clean), 0.8 + 0.05 * rng.random(n_bad)])


# ------------------------------------------------------------------------------ find / rank


def test_threshold_flags_below_and_ranks_by_severity():
    s = np.array([0.9, 0.2, 0.5, 0.49, 0.2, 1.0])
    mask = find_mismatched_pairs(s)
    assert mask.dtype == bool and mask.tolist() == [False, True, False, True, True, False]
    assert find_mismatched_pairs(s, return_indices=True).tolist() == [1, 4, 3]
    assert find_mismatched_pairs(s, threshold=0.95, return_indices=True).tolist() == [1, 4, 3, 2, 0]
    assert not find_mismatched_pairs(s, threshold=0.0).any()


def test_fraction_takes_lowest_with_ties_to_lower_index():
    s = np.array([0.3, 0.1, 0.3, 0.3])
    assert find_mismatched_pairs(s, fraction=0.5, return_indices=True).tolist() == [1, 0]
    assert find_mismatched_pairs(s, fraction=0.5).tolist() == [True, True, False, False]
    # fraction replaces the default threshold: a pair scoring 0.9 is flagged when the share asks for it
    assert find_mismatched_pairs(np.array([0.9, 0.95]), fraction=0.5).tolist() == [True, False]
    assert find_mismatched_pairs(s, fraction=0.0, threshold=None).sum() == 0
    assert find_mismatched_pairs(s, fraction=1.0, return_indices=True).tolist() == [1, 0, 2, 3]
    rng = np.random.default_rng(0)
    for n in (1, 6, 7, 10, 33):
        x = rng.random(n)
        for frac in (0.05, 0.25, 0.5, 0.7):
            idx = find_mismatched_pairs(x, fraction=frac, return_indices=True)
            assert idx.tolist() == _oracle_order(x.tolist())[: round(frac * n)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": None},
        {"threshold": 0.3, "fraction": 0.1},
        {"threshold": 0.5, "fraction": 0.1},  # an explicit 0.5 is as explicit as any other value
        {"fraction": 1.5},
        {"fraction": -0.1},
        {"threshold": 1.2},
    ],
)
def test_option_errors(kwargs):
    with pytest.raises(ValueError):
        find_mismatched_pairs(np.array([0.1, 0.9]), **kwargs)


@pytest.mark.parametrize("bad", [[0.1, float("nan")], [0.2, 1.2], [[0.1, 0.2]], [], ["a", "b"]])
def test_bad_scores(bad):
    with pytest.raises(InputError):
        find_mismatched_pairs(bad)
    with pytest.raises(InputError):
        rank_pairs(bad)


def test_rank_pairs_ties_and_consistency():
    assert rank_pairs(np.array([0.5, 0.1, 0.5, 0.1])).tolist() == [3, 1, 4, 2]
    x = np.random.default_rng(1).integers(0, 5, size=40) / 4.0  # many ties
    r = rank_pairs(x)
    assert sorted(r.tolist()) == list(range(1, 41))
    assert (np.argsort(r) + 0).tolist() == _oracle_order(x.tolist())
    assert find_mismatched_pairs(x, fraction=1.0, return_indices=True).tolist() == np.argsort(r).tolist()


# ------------------------------------------------------------------- find / rank: input checks


# Mutant: the option errors raised as plain ValueError again (not InputError) -> fails.
def test_option_errors_are_one_line_input_errors_naming_the_option():
    s = np.array([0.1, 0.9])
    with pytest.raises(InputError, match=r"^threshold / fraction: expected one of the two, found both"):
        find_mismatched_pairs(s, threshold=0.3, fraction=0.1)
    with pytest.raises(InputError, match=r"^threshold / fraction: expected one of the two, found both None$"):
        find_mismatched_pairs(s, threshold=None)


# Mutant: check_unit(fraction, "threshold") (the wrong name in the message) -> fails.
def test_fraction_error_names_the_fraction():
    with pytest.raises(InputError, match=r"^fraction: expected a number in \[0, 1\], found 1\.5$"):
        find_mismatched_pairs(np.array([0.1, 0.9]), fraction=1.5)
    with pytest.raises(InputError, match=r"^threshold: expected a number in \[0, 1\], found -0\.2$"):
        find_mismatched_pairs(np.array([0.1, 0.9]), threshold=-0.2)


# Mutant: the range check written `value < 0 or value > 1` (NaN slips through) -> fails.
def test_nan_threshold_and_fraction_are_refused():
    with pytest.raises(InputError, match=r"^threshold: "):
        find_mismatched_pairs(np.array([0.1, 0.9]), threshold=float("nan"))
    with pytest.raises(InputError, match=r"^fraction: "):
        find_mismatched_pairs(np.array([0.1, 0.9]), fraction=float("nan"))


# Mutant: the `isinstance(value, numbers.Real)` test removed (float("0.3") accepts the string) -> fails.
@pytest.mark.parametrize("value", ["0.3", [0.3]])
def test_threshold_and_fraction_must_be_numbers(value):
    s = np.array([0.1, 0.9])
    with pytest.raises(InputError, match=r"^threshold: expected a number in \[0, 1\], found "):
        find_mismatched_pairs(s, threshold=value)
    with pytest.raises(InputError, match=r"^fraction: expected a number in \[0, 1\], found "):
        find_mismatched_pairs(s, fraction=value)


# Mutant: the `isinstance(value, bool)` test removed (True would mean threshold 1.0) -> fails.
def test_a_boolean_threshold_is_refused():
    with pytest.raises(InputError, match=r"^threshold: expected a number in \[0, 1\], found True$"):
        find_mismatched_pairs(np.array([0.1, 0.9]), threshold=True)


# Mutant: `<= 1.0` flipped to `< 1.0` in check_unit (the closed upper end refused) -> fails.
def test_threshold_and_fraction_accept_both_ends():
    s = np.array([0.0, 0.4, 1.0])
    assert find_mismatched_pairs(s, threshold=1.0).tolist() == [True, True, False]
    assert find_mismatched_pairs(s, threshold=0).tolist() == [False, False, False]
    assert find_mismatched_pairs(s, fraction=1).tolist() == [True, True, True]


# Mutant: `arr > 1.0` flipped to `arr >= 1.0` (or `arr < 0.0` to `arr <= 0.0`) in check_scores -> fails.
def test_scores_of_exactly_0_and_1_are_valid():
    assert rank_pairs([1.0, 0.0, 0.5]).tolist() == [3, 1, 2]


# Mutant: the `where=f"index {k}"` dropped from the range error (the position not named) -> fails.
def test_a_bad_score_is_named_by_position():
    with pytest.raises(InputError, match=r"^scores: index 2: expected finite values in \[0, 1\], found 1\.5$"):
        rank_pairs([0.1, 0.2, 1.5, 2.0])
    with pytest.raises(InputError, match=r"^scores: index 1: .*found nan$"):
        find_mismatched_pairs([0.1, float("nan")])
    with pytest.raises(InputError, match=r"^scores: expected a 1-D array \(N,\), found shape \(1, 2\)$"):
        rank_pairs([[0.1, 0.2]])


# ------------------------------------------------------------------------ scores from losses


# Mutant: `clean_probability(x, ...)` replaced by `1.0 - clean_probability(x, ...)` -> fails.
def test_scores_from_losses_flag_the_high_loss_pairs():
    losses = _two_clusters()
    scores = pair_scores_from_losses(losses)
    assert scores.shape == (50,) and scores.dtype == np.float64
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    flagged = find_mismatched_pairs(scores, return_indices=True)
    assert sorted(flagged.tolist()) == list(range(40, 50))
    assert flagged.tolist() == np.argsort(-losses, kind="stable")[:10].tolist()  # worst fit first


# Mutant: `monotone=bool(monotone)` replaced by `monotone=True` (or the estimator fixed to "gmm") -> fails.
@pytest.mark.parametrize("estimator", ["gmm", "bmm"])
@pytest.mark.parametrize("monotone", [True, False])
def test_scores_from_losses_are_the_selection_estimate(estimator, monotone):
    losses = np.random.default_rng(4).gamma(2.0, size=60)
    got = pair_scores_from_losses(losses, estimator=estimator, seed=3, monotone=monotone)
    np.testing.assert_array_equal(got, clean_probability(losses, estimator=estimator, seed=3, monotone=monotone))


# Mutant: the scatter `ordered[index] = x` replaced by the gather `x = x[index]` -> fails.
def test_index_puts_each_loss_at_its_pair():
    losses = _two_clusters(seed=2)
    perm = np.random.default_rng(5).permutation(losses.size)
    in_order = pair_scores_from_losses(losses)
    np.testing.assert_array_equal(pair_scores_from_losses(losses[perm], index=perm), in_order)
    np.testing.assert_array_equal(pair_scores_from_losses(losses[perm], index=perm.astype(np.int32)), in_order)


# Mutant: the ndim check removed from _check_losses (selection's own check then names `x`) -> fails.
def test_losses_must_be_one_dimensional():
    with pytest.raises(InputError, match=r"^losses: expected a 1-D array \(N,\), found shape \(2, 3\)$"):
        pair_scores_from_losses(np.ones((2, 3)))


# Mutant: the finite check removed from _check_losses (selection's check then names `x`) -> fails.
def test_a_non_finite_loss_is_named_by_position():
    with pytest.raises(InputError, match=r"^losses: index 2: expected finite values, found inf$"):
        pair_scores_from_losses([0.1, 0.2, float("inf"), 0.3])


# Mutant: the size check removed (an empty array then comes back as an empty result) -> fails.
def test_empty_losses_are_refused():
    with pytest.raises(InputError, match=r"^losses: expected at least one pair, found an empty array$"):
        pair_scores_from_losses(np.zeros(0))


# Mutant: the dtype check removed (astype(float64) of text raises a bare ValueError; bools pass) -> fails.
@pytest.mark.parametrize("bad", [np.array(["0.1", "0.2"]), np.array([True, False]), np.array([1 + 2j, 3j])])
def test_losses_must_be_real_numbers(bad):
    with pytest.raises(InputError, match=r"^losses: expected a 1-D array of real-valued losses, found dtype "):
        pair_scores_from_losses(bad)


# Mutant: the integer-dtype check of `index` removed (float positions are cast silently) -> fails.
def test_index_must_be_integers():
    with pytest.raises(InputError, match=r"^index: expected integer pair indices, found dtype float64$"):
        pair_scores_from_losses([0.1, 0.2, 0.9], index=np.array([1.0, 0.0, 2.0]))


# Mutant: the shape check of `index` removed (numpy's own broadcast error escapes) -> fails.
@pytest.mark.parametrize("index", [np.array([0, 1]), np.array([[0, 1, 2]])])
def test_index_length_must_match_the_losses(index):
    with pytest.raises(InputError, match=r"^index: expected shape \(3,\), one pair index per loss, found shape "):
        pair_scores_from_losses([0.1, 0.2, 0.9], index=index)


@pytest.mark.parametrize(
    "index, found",
    [
        # Mutant: `arr >= n` flipped to `arr > n` (index n then raises a bare IndexError) -> fails.
        ([0, 1, 3], "position 2: expected pair indices in [0, 3), found 3"),
        # Mutant: the `arr < 0` test removed (-1 then silently stands for the last pair) -> fails.
        ([0, -1, 1], "position 1: expected pair indices in [0, 3), found -1"),
        # Mutant: the repeat check removed (pair 2 then keeps an uninitialised loss) -> fails.
        ([0, 1, 1], "position 2: expected each pair index once, found 1 again"),
    ],
)
def test_index_must_be_a_permutation(index, found):
    with pytest.raises(InputError, match="^" + re.escape(f"index: {found}") + "$"):
        pair_scores_from_losses([0.1, 0.2, 0.9], index=np.array(index))


@pytest.mark.parametrize(
    "seed",
    [
        # Mutant: the `isinstance(seed, bool)` test removed -> fails.
        True,
        # Mutant: the `numbers.Integral` test removed (int(1.5) == 1 is used silently) -> fails.
        1.5,
        # Mutant: the `0 <=` bound removed (scikit-learn's own ValueError escapes) -> fails.
        -1,
        # Mutant: the `<= _MAX_SEED` bound removed (scikit-learn's own ValueError escapes) -> fails.
        2**32,
    ],
)
def test_seed_must_be_a_valid_integer(seed):
    with pytest.raises(InputError, match=r"^seed: expected an integer in \[0, 4294967295\], found "):
        pair_scores_from_losses(_two_clusters(), seed=seed)


# Mutant: `estimator=estimator` not passed on to clean_probability (the default "gmm" used) -> fails.
def test_unknown_estimator_is_refused():
    with pytest.raises(InputError, match=r"^estimator: expected one of gmm, bmm, found 'kmeans'$"):
        pair_scores_from_losses(_two_clusters(), estimator="kmeans")


# Mutant: the options made positional (the `*` removed from the signature) -> fails.
def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        pair_scores_from_losses(_two_clusters(), None, "gmm")  # type: ignore[misc]
    with pytest.raises(TypeError):
        find_mismatched_pairs(np.array([0.1, 0.9]), 0.5)  # type: ignore[misc]
