"""A NaN or infinite loss stops the run before the optimiser moves, with one line, and the checkpoint
of the last finished epoch is kept as it was."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import tiny_overrides

from noisycorr.cli.main import main
from noisycorr.engine.checkpoint import load_state
from noisycorr.methods.vanilla import Vanilla


@pytest.fixture
def nan_at(monkeypatch):
    """Vanilla's loss becomes ``value`` at (epoch, step) (0-based epoch, 1-based step)."""

    def arm(epoch: int, step: int, value: float) -> None:
        real = Vanilla.training_step
        seen = {"n": 0}

        def step_fn(self, batch, ep, **kw):
            losses, logs = real(self, batch, ep, **kw)
            if ep == epoch:
                seen["n"] += 1
                if seen["n"] == step:
                    losses = {k: v * value for k, v in losses.items()}
            return losses, logs

        monkeypatch.setattr(Vanilla, "training_step", step_fn)

    return arm


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_root, tmp_path, capsys, nan_at, value):
    out = tmp_path / "r"
    argv = ["train", "-c", "demo"]
    for item in tiny_overrides(tiny_root, out, **{"train.epochs": 3}):
        argv += ["--set", item]
    nan_at(1, 2, value)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("noisycorr: error: ") and "\n" not in err, err
    assert "epoch 2, phase 'train', step 2" in err and "NaN or infinite loss" in err
    assert "checkpoint of epoch 1" in err
    state = load_state(out / "checkpoint.pt")
    assert state["epoch"] == 0, "the last finished epoch's checkpoint is kept"
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    assert not (out / "results.json").exists()


def test_nonfinite_loss_in_the_first_epoch_says_there_is_no_checkpoint(tiny_root, tmp_path, capsys, nan_at):
    out = tmp_path / "r"
    argv = ["train", "-c", "demo"]
    for item in tiny_overrides(tiny_root, out, **{"train.epochs": 2}):
        argv += ["--set", item]
    nan_at(0, 1, float("nan"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "epoch 1, phase 'train', step 1" in err and "no checkpoint" in err
    assert not (out / "checkpoint.pt").exists()
