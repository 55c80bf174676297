import numpy as np
import pytest
import torch

from noisycorr.data.dataset import PairDataset
from noisycorr.data.precomp import load_precomp
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.context import fixed_batches, pair_context


@pytest.mark.parametrize("n,bs", [(10, 4), (8, 4), (3, 8), (1, 1), (130, 128)])
def test_fixed_batches_cover_every_sample_once_with_full_batches(n, bs):
    batches = fixed_batches(n, bs, seed=5)
    kept = np.concatenate([idx[first:] for idx, first in batches])
    assert sorted(kept.tolist()) == list(range(n))
    assert all(len(idx) == min(bs, n) for idx, _ in batches)  # every sample meets as many negatives
    again = fixed_batches(n, bs, seed=5)
    assert all(np.array_equal(a, b) and fa == fb for (a, fa), (b, fb) in zip(batches, again, strict=True))


def test_pass_order_is_seeded_and_not_the_natural_order():
    a = np.concatenate([i for i, _ in fixed_batches(50, 10, seed=0)])
    b = np.concatenate([i for i, _ in fixed_batches(50, 10, seed=1)])
    assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(50))


def test_per_sample_values_come_back_keyed_by_sample_index(tiny_root):
    split = load_precomp(tiny_root, "train")
    vocab = Vocabulary.build(split.captions, min_count=1)
    pairing = np.roll(split.image_of_caption(), 3)
    ds = PairDataset(split, vocab, pairing)
    module = torch.nn.Linear(2, 2).train()
    seen_modes = []

    def fn(batch):
        seen_modes.append(module.training)
        return torch.stack([batch.index.float(), batch.images.flatten(1)[:, 0]], dim=1)

    ctx = pair_context(module, ds, batch_size=7, device=torch.device("cpu"), seed=2)
    out = ctx.per_sample(fn)
    assert out.shape == (len(ds), 2)
    assert torch.equal(out[:, 0], torch.arange(len(ds)).float())
    first_feature = np.asarray(split.images)[pairing].reshape(len(ds), -1)[:, 0]
    assert torch.equal(out[:, 1], torch.from_numpy(first_feature).float())  # the pairing's image rows
    assert seen_modes and not any(seen_modes) and module.training  # eval during the pass, restored after


def test_per_sample_returns_float32_one_row_per_sample_whatever_fn_returns(tiny_root):
    split = load_precomp(tiny_root, "train")
    ds = PairDataset(split, Vocabulary.build(split.captions, min_count=1))
    ctx = pair_context(torch.nn.Linear(2, 2), ds, batch_size=16, device=torch.device("cpu"), seed=0)
    out = ctx.per_sample(lambda b: b.index.double() + 0.5)  # float64 in, (N,) float32 out
    assert out.dtype == torch.float32 and torch.equal(out, torch.arange(len(ds)).float() + 0.5)
