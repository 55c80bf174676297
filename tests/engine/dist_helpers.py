"""Launching real multi-process runs on the CPU (gloo) for the distributed tests."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(args: list[str], *, nproc: int = 2, entry: list[str] | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc -m noisycorr ARGS`` (or ``entry`` instead of ``-m noisycorr``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           *(entry or ["-m", "noisycorr"]), *args]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return proc


def _spawned(local_rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    from noisycorr import distributed as dist

    torch.set_num_threads(1)
    dist.init_from_env(torch.device("cpu"))
    try:
        fn(local_rank, *args)
    finally:
        dist.shutdown()


def spawn(fn, *args, world: int = 2) -> None:
    """Run ``fn(rank, *args)`` in ``world`` gloo processes (``fn`` at module level, results via files)."""
    mp.start_processes(_spawned, args=(world, free_port(), fn, args), nprocs=world, join=True,
                       start_method="spawn")


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))
