import torch

from noisycorr.losses import hinge_costs, triplet_loss


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
