import dataclasses
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
    assert m.training_only_state == ("memory.",)


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
    results = [
        evaluate_method(m.backbones, split, vocab, settings=EvalConfig(batch_size=bs)) for bs in (1, 7, 256)
    ]
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
