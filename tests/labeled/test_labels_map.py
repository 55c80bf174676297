"""mAP of labelled retrieval against a brute-force oracle written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisycorr.eval.labels import average_precision, cross_modal_map, map_score


def oracle_map(
    q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, k: int | None = None, empty: str = "skip"
) -> float:
    """Loop over queries; rank by cosine (ties in gallery order); AP = mean precision at each hit."""
    aps = []
    for i in range(q.shape[0]):
        sims = [float(np.dot(q[i], g[j]) / np.linalg.norm(q[i]) / np.linalg.norm(g[j])) for j in range(g.shape[0])]
        order = sorted(range(g.shape[0]), key=lambda j: -sims[j])  # sorted() is stable
        if k is not None:
            order = order[:k]
        relevant_anywhere = any(bool((ql[i] & gl[j]).any()) for j in range(g.shape[0]))
        if not relevant_anywhere:
            if empty == "zero":
                aps.append(0.0)
            continue
        hits, precisions = 0, []
        for rank, j in enumerate(order, start=1):
            if (ql[i] & gl[j]).any():
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / hits if hits else 0.0)
    return float(np.mean(aps))


def _data(seed: int, n: int, m: int, c: int, multilabel: bool) -> tuple:
    rs = np.random.RandomState(seed)
    q, g = rs.randn(n, 8), rs.randn(m, 8)
    if multilabel:
        ql, gl = rs.rand(n, c) < 0.25, rs.rand(m, c) < 0.25
    else:
        ql, gl = np.eye(c, dtype=bool)[rs.randint(0, c, n)], np.eye(c, dtype=bool)[rs.randint(0, c, m)]
    return q, g, ql, gl


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("k", [None, 7])
@pytest.mark.parametrize("empty", ["skip", "zero"])
def test_map_matches_oracle(multilabel: bool, k: int | None, empty: str) -> None:
    q, g, ql, gl = _data(1, 23, 31, 5, multilabel)
    got = map_score(q, g, ql, gl, k=k, chunk=5, empty=empty)
    assert got == pytest.approx(oracle_map(q, g, ql, gl, k=k, empty=empty), abs=1e-9)


def test_ties_keep_gallery_order_like_the_oracle() -> None:
    rs = np.random.RandomState(2)
    rows = np.array([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.0, 0.4, 1.0]])  # exact duplicates tie exactly
    q = rs.randn(10, 3)
    g = rows[rs.randint(0, 3, 15)]
    ql = np.eye(3, dtype=bool)[rs.randint(0, 3, 10)]
    gl = np.eye(3, dtype=bool)[rs.randint(0, 3, 15)]
    assert map_score(q, g, ql, gl) == pytest.approx(oracle_map(q, g, ql, gl), abs=1e-9)


def test_integer_labels_equal_one_hot_and_perfect_ranking_scores_one() -> None:
    q, g, ql, gl = _data(3, 12, 12, 4, False)
    a = map_score(q, g, ql, gl)
    b = map_score(q, g, ql.argmax(1), gl.argmax(1))
    assert a == pytest.approx(b)
    centres = np.eye(4)
    y = np.arange(12) % 4
    perfect = cross_modal_map(centres[y] + 0.01 * np.random.RandomState(0).randn(12, 4), centres[y], y)
    assert perfect == {"i2t_map": pytest.approx(1.0), "t2i_map": pytest.approx(1.0), "avg_map": pytest.approx(1.0)}


def test_average_precision_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    relevant = torch.tensor([[False, True, False, True]])
    # hits at ranks 2 and 4: (1/2 + 2/4) / 2
    assert float(average_precision(sim, relevant)[0]) == pytest.approx(0.5)
    assert torch.isnan(average_precision(sim, torch.zeros_like(relevant))[0])


def test_averaging_several_models_is_the_mean_similarity() -> None:
    q1, g1, ql, gl = _data(4, 9, 11, 3, False)
    q2, g2, _, _ = _data(5, 9, 11, 3, False)
    got = map_score([q1, q2], [g1, g2], ql, gl)

    # concatenating the unit vectors scaled by 1/sqrt(2) gives the averaged cosine similarity
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q = np.hstack([unit(q1), unit(q2)])
    g = np.hstack([unit(g1), unit(g2)])
    assert got == pytest.approx(oracle_map(q, g, ql, gl), abs=1e-9)


def test_both_directions_use_their_own_labels() -> None:
    q, g, ql, gl = _data(6, 10, 10, 3, False)
    m = cross_modal_map(q, g, ql, gl)
    assert m["i2t_map"] == pytest.approx(oracle_map(q, g, ql, gl))
    assert m["t2i_map"] == pytest.approx(oracle_map(g, q, gl, ql))
    assert m["avg_map"] == pytest.approx((m["i2t_map"] + m["t2i_map"]) / 2)
