"""BiCro's consistency labels and BiCro++'s anchors and codebooks, on hand-made and random inputs."""

import dataclasses

import pytest
import torch

from noisycorr.errors import InputError
from noisycorr.methods.consistency import (
    ConsistencyLabeler,
    ConsistencyOptions,
    anchor_consistency,
    clean_labels,
    diagonal_dominance,
    nearest_anchor_ratio,
    noisy_labels,
    select_anchors,
    soft_quantise,
    spherical_kmeans,
)
from noisycorr.methods.ncr import warmup_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _reference_consistency(img, txt, a_img, a_txt):
    """BiCro's consistency written pair by pair, anchor by anchor (the oracle of the vectorised one)."""
    out = []
    for k in range(img.shape[0]):
        cos = torch.nn.functional.cosine_similarity
        ci = [float(cos(img[k], a_img[a], dim=0)) for a in range(a_img.shape[0])]
        ct = [float(cos(txt[k], a_txt[a], dim=0)) for a in range(a_txt.shape[0])]

        def ratio(near, other):
            a = max(range(len(near)), key=lambda j: near[j])
            x, y = near[a], other[a]
            return min(x, y) / max(x, y) if x > 0 and y > 0 else 0.0

        out.append((ratio(ci, ct) + ratio(ct, ci)) / 2)
    return torch.tensor(out)


# mutant killed: the nearest anchor picked by `other` instead of `near`
# mutant killed: max / min instead of min / max
def test_nearest_anchor_ratio_on_a_hand_made_table():
    near = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.7, 0.1]])
    other = torch.tensor([[0.45, 0.95], [0.5, 0.4], [-0.3, 0.9]])
    # row 0: anchor 0 (0.9) vs 0.45 -> 0.5; row 1: anchor 1 (0.8) vs 0.4 -> 0.5; row 2: negative -> 0
    assert nearest_anchor_ratio(near, other).tolist() == pytest.approx([0.5, 0.5, 0.0])


# mutant killed: the caption-side direction uses the image-side anchor
def test_anchor_consistency_equals_a_pair_by_pair_reference():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g)
    a_img, a_txt = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    got = anchor_consistency(img, txt, a_img, a_txt)
    assert torch.allclose(got, _reference_consistency(img, txt, a_img, a_txt), atol=1e-6)
    assert anchor_consistency(a_img, a_txt, a_img, a_txt).tolist() == pytest.approx([1.0] * 4)  # anchors: 1


def test_a_pair_whose_caption_belongs_elsewhere_gets_no_consistency():
    a_img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a_txt = a_img.clone()
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # pair 1: an image like anchor 0, a caption like anchor 1
    assert anchor_consistency(img, txt, a_img, a_txt).tolist() == pytest.approx([1.0, 0.0])


S = torch.tensor(
    [
        [0.9, 0.1, 0.2, 0.1],  # pair 0 dominates its row and its column by 0.1 (column rival S_10 = 0.8)
        [0.8, 0.7, 0.1, 0.0],  # pair 1: beaten in its row (0.8)
        [0.1, 0.2, 0.6, 0.1],  # pair 2: beaten in its column (S_32 = 0.65)
        [0.1, 0.1, 0.65, 0.5],  # pair 3: beaten in its row
    ]
)


# mutant killed: only the row checked (pair 2 would pass)
def test_diagonal_dominance_of_a_hand_made_matrix():
    assert diagonal_dominance(S).tolist() == pytest.approx([0.1, -0.1, -0.05, -0.15])


# mutant killed: candidates by the lowest confidence
# mutant killed: purification ignores tol
# mutant killed: the fallback keeps every candidate
def test_anchor_selection_with_and_without_purification():
    conf = torch.tensor([0.5, 0.9, 0.8, 0.1])  # candidates: floor(4 * 0.5) + 1 = 3 most confident = {1, 2, 0}
    assert select_anchors(conf, fraction=0.5).tolist() == [True, True, True, False]
    assert select_anchors(conf, S, fraction=0.5, purify=True).tolist() == [True, False, False, False]
    two = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.5, 0.1], [0.1, 0.3, 0.8]])  # dominance 0.1, -0.3, 0.5
    assert select_anchors(torch.ones(3), two, fraction=1.0, purify=True).tolist() == [True, False, True]
    assert select_anchors(torch.ones(3), two, fraction=1.0, purify=True, tol=0.2).tolist() == [False, False, True]
    # nobody dominant by more than 0.15: the most dominant candidate is kept
    assert select_anchors(conf, S, fraction=0.5, purify=True, tol=0.15).tolist() == [True, False, False, False]
    conf2 = torch.tensor([0.1, 0.9, 0.8, 0.5])  # candidates {1, 2, 3}, none dominant: pair 2 is the least beaten
    assert select_anchors(conf2, S, fraction=0.5, purify=True).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="score matrix"):
        select_anchors(conf, fraction=0.5, purify=True)


def test_labels_of_the_clean_and_the_noisy_subset():
    c = torch.tensor([0.9, 0.2, -0.0, 0.6])
    anchors = torch.tensor([False, False, True, False])
    assert clean_labels(c, anchors, 0.5).tolist() == pytest.approx([0.95, 0.6, 1.0, 0.8])
    assert clean_labels(c, anchors, 0.65).tolist() == pytest.approx([0.95, 0.0, 1.0, 0.8])
    assert noisy_labels(c, 0.5).tolist() == pytest.approx([0.9, 0.0, 0.0, 0.6])


def _labeler(**kw) -> ConsistencyLabeler:
    return ConsistencyLabeler(dataclasses.replace(ConsistencyOptions(), **kw))


def _view(n=16, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = _unit(torch.randn(n, d, generator=g) + 1.0)  # cosines mostly positive, as in a trained space
    txt = _unit(img + 0.5 * torch.randn(n, d, generator=g))
    scores = img @ txt.t()
    return scores, img, txt, torch.rand(n, generator=g)


@pytest.mark.parametrize("codebook", [False, True])
# mutant killed: the authors' scatter (label i written to the i-th noisy position)
# mutant killed: the side labels computed on the clean batch's embeddings
def test_each_label_lands_on_its_own_pair_a_permuted_batch_gives_permuted_labels(codebook):
    lab = _labeler(codebook_size=4 if codebook else 0, codebook_weight=0.5 if codebook else 0.0, anchor_fraction=0.2)
    scores, img, txt, conf = _view()
    if codebook:
        lab.refresh("A", torch.cat([img, txt], 1), seed=0)
    side_img, side_txt = img[:5].flip(0), txt[:5]
    y, y_side, anchors = lab.labels("A", scores, conf, img, txt, side_img, side_txt)
    assert 0 < int((y > 0).sum()) and y.unique().numel() > 5  # the labels differ from pair to pair

    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    sp = torch.randperm(5, generator=torch.Generator().manual_seed(4))
    y_p, y_side_p, anchors_p = lab.labels(
        "A", scores[perm][:, perm], conf[perm], img[perm], txt[perm], side_img[sp], side_txt[sp]
    )
    assert torch.equal(anchors_p, anchors[perm])
    assert torch.allclose(y_p, y[perm], atol=1e-6)
    assert torch.allclose(y_side_p, y_side[sp], atol=1e-6)
    # and each label is the one of its pair's own consistency with the anchors
    c = lab.consistency("A", img, txt, img[anchors], txt[anchors])
    assert torch.allclose(y, clean_labels(c, anchors, 0.5), atol=1e-6)


def test_spherical_kmeans_is_deterministic_under_a_seed_and_warm_starts():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    a = spherical_kmeans(x, 5, generator=torch.Generator().manual_seed(1))
    b = spherical_kmeans(x, 5, generator=torch.Generator().manual_seed(1))
    c = spherical_kmeans(x, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.norm(dim=1), torch.ones(5), atol=1e-5)
    # started from its own result, k-means stays there (a fixed point)
    assert torch.allclose(spherical_kmeans(x, 5, init=a), a, atol=1e-6)
    assert not torch.allclose(spherical_kmeans(x, 5, init=c, iters=1), a, atol=1e-3)


def test_soft_quantisation_moves_an_embedding_to_its_codeword():
    codebook = torch.eye(3)
    q = soft_quantise(torch.tensor([[0.9, 0.3, 0.1]]), codebook, temperature=0.01)
    assert torch.allclose(q, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-4)


# mutant killed: refresh ignores the previous codebook (no warm start)
# mutant killed: the refresh counter is not saved (a plain attribute)
def test_codebooks_are_seeded_and_restored_from_a_state_dict():
    extras = torch.randn(100, 12, generator=torch.Generator().manual_seed(0))
    lab_a, lab_b = _labeler(codebook_size=6), _labeler(codebook_size=6)
    for lab in (lab_a, lab_b):
        lab.refresh("A", extras, seed=7)
        lab.refresh("B", extras, seed=7)
    assert torch.equal(lab_a.img_A, lab_b.img_A) and lab_a.img_A.shape == (6, 6)
    assert int(lab_a.refreshes) == 1

    fresh = _labeler(codebook_size=6)
    fresh.load_state_dict(lab_a.state_dict())
    assert torch.equal(fresh.txt_B, lab_a.txt_B) and int(fresh.refreshes) == 1
    moved = extras + 0.3 * torch.randn(100, 12, generator=torch.Generator().manual_seed(9))
    lab_a.refresh("A", moved, seed=7)
    fresh.refresh("A", moved, seed=7)
    assert torch.equal(fresh.img_A, lab_a.img_A)
    cold = _labeler(codebook_size=6)
    cold.refreshes.fill_(1)  # the same k-means++ draw lab_a would make, but no previous codebook to start from
    cold.refresh("A", moved, seed=7)  # no previous codebook: a k-means++ start instead
    assert not torch.allclose(cold.img_A, lab_a.img_A, atol=1e-4)


def test_codebook_used_before_a_refresh_is_an_error():
    scores, img, txt, conf = _view()
    with pytest.raises(RuntimeError, match="before their first refresh"):
        _labeler(codebook_size=4).labels("A", scores, conf, img, txt)


@pytest.mark.parametrize(
    ("key", "value"),
    [("anchor_fraction", 0.0), ("noise_threshold", 1.0), ("codebook_weight", 1.5), ("codebook_temperature", 0.0),
     ("purify_view", "both")],
)
def test_out_of_range_options_are_one_line_errors(key, value):
    with pytest.raises(InputError, match=key):
        _labeler(**{key: value})


# mutant killed: the warm-up keeps the highest-loss pairs
def test_the_selective_warmup_keeps_the_lowest_loss_share_of_the_batch():
    scores = torch.eye(10) * 0.2 + torch.linspace(0, 0.3, 10).reshape(1, -1) * (1 - torch.eye(10))
    from noisycorr.losses import triplet_loss

    per = triplet_loss(scores, 0.2, hardest=False, reduction="none")
    assert per.unique().numel() == 10
    assert warmup_loss(scores, 0.2, 0.3) == pytest.approx(float(per.sort().values[:3].sum()))
    assert warmup_loss(scores, 0.2, 1.0) == pytest.approx(float(per.sum()))
    assert warmup_loss(scores, 0.2, 0.01) == pytest.approx(float(per.min()))


# mutant killed: labels() purifies with `scores` whatever `dominance_scores` says
def test_labels_purify_with_the_given_dominance_matrix():
    lab = _labeler(codebook_size=0, codebook_weight=0.0, anchor_fraction=0.5)
    conf = torch.tensor([0.5, 0.9, 0.8, 0.1])  # candidates {1, 2, 0}; in S only pair 0 dominates
    img = _unit(torch.eye(4) + 0.1)
    _, _, own = lab.labels("A", S, conf, img, img)
    assert own.tolist() == [True, False, False, False]
    _, _, other = lab.labels("A", S, conf, img, img, dominance_scores=torch.eye(4))
    assert other.tolist() == [True, True, True, False]
