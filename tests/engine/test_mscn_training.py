"""MSCN end to end on tiny data: the meta set is recorded in the run folder, and a run SIGKILLed
in its second bi-level epoch (between a meta-net step and its real step) and resumed with ``--resume``
ends exactly like an uninterrupted one: the same weights (meta-nets included), optimiser moments, pair
scores, log and test metrics."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_helpers import metric_rows
from engine_helpers import assert_same_training, tiny_overrides, use_random_truth_mask
from threadpoolctl import threadpool_limits

from noisycorr.config import load_config
from noisycorr.data.synthetic import write_synthetic
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.trainer import train

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL"),
    pytest.mark.usefixtures("one_thread"),
]

TINY = {"method.name": "mscn", "noise.rate": 0.4, "train.epochs": 3, "method.warmup_epochs": 1,
        "train.batch_size": 16, "model.embed_size": 16, "model.word_dim": 8, "data.meta_size": 0.1}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mscn")
    write_synthetic(root, seed=4, n_train=16, n_dev=10, n_test=10, n_regions=4, feat_dim=8, n_concepts=12)
    return root


def _cfg(root: Path, out: Path):
    return load_config("demo", tiny_overrides(root, out, **TINY))


def _killed_child(root: Path, out: Path, n: int) -> None:
    """Train in a forked child that SIGKILLs itself at the ``n``-th optimiser step call."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            threadpool_limits(1)
            torch.set_num_threads(1)
            import noisycorr.engine.optim as optim

            calls = [0]
            real = optim.Stepper.step

            def dying(*args, **kwargs):
                calls[0] += 1
                if calls[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            optim.Stepper.step = dying
            train(_cfg(root, out))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"step #{n}: not killed ({status})"


def test_an_mscn_run_killed_mid_training_resumes_to_the_uninterrupted_end(small_root, tmp_path):
    ref = tmp_path / "ref"
    train(_cfg(small_root, ref))
    record = json.loads((ref / "meta.json").read_text())
    assert record["source"] == "val" and record["pairs"] == 10  # 10 % of 80 pairs = 8, as 2 whole images
    assert (record["val_images_before"], record["val_images_after"]) == (10, 8)
    assert np.load(ref / "meta_index.npy").shape == (2,)
    rows = metric_rows(ref)
    assert float(rows[1]["warmup"]) == 0.0 and float(rows[1]["meta_bce"]) > 0  # the bi-level epoch ran
    warm_steps = int(rows[0]["steps_A"]) + int(rows[0]["steps_B"])  # one step call per warm-up batch
    meta_steps = 2 * (int(rows[1]["steps_A"]) + int(rows[1]["steps_B"]))  # a meta-net and a real step per batch
    # step call warm + meta + 3: the second batch of epoch 3, after its meta-net step, before its real step
    run = tmp_path / "killed"
    _killed_child(small_root, run, warm_steps + meta_steps + 3)
    assert load_state(run / "checkpoint.pt")["epoch"] == 1  # killed in epoch 3
    train(_cfg(small_root, run), resume=True)
    a, b = load_state(ref / "checkpoint.pt"), load_state(run / "checkpoint.pt")
    assert a["method"].keys() == b["method"].keys()
    assert any(k.startswith("net_a.meta.") for k in a["method"])
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    for name in ("main", "meta"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa), name
    assert np.array_equal(np.load(ref / "pair_scores.npy"), np.load(run / "pair_scores.npy"))
    res_a, res_b = (json.loads((r / "results.json").read_text()) for r in (ref, run))
    assert res_a["test"] == res_b["test"]
    strip = [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in metric_rows(ref)]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in metric_rows(run)]


# mutant killed: the warm-up of backbone mode without the meta BCE (the meta-nets stay at their start)
def test_backbone_scoring_teaches_the_meta_net_in_the_warm_up(small_root, tmp_path, monkeypatch):
    from noisycorr.methods.mscn import MSCN

    start: dict[str, torch.Tensor] = {}
    real = MSCN.on_epoch_start

    def spy(self, epoch, ctx):
        if not start:
            start.update({f"net_{x}.meta.{k}": v.clone() for x, net in (("a", self.net_a), ("b", self.net_b))
                          for k, v in net.meta.state_dict().items()})
        return real(self, epoch, ctx)

    monkeypatch.setattr(MSCN, "on_epoch_start", spy)
    out = tmp_path / "r"
    train(load_config("demo", tiny_overrides(small_root, out, **{**TINY, "train.epochs": 1,
                                                                  "method.score": "backbone"})))
    rows = metric_rows(out)
    assert float(rows[0]["warmup"]) == 1.0 and float(rows[0]["meta_bce"]) > 0
    end = load_state(out / "checkpoint.pt")["method"]
    assert start and all(not torch.equal(v, end[k]) for k, v in start.items())


# mutant killed: the engine hands the method the true mask and the purification keeps only truly clean pairs
def test_mscn_training_is_bit_identical_whatever_the_ground_truth_mask(small_root, tmp_path, monkeypatch):
    train(_cfg(small_root, tmp_path / "true"))
    use_random_truth_mask(monkeypatch)
    train(_cfg(small_root, tmp_path / "fake"))
    assert_same_training(tmp_path / "true", tmp_path / "fake")
    rows_a, rows_b = metric_rows(tmp_path / "true"), metric_rows(tmp_path / "fake")
    assert rows_a[1]["det_A_auc"] != rows_b[1]["det_A_auc"]  # the swapped mask did reach the scoring
