"""The learning-rate schedule counted from the method's ``schedule_start`` (issue 16), down to metrics.csv."""

import csv
import math

import pytest
from engine_helpers import tiny_overrides

from noisycorr.config import TrainConfig, load_config
from noisycorr.engine.optim import schedule_factor
from noisycorr.engine.trainer import train


def _rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# mutant killed: schedule_factor ignores start (epoch // lr_update)
# mutant killed: the epochs before start get epoch - start < 0 (a factor of 10 in the warm-up)
def test_step_schedule_counts_from_start_and_the_epochs_before_take_the_first_value():
    train_cfg = TrainConfig(epochs=45, lr_update=30, lr_decay=0.1)
    got = [schedule_factor(train_cfg, "step", e, start=5) for e in range(45)]
    assert got == pytest.approx([1.0] * 35 + [0.1] * 10)
    assert [schedule_factor(train_cfg, "step", e) for e in (29, 30)] == pytest.approx([1.0, 0.1])  # start 0


# mutant killed: cosine over train.epochs instead of train.epochs - start
def test_cosine_schedule_spans_the_epochs_after_start():
    train_cfg = TrainConfig(epochs=12)
    assert schedule_factor(train_cfg, "cosine", 1, start=2) == 1.0
    assert schedule_factor(train_cfg, "cosine", 7, start=2) == pytest.approx(0.5)  # half of the 10 counted epochs
    assert schedule_factor(train_cfg, "cosine", 11, start=2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert schedule_factor(train_cfg, "constant", 0, start=2) == 1.0


TINY = {"noise.rate": 0.4, "train.epochs": 6, "train.batch_size": 48, "train.lr_update": 2,
        "method.warmup_epochs": 2, "method.noisy_start": 0.5}


# mutant killed: trainer builds Optimizers with start 0 whatever the method says (Optimizers.start = 0)
# mutant killed: NCR.noisy_from_epoch = int(noisy_start * ctx.epochs) whatever the counting
@pytest.mark.parametrize(
    "counting,decays,first_noisy",
    [
        ("co_training", [1, 1, 1, 1, 0.1, 0.1], 4),  # 2 warm-up + 4: x0.1 at co-training epoch 2, noisy from 2 + 2
        ("run", [1, 1, 0.1, 0.1, 0.01, 0.01], 3),  # the absolute epoch: x0.1 at 2 and 4, noisy from floor(0.5 * 6)
    ],
)
def test_a_tiny_ncr_run_logs_the_lr_step_and_the_first_noisy_loss_at_the_counted_epochs(
    tiny_root, tmp_path, counting, decays, first_noisy
):
    over = {**TINY, "method.epoch_counting": counting}
    cfg = load_config("demo-ncr", tiny_overrides(tiny_root, tmp_path / "r", **over))
    train(cfg)
    rows = _rows(tmp_path / "r")
    assert [float(r["lr"]) for r in rows] == pytest.approx([cfg.train.lr * d for d in decays])
    assert [r["warmup"] for r in rows] == ["1.0", "1.0", "0.0", "0.0", "0.0", "0.0"]
    noisy = [int(r["epoch"]) for r in rows if r["loss_noisy"] != ""]
    assert noisy == list(range(first_noisy, 6))
