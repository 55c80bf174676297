"""The one training loop of both tasks: everything that is not the paper (devices, AMP, optimisers,
schedules, clipping, batches, validation, model selection, checkpoints, resume, logging, plots).

What differs between image-caption pairs and labelled items is supplied by a task object
(:class:`~noisycorr.engine.pairs.PairTask`, :class:`~noisycorr.engine.labels.LabelTask`): preparing
the data, building the method, the batches of a phase, the validation metric, the weight metadata,
the ground truth the diagnostics are scored against, and the end-of-run files.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from noisycorr import distributed as dist
from noisycorr.config import AnyConfig, LabeledConfig, check_values, save_config
from noisycorr.data.paths import check_writable_dir
from noisycorr.engine.checkpoint import atomic_torch_save, export_weights, load_state
from noisycorr.engine.diagnostics import diagnostics_row
from noisycorr.engine.labels import LabelTask
from noisycorr.engine.logger import MetricsLogger
from noisycorr.engine.optim import NonFiniteLoss, Optimizers, Stepper
from noisycorr.engine.pairs import PairTask
from noisycorr.engine.plots import have_matplotlib, plot_history
from noisycorr.engine.rundir import RunPaths, check_same_settings, write_json
from noisycorr.engine.seeding import epoch_seed, seed_everything
from noisycorr.engine.setup import pick_device
from noisycorr.errors import InputError
from noisycorr.methods.base import Method, Update

__all__ = ["task_for", "train"]


def task_for(cfg: AnyConfig) -> PairTask | LabelTask:
    """The task object of a config (``task: labels`` -> :class:`LabelTask`, else :class:`PairTask`)."""
    return LabelTask() if isinstance(cfg, LabeledConfig) else PairTask()


def _as_update(result: Any) -> Update:
    return result if isinstance(result, Update) else Update(*result)


def _updates(
    method: Method, batch: Any, epoch: int, phase: str, streams: Mapping[str, Any], use_amp: bool,
    control: Stepper | None,
) -> Iterator[Update]:
    """The optimiser updates of one batch: a method returns one update or yields several."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    kwargs: dict[str, Any] = {"phase": phase, "streams": streams}
    if method.manual_optimization:
        kwargs["control"] = control
    with autocast:
        result = method.training_step(batch, epoch, **kwargs)
    if isinstance(result, (tuple, Update)):
        yield _as_update(result)
        return
    while True:
        with autocast:
            try:
                update = next(result)
            except StopIteration:
                return
        yield _as_update(update)


def _load_resume_state(paths: RunPaths, method: Method, optimizers: Optimizers, scaler: Any) -> dict[str, Any]:
    state = load_state(paths.state)
    method.load_state_dict(state["method"])
    if "optimizers" in state:
        optimizers.load_state_dict(state["optimizers"])
    else:  # checkpoints written before methods named their optimisers: one optimiser
        optimizers.load_state_dict({"main": state["optimizer"]})
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return state


def train(cfg: AnyConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (either task) into ``cfg.run.out_dir``; returns the best validation and the test metrics.

    With ``resume=True`` a run folder holding a checkpoint continues after its last finished epoch
    and ends with the same metrics as an uninterrupted run (per-epoch reseeding, deterministic batches).
    """
    task = task_for(cfg)
    cfg = _run_earlier_stage(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = dist.init_from_env(pick_device(cfg.train.device))
    world, main = dist.world_size(), dist.is_main()
    if cfg.train.batch_size % world:
        raise InputError("train.batch_size", f"a multiple of the {world} ranks (the global batch is split evenly)",
                         str(cfg.train.batch_size))
    check_values(cfg, "config")  # configs built in code, not through load_config
    paths = RunPaths(Path(cfg.run.out_dir))
    if main:
        check_writable_dir(paths.root, what="the run folder (run.out_dir)")
    if paths.state.exists() and not resume:
        raise InputError(paths.root, "an empty run folder (or --resume)", "a run that already has a checkpoint")
    resuming = resume and paths.state.exists()
    if resuming:
        check_same_settings(paths.config, cfg)
    data = task.prepare(cfg, paths, resuming=resuming)  # all validation happens before anything is written
    seed_everything(cfg.train.seed)
    train_set = task.build_train_set(cfg, data)  # before the method: it may add words to the vocabulary
    method = task.build_method(cfg, data).to(device)
    optimizers = Optimizers(method, cfg.train)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    stepper = Stepper(optimizers, scaler, cfg.train.grad_clip)
    meta = task.weights_metadata(cfg, data)
    metric = task.metric

    start_epoch, best, history = 0, {metric: -math.inf, "epoch": -1}, []
    if resuming:
        state = _load_resume_state(paths, method, optimizers, scaler)
        start_epoch, best, history = state["epoch"] + 1, dict(state["best"]), list(state["history"])
    if main:
        paths.root.mkdir(parents=True, exist_ok=True)
        for stale in paths.root.glob(".*.tmp"):  # left by a process killed while writing a file
            stale.unlink(missing_ok=True)
        if not resuming:
            save_config(cfg, paths.config)
            task.write_run_files(cfg, data, paths)
    dist.broadcast_module(method)
    dist.barrier()
    logger = MetricsLogger(paths.root, history, tensorboard=cfg.run.tensorboard) if main else None
    show = cfg.run.progress and main  # the epoch lines
    bars = show and sys.stderr.isatty()  # progress bars: on a terminal only, never into a log file
    ctx = task.context(cfg, method, data, train_set, device)
    ctx.progress = bars
    truth = task.truth(data)
    pairing = task.pairing(data)  # diagnostics only, like the truth
    t_start = time.perf_counter()

    for epoch in range(start_epoch, cfg.train.epochs):
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        row: dict[str, Any] = {"epoch": epoch, **optimizers.set_epoch(epoch)}
        task.set_epoch(train_set, epoch)
        method.train()
        t0 = time.perf_counter()
        row.update(method.on_epoch_start(epoch, ctx))
        row["select_seconds"] = round(time.perf_counter() - t0, 3)
        method.train()
        if main:
            row.update(diagnostics_row(method.diagnostics(), truth, pairing))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        for k, phase in enumerate(method.epoch_phases(epoch)):
            batches = task.phase_batches(cfg, train_set, phase, epoch, k)
            if len(batches) == 0 and batches.samples > 0 and main:
                msg = (f"warning: epoch {epoch + 1} phase {phase.name!r}: its {batches.samples} samples make no "
                       f"batch of {cfg.train.batch_size}, so it takes no step this epoch")
                tqdm.write(msg, file=sys.stderr)
            row[f"steps_{phase.name}"] = row.get(f"steps_{phase.name}", 0) + len(batches)
            desc = f"epoch {epoch + 1}/{cfg.train.epochs}" + (f" {phase.name}" if phase.name != "train" else "")
            bar = tqdm(batches, total=len(batches), desc=desc, disable=not bars, leave=False)
            for step, (batch, streams) in enumerate(bar):
                batch = batch.to(device)
                streams = {name: b.to(device) for name, b in streams.items()}
                try:
                    for update in _updates(method, batch, epoch, phase.name, streams, use_amp, stepper):
                        loss = sum(update.losses.values())
                        if not method.manual_optimization:
                            stepper.update(loss, update.optimizers)
                        values = {**{f"loss_{n}": float(v.detach()) for n, v in update.losses.items()},
                                  **update.logs}
                        for key, value in values.items():
                            sums[key] = sums.get(key, 0.0) + float(value)
                            counts[key] = counts.get(key, 0) + 1
                        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                except NonFiniteLoss:
                    raise _diverged(paths, epoch, phase.name, step) from None
        sums, counts = dist.merge_sums(sums, counts)
        row.update({key: total / counts[key] for key, total in sums.items()})
        row["train_seconds"] = round(time.perf_counter() - t0, 3)
        dist.average_norm_stats(method)
        dist.check_in_sync(method, f"epoch {epoch + 1}")
        epoch_diag = method.epoch_diagnostics()  # on every rank: a method may gather across ranks here
        if not main:
            continue
        row.update(diagnostics_row(epoch_diag, truth, pairing))
        val = task.validate(cfg, method, data, device)
        row.update({f"val_{k}": v for k, v in val.items()})
        if val[metric] > best[metric]:
            best = {metric: float(val[metric]), "epoch": epoch}
            export_weights(method, paths.best, meta)
            write_json(paths.best_json, {"epoch": epoch, "val": val})
        row["best_epoch"] = best["epoch"]
        logger.log_epoch(row)
        atomic_torch_save(
            {
                "epoch": epoch,
                "method": method.state_dict(),
                "optimizers": optimizers.state_dict(),
                "scaler": scaler.state_dict(),
                "best": best,
                "history": logger.history,
            },
            paths.state,
        )
        if show:
            loss_sum = sum(v for k, v in row.items() if k.startswith("loss_"))
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.train.epochs}  loss {loss_sum:.3f}  {task.summary(val)}"
                f"  (best {best[metric]:{task.metric_format}} @ {best['epoch'] + 1})"
            )
    if logger is not None:
        logger.close()
        if have_matplotlib() and logger.history:
            plot_history(logger.history, paths.curves, metric=f"val_{metric}", label=task.metric_label)
    dist.barrier()  # rank 0's best weights are written before every rank reloads them
    return task.finish(cfg, method, data, device, ctx, paths, train_seconds=time.perf_counter() - t_start)


def stage_plan(cfg: AnyConfig) -> tuple[AnyConfig | None, AnyConfig]:
    """The run ``cfg``'s method starts from (:meth:`Method.earlier_stage`; ``None`` when there is none) and
    the config this run trains and saves once that stage is planned (e.g. pointing at the stage's weights)."""
    if isinstance(cfg, LabeledConfig):
        return None, cfg
    from noisycorr.factory import get_method_class

    plan = get_method_class(str(cfg.method["name"])).earlier_stage(cfg)
    return (None, cfg) if plan is None else plan


def _run_earlier_stage(cfg: AnyConfig) -> AnyConfig:
    """Train, resume or reuse the run the method starts from (:meth:`Method.earlier_stage`); this run's config."""
    stage_cfg, cfg = stage_plan(cfg)
    if stage_cfg is None:
        return cfg
    paths = RunPaths(Path(stage_cfg.run.out_dir))
    with _stage_lock(paths.root):
        if paths.results.is_file():
            check_same_settings(paths.config, stage_cfg, purpose="to reuse it as the earlier stage")
            if cfg.run.progress and dist.is_main():
                tqdm.write(f"earlier stage: reusing the finished run {paths.root}", file=sys.stderr)
        else:
            train(stage_cfg, resume=paths.state.exists())
    return cfg


@contextlib.contextmanager
def _stage_lock(root: Path) -> Iterator[None]:
    """Hold a lock named after ``root`` so that runs sharing an earlier stage (two bench jobs) train it once:
    the second waits, then reuses it. The lock file lives in the temporary folder (a refused run writes
    nothing where it was asked to). Single-process runs only: ranks of one run must not wait on each other."""
    if dist.world_size() > 1:
        yield
        return
    import fcntl
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"noisycorr-stage-{digest}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _diverged(paths: RunPaths, epoch: int, phase: str, step: int) -> InputError:
    """The one-line error of a NaN / infinite loss; the checkpoint on disk is the last finished epoch."""
    if epoch > 0:
        kept = f"the checkpoint of epoch {epoch} (the last finished one) is kept in {paths.state}"
    else:
        kept = "no epoch had finished, so there is no checkpoint"
    return InputError(
        paths.root, f"finite training losses ({kept}; lower train.lr or check the data)",
        "a NaN or infinite loss", where=f"epoch {epoch + 1}, phase {phase!r}, step {step + 1}",
    )
