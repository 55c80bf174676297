"""PCSR's parts: the consistency score, the three-way split, the chunked pseudo-label search, the
history buffers, and which caption / image each refinable pair trains with."""

import numpy as np
import pytest
import torch
from method_helpers import random_batch

from noisycorr.backbones.vse import VSE
from noisycorr.data.dataset import PairBatch
from noisycorr.errors import InputError
from noisycorr.losses import complementary_contrastive_loss, triplet_loss
from noisycorr.methods.pcsr import PCSR, PseudoLabelHistory, best_partner, consistency_score, three_way_split
from noisycorr.selection import Selection

DIM = 16


def _pcsr(**cfg) -> PCSR:
    torch.manual_seed(0)
    return PCSR(PCSR.Config(**cfg), lambda: VSE(vocab_size=30, img_dim=8, embed_size=DIM, word_dim=8))


# ------------------------------------------------------------------ consistency score and split


HISTORY = torch.tensor(
    [
        [5, 5, 5],  # stable
        [5, 7, 5],  # 2 of 3 agree with the latest, the streak is 1
        [7, 5, 5],  # 2 of 3, streak 2
        [-1, -1, 3],  # first epoch noisy
        [4, 4, -1],  # clean now: no latest label
        [2, 3, 4],  # never the same
    ]
)


def test_pcs_of_a_hand_made_history():
    assert consistency_score(HISTORY, "agree").tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 0, 1 / 3])
    assert consistency_score(HISTORY, "run").tolist() == pytest.approx([1, 1 / 3, 2 / 3, 1 / 3, 0, 1 / 3])
    with pytest.raises(InputError, match="method.pcs"):
        consistency_score(HISTORY, "majority")


def test_three_way_split_of_clean_and_noisy_pairs_by_pcs():
    clean = np.array([True, True, False, False, False, False])
    pcs = np.array([0.0, 1.0, 1.0, 2 / 3, 0.5, 0.0])
    groups = three_way_split(clean, pcs, 2 / 3)
    assert groups["clean"].tolist() == clean.tolist()
    assert groups["refinable"].tolist() == [False, False, True, True, False, False]
    assert groups["ambiguous"].tolist() == [False, False, False, False, True, True]
    assert (groups["clean"].astype(int) + groups["ambiguous"] + groups["refinable"] == 1).all()


# ------------------------------------------------------------------ search and history


def test_chunked_search_finds_each_querys_best_key():
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(23, 6, generator=g)
    keys = torch.randn(41, 6, generator=g) * torch.rand(41, 1, generator=g) * 5  # norms differ: cosine != dot
    naive = (torch.nn.functional.normalize(queries) @ torch.nn.functional.normalize(keys).t()).argmax(1)
    assert torch.equal(best_partner(queries, keys, query_chunk=4, key_chunk=7), naive)  # cosine, not dot product
    assert torch.equal(best_partner(queries, keys), naive)


def test_history_rolls_and_a_fresh_module_loads_its_size():
    hist = PseudoLabelHistory(window=3)
    hist.push("text", "A", torch.tensor([1, -1, 2]))
    out = hist.push("text", "A", torch.tensor([1, 4, 3]))
    assert out.tolist() == [[-1, 1, 1], [-1, -1, 4], [-1, 2, 3]]
    assert hist.get("text", "B").shape == (0, 3)
    fresh = PseudoLabelHistory(window=3)
    fresh.load_state_dict(hist.state_dict())
    assert torch.equal(fresh.get("text", "A"), out)


# ------------------------------------------------------------------ the split of one network


def _values(img: torch.Tensor, txt: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    return torch.cat([losses[:, None], img, txt], dim=1)


def test_select_labels_only_noisy_pairs_and_refines_after_a_stable_window():
    m = _pcsr(window=2, pcs_threshold=1.0)
    n = 12
    eye = torch.eye(n)
    img = eye.clone()
    # caption j is the unit vector perm[j]: image k's best caption is the j with perm[j] = k
    txt = eye[torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 8])]  # image 8 -> caption 11, 9 -> 8, ...
    losses = torch.cat([torch.full((8,), 0.1), torch.full((4,), 2.0)])  # the last 4 pairs look noisy
    sel, logs = m._select("A", _values(img, txt, losses))
    assert sel.clean.tolist() == [True] * 8 + [False] * 4
    assert m.history.get("text", "A")[:, -1].tolist() == [-1] * 8 + [11, 8, 9, 10]
    assert not sel.groups["refinable"].any()  # one epoch of a 2-epoch window: PCS 1/2
    assert (sel.partners["caption"] == -1).all() and logs["share_ambiguous_A"] == pytest.approx(4 / 12)
    sel, logs = m._select("A", _values(img, txt, losses))  # the same labels again: refinable
    assert sel.groups["refinable"].tolist() == [False] * 8 + [True] * 4
    assert sel.partners["caption"].tolist() == [-1] * 8 + [11, 8, 9, 10]
    assert logs["share_refinable_A"] == pytest.approx(4 / 12)
    txt2 = eye[torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 10, 8])]  # images 10, 11 now pick captions 10, 9
    sel, _ = m._select("A", _values(img, txt2, losses))
    assert sel.groups["refinable"].tolist() == [False] * 8 + [True, True, False, False]
    assert sel.partners["caption"].tolist() == [-1] * 8 + [11, 8, -1, -1]


def test_image_replacement_searches_the_best_image_of_each_noisy_caption():
    m = _pcsr(window=1, replace="image")
    n = 6
    img = torch.eye(n)[torch.tensor([0, 1, 2, 3, 5, 4])]
    losses = torch.tensor([0.1, 0.1, 0.1, 0.1, 2.0, 2.0])
    sel, _ = m._select("B", _values(img, torch.eye(n), losses))
    assert set(sel.partners) == {"image"} and sel.partners["image"].tolist() == [-1, -1, -1, -1, 5, 4]


# ------------------------------------------------------------------ replacement bookkeeping


class _Store:
    """A fake ``ctx.fetch``: sample k has image rows filled with k and caption tokens [1, 4 + k, 2]."""

    def __init__(self, n: int):
        self.n, self.calls = n, []

    def __call__(self, idx: np.ndarray) -> PairBatch:
        idx = np.asarray(idx)
        self.calls.append(idx.tolist())
        t = torch.from_numpy(idx)
        tokens = torch.stack([torch.ones_like(t), 4 + t, torch.full_like(t, 2)], dim=1)
        return PairBatch(t[:, None, None].float().expand(-1, 5, 8).clone(), tokens, torch.full_like(t, 3), t)


def _with_partners(m: PCSR, kind: str, partners: np.ndarray) -> None:
    n = len(partners)
    clean = partners < 0
    groups = {"clean": clean, "ambiguous": np.zeros(n, bool), "refinable": ~clean}
    sel = Selection(np.where(clean, 0.9, 0.1), clean, groups=groups, partners={kind: partners})
    other = Selection(np.full(n, 0.9), np.ones(n, bool), groups={**groups, "refinable": np.zeros(n, bool)},
                      partners={kind: np.full(n, -1)})
    m.selections = {"B": sel, "A": other}  # network A trains on B's groups (co-teaching)


def test_a_refinable_pair_trains_its_image_with_the_caption_its_peer_points_to():
    m = _pcsr()
    store = m._fetch = _Store(20)
    partners = np.full(20, -1)
    partners[[10, 11, 12, 13]] = [3, 7, 3, 15]  # 12 repeats 10's replacement
    _with_partners(m, "caption", partners)
    batch = random_batch(4, offset=10)
    out = m.replaced("A", batch, "caption")
    assert store.calls == [[3, 7, 15]]
    assert out.index.tolist() == [10, 11, 13]
    assert torch.equal(out.images, batch.images[[0, 1, 3]])  # own images
    assert out.tokens[:, 1].tolist() == [7, 11, 19] and out.lengths.tolist() == [3, 3, 3]  # partners' captions
    with pytest.raises(RuntimeError, match="without a pseudo-label"):
        m.replaced("A", random_batch(3, offset=0), "caption")


def test_image_replacement_keeps_the_caption_and_takes_the_partners_image():
    m = _pcsr(replace="image")
    m._fetch = _Store(20)
    partners = np.full(20, -1)
    partners[[10, 11, 12]] = [4, 5, 6]
    _with_partners(m, "image", partners)
    batch = random_batch(3, offset=10)
    out = m.replaced("A", batch, "image")
    assert out.images[:, 0, 0].tolist() == [4, 5, 6] and torch.equal(out.tokens, batch.tokens)


def test_training_step_sums_clean_ambiguous_and_refined_losses():
    m = _pcsr(window=1)
    m._fetch = _Store(40)
    partners = np.full(40, -1)
    partners[30:36] = np.arange(6)
    _with_partners(m, "caption", partners)
    m.selections["B"].groups["ambiguous"] = np.isin(np.arange(40), np.arange(20, 26))
    losses, logs = m.training_step(random_batch(6), 5, phase="A",
                                   streams={"ambiguous": random_batch(6, 20), "refinable": random_batch(6, 30)})
    assert set(losses) == {"clean", "ambiguous", "refine_caption"} and logs["refined_caption"] == 6
    assert all(v > 0 for v in losses.values())
    phases = m.epoch_phases(5)
    assert [p.name for p in phases] == ["A", "B"]
    assert phases[0].streams["refinable"].tolist() == list(range(30, 36))
    assert phases[0].streams["ambiguous"].tolist() == list(range(20, 26))


def test_no_coteaching_trains_each_network_on_its_own_groups():
    m = _pcsr(coteaching=False)
    assert m.source("A") == "A" and _pcsr().source("A") == "B"


def test_complementary_loss_only_pushes_negatives():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    loss = complementary_contrastive_loss(s, 0.5)
    p = torch.softmax(s.detach() / 0.5, 1)
    naive = -2 * sum(torch.log(1 - p[i, j]) for i in range(3) for j in range(3) if i != j) / 3
    assert float(loss.detach()) == pytest.approx(float(naive), rel=1e-5)
    loss.backward()
    assert (s.grad.diagonal() < 0).all()  # lowering the loss raises the positives' share


def test_bad_options_are_one_line_errors():
    for key, value in (("window", 0), ("pcs", "x"), ("robust_loss", "mae"), ("replace", "caption")):
        with pytest.raises(InputError, match=f"method.{key}"):
            _pcsr(**{key: value})


def test_clean_loss_options():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, 6, generator=g)
    mean, hardest = triplet_loss(scores, 0.2, hardest=False), triplet_loss(scores, 0.2, hardest=True)
    assert torch.allclose(_pcsr().direct(scores), mean) and not torch.allclose(mean, hardest)
    assert torch.allclose(_pcsr(clean_loss="hardest").direct(scores), hardest)
    soft = _pcsr(clean_loss="soft")
    assert torch.allclose(soft.direct(scores, torch.ones(6)), hardest)  # sure pairs keep the full margin
    assert soft.direct(scores, torch.zeros(6)) < hardest  # doubtful ones get a smaller margin
