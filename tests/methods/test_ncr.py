import math

import numpy as np
import pytest
import torch
from method_helpers import FakeEpochContext, random_batch

import noisycorr.methods.ncr as ncr_module
from noisycorr.backbones.base import Backbone
from noisycorr.backbones.vse import VSE
from noisycorr.errors import InputError
from noisycorr.methods.context import EpochContext
from noisycorr.methods.ncr import NCR, match_confidence, soft_margin
from noisycorr.selection import Selection

N = 40  # training samples of the hand-set splits


def _ncr(**cfg) -> NCR:
    torch.manual_seed(0)
    return NCR(NCR.Config(**cfg), lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))


_batch = random_batch


def _set_splits(ncr: NCR, n: int) -> tuple[Selection, Selection]:
    rng = np.random.default_rng(0)
    sel_a = Selection(rng.random(n), rng.random(n) > 0.3)
    sel_b = Selection(rng.random(n), rng.random(n) > 0.6)
    ncr.selections = {"A": sel_a, "B": sel_b}
    ncr._peer_prob = {k: torch.from_numpy(s.prob).float() for k, s in ncr.selections.items()}
    return sel_a, sel_b


def _per_pair_predictions(monkeypatch) -> dict[str, torch.Tensor]:
    """Make ``NCR.predict`` return a fixed, different confidence per sample index and per network."""
    g = torch.Generator().manual_seed(7)
    table = {"A": torch.rand(N, generator=g) * 0.8 + 0.1, "B": torch.rand(N, generator=g) * 0.8 + 0.1}

    def predict(self, net, batch):
        return table["A" if net is self.net_a else "B"][batch.index]

    monkeypatch.setattr(NCR, "predict", predict)
    return table


def _spy_margins(monkeypatch) -> list:
    """Record the margin argument of every ``triplet_loss`` call NCR makes (the real loss is returned)."""
    seen = []
    real = ncr_module.triplet_loss

    def spy(scores, margin=0.2, **kwargs):
        seen.append(margin)
        return real(scores, margin, **kwargs)

    monkeypatch.setattr(ncr_module, "triplet_loss", spy)
    return seen


# ------------------------------------------------------------------ soft margins and confidence


# mutant killed: exponential (10^y - 1) / 9 replaced by (10^y - 1) / 10
# mutant killed: sine sin(pi y - pi/2) / 2 + 0.5 replaced by cos(pi y - pi/2) / 2 + 0.5
# mutant killed: y.clamp(0, 1) removed from soft_margin
def test_soft_margin_shapes_at_zero_half_and_one():
    """The three margin functions of NCR at y = 0, 0.5, 1 (times m = 0.2), and y clamped into [0, 1]."""
    y = torch.tensor([0.0, 0.5, 1.0])
    expected = {
        "exponential": [0.0, 0.2 * (math.sqrt(10.0) - 1.0) / 9.0, 0.2],  # 0.2 * 0.2403 at y = 0.5
        "linear": [0.0, 0.1, 0.2],
        "sine": [0.0, 0.1, 0.2],
    }
    for kind, values in expected.items():
        assert soft_margin(y, 0.2, kind).tolist() == pytest.approx(values, abs=1e-6), kind
    outside = torch.tensor([-0.5, 1.5])
    for kind in expected:
        assert soft_margin(outside, 0.2, kind).tolist() == pytest.approx([0.0, 0.2], abs=1e-6), kind


def test_match_confidence_is_one_for_a_perfect_batch_and_low_for_swapped_pairs():
    good = torch.eye(6) * 0.9
    assert torch.allclose(match_confidence(good, 0.2), torch.ones(6))
    swapped = good.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # pairs 0 and 1 are mismatched
    p = match_confidence(swapped, 0.2)
    assert p[0] == 0 and p[1] == 0 and torch.all(p[2:] == 1)


def _graded_scores() -> torch.Tensor:
    """Off-diagonal scores 0 and positives d = 0.2, 0.15, 0.1, 0.05, 0: with m = 0.2 every negative
    costs m - d_i in both directions, so the raw confidence of pair i is exactly d_i."""
    return torch.diag(torch.tensor([0.2, 0.15, 0.1, 0.05, 0.0]))


# mutant killed: k = int(B * top_fraction) + 1 replaced by int(B * top_fraction)
# mutant killed: division by the top-k mean replaced by division by the maximum
# mutant killed: final clamp(max=1.0) removed
def test_match_confidence_divides_by_the_mean_of_the_top_k_raw_values():
    """B = 5, top_fraction 0.5: k = int(2.5) + 1 = 3, raw p = d, divided by (0.2 + 0.15 + 0.1) / 3."""
    scores = _graded_scores()
    got = match_confidence(scores, 0.2, top_fraction=0.5)
    assert got.tolist() == pytest.approx([1.0, 1.0, 0.1 / 0.15, 0.05 / 0.15, 0.0], abs=1e-6)
    # top_fraction 0.1: k = 1, the maximum
    assert match_confidence(scores, 0.2, top_fraction=0.1).tolist() == pytest.approx([1, 0.75, 0.5, 0.25, 0], abs=1e-6)


# mutant killed: predict calls match_confidence without self.cfg.confidence_top_fraction (default 0.1)
def test_predict_uses_the_configured_top_fraction(monkeypatch):
    """``NCR.predict`` normalises with the Config's ``confidence_top_fraction``."""
    ncr = _ncr(confidence_top_fraction=0.5)
    monkeypatch.setattr(NCR, "_scores", lambda self, net, batch: _graded_scores())
    got = ncr.predict(ncr.net_a, _batch(5))
    assert got.tolist() == pytest.approx([1.0, 1.0, 0.1 / 0.15, 0.05 / 0.15, 0.0], abs=1e-6)


# ------------------------------------------------------------------ phases and schedule


def test_each_network_trains_on_the_split_its_peer_made():
    ncr = _ncr(warmup_epochs=1)
    sel_a, sel_b = _set_splits(ncr, N)
    ncr.noisy_from_epoch = 3
    early = {p.name: p for p in ncr.epoch_phases(2)}
    assert np.array_equal(early["A"].indices, np.flatnonzero(sel_b.clean))
    assert np.array_equal(early["B"].indices, np.flatnonzero(sel_a.clean))
    assert early["A"].streams == {} and early["B"].streams == {}  # noisy subset not yet used
    late = {p.name: p for p in ncr.epoch_phases(3)}
    assert np.array_equal(late["A"].streams["noisy"], np.flatnonzero(~sel_b.clean))
    assert np.array_equal(late["B"].streams["noisy"], np.flatnonzero(~sel_a.clean))
    assert [p.name for p in ncr.epoch_phases(0)] == ["A", "B"] and ncr.epoch_phases(0)[0].indices is None


def _epochs_with_noisy_stream(ncr: NCR, ctx: FakeEpochContext) -> list[int]:
    seen = []
    for epoch in range(ctx.epochs):
        ncr.on_epoch_start(epoch, ctx)
        if any(len(p.streams.get("noisy", ())) > 0 for p in ncr.epoch_phases(epoch)):
            seen.append(epoch)
    return seen


# mutant killed: epoch >= self.noisy_from_epoch replaced by > in epoch_phases
# mutant killed: peer_phases(with_side=True) (noisy subset always on)
# mutant killed: noisy_from_epoch assignment removed from on_epoch_start (noisy_start ignored, stays 0)
# mutant killed: noisy_from_epoch = int(0.5 * ctx.epochs) (the Config's noisy_start ignored)
# mutant killed: epoch_at ignores epoch_counting (always counts after the warm-up, or always from 0)
@pytest.mark.parametrize(
    "noisy_start,counting,first",
    [(0.5, "run", 5), (0.75, "run", 7), (1.0, "run", None), (0.5, "co_training", 6), (0.75, "co_training", 8),
     (1.0, "co_training", None)],
)
def test_noisy_subset_joins_at_noisy_start_times_epochs(noisy_start, counting, first):
    """Driven through ``on_epoch_start`` with a 10-epoch context and 2 warm-up epochs: the noisy
    stream is in the phases from epoch floor(noisy_start * 10) on with ``run`` counting, from
    2 + floor(noisy_start * 8) with ``co_training`` counting (the authors'), never before (1.0: never)."""
    ncr = _ncr(warmup_epochs=2, noisy_start=noisy_start, epoch_counting=counting)
    ctx = FakeEpochContext(epochs=10, n_samples=N)
    assert isinstance(ctx, EpochContext)
    expected = [] if first is None else list(range(first, 10))
    assert _epochs_with_noisy_stream(ncr, ctx) == expected
    assert len(ctx.calls) == 2 * 8  # one pass per network in each of the 8 epochs after the warm-up


# mutant killed: `epoch >= self.noisy_from_epoch and` dropped from training_step's noisy branch
def test_training_step_ignores_a_noisy_batch_before_noisy_start():
    """Even when handed a noisy batch, the step trains on it only from floor(noisy_start * epochs) on."""
    ncr = _ncr(warmup_epochs=2, noisy_start=0.5, epoch_counting="run")
    ctx = FakeEpochContext(epochs=10, n_samples=N)
    names = {}
    for epoch in (4, 5):
        ncr.on_epoch_start(epoch, ctx)
        steps = ncr.training_step(_batch(8), epoch=epoch, phase="A", streams={"noisy": _batch(8, offset=20)})
        names[epoch] = [name for losses, _ in steps for name in losses]
    assert names == {4: ["clean"], 5: ["clean", "noisy"]}


# mutant killed: in_warmup returns True when no split was fitted (the old silent warm-up fallback)
# mutant killed: training_step tests `epoch < cfg.warmup_epochs` instead of in_warmup (KeyError, not the clear error)
def test_training_after_the_warmup_without_fitted_splits_raises():
    """Past the warm-up, a step or a phase list without ``fit_selections`` is an error, not a warm-up step."""
    ncr = _ncr(warmup_epochs=1)
    assert [n for losses, _ in ncr.training_step(_batch(8), epoch=0, phase="A") for n in losses] == ["warmup_A"]
    with pytest.raises(RuntimeError, match="no split was fitted"):
        list(ncr.training_step(_batch(8), epoch=1, phase="A"))
    with pytest.raises(RuntimeError, match="no split was fitted"):
        ncr.epoch_phases(1)


# ------------------------------------------------------------------ training steps


@pytest.mark.parametrize("phase,trained,frozen", [("A", "net_a", "net_b"), ("B", "net_b", "net_a")])
def test_a_phase_updates_only_its_network(phase, trained, frozen):
    ncr = _ncr(warmup_epochs=0)
    _set_splits(ncr, N)
    ncr.noisy_from_epoch = 0
    steps = list(ncr.training_step(_batch(8), epoch=1, phase=phase, streams={"noisy": _batch(8, offset=20)}))
    assert [next(iter(losses)) for losses, _ in steps] == ["clean", "noisy"]
    for losses, _ in steps:
        ncr.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        assert all(p.grad is None for p in getattr(ncr, frozen).parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(ncr, trained).parameters())


# mutant killed: target = w + (1 - w) p replaced by (1 - w) + w p (w and 1 - w swapped)
# mutant killed: w taken as (B, 1) so the target broadcasts to (B, B) (the authors' shape bug)
# mutant killed: w read from the training network's own probabilities instead of the peer's
# mutant killed: w = peer_prob[:len(batch)] (by batch position instead of sample index)
# mutant killed: soft margin kind hard-coded to "exponential" instead of cfg.soft_margin
@pytest.mark.parametrize("phase", ["A", "B"])
def test_clean_target_mixes_the_peer_probability_with_the_own_prediction_per_pair(monkeypatch, phase):
    """Pair i of the clean batch gets margin m * s(w_i + (1 - w_i) p_i): w_i the *peer's* clean
    probability of sample index i, p_i the training network's prediction of that pair."""
    ncr = _ncr(warmup_epochs=0, soft_margin="linear", margin=0.2)
    _set_splits(ncr, N)
    pred = _per_pair_predictions(monkeypatch)
    margins = _spy_margins(monkeypatch)
    batch = _batch(8, offset=5)  # sample indices 5..12, not 0..7
    ((losses, logs),) = list(ncr.training_step(batch, epoch=1, phase=phase))
    w = ncr._peer_prob[ncr.peer(phase)][5:13]
    target = w + (1 - w) * pred[phase][5:13]
    assert len(margins) == 1
    torch.testing.assert_close(margins[0], 0.2 * target)
    assert logs["target_clean"] == pytest.approx(float(target.mean()), abs=1e-6)


# mutant killed: target_u = p_net only (the peer's prediction dropped)
# mutant killed: target_u = (p_net + the peer's clean probability w) / 2
# mutant killed: target_u = ((p_net + p_peer) / 2).mean() (one value for the whole batch)
def test_noisy_target_is_the_mean_prediction_of_both_networks_per_pair(monkeypatch):
    """Pair i of the noisy batch gets margin m * s((p_net_i + p_peer_i) / 2)."""
    ncr = _ncr(warmup_epochs=0, soft_margin="linear", margin=0.2)
    _set_splits(ncr, N)
    ncr.noisy_from_epoch = 0
    pred = _per_pair_predictions(monkeypatch)
    margins = _spy_margins(monkeypatch)
    side = _batch(8, offset=20)  # sample indices 20..27
    steps = list(ncr.training_step(_batch(8), epoch=1, phase="B", streams={"noisy": side}))
    assert [n for losses, _ in steps for n in losses] == ["clean", "noisy"]
    target_u = (pred["B"][20:28] + pred["A"][20:28]) / 2
    assert len(margins) == 2
    torch.testing.assert_close(margins[1], 0.2 * target_u)
    assert steps[1][1]["target_noisy"] == pytest.approx(float(target_u.mean()), abs=1e-6)


def _hinge_by_hand(scores: torch.Tensor, margins: list[float]) -> float:
    """Sum over pairs i of max_j [m_i + S_ij - S_ii]_+ + max_j [m_i + S_ji - S_ii]_+ (j != i)."""
    b = scores.shape[0]
    s = scores.tolist()
    total = 0.0
    for i in range(b):
        total += max(max(0.0, margins[i] + s[i][j] - s[i][i]) for j in range(b) if j != i)
        total += max(max(0.0, margins[i] + s[j][i] - s[i][i]) for j in range(b) if j != i)
    return total


# mutant killed: triplet_loss(scores, margin.mean(), hardest=True) (a scalar margin)
# mutant killed: triplet_loss(scores, self.cfg.margin, hardest=True) (the soft margin not used)
# mutant killed: hardest=False in the clean loss
def test_the_clean_loss_is_the_hardest_negative_hinge_with_each_pairs_own_soft_margin(monkeypatch):
    """With fixed scores, peer probabilities and predictions, the clean loss equals the hinge
    computed by hand with margin m * (10^y_i - 1) / 9 for pair i."""
    ncr = _ncr(warmup_epochs=0, margin=0.2)  # exponential soft margin (the default)
    _set_splits(ncr, N)
    ncr._peer_prob["B"][:4] = torch.tensor([0.1, 0.9, 0.5, 0.3])
    monkeypatch.setattr(NCR, "predict", lambda self, net, batch: torch.tensor([0.2, 0.0, 0.4, 0.1]))
    scores = torch.tensor(
        [
            [0.50, 0.45, 0.30, 0.42],
            [0.40, 0.60, 0.55, 0.20],
            [0.35, 0.50, 0.55, 0.46],
            [0.48, 0.10, 0.30, 0.52],
        ]
    )
    monkeypatch.setattr(NCR, "_scores", lambda self, net, batch: scores.clone().requires_grad_())
    ((losses, _),) = list(ncr.training_step(_batch(4), epoch=1, phase="A"))
    y = [w + (1 - w) * p for w, p in zip([0.1, 0.9, 0.5, 0.3], [0.2, 0.0, 0.4, 0.1])]
    margins = [0.2 * (10**v - 1) / 9 for v in y]
    assert losses["clean"].item() == pytest.approx(_hinge_by_hand(scores, margins), abs=1e-6)
    # the same scores with one margin for all pairs give another loss: the check can tell them apart
    mean_margin = sum(margins) / 4
    assert abs(_hinge_by_hand(scores, [mean_margin] * 4) - _hinge_by_hand(scores, margins)) > 1e-3
    assert abs(_hinge_by_hand(scores, [0.2] * 4) - _hinge_by_hand(scores, margins)) > 1e-3


# ------------------------------------------------------------------ margin_of: pair | authors

_SCORES = [
    [0.50, 0.45, 0.30, 0.42],
    [0.40, 0.60, 0.55, 0.20],
    [0.35, 0.50, 0.55, 0.46],
    [0.48, 0.10, 0.30, 0.52],
]


def _hinge_by_cells(s: list[list[float]], m: list[list[float]]) -> float:
    """The authors' hinge with margin m[i][j] in cell (i, j): sum_i max_j [m_ij + S_ij - S_ii]_+
    (anchor image i) + sum_j max_i [m_ij + S_ij - S_jj]_+ (anchor caption j), j != i."""
    b = len(s)
    total = sum(max(max(0.0, m[i][j] + s[i][j] - s[i][i]) for j in range(b) if j != i) for i in range(b))
    return total + sum(max(max(0.0, m[i][j] + s[i][j] - s[j][j]) for i in range(b) if i != j) for j in range(b))


def _fixed_step(monkeypatch, margin_of: str = "pair", **cfg) -> dict[str, torch.Tensor]:
    """One co-training step of network A with fixed scores (both batches), peer probabilities
    w = [0.1, 0.9, 0.5, 0.3] and predictions p = [0.2, 0.0, 0.4, 0.1] of both networks."""
    ncr = _ncr(warmup_epochs=0, margin=0.2, margin_of=margin_of, **cfg)  # exponential soft margin
    _set_splits(ncr, N)
    ncr.noisy_from_epoch = 0
    ncr._peer_prob["B"][:4] = torch.tensor([0.1, 0.9, 0.5, 0.3])
    monkeypatch.setattr(NCR, "predict", lambda self, net, batch: torch.tensor([0.2, 0.0, 0.4, 0.1]))
    monkeypatch.setattr(NCR, "_scores", lambda self, net, batch: torch.tensor(_SCORES).requires_grad_())
    steps = list(ncr.training_step(_batch(4), epoch=1, phase="A", streams={"noisy": _batch(4, offset=20)}))
    return {name: loss for losses, _ in steps for name, loss in losses.items()}


def _s(y: float) -> float:
    return 0.2 * (10**y - 1) / 9


W, P = [0.1, 0.9, 0.5, 0.3], [0.2, 0.0, 0.4, 0.1]


# mutant killed: the noisy margin expanded along columns ([None, :]): the positive caption's margin
# mutant killed: the clean cell target w_j + (1 - w_j) p_i (indices swapped)
# mutant killed: margin_of ignored (authors computes the per-pair loss)
def test_margin_of_authors_is_their_broadcast_hinge_by_hand(monkeypatch):
    """``margin_of: authors``: clean cell (i, j) has margin m s(w_i + (1 - w_i) p_j); noisy cell (i, j)
    m s(y_i) with y = (p_A + p_B) / 2 = p, so the caption-anchor direction uses the negative image's
    margin. Both differ from the per-pair hinge on these scores."""
    losses = _fixed_step(monkeypatch, "authors")
    clean = [[_s(W[i] + (1 - W[i]) * P[j]) for j in range(4)] for i in range(4)]
    noisy = [[_s(P[i])] * 4 for i in range(4)]
    assert losses["clean"].item() == pytest.approx(_hinge_by_cells(_SCORES, clean), abs=1e-6)
    assert losses["noisy"].item() == pytest.approx(_hinge_by_cells(_SCORES, noisy), abs=1e-6)
    per_pair_clean = _hinge_by_hand(torch.tensor(_SCORES), [_s(w + (1 - w) * p) for w, p in zip(W, P)])
    per_pair_noisy = _hinge_by_hand(torch.tensor(_SCORES), [_s(p) for p in P])
    assert abs(per_pair_clean - _hinge_by_cells(_SCORES, clean)) > 1e-3
    assert abs(per_pair_noisy - _hinge_by_cells(_SCORES, noisy)) > 1e-3


# mutant killed: the per-pair margin broadcast as the authors' (B, 1) by default
def test_margin_of_pair_is_each_positive_pairs_own_margin_by_hand(monkeypatch):
    """``margin_of: pair`` (default): pair i's margin m s(y_i) in both directions where it is the positive."""
    losses = _fixed_step(monkeypatch, "pair")
    clean = [_s(w + (1 - w) * p) for w, p in zip(W, P)]
    assert losses["clean"].item() == pytest.approx(_hinge_by_hand(torch.tensor(_SCORES), clean), abs=1e-6)
    assert losses["noisy"].item() == pytest.approx(_hinge_by_hand(torch.tensor(_SCORES), [_s(p) for p in P]), abs=1e-6)


def _mean_hinge_by_hand(s: list[list[float]], margins: list[float]) -> float:
    """Pair i's violations averaged over its B - 1 negatives, in both directions, summed over pairs."""
    b = len(s)
    total = 0.0
    for i in range(b):
        total += sum(max(0.0, margins[i] + s[i][j] - s[i][i]) for j in range(b) if j != i) / (b - 1)
        total += sum(max(0.0, margins[i] + s[j][i] - s[i][i]) for j in range(b) if j != i) / (b - 1)
    return total


# mutant killed: negatives ignored (always the hardest negative)
def test_negatives_mean_averages_each_pairs_violations_in_both_subsets(monkeypatch):
    """``negatives: mean``: both co-training hinges average over the negatives, with each pair's soft margin."""
    losses = _fixed_step(monkeypatch, negatives="mean")
    clean = [_s(w + (1 - w) * p) for w, p in zip(W, P)]
    assert losses["clean"].item() == pytest.approx(_mean_hinge_by_hand(_SCORES, clean), abs=1e-6)
    assert losses["noisy"].item() == pytest.approx(_mean_hinge_by_hand(_SCORES, [_s(p) for p in P]), abs=1e-6)
    assert abs(_mean_hinge_by_hand(_SCORES, clean) - _hinge_by_hand(torch.tensor(_SCORES), clean)) > 1e-3
    with pytest.raises(InputError, match="method.negatives"):
        _ncr(negatives="all")


def test_margin_of_is_checked():
    with pytest.raises(InputError, match="margin_of"):
        _ncr(margin_of="negative")
    with pytest.raises(InputError, match="margin_of"):
        _ncr(margin_of="authors", targets="consistency")


# ------------------------------------------------------------------ confidence from the training forward


class _ModeFree(Backbone):
    """Mean region -> linear, mean word embedding -> linear: no dropout, no batch norm, so train and
    eval mode compute the same scores."""

    def __init__(self):
        super().__init__()
        self.img = torch.nn.Linear(8, 16)
        self.words = torch.nn.Embedding(30, 16)
        self.txt = torch.nn.Linear(16, 16)

    def encode_images(self, images):
        return torch.nn.functional.normalize(self.img(images.mean(1)), dim=-1)

    def encode_texts(self, tokens, lengths):
        mask = (torch.arange(tokens.shape[1]) < lengths[:, None]).float()
        mean = (self.words(tokens) * mask[..., None]).sum(1) / lengths[:, None]
        return torch.nn.functional.normalize(self.txt(mean), dim=-1)

    def similarity(self, img_emb, txt_emb, txt_lengths=None):
        return img_emb @ txt_emb.t()


def _count_similarity(monkeypatch) -> list[int]:
    calls = []
    real = VSE.similarity

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VSE, "similarity", counted)
    return calls


def _step_grads(confidence_from: str, with_side: bool) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)
    # margin 2: every hinge is active on unit vectors, so p varies from pair to pair (not all 0)
    ncr = NCR(NCR.Config(warmup_epochs=0, margin=2.0, confidence_from=confidence_from), _ModeFree)
    _set_splits(ncr, N)
    ncr.noisy_from_epoch = 0
    ncr.train()
    streams = {"noisy": _batch(8, offset=20)} if with_side else None
    losses = []
    for step_losses, _ in ncr.training_step(_batch(8), epoch=1, phase="A", streams=streams):
        loss = sum(step_losses.values())
        loss.backward()
        losses.append(float(loss.detach()))
    return losses, [p.grad.clone() for p in ncr.net_a.parameters() if p.grad is not None]


# mutants killed (forward variant): p without the top-fraction normalisation; p from the transposed
# scores; p from the scores with their rows reversed (another pair's confidence); an eval pass kept
# beside the forward (the call count below)
@pytest.mark.parametrize("with_side", [False, True])
def test_confidence_from_forward_equals_the_eval_pass_when_train_and_eval_modes_agree(with_side):
    """A backbone without mode-dependent layers: both variants give the same losses and gradients."""
    losses_eval, grads_eval = _step_grads("eval_pass", with_side)
    losses_fwd, grads_fwd = _step_grads("forward", with_side)
    assert losses_fwd == pytest.approx(losses_eval, abs=1e-6)
    assert len(grads_fwd) == len(grads_eval) > 0
    for a, b in zip(grads_fwd, grads_eval, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_confidence_from_forward_scores_each_batch_once_per_network(monkeypatch):
    calls = _count_similarity(monkeypatch)
    for confidence_from, expected in (("eval_pass", 2 + 3), ("forward", 1 + 2)):
        ncr = _ncr(warmup_epochs=0, confidence_from=confidence_from)
        _set_splits(ncr, N)
        ncr.noisy_from_epoch = 0
        calls.clear()
        list(ncr.training_step(_batch(8), epoch=1, phase="A", streams={"noisy": _batch(8, offset=20)}))
        # clean batch: (eval pass +) forward; noisy batch: (eval pass +) forward + the peer's pass
        assert len(calls) == expected, confidence_from


def test_confidence_from_rejects_unknown_values():
    with pytest.raises(InputError, match="method.confidence_from"):
        _ncr(confidence_from="train")
