"""GPO: weights per length, masking of padded positions, set (permutation) invariance."""

from __future__ import annotations

import math

import torch

from noisycorr.backbones.gpo import GPO, positional_encoding


def make() -> GPO:
    torch.manual_seed(0)
    return GPO().eval()


def test_positional_encoding_values():
    pe = positional_encoding(5, 32)
    assert pe.shape == (5, 32)
    torch.testing.assert_close(pe[0, 0::2], torch.zeros(16))
    torch.testing.assert_close(pe[0, 1::2], torch.ones(16))
    assert math.isclose(float(pe[3, 0]), math.sin(3.0), abs_tol=1e-6)
    assert math.isclose(float(pe[3, 3]), math.cos(3.0 * 10000 ** (-2 / 32)), abs_tol=1e-6)


def test_weights_sum_to_one_over_valid_positions_only():
    gpo = make()
    lengths = torch.tensor([4, 1, 7, 4])
    with torch.no_grad():
        w = gpo.pool_weights(lengths, 9)
    assert w.shape == (4, 9)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    assert (w[torch.arange(9) >= lengths[:, None]] == 0).all()
    assert torch.equal(w[0], w[3])  # same length, same weights
    assert float(w[1, 0]) == 1.0
    assert not torch.allclose(w[2, :7], torch.full((7,), 1 / 7))  # learned, not a plain mean


def test_padding_is_ignored_and_order_does_not_matter():
    gpo = make()
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 6, 10, generator=gen)
    lengths = torch.tensor([6, 2, 4])
    with torch.no_grad():
        pooled = gpo(feats, lengths)
        garbage = feats.clone()
        garbage[1, 2:] = 100.0
        garbage[2, 4:] = -100.0
        shuffled = feats[:, torch.randperm(6, generator=gen)]
        for row, n in enumerate(lengths.tolist()):
            alone = gpo(feats[row : row + 1, :n])
            torch.testing.assert_close(pooled[row], alone[0], atol=1e-6, rtol=0)
            perm = torch.randperm(n, generator=gen)
            torch.testing.assert_close(gpo(feats[row : row + 1, perm])[0], alone[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(gpo(garbage, lengths), pooled, atol=1e-6, rtol=0)
    assert pooled.shape == (3, 10)
    # Full-length rows: a permutation of all positions leaves the pooled vector unchanged.
    torch.testing.assert_close(gpo(shuffled[:1])[0], gpo(feats[:1])[0], atol=1e-6, rtol=0)


def test_pooling_lies_between_min_and_max_and_backprops():
    gpo = GPO().train()
    feats = torch.randn(4, 5, 8, requires_grad=True)
    pooled = gpo(feats, torch.tensor([5, 3, 1, 2]))
    assert ((pooled >= feats.min(1).values - 1e-6) & (pooled <= feats.max(1).values + 1e-6)).all()
    pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gpo.parameters())
    assert (feats.grad[2, 1:] == 0).all() and (feats.grad[3, 2:] == 0).all()
