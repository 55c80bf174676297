"""Kill anywhere, lose nothing: a training process is killed with SIGKILL at many moments (in an
epoch, in a per-sample pass, while a checkpoint, the best weights or the log are half-written,
between the metrics row and its checkpoint, in the final evaluation, while the report is written,
at a random wall-clock moment, twice in one run) and every run resumed with ``--resume`` ends
exactly like an uninterrupted one: the same weights, pair scores, log and test metrics.

The kill moments are drawn with a fixed seed; each forked child patches one function of the engine
to SIGKILL itself at its n-th call (after writing half of the file, for the writers).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_helpers import metric_rows
from engine_helpers import tiny_overrides
from threadpoolctl import threadpool_limits

from noisycorr.config import load_config
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.trainer import train

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL"),
    pytest.mark.usefixtures("one_thread"),
]

TINY = {"noise.rate": 0.4, "train.epochs": 3, "method.warmup_epochs": 1, "train.batch_size": 32}
EPOCHS = TINY["train.epochs"]

def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _half_then_die(path: Path, data: bytes) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.killed.tmp")
    tmp.write_bytes(data[: len(data) // 2])
    _die()


def _arm(point: str, n: int) -> None:
    """In the child: make the engine SIGKILL this process at the ``n``-th call of ``point``."""
    import noisycorr.engine.checkpoint as checkpoint
    import noisycorr.engine.context as context
    import noisycorr.engine.logger as logger
    import noisycorr.engine.optim as optim
    import noisycorr.engine.pairs as pairs
    import noisycorr.engine.trainer as trainer

    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    def dying(real, *, when=lambda *a: True):
        def call(*args, **kwargs):
            if when(*args) and hit():
                _die()
            return real(*args, **kwargs)
        return call

    def half_writer(real, name: str):
        def write(path, data):
            if Path(path).name == name and hit():
                _half_then_die(path, data)
            return real(path, data)
        return write

    if point == "step":
        optim.Stepper.update = dying(optim.Stepper.update)
    elif point == "pass":  # inside the pass: after its first batch
        real_pass = context.TrainContext.per_sample

        def per_sample(self, fn, **kw):
            if not hit():
                return real_pass(self, fn, **kw)
            seen = [0]

            def fn_then_die(batch):
                seen[0] += 1
                if seen[0] == 2:
                    _die()
                return fn(batch)
            return real_pass(self, fn_then_die, **kw)
        context.TrainContext.per_sample = per_sample
    elif point == "checkpoint-write":
        checkpoint.atomic_write_bytes = half_writer(checkpoint.atomic_write_bytes, "checkpoint.pt")
    elif point == "best-write":
        checkpoint.atomic_write_bytes = half_writer(checkpoint.atomic_write_bytes, "best.safetensors")
    elif point == "metrics-write":
        logger.atomic_write_bytes = half_writer(logger.atomic_write_bytes, "metrics.csv")
    elif point == "before-checkpoint":  # the epoch's metrics row and best weights are written, its checkpoint not
        trainer.atomic_torch_save = dying(trainer.atomic_torch_save)
    elif point == "evaluate":  # call EPOCHS + 1 is the final test evaluation
        pairs.evaluate_method = dying(pairs.evaluate_method)
    elif point == "scores":
        pairs.write_npy = dying(pairs.write_npy)
    elif point == "results":
        pairs.write_json = dying(pairs.write_json, when=lambda path, *a: Path(path).name == "results.json")
    elif point != "clock":
        raise ValueError(point)


def _argv(root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "-c", "demo-ncr"]
    for item in tiny_overrides(root, out, **TINY):
        argv += ["--set", item]
    return [*argv, *extra]


def _killed_child(point: str, n: int, argv: list[str], *, clock: float | None = None) -> None:
    """Fork a child that trains ``argv`` until it dies; ``clock``: SIGKILL it that many seconds
    after it started training."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            # BLAS / OpenMP pools do not survive a fork: the child computes on its own thread.
            threadpool_limits(1)
            torch.set_num_threads(1)
            _arm(point, n)
            from noisycorr.cli.main import main

            code = main(argv)
        finally:
            os._exit(code)
    if clock is not None:
        config, deadline = _out_of(argv) / "config.yaml", time.monotonic() + 60
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(clock)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{point} #{n}: not killed ({status})"


def _out_of(argv: list[str]) -> Path:
    return Path(next(a.split("=", 1)[1] for a in argv if a.startswith("run.out_dir=")))


def _assert_same_end(ref: Path, run: Path, label: str) -> None:
    a, b = load_state(ref / "checkpoint.pt"), load_state(run / "checkpoint.pt")
    assert a["method"].keys() == b["method"].keys(), label
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), f"{label}: {key}"
    assert np.array_equal(np.load(ref / "pair_scores.npy"), np.load(run / "pair_scores.npy")), label
    res_a, res_b = (json.loads((r / "results.json").read_text()) for r in (ref, run))
    assert res_a["test"] == res_b["test"] and res_a["detection"] == res_b["detection"], label
    strip = [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in metric_rows(ref)]
    assert strip == [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in metric_rows(run)], label
    assert not list(run.glob(".*.tmp")), f"{label}: a half-written temporary file was left behind"


def _plan(ref: Path) -> list[tuple[str, int]]:
    """The kill moments, drawn with a fixed seed within what the reference run did."""
    rng = random.Random(0)
    rows = metric_rows(ref)
    batches = sum(int(v or 0) for row in rows for k, v in row.items() if k.startswith("steps_"))
    passes = 2 * (EPOCHS - TINY["method.warmup_epochs"])  # one per network and co-training epoch
    return [
        ("step", rng.randint(1, batches // 3)),  # in the warm-up
        ("step", rng.randint(batches // 2, batches)),  # in co-training
        ("pass", rng.randint(1, passes)),
        ("checkpoint-write", rng.randint(1, EPOCHS)),
        ("best-write", 1),
        ("metrics-write", rng.randint(2, EPOCHS)),
        ("before-checkpoint", rng.randint(1, EPOCHS)),
        ("evaluate", EPOCHS + 1),
        ("scores", 1),
        ("results", 1),
    ]


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_end(tiny_root, tmp_path):
    ref = tmp_path / "ref"
    train(load_config("demo-ncr", tiny_overrides(tiny_root, ref, **TINY)))
    clock = random.Random(1)
    moments = [(point, n, None) for point, n in _plan(ref)]
    moments += [("clock", 0, round(clock.uniform(0.1, 1.0), 2)) for _ in range(2)]
    for k, (point, n, seconds) in enumerate(moments):
        run = tmp_path / f"k{k}-{point}"
        _killed_child(point, n, _argv(tiny_root, run), clock=seconds)
        if (run / "checkpoint.pt").exists():
            load_state(run / "checkpoint.pt")  # every checkpoint a kill leaves is readable
        train(load_config("demo-ncr", tiny_overrides(tiny_root, run, **TINY)), resume=True)
        _assert_same_end(ref, run, f"{point} #{n}")

    # twice in one run: after epoch 1's metrics row (its checkpoint unwritten), then in epoch 2's first pass
    run = tmp_path / "twice"
    _killed_child("before-checkpoint", 2, _argv(tiny_root, run))
    _killed_child("pass", 3, _argv(tiny_root, run, "--resume"))
    assert load_state(run / "checkpoint.pt")["epoch"] == 1
    train(load_config("demo-ncr", tiny_overrides(tiny_root, run, **TINY)), resume=True)
    _assert_same_end(ref, run, "twice")
