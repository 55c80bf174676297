"""The BiCro / BiCro++ paper presets against the authors' scripts (issue 17).

BiCro's ``train_{f30k,coco,cc152k}.sh`` (xu5zhao/BiCro @0231631; ../shared/reference/methods.md sec. 2.7) pass
the same flags on every dataset (SGR module, seed 96, ``--warmup_epoch 10 --warmup_type warmup_sele
--warmup_rate 0.3 --p_threshold 0.5 --noise_train noise_soft --noise_tem 0.5 --fit_type bmm``) and keep
run.py's defaults otherwise (batch 128, 40 epochs, lr 2e-4 x0.1 at epoch 30, margin 0.2, grad clip 2,
exponential soft margin, SGRAF with embed 1024, word 300, sim 256, 3 SGR steps). BiCro++ has no public
code: its presets are BiCro's plus bicropp's own defaults. The per-epoch lr and the noisy-subset epochs
are checked in test_epoch_counting.py; here the rest, cheaply (no training).
"""

import pytest
import torch
from method_helpers import FakeEpochContext, random_batch

from noisycorr.backbones.vse import VSE
from noisycorr.config import load_config
from noisycorr.factory import get_method_class
from noisycorr.losses import triplet_loss
from noisycorr.methods.bicro import BiCro, BiCroPP
from noisycorr.methods.consistency import diagonal_dominance, peer_view

DATASETS = ("f30k", "coco", "cc152k")
PRESETS = [f"{d}-{m}" for d in DATASETS for m in ("bicro", "bicropp")]

# the authors' values, in our names (the sources are the comments of the presets)
BICRO_METHOD = {
    "margin": 0.2,
    "warmup_epochs": 10,
    "warmup_rate": 0.3,
    "epoch_counting": "co_training",
    "noisy_start": 0.5,
    "estimator": "bmm",
    "monotone": False,
    "p_threshold": 0.5,
    "targets": "consistency",
    "noise_threshold": 0.5,
    "anchor_fraction": 0.1,
    "soft_margin": "exponential",
    "purify": False,
    "codebook_size": 0,
    "codebook_weight": 0.0,
}
BICROPP_OWN = ("purify", "dominance_tol", "codebook_size", "codebook_weight", "codebook_iters", "codebook_temperature")


def _build(cfg):
    values = dict(cfg.method)
    cls = get_method_class(values.pop("name"))
    torch.manual_seed(0)
    return cls(cls.make_config(values), lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))


# mutant killed: f30k-bicro.yaml train.batch_size 64; coco-bicro.yaml extends coco-vse; cc152k-bicro.yaml
# train.grad_clip 0.0 (each: one preset's assertion fails)
@pytest.mark.parametrize("preset", PRESETS)
def test_schedule_backbone_and_data_follow_the_authors(preset):
    cfg = load_config(preset)
    dataset = preset.split("-")[0]
    train = cfg.train
    assert (train.epochs, train.batch_size, train.optimizer, train.lr, train.schedule, train.lr_update,
            train.lr_decay, train.grad_clip, train.seed) == (50, 128, "adam", 2e-4, "step", 30, 0.1, 2.0, 96)
    model = cfg.model
    assert (model.backbone, model.head, model.embed_size, model.word_dim, model.sim_dim, model.sgr_steps,
            model.text_layers) == ("sgraf", "sgr", 1024, 300, 256, 3, 1)
    # the dataset and its test protocol are the SGRAF preset's (run.py:194-199: COCO 5-fold 1K on testall)
    sgraf = load_config(f"{dataset}-sgraf")
    assert cfg.data == sgraf.data and cfg.eval == sgraf.eval and cfg.noise == sgraf.noise
    assert cfg.run.out_dir == f"runs/{preset}"


# mutant killed: f30k-bicro.yaml method.warmup_rate 0.5 (run.py's default); coco-bicro.yaml method.noise_threshold
# 0.9 (run.py's default); cc152k-bicro.yaml method.estimator gmm; f30k-bicropp.yaml method.margin 0.1
@pytest.mark.parametrize("preset", PRESETS)
def test_method_values_are_the_authors_flags(preset):
    method = load_config(preset).method
    expected = dict(BICRO_METHOD)
    if preset.endswith("bicropp"):
        expected = {k: v for k, v in expected.items() if k not in BICROPP_OWN}
    assert {k: method[k] for k in expected} == expected
    built = _build(load_config(preset))
    assert type(built) is (BiCroPP if preset.endswith("bicropp") else BiCro)
    assert built.cfg.margin == 0.2 and built.cfg.warmup_rate == 0.3 and built.cfg.noise_threshold == 0.5


# mutant killed: coco-bicropp.yaml method.codebook_size 32; f30k-bicropp.yaml method.purify false;
# cc152k-bicropp.yaml method.anchor_fraction 0.25
@pytest.mark.parametrize("dataset", DATASETS)
def test_bicropp_is_bicro_plus_its_own_defaults(dataset):
    bicro, bicropp = load_config(f"{dataset}-bicro"), load_config(f"{dataset}-bicropp")
    assert (bicropp.train, bicropp.model, bicropp.data, bicropp.eval) == (bicro.train, bicro.model, bicro.data,
                                                                          bicro.eval)
    same = {k: v for k, v in bicro.method.items() if k not in BICROPP_OWN and k != "name"}
    assert {k: bicropp.method[k] for k in same} == same
    defaults = BiCroPP.Config()
    assert {k: bicropp.method.get(k, getattr(defaults, k)) for k in BICROPP_OWN} == {
        k: getattr(defaults, k) for k in BICROPP_OWN
    }
    assert defaults.purify and defaults.codebook_size == 64 and defaults.codebook_weight == 0.5


# mutant killed: f30k-bicro.yaml method.warmup_epochs 9 (fits a split at run epoch 9)
@pytest.mark.parametrize("preset", PRESETS)
def test_ten_warmup_epochs_then_splits_every_co_training_epoch(preset):
    cfg = load_config(preset)
    method = _build(cfg)
    ctx = FakeEpochContext(epochs=cfg.train.epochs, n_samples=40, embed_dim=16 if preset.endswith("pp") else 0)
    for epoch in (0, 9):
        assert method.on_epoch_start(epoch, ctx)["warmup"] == 1.0 and method.in_warmup(epoch)
    assert ctx.calls == []  # no per-sample pass during the warm-up
    assert method.on_epoch_start(10, ctx)["warmup"] == 0.0 and not method.in_warmup(10)
    assert ctx.calls  # the first co-training epoch fits the split


# mutant killed: f30k-bicro.yaml method.warmup_rate 1.0 (the warm-up loss sums all 10 pairs)
@pytest.mark.parametrize("preset", ["f30k-bicro", "cc152k-bicropp"])
def test_the_warmup_step_trains_on_the_lowest_loss_30_percent(preset):
    """warmup_sele (BiCro model.py:540-547): of a batch of 10, the 3 pairs of lowest mean-negative hinge."""
    method = _build(load_config(preset))
    batch = random_batch(10)
    net = method.nets()["A"]
    net.train()
    losses, _ = next(method.training_step(batch, 0, phase="A"))
    with torch.no_grad():
        scores = method._scores(net, batch)  # no dropout in this VSE: the training forward's scores
    per_pair = triplet_loss(scores, 0.2, hardest=False, reduction="none")
    assert float(losses["warmup_A"].detach()) == pytest.approx(float(per_pair.sort().values[:3].sum()), rel=1e-4)


# mutant killed: purify_view: trained reads the peer's matrix (not the trained network's) for the dominance
@pytest.mark.parametrize("view", ["peer", "trained"])
def test_purification_reads_the_chosen_networks_score_matrix(view):
    cfg = load_config("f30k-bicropp")
    cfg.method.update({"codebook_size": 0, "codebook_weight": 0.0, "anchor_fraction": 1.0, "purify_view": view})
    method = _build(cfg)
    with torch.no_grad():  # two different networks
        for p in method.nets()["A"].parameters():
            p.add_(torch.randn_like(p))
    batch = random_batch(12)
    _, _, anchors = method.consistency_targets("A", batch)
    reader = method.nets()["B" if view == "peer" else "A"]
    dominance = diagonal_dominance(peer_view(reader, batch)[0])
    expected = dominance > 0 if (dominance > 0).any() else dominance == dominance.max()
    assert anchors.tolist() == expected.tolist()
    other = diagonal_dominance(peer_view(method.nets()["A" if view == "peer" else "B"], batch)[0]) > 0
    assert other.tolist() != expected.tolist()  # the two views disagree on this batch, so the test can tell
