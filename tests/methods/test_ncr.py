import numpy as np
import pytest
import torch
from method_helpers import random_batch

from noisycorr.backbones.vse import VSE
from noisycorr.methods.ncr import NCR, match_confidence, soft_margin
from noisycorr.selection import Selection


def _ncr(**cfg) -> NCR:
    torch.manual_seed(0)
    return NCR(NCR.Config(**cfg), lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))


_batch = random_batch


def test_soft_margin_functions_match_the_paper():
    y = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(soft_margin(y, 0.2, "exponential"), 0.2 * (10 ** y - 1) / 9)
    assert torch.allclose(soft_margin(y, 0.2, "linear"), 0.2 * y)
    assert torch.allclose(soft_margin(y, 0.2, "sine"), torch.tensor([0.0, 0.1, 0.2]), atol=1e-6)


def test_match_confidence_is_one_for_a_perfect_batch_and_low_for_swapped_pairs():
    good = torch.eye(6) * 0.9
    assert torch.allclose(match_confidence(good, 0.2), torch.ones(6))
    swapped = good.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # pairs 0 and 1 are mismatched
    p = match_confidence(swapped, 0.2)
    assert p[0] == 0 and p[1] == 0 and torch.all(p[2:] == 1)


def _set_splits(ncr: NCR, n: int) -> tuple[Selection, Selection]:
    rng = np.random.default_rng(0)
    sel_a = Selection(rng.random(n), rng.random(n) > 0.3)
    sel_b = Selection(rng.random(n), rng.random(n) > 0.6)
    ncr.selections = {"A": sel_a, "B": sel_b}
    ncr._peer_prob = {k: torch.from_numpy(s.prob).float() for k, s in ncr.selections.items()}
    return sel_a, sel_b


def test_each_network_trains_on_the_split_its_peer_made():
    ncr = _ncr(warmup_epochs=1)
    sel_a, sel_b = _set_splits(ncr, 40)
    ncr.noisy_from_epoch = 3
    early = {p.name: p for p in ncr.epoch_phases(2)}
    assert np.array_equal(early["A"].indices, np.flatnonzero(sel_b.clean))
    assert np.array_equal(early["B"].indices, np.flatnonzero(sel_a.clean))
    assert early["A"].side is None and early["B"].side is None  # noisy subset not yet used
    late = {p.name: p for p in ncr.epoch_phases(3)}
    assert np.array_equal(late["A"].side, np.flatnonzero(~sel_b.clean))
    assert np.array_equal(late["B"].side, np.flatnonzero(~sel_a.clean))
    assert [p.name for p in ncr.epoch_phases(0)] == ["A", "B"] and ncr.epoch_phases(0)[0].indices is None


@pytest.mark.parametrize("phase,trained,frozen", [("A", "net_a", "net_b"), ("B", "net_b", "net_a")])
def test_a_phase_updates_only_its_network_and_uses_the_peer_probability(phase, trained, frozen):
    ncr = _ncr(warmup_epochs=0)
    _set_splits(ncr, 40)
    ncr.noisy_from_epoch = 0
    steps = list(ncr.training_step(_batch(8), epoch=1, phase=phase, side=_batch(8, offset=20)))
    assert [next(iter(losses)) for losses, _ in steps] == ["clean", "noisy"]
    for losses, _ in steps:
        ncr.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        assert all(p.grad is None for p in getattr(ncr, frozen).parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(ncr, trained).parameters())


def test_clean_target_uses_the_peer_probability_per_pair(monkeypatch):
    ncr = _ncr(warmup_epochs=0, soft_margin="linear")
    _set_splits(ncr, 40)
    ncr._peer_prob["B"] = torch.zeros(40)
    ncr._peer_prob["B"][:4] = 1.0  # pairs 0..3 surely clean according to B
    monkeypatch.setattr(NCR, "predict", lambda self, net, batch: torch.zeros(len(batch)))
    (_, logs), = list(ncr.training_step(_batch(8), epoch=1, phase="A"))
    assert logs["target_clean"] == pytest.approx(0.5)  # (4 * 1 + 4 * 0) / 8, one target per pair
