"""MSCN: the functional virtual step against a copied network stepped by its optimiser, the meta
gradient through it, the soft margin, the Beta mixture's given start, and the meta set (disjoint from
validation and test, recorded, held apart from training, bad files refused)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from method_helpers import random_batch

from noisycorr.backbones.base import similarity_matrix
from noisycorr.backbones.sgraf import SGRAF
from noisycorr.backbones.vse import VSE
from noisycorr.config import load_config
from noisycorr.data.meta import read_index_file
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.engine.setup import prepare_data
from noisycorr.errors import InputError
from noisycorr.eval.shortlist import shortlist_similarities
from noisycorr.methods.mscn import MSCN, MetaScored, mscn_margin
from noisycorr.selection import BetaMixture1D


def _method(kind: str = "adam") -> MSCN:
    torch.manual_seed(0)
    cfg = MSCN.Config(virtual_step=kind, warmup_epochs=0, meta_hidden=5)
    return MSCN(cfg, lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))


def _inputs(batch):
    return batch.images, batch.tokens, batch.lengths


@pytest.mark.parametrize(
    ("kind", "opt_cls", "wd"),
    [("adam", torch.optim.Adam, 0.0), ("adam", torch.optim.Adam, 0.05), ("adam", torch.optim.AdamW, 0.05),
     ("sgd", torch.optim.SGD, 0.0)],
)
def test_the_functional_virtual_step_equals_a_copied_network_stepped_by_its_optimiser(kind, opt_cls, wd):
    method = _method(kind)
    net = method.net_a.train()
    lr = 1.0 if kind == "sgd" else 0.01
    opt = opt_cls(net.net.parameters(), lr=lr, weight_decay=wd)
    for k in range(3):  # real steps first: non-trivial moments and step counts
        opt.zero_grad()
        method.batch_loss(*net(*_inputs(random_batch(8, 10 * k)), both=True)).backward()
        opt.step()
    batch = random_batch(8, 100)
    virtual, _ = method.virtual_backbone(net, batch, opt, clip=0.01)  # a clip that bites

    twin = copy.deepcopy(net)
    twin_opt = opt_cls(twin.net.parameters(), lr=lr, weight_decay=wd)
    twin_opt.load_state_dict(opt.state_dict())
    method.batch_loss(*twin(*_inputs(batch), both=True)).backward()
    norm = torch.nn.utils.clip_grad_norm_(twin.net.parameters(), 0.01)
    assert norm > 0.01
    twin_opt.step()
    moved = 0.0
    for name, p in twin.net.named_parameters():
        assert torch.allclose(virtual[f"net.{name}"], p, atol=1e-6, rtol=0), name
        moved = max(moved, float((p - dict(net.net.named_parameters())[name]).detach().abs().max()))
    assert moved > 1e-4  # the step did move the weights


def test_the_meta_gradient_flows_through_the_virtual_step():
    method = _method()
    net = method.net_a.train()
    opt = torch.optim.Adam(net.net.parameters(), lr=0.05)
    virtual, buffers = method.virtual_backbone(net, random_batch(8, 1), opt, clip=0.0)
    meta = random_batch(6, 50)
    out = torch.func.functional_call(net, {**virtual, **buffers}, _inputs(meta), {"pairs": True})
    full = torch.autograd.grad(out.sum(), list(net.meta.parameters()))
    fixed = {k: v.detach() for k, v in virtual.items()}
    out_direct = torch.func.functional_call(net, {**fixed, **buffers}, _inputs(meta), {"pairs": True})
    direct = torch.autograd.grad(out_direct.sum(), list(net.meta.parameters()))
    assert torch.allclose(out, out_direct)  # the same forward ...
    gap = max(float((a - b).abs().max()) for a, b in zip(full, direct))
    assert gap > 1e-6  # ... but the meta-net also gets the second-order term through the virtual weights


def test_the_soft_margin_is_msc_ns():
    p = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    expected = 0.2 * p**2 / (p**2 + (1 - p) ** 2)
    assert torch.allclose(mscn_margin(p, 0.2), expected)
    assert mscn_margin(torch.tensor(0.75), 0.2).item() == pytest.approx(0.18)


def test_negatives_choose_the_hardest_or_the_mean_violation_with_each_pairs_own_margin():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.3, 0.6], [0.2, 0.95, 0.5]])
    m = mscn_margin(scores.diagonal(), 0.2)
    d = scores.diagonal()
    cap = (m[:, None] + scores - d[:, None]).clamp(min=0).fill_diagonal_(0)  # row i: image i's captions
    img = (m[None, :] + scores - d[None, :]).clamp(min=0).fill_diagonal_(0)  # column j: caption j's images
    hardest = (cap.max(1).values + img.max(0).values).sum()
    mean = (cap.sum(1) + img.sum(0)).sum() / 2
    for negatives, expected in (("hardest", hardest), ("mean", mean)):
        method = MSCN(MSCN.Config(negatives=negatives, warmup_epochs=0),
                      lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))
        loss = method.batch_loss(scores, scores.diagonal())
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6), negatives
    assert hardest > mean  # the two choices differ on this matrix
    with pytest.raises(InputError, match="method.negatives"):
        MSCN(MSCN.Config(negatives="all"), lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))


def test_the_beta_mixture_starts_from_the_given_initialisation():
    rng = np.random.default_rng(0)
    x = np.r_[rng.beta(2, 6, 300), rng.beta(7, 2, 300)]
    init = (np.array([2.0, 9.0]), np.array([7.0, 3.0]), np.array([0.3, 0.7]))
    start = BetaMixture1D(max_iter=0, init=init).fit(x)
    assert np.array_equal(start.alphas, init[0]) and np.array_equal(start.betas, init[1])
    assert np.array_equal(start.weights, init[2])
    # one EM step from the given start is not one from the default start
    assert not np.allclose(BetaMixture1D(max_iter=1, init=init).fit(x).alphas, BetaMixture1D(max_iter=1).fit(x).alphas)
    neg, pos = rng.beta(2, 8, 400), rng.beta(9, 2, 400)
    groups = BetaMixture1D.from_groups(neg, pos, max_iter=0).fit(x)
    assert groups.means == pytest.approx([neg.mean(), pos.mean()], abs=1e-3)
    var = groups.alphas * groups.betas / ((groups.alphas + groups.betas) ** 2 * (groups.alphas + groups.betas + 1))
    assert var == pytest.approx([neg.var(), pos.var()], rel=1e-2)
    with pytest.raises(InputError):
        BetaMixture1D(init=(np.array([1.0, -1.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5])))


# --------------------------------------------------------------------------- the meta set


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("meta")
    write_synthetic(path, seed=5, n_train=20, n_dev=10, n_test=10, n_regions=4, feat_dim=8, n_concepts=12)
    return path


def _cfg(root: Path, out: Path, **values):
    base = {"data.root": root, "data.vocab_min_count": 1, "method.name": "mscn", "noise.rate": 0.4,
            "run.out_dir": out, **values}
    return load_config("demo", [f"{k}={v}" for k, v in base.items()])


def _rows(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(r, dtype=np.float32).tobytes()).hexdigest() for r in images}


def test_a_meta_set_from_validation_never_overlaps_validation_or_test(root, tmp_path):
    data = prepare_data(_cfg(root, tmp_path / "r", **{"data.meta_size": 0.1}))  # 10 of 100 pairs: 2 images
    full, test = load_precomp(root, "dev"), load_precomp(root, "test")
    meta = data.meta
    assert meta.source == "val" and len(meta) == 10 and meta.n_images == 2
    meta_rows, val_rows = _rows(meta.images), _rows(np.asarray(data.val.images))
    assert meta_rows.isdisjoint(val_rows) and meta_rows.isdisjoint(_rows(np.asarray(test.images)))
    assert meta_rows | val_rows == _rows(np.asarray(full.images))  # validation lost exactly the meta images
    meta_caps = {meta.encoded.flat[meta.encoded.offsets[k]: meta.encoded.offsets[k + 1]].tobytes() for k in
                 range(len(meta))}
    assert len(meta_caps) == 10
    assert set(data.val.captions).isdisjoint(full.captions[5 * r + j] for r in meta.rows for j in range(5))
    assert data.val.n_images == full.n_images - 2 and data.val.n_captions == full.n_captions - 10
    assert data.meta_json["val_images_before"] == 10 and data.meta_json["val_images_after"] == 8
    # every meta caption is paired with its own image, and its negatives with another one
    assert np.array_equal(meta.pair_image, np.repeat([0, 1], 5))
    other = meta.other_images(np.random.default_rng(0))
    assert (other != meta.pair_image).all()


def test_a_meta_set_from_a_file_holds_those_training_pairs_apart(root, tmp_path):
    listed = tmp_path / "checked.txt"
    listed.write_text("# hand-checked\n3\n17\n\n40  # a comment\n71\n")
    cfg = _cfg(root, tmp_path / "r", **{"data.meta_source": "file", "data.meta_file": listed})
    data = prepare_data(cfg)
    meta = data.meta
    assert meta.source == "file" and meta.held_out.tolist() == [3, 17, 40, 71]
    carried = np.asarray(data.train.images)[data.caption_image[[3, 17, 40, 71]]]  # what the user checked
    assert np.array_equal(meta.images[meta.pair_image], carried)
    assert data.val.n_images == load_precomp(root, "dev").n_images  # validation untouched
    from noisycorr.engine.pairs import PairTask
    from noisycorr.engine.setup import build_method

    method = build_method(cfg, data.vocab, PairTask.image_shape(data))
    ctx = type("Ctx", (), {"seed": 0, "epochs": 2, "device": torch.device("cpu"), "progress": False,
                           "n_samples": data.train.n_captions, "meta": meta})()
    method.on_epoch_start(0, ctx)
    for phase in method.epoch_phases(0):
        assert len(phase.indices) == data.train.n_captions - 4
        assert not set(phase.indices.tolist()) & {3, 17, 40, 71}


@pytest.mark.parametrize(
    ("text", "where"),
    [("1\n2\nthree\n", "line 3"), ("1\n\n999\n", "line 3"), ("5\n6\n5\n", "line 3"), ("-1\n", "line 1")],
)
def test_a_bad_index_file_is_one_line_naming_the_row(tmp_path, text, where):
    path = tmp_path / "idx.txt"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_index_file(path, 100)
    assert f"{path}: {where}: expected" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_sgraf_exposes_the_vector_its_head_scores(head):
    from noisycorr.backbones.sgraf import SGRAF

    torch.manual_seed(0)
    net = SGRAF(vocab_size=30, img_dim=8, embed_size=16, word_dim=8, head=head, sim_dim=12, num_regions=4).eval()
    batch = random_batch(5, 7)
    img = net.encode_images(torch.randn(5, 4, 8))
    txt = net.encode_texts(batch.tokens, batch.lengths)
    vectors = net.similarity_vectors(img, txt, batch.lengths)
    assert vectors.shape == (5, 5, 12) and net.vector_dim == 12
    assert torch.allclose(torch.sigmoid(net.score(vectors)).squeeze(-1), net.similarity(img, txt, batch.lengths))
    pairs = net.pair_vectors(img, txt, batch.lengths)
    assert torch.allclose(pairs, vectors.diagonal(dim1=0, dim2=1).t(), atol=1e-6)


def test_vse_vectors_average_to_its_cosine():
    net = VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6).eval()
    batch = random_batch(4, 3)
    img, txt = net.encode_images(batch.images), net.encode_texts(batch.tokens, batch.lengths)
    assert torch.allclose(net.similarity_vectors(img, txt).mean(-1), net.similarity(img, txt), atol=1e-6)
    assert torch.allclose(net.pair_vectors(img, txt), net.similarity_vectors(img, txt).diagonal(dim1=0, dim2=1).t())


# mutant killed: the residual head's output layer not zeroed (the fresh head no longer the cosine's ranking)
# mutant killed: residual head built without the cosine term (meta_head ignored)
def test_a_fresh_residual_head_is_a_sigmoid_of_the_scaled_cosine_and_learns_its_scale():
    torch.manual_seed(0)
    cfg = MSCN.Config(warmup_epochs=0, meta_head="residual", residual_scale=7.0)
    method = MSCN(cfg, lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))
    net = method.net_a.eval()
    batch = random_batch(6, 5)
    img, txt = net.encode_images(batch.images), net.encode_texts(batch.tokens, batch.lengths)
    cosine = net.net.similarity(img, txt)
    assert torch.allclose(net.similarity(img, txt), torch.sigmoid(7.0 * cosine), atol=1e-6)
    assert "meta.scale" in dict(net.named_parameters())
    net.train()
    method.batch_loss(*net(*_inputs(batch), both=True)).backward()
    assert net.meta.scale.grad is not None and net.meta.scale.grad.abs() > 0
    authors = MSCN(MSCN.Config(warmup_epochs=0), lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))
    assert authors.net_a.meta.scale is None
    with pytest.raises(InputError, match="method.meta_head"):
        MSCN(MSCN.Config(meta_head="cosine"), lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))


def test_a_meta_set_larger_than_validation_is_refused(root, tmp_path):
    with pytest.raises(InputError) as err:
        prepare_data(_cfg(root, tmp_path / "r", **{"data.meta_size": 50}))  # 10 images of a 10-image split
    assert str(err.value).startswith("data.meta_size: expected between 10 and 45 pairs")


def test_shortlist_evaluation_scores_with_the_meta_net_not_the_backbone_head():
    torch.manual_seed(0)
    sgraf = SGRAF(vocab_size=30, img_dim=8, embed_size=16, word_dim=8, sim_dim=8, num_regions=5, head="saf")
    model = MetaScored(sgraf).eval()
    batch = random_batch(11)
    with torch.no_grad():
        img, txt = model.encode_images(batch.images), model.encode_texts(batch.tokens, batch.lengths)
        exact = similarity_matrix(model, img, txt, batch.lengths)
        head = similarity_matrix(sgraf, img, txt, batch.lengths)
    (full,) = shortlist_similarities([model], [(img, txt, batch.lengths)], 11)
    torch.testing.assert_close(full, exact, atol=1e-5, rtol=0)
    (short,) = shortlist_similarities([model], [(img, txt, batch.lengths)], 3)
    scored = (short - exact).abs() < 1e-5
    assert scored.sum(1).min() >= 3 and not scored.all()
    assert ((short - head).abs() > 1e-3)[scored].all()  # meta-net scores, not SGRAF's own head


# mutant killed: similarity() through the meta-net in backbone mode (eval no longer the cosine)
# mutant killed: margins from the scores' diagonal (the cosine) instead of the meta-net's p
# mutant killed: margins detached in the virtual step of backbone mode (no meta gradient through the margins)
def test_backbone_scoring_retrieves_by_the_cosine_and_takes_margins_and_meta_gradient_from_the_meta_net():
    torch.manual_seed(0)
    method = MSCN(MSCN.Config(warmup_epochs=0, score="backbone", meta_hidden=5, negatives="mean"),
                  lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))
    net = method.net_a.train()
    batch = random_batch(8, 3)
    img, txt = net.encode_images(batch.images), net.encode_texts(batch.tokens, batch.lengths)
    torch.testing.assert_close(net.similarity(img, txt), img @ txt.t())  # retrieval: the backbone's cosine
    scores, p = net(*_inputs(batch), both=True)
    torch.testing.assert_close(scores, img @ txt.t())
    torch.testing.assert_close(p, net.meta(net.net.pair_vectors(img, txt)))
    assert not torch.allclose(p, scores.diagonal(), atol=1e-3)
    d = scores.diagonal()
    m = mscn_margin(p, 0.2)
    cap = (m[:, None] + scores - d[:, None]).clamp(min=0).fill_diagonal_(0)
    im = (m[None, :] + scores - d[None, :]).clamp(min=0).fill_diagonal_(0)
    expected = float((cap.sum(1) + im.sum(0)).sum().detach() / 7)  # the mean over 7 negatives
    assert method.batch_loss(scores, p).detach().item() == pytest.approx(expected, rel=1e-5)

    opt = torch.optim.Adam(net.net.parameters(), lr=0.05)
    virtual, _ = method.virtual_backbone(net, batch, opt, clip=0.0)
    total = sum(v.sum() for v in virtual.values())
    grads = torch.autograd.grad(total, list(net.meta.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in grads)  # the meta-net shapes the virtual update
    # the real step's loss does not reach the meta-net
    real = method.batch_loss(scores, p)
    assert all(g is None for g in torch.autograd.grad(real, list(net.meta.parameters()), allow_unused=True))
    with pytest.raises(InputError, match="method.score"):
        MSCN(MSCN.Config(score="cosine"), lambda: VSE(vocab_size=30, img_dim=8, embed_size=12, word_dim=6))
