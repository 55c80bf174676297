"""Label noise: rates, range, determinism, scopes, asymmetric transitions, saved files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from noisycorr.data.labeled import (
    class_transition,
    label_checksum,
    load_label_noise,
    make_label_noise,
    save_label_noise,
)
from noisycorr.errors import InputError

N, C = 5000, 10


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return np.eye(C, dtype=bool)[np.random.RandomState(7).randint(0, C, size=N)]


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
def test_symmetric_rate_and_range(clean: np.ndarray, rate: float) -> None:
    noise = make_label_noise(clean, rate=rate, kind="sym", scope="per_pair", seed=3)
    noisy = noise.labels[0]
    assert noisy.shape == (N, C) and noisy.dtype == bool
    assert (noisy.sum(1) == 1).all()  # one class per item, always one of the C columns
    changed = (noisy != clean).any(1).mean()
    # int(rate * N) items redrawn uniformly over all C classes: about rate * (1 - 1/C) change
    expected = int(rate * N) * (1 - 1 / C) / N
    assert abs(changed - expected) < 0.02
    assert changed <= int(rate * N) / N


def test_symmetric_redraws_are_uniform_over_classes(clean: np.ndarray) -> None:
    noisy = make_label_noise(clean, rate=1.0, seed=0).labels[0]
    counts = noisy.sum(0)
    assert counts.min() > 0.8 * N / C and counts.max() < 1.2 * N / C  # the last class is reachable too


def test_same_seed_same_labels_other_seed_other_labels(clean: np.ndarray) -> None:
    a = make_label_noise(clean, rate=0.4, seed=1)
    b = make_label_noise(clean, rate=0.4, seed=1)
    c = make_label_noise(clean, rate=0.4, seed=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert label_checksum(a.labels) == label_checksum(b.labels) != label_checksum(c.labels)


def test_per_pair_is_shared_and_per_modality_is_independent(clean: np.ndarray) -> None:
    pair = make_label_noise(clean, rate=0.6, scope="per_pair", seed=0).labels
    np.testing.assert_array_equal(pair[0], pair[1])
    mod = make_label_noise(clean, rate=0.6, scope="per_modality", seed=0).labels
    changed = (mod != clean[None]).any(-1)
    both_rates = changed.mean(1)
    assert abs(both_rates[0] - both_rates[1]) < 0.03
    # independent draws: the two modalities agree on being changed only by chance (about 0.54 ** 2)
    assert abs((changed[0] & changed[1]).mean() - both_rates[0] * both_rates[1]) < 0.03
    assert make_label_noise(clean, rate=0.6, scope="per_modality", seed=0).record(clean)["realised_rate_pair"] > 0.7


def test_asymmetric_noise_follows_the_transition(clean: np.ndarray) -> None:
    trans = class_transition(C, "pairs", seed=5)
    moved = trans != np.arange(C)
    assert moved.sum() == C // 2 and set(trans[moved]).isdisjoint(np.flatnonzero(moved))
    noise = make_label_noise(clean, rate=0.4, kind="asym", seed=5)
    np.testing.assert_array_equal(noise.transition, trans)
    y, z = clean.argmax(1), noise.labels[0].argmax(1)
    changed = y != z
    np.testing.assert_array_equal(z[changed], trans[y[changed]])
    assert abs(changed.mean() - 0.4 * moved[y].mean()) < 0.02
    np.testing.assert_array_equal(class_transition(4, "cyclic"), [1, 2, 3, 0])
    np.testing.assert_array_equal(class_transition(3, [2, 0, 1]), [2, 0, 1])
    with pytest.raises(InputError):
        class_transition(3, [0, 1, 3])


def test_multilabel_symmetric_keeps_label_counts() -> None:
    rs = np.random.RandomState(0)
    labels = rs.rand(400, 8) < 0.3
    labels[~labels.any(1), 0] = True
    noisy = make_label_noise(labels, rate=0.5, seed=0).labels[0]
    np.testing.assert_array_equal(noisy.sum(1), labels.sum(1))
    assert 0.3 < (noisy != labels).any(1).mean() <= 0.5


def test_bad_options_raise(clean: np.ndarray) -> None:
    with pytest.raises(InputError, match="noise.rate"):
        make_label_noise(clean, rate=1.5)
    with pytest.raises(InputError, match="noise.kind"):
        make_label_noise(clean, rate=0.2, kind="pair")
    with pytest.raises(InputError, match="noise.scope"):
        make_label_noise(clean, rate=0.2, scope="per_caption")


def test_saved_labels_round_trip_and_are_checked(tmp_path: Path, clean: np.ndarray) -> None:
    noise = make_label_noise(clean[:50], rate=0.4, seed=0)
    save_label_noise(tmp_path / "n.npy", noise.labels)
    back = load_label_noise(tmp_path / "n.npy", 50, C)
    np.testing.assert_array_equal(back, noise.labels)
    assert label_checksum(back) == noise.record(clean[:50])["checksum"]
    with pytest.raises(InputError, match=r"shape \(2, 60, 10\)"):
        load_label_noise(tmp_path / "n.npy", 60, C)
    bad = noise.labels.astype(np.uint8)
    bad[0, 0] = 0
    np.save(tmp_path / "empty.npy", bad)
    with pytest.raises(InputError, match="at least one label"):
        load_label_noise(tmp_path / "empty.npy", 50, C)


def test_validation_subset_is_independent_of_the_noise_draw(clean: np.ndarray) -> None:
    # Regression: with equal seeds, validation used to be carved out of exactly the items picked for noise.
    from noisycorr.data.labeled import LabeledData, LabeledSplit, plan_validation

    split = LabeledSplit(np.zeros((N, 1), np.float32), np.zeros((N, 1), np.float32), clean)
    plan = plan_validation(LabeledData("mem", "npz", split, split), "train", 500, seed=0)
    noisy = make_label_noise(clean, rate=0.4, seed=0).labels[0]
    changed = (noisy != clean).any(1)
    assert abs(changed[plan.val_index].mean() - changed.mean()) < 0.06
