import dataclasses
import math
import sys

import numpy as np
import pytest
import torch
from method_helpers import random_batch

from noisycorr.backbones.vse import VSE
from noisycorr.config import EvalConfig
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.inference import encode_split, evaluate_method
from noisycorr.errors import InputError
from noisycorr.methods.in2r import IN2R, GraphRefiner, PairMemory, mean_prototype, nearest_neighbours
from noisycorr.selection import Selection

DIM = 16


def _in2r(dropout: float = 0.0, **cfg) -> IN2R:
    torch.manual_seed(0)
    cfg = {"queue_size": 32, **cfg}
    return IN2R(
        IN2R.Config(**cfg),
        lambda: VSE(vocab_size=30, img_dim=8, embed_size=DIM, word_dim=8, dropout=dropout),
    )


_batch = random_batch


def _set_splits(m: IN2R, prob_a: np.ndarray, prob_b: np.ndarray) -> None:
    """Selections as ``on_epoch_start`` would leave them (clean = prob > 0.5)."""
    m.selections = {"A": Selection(prob_a, prob_a > 0.5), "B": Selection(prob_b, prob_b > 0.5)}
    m._peer_prob = {k: torch.from_numpy(s.prob).float() for k, s in m.selections.items()}
    for name in ("A", "B"):
        split = m.selections[m.peer(name)]
        m._enqueue_threshold[name] = float(split.prob[split.clean].mean())


# ------------------------------------------------------------------ memory ring


def test_memory_ring_keeps_capacity_and_overwrites_the_oldest_first():
    mem = PairMemory(capacity=5, dim=2)
    rows = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    mem.push(rows[:3], -rows[:3])
    assert len(mem) == 3 and torch.equal(mem.contents()[0], rows[:3]) and torch.equal(mem.contents()[1], -rows[:3])
    mem.push(rows[3:7], -rows[3:7])  # 7 pairs into 5 slots: pairs 0 and 1 (the oldest) are gone
    assert len(mem) == 5
    stored = {tuple(r.tolist()) for r in mem.contents()[0]}
    assert stored == {tuple(r.tolist()) for r in rows[2:7]}
    assert torch.equal(mem.images[:2], rows[5:7]) and torch.equal(mem.images[2], rows[2])
    assert torch.equal(mem.captions, -mem.images)  # pairs stay together
    mem.push(rows[7:8], -rows[7:8])  # the next oldest, pair 2, is overwritten
    assert {tuple(r.tolist()) for r in mem.contents()[0]} == {tuple(r.tolist()) for r in rows[3:8]}


def test_pushing_more_than_the_capacity_at_once_equals_pushing_one_by_one():
    rows = torch.randn(13, 3)
    one_by_one, at_once = PairMemory(4, 3), PairMemory(4, 3)
    one_by_one.push(rows[:2], rows[:2])
    at_once.push(rows[:2], rows[:2])
    for r in rows[2:]:
        one_by_one.push(r[None], r[None])
    at_once.push(rows[2:], rows[2:])
    for a, b in zip(one_by_one.state_dict().values(), at_once.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_only_pairs_surer_than_the_clean_mean_enter_the_training_networks_memory():
    m = _in2r(warmup_epochs=0)
    prob_b = np.array([0.99, 0.6, 0.95, 0.2, 0.97, 0.7, 0.1, 0.55])  # B's split: A trains on it
    _set_splits(m, np.full(8, 0.9), prob_b)
    threshold = prob_b[prob_b > 0.5].mean()
    assert m._enqueue_threshold["A"] == pytest.approx(threshold)
    batch = _batch(8)
    with torch.no_grad():  # no dropout: the first view is the plain training-mode embedding
        expected_img = m.net_a.encode_images(batch.images)
        expected_txt = m.net_a.encode_texts(batch.tokens, batch.lengths)
    _, logs = m.training_step(batch, epoch=1, phase="A")
    sure = torch.from_numpy(prob_b > threshold)
    assert len(m.memory["A"]) == int(sure.sum()) == 3 and len(m.memory["B"]) == 0
    img, txt = m.memory["A"].contents()
    torch.testing.assert_close(img, expected_img[sure])
    torch.testing.assert_close(txt, expected_txt[sure])
    assert not img.requires_grad
    assert logs["enqueued"] == pytest.approx(3 / 8)


# ------------------------------------------------------------------ neighbours and refiner


@pytest.mark.parametrize("chunk", [3, 7, 1000])
def test_nearest_neighbours_match_a_brute_force_oracle(chunk):
    g = torch.Generator().manual_seed(1)
    queries = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    oracle = [sorted(range(50), key=lambda j, i=i: -float(queries[i] @ keys[j]))[:5] for i in range(6)]
    got = nearest_neighbours(queries, keys, 5, chunk=chunk)
    assert got.tolist() == oracle


def test_faiss_backend_without_faiss_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(InputError, match=r"noisycorr\[faiss\]"):
        nearest_neighbours(torch.randn(2, 4), torch.randn(5, 4), 2, backend="faiss")
    with pytest.raises(InputError, match=r"noisycorr\[faiss\]") as err:
        _in2r(knn_backend="faiss")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="knn_backend"):
        _in2r(knn_backend="annoy")


def test_refiner_gives_unit_prototypes_and_learns():
    refiner = GraphRefiner(DIM, heads=4, dropout=0.1)
    neighbours = torch.randn(7, 5, DIM)
    out = refiner(neighbours)
    assert out.shape == (7, DIM)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))
    out.sum().backward()
    assert all(p.grad is not None for p in refiner.parameters())
    with pytest.raises(InputError, match="refiner_heads"):
        GraphRefiner(DIM, heads=3)


def _set_refiner(refiner: GraphRefiner, q, k, v, out, out_bias=None) -> GraphRefiner:
    """Hand-set projection weights (biases zero unless ``out_bias``), layer norm weight 1 bias 0, eval mode."""
    with torch.no_grad():
        for lin, weight in ((refiner.q_proj, q), (refiner.k_proj, k), (refiner.v_proj, v), (refiner.out_proj, out)):
            lin.weight.copy_(weight)
            lin.bias.zero_()
        if out_bias is not None:
            refiner.out_proj.bias.copy_(out_bias)
        refiner.norm.weight.fill_(1.0)
        refiner.norm.bias.zero_()
    return refiner.eval()


def _layer_norm_by_hand(h: torch.Tensor) -> torch.Tensor:
    centred = h - h.mean(-1, keepdim=True)
    return centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5)


_NEIGHBOURS = torch.tensor(
    [
        [[1.0, 0.0, 2.0, -1.0], [0.5, 1.5, -0.5, 0.0], [-1.0, 0.5, 0.0, 1.0]],
        [[2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, -2.0, 0.0]],
    ]
)  # (B = 2, k = 3, D = 4)


# mutant killed: residual dropped (nodes = norm(dropout(out_proj(mixed))))
# mutant killed: layer norm dropped (nodes = neighbours + dropout(out_proj(mixed)))
# mutant killed: final L2 normalisation dropped (return nodes.mean(dim=1))
# mutant killed: mean over the nodes replaced by the first node (nodes[:, 0])
# mutant killed: attention weights summed, not averaged (torch.exp instead of the softmax)
# (nodes.sum instead of nodes.mean is an equivalent mutant: the L2 normalisation removes the factor k)
def test_refiner_with_uniform_attention_matches_the_hand_computation():
    """q = k = 0 make the attention uniform: every node gets out_proj(mean of the neighbours); then
    residual, layer norm, mean over the nodes, L2 normalisation."""
    d = 4
    a = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1.0], [0, 0, -1.0, 0]])
    bias = torch.tensor([0.1, -0.2, 0.3, 0.0])
    zero = torch.zeros(d, d)
    refiner = _set_refiner(GraphRefiner(d, heads=2, dropout=0.5), zero, zero, torch.eye(d), a, bias)
    mixed = _NEIGHBOURS.mean(1, keepdim=True) @ a.T + bias  # (B, 1, D): the same for every node
    nodes = _layer_norm_by_hand(_NEIGHBOURS + mixed)
    proto = nodes.mean(1)
    expected = proto / proto.norm(dim=1, keepdim=True)
    torch.testing.assert_close(refiner(_NEIGHBOURS), expected, rtol=1e-5, atol=1e-6)


# mutant killed: softmax over the keys replaced by a softmax over the queries (dim=-2)
# mutant killed: scores scaled by 1 / sqrt(D) instead of 1 / sqrt(D / heads)
# mutant killed: heads split without the transpose (reshape(b, heads, k, D / heads))
def test_refiner_attention_is_a_softmax_over_the_keys_of_each_head():
    """q = identity and a non-symmetric k projection; per head h and node i the output mixes the
    nodes' head-h values with softmax_j(q_i . k_j / sqrt(D / heads)); v = out = identity."""
    d, heads = 4, 2
    kmat = torch.tensor([[0.0, 2.0, 0, 0], [1.0, 0.0, 0, 0], [0, 0, 1.5, -1.0], [0, 0, 0.5, 0.0]])
    refiner = _set_refiner(GraphRefiner(d, heads=heads, dropout=0.0), torch.eye(d), kmat, torch.eye(d), torch.eye(d))
    x = 1.5 * _NEIGHBOURS
    keys = x @ kmat.T
    mixed = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for h in range(heads):
            cols = slice(2 * h, 2 * h + 2)
            for i in range(x.shape[1]):
                logits = torch.stack([x[b, i, cols] @ keys[b, j, cols] for j in range(x.shape[1])]) / math.sqrt(2)
                weights = torch.softmax(logits, dim=0)
                mixed[b, i, cols] = sum(weights[j] * x[b, j, cols] for j in range(x.shape[1]))
    proto = _layer_norm_by_hand(x + mixed).mean(1)
    expected = proto / proto.norm(dim=1, keepdim=True)
    torch.testing.assert_close(refiner(x), expected, rtol=1e-5, atol=1e-6)


def _axis(*dims: int) -> torch.Tensor:
    """(len(dims), DIM) rows: unit vector e_d for each d."""
    return torch.eye(DIM)[list(dims)]


class _CaptureRefiner(torch.nn.Module):
    """Stands in for a refiner: records its neighbours and returns their normalised mean."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, neighbours):
        self.seen.append(neighbours)
        return mean_prototype(neighbours)


# mutant killed: keys and values swapped (i2t looks up memory captions and returns memory images)
# mutant killed: prototypes read the training network's own memory instead of its peer's
# mutant killed: the peer's refiner (refiners[f"{peer}_{direction}"]) used instead of the network's own
def test_prototypes_are_the_captions_stored_with_the_nearest_memory_images():
    """B's memory: images e0..e4 stored with captions e8..e12. An image query closest to e0 then e1
    gives (with k = 2) the prototype of captions e8, e9; a caption query closest to e12 then e11
    gives images e4, e3. A's own memory holds other captions and must not be read."""
    m = _in2r(k=2)
    m.memory["B"].push(_axis(0, 1, 2, 3, 4), _axis(8, 9, 10, 11, 12))
    m.memory["A"].push(_axis(0, 1, 2, 3, 4), _axis(13, 14, 15, 5, 6))
    m.refiners["A_i2t"], m.refiners["A_t2i"] = _CaptureRefiner(), _CaptureRefiner()
    image_query = torch.nn.functional.normalize(3 * _axis(0) + 2 * _axis(1) + _axis(2), dim=1)
    caption_query = torch.nn.functional.normalize(_axis(11) + 2 * _axis(12), dim=1)
    torch.testing.assert_close(m.prototypes("A", "i2t", image_query), (_axis(8) + _axis(9)) / math.sqrt(2))
    torch.testing.assert_close(m.prototypes("A", "t2i", caption_query), (_axis(3) + _axis(4)) / math.sqrt(2))
    torch.testing.assert_close(m.refiners["A_i2t"].seen[0], _axis(8, 9)[None])  # best neighbour first
    torch.testing.assert_close(m.refiners["A_t2i"].seen[0], _axis(4, 3)[None])


# mutant killed: rectification weighted by a hard-coded 0.5 instead of cfg.rectify_weight
# mutant killed: cfg.rectify_weight applied to the i2t direction only (t2i keeps 0.5)
def test_rectify_weight_scales_both_rectification_losses_and_nothing_else():
    """Two identical methods, rectify_weight 1.0 and 0.25: the rect_* losses differ by the factor
    0.25, the clean and intra losses not at all."""
    rng = np.random.default_rng(0)
    prob_a, prob_b = rng.random(40), rng.random(40)
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(12, DIM, generator=g), torch.randn(12, DIM, generator=g)
    losses = {}
    for weight in (1.0, 0.25):
        m = _in2r(warmup_epochs=0, rectify_weight=weight, refiner_dropout=0.0).train()
        _set_splits(m, prob_a, prob_b)
        m.memory["B"].push(*memory)
        losses[weight], _ = m.training_step(_batch(8), epoch=1, phase="A", streams={"noisy": _batch(8, offset=20)})
    full, quarter = losses[1.0], losses[0.25]
    assert set(full) == {"clean", "intra", "rect_i2t", "rect_t2i"} and full["rect_i2t"] > 0 and full["rect_t2i"] > 0
    for name in ("rect_i2t", "rect_t2i"):
        torch.testing.assert_close(quarter[name], 0.25 * full[name])
    for name in ("clean", "intra"):
        torch.testing.assert_close(quarter[name], full[name])
    assert IN2R.Config().rectify_weight == 0.5  # the authors' value


def test_without_refiner_the_prototype_is_the_normalised_mean_of_the_peer_memory_neighbours():
    m = _in2r(refiner=False)
    assert len(m.refiners) == 0 and not any("refiner" in k for k in m.state_dict())
    g = torch.Generator().manual_seed(2)
    mem_img = torch.nn.functional.normalize(torch.randn(20, DIM, generator=g), dim=1)
    mem_txt = torch.nn.functional.normalize(torch.randn(20, DIM, generator=g), dim=1)
    m.memory["B"].push(mem_img, mem_txt)  # A's noisy samples query B's memory
    queries = torch.nn.functional.normalize(torch.randn(4, DIM, generator=g), dim=1)
    idx = (queries @ mem_img.t()).topk(5, dim=1).indices
    torch.testing.assert_close(m.prototypes("A", "i2t", queries), mean_prototype(mem_txt[idx]))
    idx_t = (queries @ mem_txt.t()).topk(5, dim=1).indices
    torch.testing.assert_close(m.prototypes("A", "t2i", queries), mean_prototype(mem_img[idx_t]))
    assert m.prototypes("B", "i2t", queries) is None  # A's memory is empty


def test_refiners_are_built_for_enabled_directions_only_and_are_trained_from_the_start():
    m = _in2r()
    assert sorted(m.refiners) == ["A_i2t", "A_t2i", "B_i2t", "B_t2i"]
    params = {id(p) for p in m.parameters()}
    assert all(id(p) in params for p in m.refiners.parameters())
    assert sorted(_in2r(t2i=False).refiners) == ["A_i2t", "B_i2t"]
    assert any(k.startswith("memory.") for k in m.state_dict())  # in the resumable checkpoint
    assert m.training_only_state == ("memory.", "labeler.")  # the memory and any plug-in codebooks


# ------------------------------------------------------------------ training steps


def test_warmup_uses_two_dropout_views_and_the_contrastive_losses():
    m = _in2r(dropout=0.3).train()
    img1, _, img2, _ = m._two_views(m.net_a, _batch(8))
    assert not torch.allclose(img1, img2)
    assert [p.name for p in m.epoch_phases(0)] == ["A", "B"] and m.epoch_phases(0)[0].indices is None
    losses, _ = m.training_step(_batch(8), epoch=0, phase="B")
    assert set(losses) == {"warmup", "warmup_intra"} and all(v > 0 for v in losses.values())


@pytest.mark.parametrize("phase,trained,frozen", [("A", "net_a", "net_b"), ("B", "net_b", "net_a")])
def test_co_training_step_sums_clean_intra_and_rectification_losses(phase, trained, frozen):
    m = _in2r(dropout=0.3, warmup_epochs=0).train()
    rng = np.random.default_rng(0)
    _set_splits(m, rng.random(40), rng.random(40))
    peer = m.peer(phase)
    losses, _ = m.training_step(_batch(8), epoch=1, phase=phase, streams={"noisy": _batch(8, offset=20)})
    assert set(losses) == {"clean", "intra"}  # the peer's memory is still empty
    g = torch.Generator().manual_seed(3)
    m.memory[peer].push(torch.randn(12, DIM, generator=g), torch.randn(12, DIM, generator=g))
    losses, _ = m.training_step(_batch(8), epoch=1, phase=phase, streams={"noisy": _batch(8, offset=20)})
    assert set(losses) == {"clean", "intra", "rect_i2t", "rect_t2i"}
    m.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in getattr(m, frozen).parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(m, trained).parameters())
    for name, refiner in m.refiners.items():
        used = name.startswith(phase)
        assert all((p.grad is not None) == used for p in refiner.parameters()), name


def test_each_network_trains_on_its_peers_split_with_the_noisy_side_from_the_first_co_training_epoch():
    m = _in2r(warmup_epochs=1)
    rng = np.random.default_rng(1)
    _set_splits(m, rng.random(40), rng.random(40))
    phases = {p.name: p for p in m.epoch_phases(1)}
    for name in ("A", "B"):
        split = m.selections[m.peer(name)]
        assert np.array_equal(phases[name].indices, np.flatnonzero(split.clean))
        assert np.array_equal(phases[name].streams["noisy"], np.flatnonzero(~split.clean))


def test_bad_settings_are_one_line_errors():
    with pytest.raises(InputError, match="method.k"):
        _in2r(k=0)
    with pytest.raises(InputError, match="method.k"):
        _in2r(k=40, queue_size=32)
    with pytest.raises(InputError, match="method.estimator"):
        _in2r(estimator="kmeans")
    assert {f.name for f in dataclasses.fields(IN2R.Config)} >= {"queue_size", "refiner", "knn_backend"}


# ------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def tiny_test_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("in2r-eval")
    write_synthetic(root, seed=5, n_train=8, n_dev=4, n_test=30, n_regions=4, feat_dim=8, n_concepts=6)
    split = load_precomp(root, "test")
    vocab = Vocabulary.build(split.captions, min_count=1)
    return split, vocab


def test_evaluation_does_not_depend_on_test_batch_size_or_order(tiny_test_split):
    split, vocab = tiny_test_split
    m = _in2r(dropout=0.3)
    m.net_a = VSE(vocab_size=len(vocab), img_dim=8, embed_size=DIM, word_dim=8, dropout=0.3, text_mlp=True)
    m.net_b = VSE(vocab_size=len(vocab), img_dim=8, embed_size=DIM, word_dim=8, dropout=0.3, text_mlp=True)
    m.train()  # evaluation must switch to eval mode itself
    results = [evaluate_method(m.backbones, split, vocab, settings=EvalConfig(batch_size=bs)) for bs in (1, 7, 256)]
    assert results[0] == results[1] == results[2]

    perm = np.random.default_rng(0).permutation(split.n_images)
    cpi = split.captions_per_image
    cap_perm = (perm[:, None] * cpi + np.arange(cpi)).reshape(-1)
    shuffled = dataclasses.replace(
        split, images=np.asarray(split.images)[perm], captions=[split.captions[c] for c in cap_perm], ids=None
    )
    for net in m.backbones:
        img, txt, _ = encode_split(net, split, vocab, batch_size=256)
        img_p, txt_p, _ = encode_split(net, shuffled, vocab, batch_size=4)
        sims, sims_p = img @ txt.t(), img_p @ txt_p.t()
        torch.testing.assert_close(sims_p, sims[perm][:, cap_perm], rtol=0, atol=1e-5)
    shuffled_result = evaluate_method(m.backbones, shuffled, vocab, settings=EvalConfig(batch_size=5))
    assert shuffled_result["rsum"] == pytest.approx(results[0]["rsum"])


# ------------------------------------------------------------------ initialisation and clipping (issue 16)


def test_network_b_starts_as_a_copy_of_network_a_unless_init_b_is_independent():
    copied = _in2r(dropout=0.3)
    a, b = copied.net_a.state_dict(), copied.net_b.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(pa is not pb for pa, pb in zip(copied.net_a.parameters(), copied.net_b.parameters()))
    independent = _in2r(dropout=0.3, init_b="independent")
    a, b = independent.net_a.state_dict(), independent.net_b.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # A and the refiners are the same either way (B is built from the same random draws)
    for key, value in copied.state_dict().items():
        if not key.startswith("net_b."):
            assert torch.equal(value, independent.state_dict()[key]), key
    with pytest.raises(InputError, match="method.init_b"):
        _in2r(init_b="same")


@pytest.mark.parametrize("clip_refiners", [False, True])
def test_gradient_clipping_covers_the_encoders_but_not_the_refiners(clip_refiners):
    from noisycorr.config import TrainConfig
    from noisycorr.engine.optim import Optimizers, Stepper

    m = _in2r(clip_refiners=clip_refiners)
    refiner_ids = {id(p) for p in m.refiners.parameters()}
    (spec,) = m.optimizer_specs()
    assert {id(p) for p in spec.unclipped} == (set() if clip_refiners else refiner_ids)
    clip = 1.0
    train = TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=clip)
    stepper = Stepper(Optimizers(m, train), torch.amp.GradScaler("cpu", enabled=False), clip)
    g = torch.Generator().manual_seed(0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    grads = {n: 10 * torch.randn(p.shape, generator=g) for n, p in m.named_parameters()}
    stepper.zero_grad()
    for n, p in m.named_parameters():  # hand-made gradients, every one far above the clip norm
        p.grad = grads[n].clone()
    stepper.step("main")
    steps = {n: before[n] - p.detach() for n, p in m.named_parameters()}  # SGD, lr 1: the used gradient
    refiners = [n for n in steps if n.startswith("refiners.")]
    encoders = [n for n in steps if n.startswith(("net_a.", "net_b."))]
    assert refiners and encoders and len(refiners) + len(encoders) == len(steps)
    norm = lambda names: torch.sqrt(sum(steps[n].pow(2).sum() for n in names))  # noqa: E731
    if clip_refiners:  # one norm over everything
        assert float(norm(encoders + refiners)) == pytest.approx(clip, rel=1e-4)
    else:  # the authors': the encoders' norm is clipped, the refiners step with their raw gradients
        assert float(norm(encoders)) == pytest.approx(clip, rel=1e-4)
        for n in refiners:
            torch.testing.assert_close(steps[n], grads[n])
