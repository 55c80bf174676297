"""Several processes, one run: ``torchrun --nproc_per_node N -m noisycorr train ...``.

Everything here is a thin layer over :mod:`torch.distributed` and works unchanged in one process
(every function is then the identity or a no-op), so the engine and the methods call it
unconditionally. The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): ``nccl`` when the run trains on CUDA, ``gloo`` on the CPU.

How a run is split (see README "Several GPUs"):

- every rank holds the whole model, built from the same seed and then broadcast from rank 0;
- each global batch of ``train.batch_size`` samples (the same batches, in the same order, as one
  process) is cut into ``world_size`` contiguous slices, one per rank;
- gradients are averaged across ranks before every optimiser step (:func:`average_gradients`), so
  parameters and optimiser states stay identical on every rank (checked each epoch by
  :func:`check_in_sync`);
- per-sample passes are split by batch and gathered by sample index, so every rank fits the same
  mixture on the same values and gets the same split (fit identically, nothing broadcast);
- rank 0 alone validates, logs and writes the run folder.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor
from torch import distributed as dist

__all__ = [
    "active",
    "any_across_ranks",
    "average_norm_stats",
    "merge_sums",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "check_in_sync",
    "gather_by_index",
    "gather_rows",
    "init_from_env",
    "is_main",
    "rank",
    "shard",
    "shutdown",
    "world_size",
]

# Rank 0 validates and writes alone while the others wait at their next collective: long enough
# for a full evaluation of a large test split.
TIMEOUT = datetime.timedelta(hours=2)


def active() -> bool:
    """Whether this process is one of several ranks of a run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that validates, logs and writes files."""
    return rank() == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device.

    A no-op in a plain process. On CUDA each rank takes GPU ``LOCAL_RANK``. Calling it again in
    an initialised process (several runs in one launcher) keeps the existing group.
    """
    if launched_world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(shutdown)
    return device


def shutdown() -> None:
    """Leave the process group (after the last collective of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device(t: Tensor) -> Tensor:
    """NCCL moves CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.cuda()
    return t


def shard(n: int, parts: int, index: int) -> slice:
    """The contiguous slice ``index`` of ``parts`` near-equal slices of ``range(n)`` (earlier ones
    one longer when ``n`` does not divide), as ``numpy.array_split`` cuts."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's (n_r, ...) rows in rank order (n_r may differ); identity in one process."""
    if not active():
        return t
    out_device = t.device
    t = _comm_device(t.contiguous())
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.long, device=t.device))
    counts = [int(s) for s in sizes]
    longest = max(counts)
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(out_device)


def gather_by_index(index: Tensor, values: Tensor, n: int) -> Tensor:
    """Assemble the (n, ...) array every rank contributed rows of: row ``index[i]`` = ``values[i]``.

    Args:
        index: (m,) int64 sample indices this rank computed (ranks disjoint, together all of 0..n-1).
        values: (m, ...) float values of those samples.
        n: number of samples.

    Returns:
        (n, ...) float32 tensor on the CPU, the same on every rank.
    """
    index, values = gather_rows(index), gather_rows(values)
    out = torch.zeros((n, *values.shape[1:]), dtype=torch.float32)
    out[index.cpu()] = values.float().cpu()
    return out


def merge_sums(sums: dict[str, float], counts: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """Add up every rank's per-key sums and counts (e.g. of logged losses); identity in one process."""
    if not active():
        return sums, counts
    parts: list[tuple[dict[str, float], dict[str, int]] | None] = [None] * world_size()
    dist.all_gather_object(parts, (sums, counts))
    total: dict[str, float] = {}
    n: dict[str, int] = {}
    for part in parts:
        assert part is not None
        for key, value in part[0].items():
            total[key] = total.get(key, 0.0) + value
            n[key] = n.get(key, 0) + part[1][key]
    return total, n


def any_across_ranks(mask: np.ndarray) -> np.ndarray:
    """(N,) bool: true where any rank's (N,) mask is true; identity in one process."""
    if not active():
        return mask
    t = _comm_device(torch.from_numpy(mask.astype(np.uint8)))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().numpy().astype(bool)


def average_gradients(params: Iterable[torch.nn.Parameter], *, flag: bool = False) -> bool:
    """Replace every gradient by its mean over the ranks, in one flat all-reduce.

    A parameter without a gradient on some ranks counts as zero there; one without a gradient on
    every rank keeps ``grad is None`` (so optimisers skip it, as in one process).

    Args:
        params: the parameters about to be stepped (the same list on every rank).
        flag: this rank's vote, carried in the same collective.

    Returns:
        Whether any rank voted ``flag`` (this rank's own ``flag`` in one process).
    """
    if not active():
        return flag
    params = [p for p in params if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    votes = [float(p.grad is not None) for p in params] + [float(flag)]
    flags = _comm_device(torch.tensor(votes, dtype=torch.float32, device=device))
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    *has_grad, any_flag = flags.cpu().tolist()
    live = [p for p, f in zip(params, has_grad, strict=True) if f > 0]
    if live:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in live])
        flat = _comm_device(flat)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world_size()
        offset = 0
        for p in live:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.device).clone()
            offset += n
    return any_flag > 0


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DistributedDataParallel does at start)."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        data = _comm_device(t.data)
        dist.broadcast(data, src=0)
        if data is not t.data:
            t.data.copy_(data)


def average_norm_stats(module: torch.nn.Module) -> None:
    """Average the batch-norm running statistics over the ranks (each rank saw its own slices).

    The running mean then equals the one-process running mean up to rounding (the mean of the slice
    means is the batch mean); the running variance misses the spread between slice means.
    """
    if not active():
        return
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            for t in (m.running_mean, m.running_var):
                if t is None:
                    continue
                data = _comm_device(t.data)
                dist.all_reduce(data, op=dist.ReduceOp.SUM)
                data /= world_size()
                if data is not t.data:
                    t.data.copy_(data)


def fingerprint(module: torch.nn.Module) -> tuple[list[str], Tensor]:
    """The floating-point state-dict keys and (K,) float64 sums of their tensors."""
    items = [(k, v) for k, v in module.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]
    sums = [v.detach().double().sum().cpu() for _, v in items] or [torch.zeros((), dtype=torch.float64)]
    return [k for k, _ in items], torch.stack(sums)


def check_in_sync(module: torch.nn.Module, where: str) -> None:
    """Raise when the ranks' models differ (they must be bit-identical after every epoch)."""
    if not active():
        return
    keys, sums = fingerprint(module)
    mine = _comm_device(sums)
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    differ = [k for j, k in enumerate(keys) if any(p[j] != parts[0][j] for p in parts[1:])]
    if differ:
        raise RuntimeError(
            f"{where}: the ranks' models differ in {differ[0]} ({len(differ)} tensors in all): a step or buffer "
            "update that is not the same on every rank"
        )
