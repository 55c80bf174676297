"""Noisy-pair detection metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from noisycorr.errors import InputError
from noisycorr.eval.detection import detection_metrics, precision_at_top, roc_points

PROB = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.7])
TRUE_CLEAN = np.array([True, True, False, True, False, False])


def test_detection_metrics_hand_computed():
    # Predicted noisy {1, 2, 4}; true noisy {2, 4, 5}; hits {2, 4}.
    # AUC: clean scores {0.9, 0.8, 0.6} vs noisy {0.3, 0.2, 0.7}: 3 + 3 + 2 of 9 pairs ordered right.
    m = detection_metrics(PROB, np.array([True, False, False, True, False, True]), TRUE_CLEAN)
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["predicted_noisy"] == pytest.approx(3 / 6)
    assert m["true_noisy"] == pytest.approx(3 / 6)
    assert set(m) == {"auc", "precision", "recall", "f1", "predicted_noisy", "true_noisy"}


def test_detection_metrics_unequal_precision_recall():
    # Predicted noisy {2, 4}; both truly noisy, one (5) missed.
    m = detection_metrics(PROB, PROB > 0.5, TRUE_CLEAN.astype(int))
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    assert m["predicted_noisy"] == pytest.approx(2 / 6)


def test_detection_auc_counts_ties_as_half():
    # Clean {0.5, 0.5} vs noisy {0.5, 0.1}: two ties (1/2 each) and two right orders, of 4 pairs.
    m = detection_metrics(np.array([0.5, 0.5, 0.5, 0.1]), np.ones(4, bool), np.array([1, 1, 0, 0]))
    assert m["auc"] == pytest.approx(3 / 4)


def test_detection_undefined_cases():
    # Nothing predicted noisy and no true noise: precision, recall, f1 undefined -> 0; one class -> NaN AUC.
    m = detection_metrics(np.array([0.9, 0.8]), np.array([True, True]), np.array([True, True]))
    assert math.isnan(m["auc"])
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert m["predicted_noisy"] == m["true_noisy"] == 0.0


@pytest.mark.parametrize(
    ("prob", "pred", "truth"),
    [
        (np.ones((2, 2)), np.ones(4, bool), np.ones(4, bool)),
        (np.ones(4), np.ones(3, bool), np.ones(4, bool)),
        (np.ones(4), np.ones(4, bool), np.ones(5, bool)),
        (np.ones(3), np.ones(3, bool), np.array([0, 1, 2])),
        (np.array([0.1, np.nan]), np.ones(2, bool), np.ones(2, bool)),
        (np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)),
    ],
)
def test_detection_metrics_validates_input(prob, pred, truth):
    with pytest.raises(ValueError):
        detection_metrics(prob, pred, truth)


def test_detection_metrics_shape_message_names_argument():
    with pytest.raises(InputError, match="predicted_clean"):
        detection_metrics(np.ones(4), np.ones(3, bool), np.ones(4, bool))


def test_precision_at_top_ties_take_lower_index():
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    # k = int(5 * 0.4) = 2: indices 0 and 1 (not 2 or 3, which tie with 1).
    assert precision_at_top(score, np.array([False, False, True, True, True]), fraction=0.4) == 1.0
    assert precision_at_top(score, np.array([False, True, False, False, True]), fraction=0.4) == 0.5


def test_precision_at_top_k_at_least_one_and_full_fraction():
    score = np.array([0.1, 0.7, 0.3, 0.2, 0.6])
    truth = np.array([True, False, True, True, True])
    assert precision_at_top(score, truth, fraction=0.1) == 1.0  # int(0.5) -> k = 1: index 1, noisy
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.7
    assert precision_at_top(rng.random(200), truth, fraction=1.0) == pytest.approx(np.mean(~truth))


def test_precision_at_top_validates():
    with pytest.raises(InputError):
        precision_at_top(np.ones(3), np.ones(3, bool), fraction=0.0)
    with pytest.raises(InputError):
        precision_at_top(np.ones(3), np.ones(2, bool))


def test_roc_points_match_auc():
    fpr, tpr = roc_points(PROB, TRUE_CLEAN)
    assert fpr.shape == tpr.shape
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(8 / 9)


def test_roc_points_needs_both_classes():
    with pytest.raises(InputError, match="both clean and noisy"):
        roc_points(np.array([0.2, 0.4]), np.array([True, True]))
