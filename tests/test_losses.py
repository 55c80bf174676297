import math

import pytest
import torch

from noisycorr.losses import hinge_costs, rce_infonce_loss, triplet_loss


def _naive(scores, margin, hardest):
    b = scores.shape[0]
    total = []
    for i in range(b):
        cap = [max(0.0, margin[i] + scores[i, j] - scores[i, i]) for j in range(b) if j != i]
        img = [max(0.0, margin[i] + scores[j, i] - scores[i, i]) for j in range(b) if j != i]
        total.append(max(cap) + max(img) if hardest else sum(cap) / (b - 1) + sum(img) / (b - 1))
    return torch.tensor(total, dtype=scores.dtype)


def test_triplet_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(7, 7, generator=g, dtype=torch.float64)
    margin = torch.rand(7, generator=g, dtype=torch.float64) * 0.4
    for hardest in (True, False):
        got = triplet_loss(scores, margin, hardest=hardest, reduction="none")
        torch.testing.assert_close(got, _naive(scores, margin.tolist(), hardest))
    scalar = triplet_loss(scores, 0.2, hardest=True)
    torch.testing.assert_close(scalar, _naive(scores, [0.2] * 7, True).sum())


def test_perfect_separation_gives_zero_loss_and_diagonal_is_ignored():
    scores = torch.eye(5) * 2.0
    assert triplet_loss(scores, 0.2).item() == 0.0
    cost_cap, cost_img = hinge_costs(torch.zeros(4, 4), 0.2)
    assert torch.all(cost_cap.diagonal() == 0) and torch.all(cost_img.diagonal() == 0)
    assert torch.allclose(cost_cap.sum(), torch.tensor(0.2 * 12))


def test_hardest_is_at_least_mean():
    scores = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    hard = triplet_loss(scores, 0.2, hardest=True, reduction="none")
    mean = triplet_loss(scores, 0.2, hardest=False, reduction="none")
    assert torch.all(hard >= mean - 1e-6)


def _naive_rce_infonce(scores, tau, eps=1e-7):
    b = scores.shape[0]
    total = 0.0
    for table in (scores, scores.t()):
        for i in range(b):
            row = [math.exp(float(table[i, j]) / tau) for j in range(b)]
            p = [v / sum(row) for v in row]
            target = [1.0 + eps if j == i else eps for j in range(b)]
            total += -math.log(p[i]) / b  # cross-entropy
            total += -sum(p[j] * math.log(target[j]) for j in range(b)) / b  # reverse cross-entropy
    return 0.5 * total


def test_rce_infonce_matches_its_definition_and_is_symmetric():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    got = rce_infonce_loss(scores, 0.05)
    assert float(got) == pytest.approx(_naive_rce_infonce(scores, 0.05), rel=1e-6)
    torch.testing.assert_close(got, rce_infonce_loss(scores.t(), 0.05))
    assert float(rce_infonce_loss(scores, 0.5)) == pytest.approx(_naive_rce_infonce(scores, 0.5), rel=1e-6)


def test_rce_infonce_is_small_for_a_clear_diagonal_and_bounded_for_a_wrong_one():
    good = torch.eye(5) * 2 - 1
    assert float(rce_infonce_loss(good, 0.05)) < 1e-6
    wrong = good[[1, 0, 2, 3, 4]]  # two positives point at the wrong partner
    loss = float(rce_infonce_loss(wrong, 0.05))
    assert 0 < loss and torch.isfinite(torch.tensor(loss))
    half = torch.full((3, 3), 0.3, dtype=torch.float16)  # AMP input: computed in float32
    assert rce_infonce_loss(half).dtype == torch.float32


# mutant killed: a (B, B) margin transposed in the caption-anchor direction
# mutant killed: the shape check of a (B, B) margin removed
def test_per_cell_margin_applies_cell_ij_in_both_directions():
    """A (B, B) margin: cell (i, j) uses m_ij whether image i or caption j is the anchor; a (B, B)
    matrix of one value equals the scalar margin; another shape is refused."""
    torch.manual_seed(0)
    scores = torch.rand(4, 4)
    m = torch.rand(4, 4) * 0.5
    cost_cap, cost_img = hinge_costs(scores, m)
    pos = scores.diagonal()
    eye = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(cost_cap, (m + scores - pos[:, None]).clamp(min=0).masked_fill(eye, 0))
    torch.testing.assert_close(cost_img, (m + scores - pos[None, :]).clamp(min=0).masked_fill(eye, 0))
    torch.testing.assert_close(triplet_loss(scores, torch.full((4, 4), 0.2)), triplet_loss(scores, 0.2))
    with pytest.raises(ValueError, match="per-cell margin"):
        hinge_costs(scores, torch.zeros(3, 3))
