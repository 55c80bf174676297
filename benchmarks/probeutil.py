"""Loading a finished run for the probe scripts: its config, data, method at the last checkpoint, pass context."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisycorr.data.dataset import PairDataset
from noisycorr.engine.checkpoint import load_last_weights
from noisycorr.engine.context import TrainContext, pair_context
from noisycorr.engine.rundir import read_run_config
from noisycorr.engine.setup import build_method, prepare_data


@dataclass
class LoadedRun:
    cfg: Any
    data: Any  # train split, vocabulary, and the injected noise (``data.clean``: scoring only)
    dataset: PairDataset
    method: torch.nn.Module  # in eval mode, at the last checkpoint
    epoch: int  # the checkpoint's epoch (0-based)
    ctx: TrainContext  # fixed-order per-sample passes over the training pairs


def load_run(run: str | Path) -> LoadedRun:
    """The run folder's method at its ``checkpoint.pt``, with the training data it saw (CPU)."""
    cfg = read_run_config(run)
    data = prepare_data(cfg, with_test=False)
    ds = PairDataset(data.train, data.vocab, data.caption_image)
    method = build_method(cfg, data.vocab, tuple(data.train.images.shape[1:]))
    state = Path(run) / "checkpoint.pt"
    load_last_weights(method, state)
    epoch = int(torch.load(state, map_location="cpu", weights_only=True)["epoch"])
    method.eval()
    ctx = pair_context(method, ds, batch_size=cfg.train.batch_size, device=torch.device("cpu"), seed=0,
                       epochs=cfg.train.epochs)
    return LoadedRun(cfg, data, ds, method, epoch, ctx)
