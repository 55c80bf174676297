"""Shared settings for the engine tests."""

from pathlib import Path

import numpy as np

from noisycorr.engine import pairs as pairs_mod


def tiny_overrides(root: Path, out: Path, **extra: object) -> list[str]:
    """Overrides that make any preset train in a second or two on the tiny folder."""
    values = {
        "data.root": str(root),
        "data.vocab_min_count": 1,
        "model.embed_size": 32,
        "model.word_dim": 16,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr_update": 2,
        "train.threads": 1,
        "run.progress": False,
        "run.out_dir": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def use_random_truth_mask(monkeypatch) -> None:
    """From now on the prepared data carries a random ground-truth mask instead of the real one."""
    real_prepare = pairs_mod.prepare_data

    def prepare_with_another_mask(cfg, **kwargs):
        data = real_prepare(cfg, **kwargs)
        data.clean = np.random.default_rng(1).random(len(data.clean)) > 0.5
        return data

    monkeypatch.setattr(pairs_mod, "prepare_data", prepare_with_another_mask)


def assert_same_training(run_a: Path, run_b: Path, truth_prefixes: tuple[str, ...] = ("det_", "diag_")) -> None:
    """Two runs trained alike: the same checkpoint tensors, pair scores and log, but for the columns
    scored against the truth (``truth_prefixes``) and timings."""
    import csv

    import torch

    from noisycorr.engine.checkpoint import load_state

    a, b = load_state(run_a / "checkpoint.pt"), load_state(run_b / "checkpoint.pt")
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    assert np.array_equal(np.load(run_a / "pair_scores.npy"), np.load(run_b / "pair_scores.npy"))
    rows = []
    for run in (run_a, run_b):
        with open(run / "metrics.csv", newline="") as fh:
            rows.append(list(csv.DictReader(fh)))
    for ra, rb in zip(*rows, strict=True):
        same = {k for k in ra if not k.startswith(truth_prefixes) and not k.endswith("_seconds")}
        assert {k: ra[k] for k in same} == {k: rb[k] for k in same}
