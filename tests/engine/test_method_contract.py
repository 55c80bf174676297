"""The method contract, exercised by a toy method written here and nowhere else.

The toy method is registered from this test file, touches nothing in the package, and uses every
hook a new method may need: two optimisers with their own learning rate and schedule, a phase with
two named side streams, a manual step with a functional (torch.func) virtual update, its own
evaluation similarity, and a trained buffer kept in the checkpoint. Then every registered method,
built-in or not, trains for one tiny epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Mapping

import numpy as np
import pytest
import torch
from engine_helpers import tiny_overrides
from torch import Tensor, nn
from torch.func import functional_call

from noisycorr.backbones.base import Backbone
from noisycorr.config import load_config
from noisycorr.data.dataset import PairBatch
from noisycorr.data.labeled import LabeledSplit, write_npz
from noisycorr.engine.checkpoint import load_state, read_metadata
from noisycorr.engine.trainer import train
from noisycorr.factory import list_methods
from noisycorr.losses import triplet_loss
from noisycorr.methods.base import Method, OptimizerSpec, Phase, Update
from noisycorr.methods.context import EpochContext, StepControl
from noisycorr.registry import METHODS, register_method


def _scores(net: Backbone, batch: PairBatch) -> Tensor:
    img = net.encode_images(batch.images)
    txt = net.encode_texts(batch.tokens, batch.lengths)
    return net.similarity(img, txt, batch.lengths)


class ToyTwoNets(Method):
    """Toy: two networks, each with its own optimiser; phase 'joint' with streams 'even' and 'odd'."""

    citation = "a test"

    @dataclasses.dataclass
    class Config:
        margin: float = 0.2
        head_lr: float = 1e-3

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        super().__init__(cfg, build_backbone)
        self.main_net = build_backbone()
        self.head_net = build_backbone()
        self.register_buffer("seen", torch.zeros(1, dtype=torch.long))  # trained state: batches seen

    def optimizer_specs(self) -> list[OptimizerSpec]:
        return [
            OptimizerSpec("main", list(self.main_net.parameters())),
            OptimizerSpec("head", list(self.head_net.parameters()), lr=self.cfg.head_lr, schedule="constant",
                          optimizer="sgd"),
        ]

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        losses = ctx.per_sample(lambda b: self.per_sample_loss(self.main_net, b))
        self.last_pass = losses
        return {"pass_mean": float(losses.mean())}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        n = len(self.last_pass)
        return [Phase("joint", streams={"even": np.arange(0, n, 2), "odd": np.arange(1, n, 2)})]

    def training_step(self, batch, epoch, *, phase="train", streams: Mapping[str, PairBatch] | None = None,
                      control=None):
        streams = streams or {}
        assert streams["even"].index.remainder(2).eq(0).all()
        assert streams["odd"].index.remainder(2).eq(1).all()
        self.seen += 1
        yield Update({"main": triplet_loss(_scores(self.main_net, batch), self.cfg.margin)}, {"k": 1.0}, ("main",))
        yield Update({"head": triplet_loss(_scores(self.head_net, streams["odd"]), self.cfg.margin)}, {}, ("head",))

    def eval_backbones(self) -> list[Backbone]:
        return [self.main_net, self.head_net]

    def eval_similarity(self, sims: list[Tensor]) -> Tensor:
        return sims[0]  # the head network only helps training


class _Scores(nn.Module):
    """A forward over a backbone, so torch.func.functional_call can swap the backbone's parameters."""

    def __init__(self, net: Backbone):
        super().__init__()
        self.net = net

    def forward(self, batch: PairBatch) -> Tensor:
        return _scores(self.net, batch)


class ToyMetaStep(Method):
    """Toy: a learned per-pair weight trained through a virtual SGD step (torch.func), the step taken over."""

    citation = "a test"
    manual_optimization = True

    @dataclasses.dataclass
    class Config:
        margin: float = 0.2
        inner_lr: float = 0.1

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        super().__init__(cfg, build_backbone)
        self.net = build_backbone()
        self.weigher = nn.Linear(1, 1)  # the meta-net: per-pair loss -> weight

    def optimizer_specs(self) -> list[OptimizerSpec]:
        return [OptimizerSpec("main", list(self.net.parameters())),
                OptimizerSpec("meta", list(self.weigher.parameters()), lr=0.01)]

    def training_step(self, batch, epoch, *, phase="train", streams=None, control: StepControl | None = None):
        assert control is not None
        scorer = _Scores(self.net)
        params = {f"net.{k}": v for k, v in self.net.named_parameters()}
        per_pair = triplet_loss(functional_call(scorer, params, (batch,)), self.cfg.margin, reduction="none")
        w = torch.sigmoid(self.weigher(per_pair.detach()[:, None])).squeeze(1)
        inner = (w * per_pair).mean()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
        virtual = {k: p if g is None else p - self.cfg.inner_lr * g for (k, p), g in zip(params.items(), grads)}
        meta = triplet_loss(functional_call(scorer, virtual, (batch,)), self.cfg.margin)
        control.zero_grad("meta")
        control.backward(meta)
        control.step("meta")
        loss = triplet_loss(_scores(self.net, batch), self.cfg.margin)
        control.zero_grad("main")
        control.backward(loss)
        control.step("main")
        return {"main": loss.detach(), "meta": meta.detach()}, {"meta_lr": control.lr("meta")}


@pytest.fixture
def toy_methods():
    added = []
    for name, cls in (("toy-two-nets", ToyTwoNets), ("toy-meta", ToyMetaStep)):
        if name not in METHODS:
            register_method(name)(cls)
            added.append(name)
    yield
    for name in added:
        METHODS.pop(name)


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_toy_method_from_a_test_file_trains_end_to_end(toy_methods, tiny_root, tmp_path):
    over = {"method.name": "toy-two-nets", "train.epochs": 2, "train.lr_update": 1, "method.head_lr": 0.05}
    results = train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **over)))
    rows = _rows(tmp_path / "r")
    # each optimiser has its own lr and schedule: main decays x0.1 after one epoch, head stays constant
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-4])
    assert [float(r["lr_head"]) for r in rows] == pytest.approx([0.05, 0.05])
    state = load_state(tmp_path / "r" / "checkpoint.pt")
    assert set(state["optimizers"]) == {"main", "head"}
    assert state["optimizers"]["head"]["param_groups"][0]["momentum"] == 0.9  # an SGD state, not Adam's
    steps = int(rows[0]["steps_joint"])
    assert steps > 0 and int(state["method"]["seen"]) == 2 * steps  # the trained buffer is checkpointed
    assert float(rows[0]["loss_main"]) > 0 and float(rows[0]["loss_head"]) > 0
    assert float(rows[0]["k"]) == 1.0  # logs are averaged per key, not over every update
    # evaluation used the method's own combination: the first network alone
    assert results["test"]["rsum"] == pytest.approx(results["test"]["net0_rsum"])
    assert results["test"]["rsum"] != pytest.approx(results["test"]["net1_rsum"])
    assert read_metadata(tmp_path / "r" / "best.safetensors")["method"] == "toy-two-nets"
    assert json.loads((tmp_path / "r" / "results.json").read_text())["test"] == results["test"]


def test_the_method_can_take_over_the_step_for_a_functional_meta_update(toy_methods, tiny_root, tmp_path):
    over = {"method.name": "toy-meta", "train.epochs": 1}
    train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **over)))
    state = load_state(tmp_path / "r" / "checkpoint.pt")
    assert set(state["optimizers"]) == {"main", "meta"}
    # the meta-net got gradients through the virtual step: its optimiser has stepped every parameter
    assert len(state["optimizers"]["meta"]["state"]) == 2
    row = _rows(tmp_path / "r")[0]
    assert float(row["loss_meta"]) > 0 and float(row["meta_lr"]) == pytest.approx(0.01)


def test_a_parameter_in_no_optimiser_is_an_error(toy_methods, tiny_root, tmp_path, monkeypatch):
    def main_only(self):
        return [OptimizerSpec("main", list(self.net.parameters()))]

    monkeypatch.setattr(ToyMetaStep, "optimizer_specs", main_only)
    over = {"method.name": "toy-meta", "train.epochs": 1}
    with pytest.raises(RuntimeError, match="in no optimiser: \\['weigher.weight', 'weigher.bias'\\]"):
        train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **over)))


def _tiny_labelled(path) -> None:
    rs = np.random.RandomState(0)

    def split(n: int) -> LabeledSplit:
        y = rs.randint(0, 3, size=n)
        return LabeledSplit((np.eye(3)[y] * 2 + rs.randn(n, 3)).astype(np.float32),
                            (np.eye(3)[y] * 2 + rs.randn(n, 3)).astype(np.float32), np.eye(3, dtype=bool)[y])

    write_npz(path, {"train": split(60), "test": split(20)})


@pytest.mark.parametrize("name", [m for m in list_methods() if not m.startswith("toy-")])
def test_every_registered_method_trains_one_tiny_epoch(name, tiny_root, tmp_path):
    from noisycorr.factory import get_method_class

    if get_method_class(name).task == "labels":
        _tiny_labelled(tmp_path / "tiny.npz")
        over = {"data.root": str(tmp_path / "tiny.npz"), "data.layout": "auto", "data.val": "train",
                "data.val_size": 12,
                "model.hidden": 16, "model.embed_dim": 8, "train.epochs": 1, "train.batch_size": 16,
                "train.threads": 1, "run.progress": False, "run.out_dir": str(tmp_path / "r"), "noise.rate": 0.2}
        cfg = load_config("wiki-ce", [f"{k}={v}" for k, v in over.items()] + [f"method.name={name}"])
        results = train(cfg)
        assert 0.0 <= results["test"]["avg_map"] <= 1.0
    else:
        over = {"method.name": name, "train.epochs": 1, "noise.rate": 0.4}
        if name in ("ncr", "in2r", "d2s-ncr"):
            over["method.warmup_epochs"] = 0  # one epoch that co-trains on the splits
        if name.startswith("d2s"):  # dense texts of the noisy pairing, and a one-epoch stage 1 (in r/stage1)
            from noisycorr.cli.main import main

            sets = [a for o in tiny_overrides(tiny_root, tmp_path / "r", **over) for a in ("--set", o)]
            assert main(["dense-standin", str(tmp_path / "dense.jsonl"), "-c", "demo", *sets]) == 0
            over.update({"data.dense_captions": str(tmp_path / "dense.jsonl"), "method.stage1_epochs": 1})
        results = train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **over)))
        assert 0.0 <= results["test"]["rsum"] <= 600.0
        assert np.load(tmp_path / "r" / "pair_scores.npy").shape == (480,)
    assert len(_rows(tmp_path / "r")) == 1


class ToySmallPhase(Method):
    """Toy: a phase whose main stream is smaller than one batch."""

    citation = "a test"

    def __init__(self, cfg, build_backbone):
        super().__init__(cfg, build_backbone)
        self.net = build_backbone()

    def epoch_phases(self, epoch: int) -> list[Phase]:
        return [Phase("tiny", indices=np.arange(5)), Phase("all")]

    def training_step(self, batch, epoch, *, phase="train", streams=None, control=None):
        return {"t": triplet_loss(_scores(self.net, batch), 0.2)}, {}


def test_a_phase_without_a_full_batch_is_reported_not_silent(tiny_root, tmp_path, capsys):
    register_method("toy-small-phase")(ToySmallPhase)
    try:
        train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **{"method.name": "toy-small-phase",
                                                                                "train.epochs": 1})))
    finally:
        METHODS.pop("toy-small-phase")
    row = _rows(tmp_path / "r")[0]
    assert row["steps_tiny"] == "0" and int(row["steps_all"]) == 480 // 32
    assert "phase 'tiny': its 5 samples make no batch of 32" in capsys.readouterr().err


def test_end_of_run_pair_scores_use_the_methods_own_settings(tiny_root, tmp_path, monkeypatch):
    """score_pairs reads the method's estimator, margin, pass batch and monotone setting."""
    import noisycorr.selection as selection
    from noisycorr.methods.ncr import NCR

    seen: list[tuple] = []
    real_cp, real_loss = selection.clean_probability, NCR.per_sample_loss

    def spy_cp(losses, *, estimator="gmm", seed=0, monotone=True):
        seen.append(("mixture", estimator, monotone, len(losses)))
        return real_cp(losses, estimator=estimator, seed=seed, monotone=monotone)

    def spy_loss(self, net, batch, margin=0.2):
        seen.append(("pass", margin, len(batch)))
        return real_loss(self, net, batch, margin)

    monkeypatch.setattr(selection, "clean_probability", spy_cp)
    monkeypatch.setattr("noisycorr.methods.coteaching.clean_probability", spy_cp)
    monkeypatch.setattr(NCR, "per_sample_loss", spy_loss)
    over = {"method.name": "ncr", "train.epochs": 1, "method.warmup_epochs": 1, "noise.rate": 0.4,
            "method.estimator": "bmm", "method.margin": 0.3, "method.pass_batch_size": 20, "method.monotone": False}
    train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **over)))
    # the only passes of a one-epoch warm-up run are the end-of-run scoring
    assert {s for s in seen if s[0] == "mixture"} == {("mixture", "bmm", False, 480)}
    assert {s for s in seen if s[0] == "pass"} == {("pass", 0.3, 20)}
