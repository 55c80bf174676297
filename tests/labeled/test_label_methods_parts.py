"""The parts of MRL and NIRNL against hand computations: losses, kNN votes, the pure / hard / noisy
split, Sinkhorn and the Wasserstein barycenter."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from noisycorr.methods.labeled_base import HARD, NOISY, PURE, LabelBatch, SharedClassifier
from noisycorr.methods.mrl import multimodal_contrastive_loss, robust_clustering_loss
from noisycorr.methods.nirnl import (
    NIRNL,
    knn_label_votes,
    margin_ranking_loss,
    refine_partition,
    sinkhorn,
    wasserstein_barycenter,
)


def onehot(*ys: int, c: int = 3) -> torch.Tensor:
    return F.one_hot(torch.tensor(ys), c).float()


def _circle(groups: dict[int, list[int]], n: int) -> torch.Tensor:
    """Unit 2-D points: the items of group 0 near angle 0, those of group 1 near 90 degrees."""
    angle = torch.zeros(n)
    for g, items in groups.items():
        for r, i in enumerate(items):
            angle[i] = g * math.pi / 2 + 0.01 * r
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def test_pure_hard_noisy_split_on_a_hand_made_case() -> None:
    # 12 pairs, two classes. Item 2 carries the wrong label 1 although both of its features sit with
    # class 0; item 1's text and item 11's text sit with the other class. With k = 5 every item's
    # neighbours are the other five members of its group in that modality.
    labels = onehot(0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, c=2)
    img = _circle({0: [0, 1, 2, 3, 4, 5], 1: [6, 7, 8, 9, 10, 11]}, 12)
    txt = _circle({0: [0, 2, 3, 4, 5, 11], 1: [1, 6, 7, 8, 9, 10]}, 12)
    votes_img = knn_label_votes(img, labels, k=5)
    votes_txt = knn_label_votes(txt, labels, k=5)
    assert votes_img[2].tolist() == pytest.approx([1.0, 0.0])  # its five image neighbours say class 0
    assert votes_txt[0].tolist() == pytest.approx([0.6, 0.4])  # items 3, 4, 5 (class 0) against 2, 11
    codes = refine_partition(votes_img, votes_txt, labels, labels).tolist()
    P, H, N = PURE, HARD, NOISY
    assert codes == [P, H, N, P, P, P, P, P, P, P, P, H]


def test_refine_partition_codes_by_hand() -> None:
    labels = onehot(0, 1, 2, 0)
    votes_img = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.7, 0.3, 0.0], [0.1, 0.9, 0.0]])
    votes_txt = torch.tensor([[0.6, 0.4, 0.0], [0.9, 0.1, 0.0], [0.1, 0.0, 0.9], [0.0, 0.2, 0.8]])
    # item 0: both agree; item 1: image only; item 2: text only; item 3: neither
    assert refine_partition(votes_img, votes_txt, labels, labels).tolist() == [PURE, HARD, HARD, NOISY]
    # per-modality labels: the text of item 3 is labelled 2, which its vote agrees with
    text_labels = onehot(0, 1, 2, 2)
    assert refine_partition(votes_img, votes_txt, labels, text_labels).tolist() == [PURE, HARD, HARD, HARD]
    # multi-hot labels: a vote that hits any of the item's labels agrees
    multi = labels.clone()
    multi[3, 1] = 1.0
    assert refine_partition(votes_img, votes_txt, multi, multi)[3] == HARD


def test_knn_votes_exclude_self_and_average_neighbour_labels() -> None:
    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.15], [0.0, 1.0], [0.1, 0.99]]), dim=1)
    labels = onehot(0, 0, 1, 1, 1)
    votes = knn_label_votes(feats, labels, k=2, chunk=2)
    # item 0's two nearest others are items 1 (label 0) and 2 (label 1)
    assert votes[0].tolist() == pytest.approx([0.5, 0.5, 0.0])
    # item 3's nearest others: item 4 (label 1), then item 1 (label 0)
    assert votes[3].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert votes.sum(1).tolist() == pytest.approx([1.0] * 5)


def test_margin_ranking_loss_matches_the_double_loop() -> None:
    rs = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 4, generator=rs), dim=1)
    b = F.normalize(torch.randn(5, 4, generator=rs), dim=1)
    m = 0.3
    total = 0.0
    for i in range(5):
        for j in range(5):
            if i != j:
                total += max(0.0, m + float(a[i] @ b[j]) - float(a[i] @ b[i]))
                total += max(0.0, m + float(b[i] @ a[j]) - float(a[i] @ b[i]))
    assert float(margin_ranking_loss(a, b, m)) == pytest.approx(total / 25, abs=1e-6)


def test_robust_clustering_loss_is_log_of_the_mass_outside_the_label() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = onehot(0, 2)
    p = (logits / 0.5).softmax(1)
    want = (math.log(1 - float(p[0, 0])) + math.log(1 - float(p[1, 2]))) / 2
    assert float(robust_clustering_loss(logits, y, tau=0.5)) == pytest.approx(want, abs=1e-6)


def test_multimodal_contrastive_loss_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    txt = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    feats = torch.cat([img, txt])
    total = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        denom = sum(math.exp(float(feats[i] @ feats[j]) / 0.7) for j in range(6) if j != i)
        total += -math.log(math.exp(float(feats[i] @ feats[partner]) / 0.7) / denom)
    assert float(multimodal_contrastive_loss(img, txt, tau=0.7)) == pytest.approx(2 * total / 6, abs=1e-5)


def test_shared_classifier_is_orthonormal_and_renormalised() -> None:
    torch.manual_seed(0)
    clf = SharedClassifier(16, 5)
    w = clf.weight.detach()
    assert torch.allclose(w.T @ w, torch.eye(5), atol=1e-5)
    with torch.no_grad():
        clf.weight.mul_(3.0)
    clf.renormalize()
    assert torch.allclose(clf.weight.norm(dim=0), torch.ones(5), atol=1e-6)


def test_sinkhorn_marginals_and_small_reg_reaches_the_exact_transport_cost() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    cost = torch.cdist(x, y).double()
    a = b = torch.full((6,), 1 / 6, dtype=torch.float64)
    plan = sinkhorn(a, b, cost, reg=0.03, max_iter=20000, tol=1e-12)
    assert torch.allclose(plan.sum(1), a, atol=1e-9) and torch.allclose(plan.sum(0), b, atol=1e-9)
    rows, cols = linear_sum_assignment(cost.numpy())
    exact = cost.numpy()[rows, cols].mean()  # uniform equal-size measures: an assignment is optimal
    assert exact <= float((plan * cost).sum()) <= exact + 0.01
    # a large regularisation spreads the plan towards the independent coupling
    blurry = sinkhorn(a, b, cost, reg=100.0)
    assert torch.allclose(blurry, torch.full((6, 6), 1 / 36, dtype=torch.float64), atol=1e-3)


def test_barycenter_with_one_support_point_is_the_mean() -> None:
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(40, 5, generator=g)
    h = wasserstein_barycenter(pts, 1, reg=5.0, tol=1e-6, generator=g)
    assert torch.allclose(h[0], pts.mean(0), atol=1e-5)


def test_barycenter_with_two_support_points_finds_two_clusters() -> None:
    g = torch.Generator().manual_seed(4)
    left = torch.randn(30, 2, generator=g) * 0.05 + torch.tensor([-3.0, 0.0])
    right = torch.randn(30, 2, generator=g) * 0.05 + torch.tensor([3.0, 0.0])
    h = wasserstein_barycenter(torch.cat([left, right]), 2, reg=0.05, tol=1e-6, max_iter=500, generator=g)
    xs = sorted(h[:, 0].tolist())
    assert xs[0] == pytest.approx(-3.0, abs=0.1) and xs[1] == pytest.approx(3.0, abs=0.1)


def test_nirnl_epoch_start_builds_prototypes_and_phases() -> None:
    torch.manual_seed(0)
    method = NIRNL(NIRNL.Config(top_k=3), image_dim=4, text_dim=3, num_classes=2, hidden=8, embed_dim=6)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    images = torch.randn(8, 4) + 3 * y[:, None]
    texts = torch.randn(8, 3) - 3 * y[:, None]
    labels = F.one_hot(y, 2).float()
    ctx = SimpleNamespace(images=images, texts=texts, labels=torch.stack([labels, labels]), n_samples=8)
    logs = method.on_epoch_start(0, ctx)
    assert sum(logs.values()) == pytest.approx(1.0)
    assert method.prototypes is not None and method.prototypes.shape == (2, 6)
    img = method.embed(images, method.encode_images)
    txt = method.embed(texts, method.encode_texts)
    mean0 = torch.cat([img[:4], txt[:4]]).mean(0)
    assert torch.allclose(method.prototypes[0], mean0, atol=0.02)  # one barycenter per class: ~ the mean
    # the phases follow the partition, in the order pure, hard, noisy; subsets of < 2 items are skipped
    method._codes = torch.tensor([PURE, PURE, HARD, NOISY, NOISY, PURE, HARD, HARD], dtype=torch.int8)
    phases = method.epoch_phases(0)
    assert [(p.name, p.indices.tolist()) for p in phases] == [
        ("pure", [0, 1, 5]),
        ("hard", [2, 6, 7]),
        ("noisy", [3, 4]),
    ]
    method._codes = torch.tensor([PURE, PURE, HARD, NOISY, PURE, PURE, PURE, PURE], dtype=torch.int8)
    assert [p.name for p in method.epoch_phases(0)] == ["pure"]
    method.cfg.train_noisy = False
    method._codes = torch.tensor([NOISY] * 4 + [HARD] * 4, dtype=torch.int8)
    assert [p.name for p in method.epoch_phases(0)] == ["hard"]


# ------------------------------------------------------------------ NIRNL's per-subset losses by hand

PROTOS = 2.0 * torch.eye(3)  # fixed class prototypes: the logits are 2 * the unit embedding


def _nirnl_by_hand(**cfg: float) -> NIRNL:
    """NIRNL whose encoders only L2-normalise (one bias-free linear layer set to the identity)."""
    method = NIRNL(NIRNL.Config(**cfg), image_dim=3, text_dim=3, num_classes=3, hidden=4, hidden_layers=0, embed_dim=3)
    with torch.no_grad():
        method.image_net.proj.weight.copy_(torch.eye(3))
        method.text_net.proj.weight.copy_(torch.eye(3))
    method.prototypes = PROTOS.clone()
    return method


def _hand_batch() -> LabelBatch:
    """Three pairs. Item 0: the text is surer than the image, so argmax w follows the text; item 2:
    the image is sure of class 0, the text leans to class 2, so argmax w follows the image. Item 2's
    image and text carry different labels (per-modality noise)."""
    return LabelBatch(
        index=torch.arange(3),
        images=torch.tensor([[1.0, 0.9, 0.0], [0.2, 1.0, 0.6], [1.0, 0.0, 0.05]]),
        texts=torch.tensor([[0.0, 1.0, 0.3], [0.1, 0.4, 1.0], [0.9, 0.1, 1.0]]),
        image_labels=onehot(0, 1, 2),
        text_labels=onehot(0, 1, 0),
    )


def _expected_nirnl(method: NIRNL, batch: LabelBatch, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The phase's label loss (before label_weight) and the CMP loss (before alpha), from the definitions."""
    img = batch.images @ method.image_net.proj.weight.T
    txt = batch.texts @ method.text_net.proj.weight.T
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    p_img, p_txt = (img @ PROTOS.T).softmax(1), (txt @ PROTOS.T).softmax(1)
    if phase == "noisy":
        w = 1 - (1 - p_img) * (1 - p_txt)
        pseudo = F.one_hot(w.argmax(1), 3).float()
        per_item = (pseudo - p_img).abs().sum(1) + (pseudo - p_txt).abs().sum(1)
    else:
        w = (1 - (1 - p_img) * (1 - p_txt)).detach() if phase == "hard" else torch.ones_like(p_img)
        per_item = -(batch.image_labels * w * p_img.log()).sum(1) - (batch.text_labels * w * p_txt.log()).sum(1)
    return per_item.mean(), margin_ranking_loss(img, txt, 0.5)


def _grads(method: NIRNL, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [method.image_net.proj.weight, method.text_net.proj.weight]))


def test_hand_batch_tells_the_pseudo_label_apart_from_either_modality_alone() -> None:
    """The hand batch is informative: argmax of w differs from argmax p_img on one item and from
    argmax p_txt on another, and the labels differ from the pseudo-labels."""
    batch = _hand_batch()
    p_img = (F.normalize(batch.images, dim=1) @ PROTOS.T).softmax(1)
    p_txt = (F.normalize(batch.texts, dim=1) @ PROTOS.T).softmax(1)
    w = (1 - (1 - p_img) * (1 - p_txt)).argmax(1)
    assert (w != p_img.argmax(1)).any() and (w != p_txt.argmax(1)).any()
    assert (w != batch.image_labels.argmax(1)).any()


# mutant killed: label_weight ignored ({phase: label.mean()})
# mutant killed: alpha ignored ("cmp": cmp)
# mutant killed: the text cross-entropy taken against the image labels
# mutant killed: the hard weight w applied in the pure phase too
# mutant killed: hard weight not applied; w not detached (the [hard] case, by value and by gradient)
@pytest.mark.parametrize("phase", ["pure", "hard"])
def test_nirnl_cross_entropy_phases_match_the_hand_computation(phase: str) -> None:
    """pure: CE(p_img, y_img) + CE(p_txt, y_txt); hard: the same with each class weighted by the
    detached w = 1 - (1 - p_img)(1 - p_txt); times label_weight, plus alpha * CMP. Values and
    gradients (a non-detached w gives other gradients)."""
    method = _nirnl_by_hand(label_weight=0.7, alpha=0.3, margin=0.5)
    batch = _hand_batch()
    losses, _ = method.training_step(batch, 0, phase=phase)
    assert set(losses) == {phase, "cmp"}
    label, cmp = _expected_nirnl(method, batch, phase)
    torch.testing.assert_close(losses[phase], 0.7 * label)
    torch.testing.assert_close(losses["cmp"], 0.3 * cmp)
    for got, want in zip(_grads(method, losses[phase]), _grads(method, 0.7 * label)):
        torch.testing.assert_close(got, want)


# mutant killed: hard weight not applied (the hard phase falls back to the plain cross-entropy)
# mutant killed: w not detached (torch.no_grad removed: same value, other gradients)
def test_nirnl_hard_phase_weights_the_cross_entropy_by_the_detached_either_probability() -> None:
    """The hard loss differs from the pure one on the same batch (w < 1), unless hard_weight is off;
    its gradient is that of the weighted CE with w held constant."""
    method = _nirnl_by_hand(label_weight=0.7, alpha=0.3, margin=0.5)
    batch = _hand_batch()
    hard, _ = method.training_step(batch, 0, phase="hard")
    pure, _ = method.training_step(batch, 0, phase="pure")
    assert hard["hard"].item() < pure["pure"].item() - 1e-3
    label, _ = _expected_nirnl(method, batch, "hard")
    torch.testing.assert_close(hard["hard"], 0.7 * label)
    for got, want in zip(_grads(method, hard["hard"]), _grads(method, 0.7 * label)):
        torch.testing.assert_close(got, want)
    unweighted = _nirnl_by_hand(label_weight=0.7, alpha=0.3, margin=0.5, hard_weight=False)
    losses, _ = unweighted.training_step(batch, 0, phase="hard")
    torch.testing.assert_close(losses["hard"], pure["pure"])


# mutant killed: pseudo-label from argmax p_img only
# mutant killed: pseudo-label from argmax p_txt only
# mutant killed: L1 replaced by cross-entropy against the pseudo-label
# mutant killed: the given image / text labels used instead of the pseudo-label
# mutant killed: label_weight ignored; alpha ignored
def test_nirnl_noisy_phase_is_l1_to_the_one_hot_argmax_of_w() -> None:
    """noisy: pseudo = one_hot(argmax w), loss |pseudo - p_img|_1 + |pseudo - p_txt|_1 averaged over
    the batch, times label_weight, plus alpha * CMP; the given labels are not used."""
    method = _nirnl_by_hand(label_weight=0.7, alpha=0.3, margin=0.5)
    batch = _hand_batch()
    losses, _ = method.training_step(batch, 0, phase="noisy")
    assert set(losses) == {"noisy", "cmp"}
    label, cmp = _expected_nirnl(method, batch, "noisy")
    torch.testing.assert_close(losses["noisy"], 0.7 * label)
    torch.testing.assert_close(losses["cmp"], 0.3 * cmp)
    for got, want in zip(_grads(method, losses["noisy"]), _grads(method, 0.7 * label)):
        torch.testing.assert_close(got, want)


# mutant killed: the empty class keeps its zero prototype unmasked (the old behaviour: logit 0)
# mutant killed: presence read from the image labels only (a class carried by texts only masked out)
# mutant killed: ``empty_classes`` not logged in the epoch row
def test_nirnl_skips_a_class_no_item_carries_and_counts_it() -> None:
    """Of 4 classes, class 2 is carried by texts only and class 3 by nobody: class 3 gets no
    barycenter (probability 0 in every softmax, never a pseudo-label, ``empty_classes`` = 1 in the
    log row) while class 2 keeps its prototype; every phase's loss stays finite."""
    torch.manual_seed(0)
    method = NIRNL(NIRNL.Config(top_k=2), image_dim=4, text_dim=3, num_classes=4, hidden=8, embed_dim=6)
    y_img = torch.tensor([0, 0, 0, 1, 1, 1])
    y_txt = torch.tensor([0, 0, 2, 1, 1, 2])
    images, texts = torch.randn(6, 4), torch.randn(6, 3)
    labels = torch.stack([F.one_hot(y_img, 4).float(), F.one_hot(y_txt, 4).float()])
    ctx = SimpleNamespace(images=images, texts=texts, labels=labels, n_samples=6)
    logs = method.on_epoch_start(0, ctx)
    assert logs["empty_classes"] == 1.0
    assert sum(v for k, v in logs.items() if k.startswith("share_")) == pytest.approx(1.0)
    emb = method.embed(images, method.encode_images)
    p = method.class_logits(emb).softmax(1)
    assert (p[:, 3] == 0).all()
    assert (p[:, 2] > 0.05).all()  # carried by texts only: a real class with a real prototype
    batch = LabelBatch(
        index=torch.arange(6), images=images, texts=texts, image_labels=labels[0], text_labels=labels[1]
    )
    for phase in ("pure", "hard", "noisy"):
        losses, _ = method.training_step(batch, 0, phase=phase)
        assert all(torch.isfinite(v) for v in losses.values()), phase
    # with every class present nothing is masked and the count is 0
    full = torch.stack([F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).float()] * 2)
    logs = method.on_epoch_start(1, SimpleNamespace(images=images, texts=texts, labels=full, n_samples=6))
    assert logs["empty_classes"] == 0.0
    assert (method.class_logits(emb).softmax(1)[:, 3] > 0.05).all()
