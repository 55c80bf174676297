"""The training loop: everything that is not the paper (devices, AMP, optimiser, schedule, clipping,
loaders, validation, model selection, checkpoints, resume, logging)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from noisycorr.config import Config, config_from_dict, save_config
from noisycorr.data.dataset import PairBatch, PairDataset, make_loader
from noisycorr.data.noise import save_noise
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.engine.checkpoint import atomic_torch_save, export_weights, load_state, load_weights
from noisycorr.engine.context import TrainContext
from noisycorr.engine.inference import evaluate_method
from noisycorr.engine.logger import MetricsLogger
from noisycorr.engine.plots import have_matplotlib, plot_history
from noisycorr.engine.seeding import epoch_seed, seed_everything
from noisycorr.engine.setup import (
    PreparedData,
    build_method,
    noise_record,
    pick_device,
    prepare_data,
    write_json,
)
from noisycorr.errors import InputError
from noisycorr.methods.base import Method, Phase, StepOutput

STATE_FILE = "checkpoint.pt"
BEST_FILE = "best.safetensors"
SCORES_FILE = "pair_scores.npy"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@dataclass
class RunPaths:
    """The files of a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def best(self) -> Path:
        return self.root / BEST_FILE


def make_optimizer(cfg: Config, method: Method) -> torch.optim.Optimizer:
    params = [p for p in method.parameters() if p.requires_grad]
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    raise InputError("train.optimizer", "adam or adamw", repr(cfg.train.optimizer))


def step_lr(cfg: Config, epoch: int) -> float:
    """Step schedule: ``lr * lr_decay ** (epoch // lr_update)``."""
    return cfg.train.lr * cfg.train.lr_decay ** (epoch // max(cfg.train.lr_update, 1))


def weights_metadata(cfg: Config, image_shape: tuple[int, ...] | None = None) -> dict[str, str]:
    """What identifies compatible weights; the image feature shape lets a run be rebuilt from its folder."""
    meta = {"backbone": cfg.model.backbone, "method": str(cfg.method["name"]), "format": "noisycorr-1"}
    if image_shape is not None:
        meta["image_shape"] = ",".join(str(int(d)) for d in image_shape)
    return meta


_MACHINE_KEYS = ("device", "threads", "num_workers")


def check_same_settings(config_path: Path, cfg: Config, *, purpose: str = "to resume") -> None:
    """Raise :class:`InputError` when the run saved at ``config_path`` trained other settings than ``cfg``.

    Where and how fast a run goes (device, threads, workers) and the ``run`` section may differ.
    """
    saved = config_from_dict(yaml.safe_load(config_path.read_text(encoding="utf-8")), str(config_path))
    a, b = saved.to_dict(), cfg.to_dict()
    for key in _MACHINE_KEYS:
        a["train"].pop(key), b["train"].pop(key)
    for section in ("data", "noise", "model", "train", "method"):
        if a[section] != b[section]:
            diff = sorted(k for k in set(a[section]) | set(b[section]) if a[section].get(k) != b[section].get(k))
            raise InputError(config_path, f"the same {section} settings {purpose}", f"changed keys {diff}")


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, the peak allocated GPU memory (MiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mib": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _updates(
    method: Method, batch: PairBatch, epoch: int, phase: str, side: PairBatch | None, use_amp: bool
) -> Iterator[StepOutput]:
    """The optimiser updates of one batch: a method returns one ``(losses, logs)`` or yields several."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
    with autocast:
        result = method.training_step(batch, epoch, phase=phase, side=side)
    if isinstance(result, tuple):
        yield result
        return
    while True:
        with autocast:
            try:
                update = next(result)
            except StopIteration:
                return
        yield update


class PhaseBatches:
    """Batches of a phase's main stream, each paired with a batch of its side stream (or None)."""

    def __init__(self, dataset: PairDataset, phase: Phase, batch_size: int, seed: int, num_workers: int, stream: int):
        self.dataset, self.phase, self.batch_size, self.seed = dataset, phase, batch_size, seed
        self.num_workers, self.stream = num_workers, stream
        self.main = make_loader(
            dataset, batch_size, shuffle=True, seed=seed, num_workers=num_workers, drop_last=True,
            epoch=2 * stream, indices=phase.indices,
        )

    def __len__(self) -> int:
        return len(self.main)

    def _side_loader(self, cycle: int) -> Any:
        side = self.phase.side
        return make_loader(
            self.dataset, self.batch_size, shuffle=True, seed=self.seed + 1000 * cycle, num_workers=self.num_workers,
            drop_last=len(side) >= self.batch_size, epoch=2 * self.stream + 1, indices=side,
        )

    def __iter__(self) -> Iterator[tuple[PairBatch, PairBatch | None]]:
        side = self.phase.side
        use_side = side is not None and len(side) >= 2
        cycle, side_iter = 0, iter(self._side_loader(0)) if use_side else None
        for batch in self.main:
            extra = None
            if side_iter is not None:
                try:
                    extra = next(side_iter)
                except StopIteration:
                    cycle += 1
                    side_iter = iter(self._side_loader(cycle))
                    extra = next(side_iter)
            yield batch, extra


def phase_batches(dataset: PairDataset, phase: Phase, cfg: Config, epoch: int, *, stream: int) -> PhaseBatches:
    """The shuffled batches of one phase of ``epoch``; the order depends only on (seed, epoch, stream)."""
    return PhaseBatches(
        dataset, phase, cfg.train.batch_size, epoch_seed(cfg.train.seed, epoch), cfg.train.num_workers, stream
    )


def selection_diagnostics(method: Method, data: PreparedData) -> dict[str, float]:
    """Detection quality of the method's current clean probabilities, when the noise is synthetic.

    The ground-truth mask is read here and nowhere else during training: it only reaches the log.
    """
    if data.noise is None or not method.selections:
        return {}
    from noisycorr.eval.detection import detection_metrics

    out: dict[str, float] = {}
    for name, sel in method.selections.items():
        metrics = detection_metrics(sel.prob, sel.clean, data.clean)
        out.update({f"det_{name}_{k}": round(float(v), 5) for k, v in metrics.items()})
        if sel.loss is not None:
            loss_auc = detection_metrics(-np.asarray(sel.loss, dtype=np.float64), sel.clean, data.clean)["auc"]
            out[f"det_{name}_loss_auc"] = round(float(loss_auc), 5)
    return out


def make_context(cfg: Config, method: Method, data: PreparedData, train_set: PairDataset,
                 device: torch.device) -> TrainContext:
    """Per-sample passes see the (noisy) training pairs without augmentation."""
    plain = PairDataset(data.train, data.vocab, data.caption_image, train=False, encoded=train_set.encoded)
    return TrainContext(method, plain, cfg.train.batch_size, device, seed=cfg.train.seed,
                        epochs=cfg.train.epochs, progress=cfg.run.progress)


def train(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``cfg.run.out_dir``; returns the best validation and the test metrics.

    With ``resume=True`` a run folder holding a checkpoint continues after its last finished epoch
    and ends with the same metrics as an uninterrupted run (per-epoch reseeding, deterministic loaders).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    paths = RunPaths(Path(cfg.run.out_dir))
    if paths.state.exists() and not resume:
        raise InputError(paths.root, "an empty run folder (or --resume)", "a run that already has a checkpoint")
    data = prepare_data(cfg)  # all validation happens before anything is written
    seed_everything(cfg.train.seed)
    train_set = PairDataset(
        data.train,
        data.vocab,
        data.caption_image,
        train=True,
        region_drop=cfg.data.region_drop,
        token_aug=cfg.data.token_aug,
        seed=cfg.train.seed,
    )
    image_shape = tuple(data.train.images.shape[1:])
    method = build_method(cfg, data.vocab, image_shape).to(device)
    optimizer = make_optimizer(cfg, method)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, history = 0, {"rsum": -math.inf, "epoch": -1}, []
    if resume and paths.state.exists():
        check_same_settings(paths.config, cfg)
        state = load_state(paths.state)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, history = state["epoch"] + 1, dict(state["best"]), list(state["history"])
    else:
        paths.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths.config)
        data.vocab.to_json(paths.root / "vocab.json")
        write_json(paths.root / "noise.json", noise_record(data))
        if data.noise_index is not None:
            save_noise(paths.root / "noise_index.npy", data.noise_index)
    logger = MetricsLogger(paths.root, history, tensorboard=cfg.run.tensorboard)
    show = cfg.run.progress
    ctx = make_context(cfg, method, data, train_set, device)

    for epoch in range(start_epoch, cfg.train.epochs):
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        lr = step_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        method.train()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        t0 = time.perf_counter()
        row.update(method.on_epoch_start(epoch, ctx))
        row["select_seconds"] = round(time.perf_counter() - t0, 3)
        row.update(selection_diagnostics(method, data))
        sums: dict[str, float] = {}
        n_steps, t0 = 0, time.perf_counter()
        for k, phase in enumerate(method.epoch_phases(epoch)):
            batches = phase_batches(train_set, phase, cfg, epoch, stream=k)
            desc = f"epoch {epoch + 1}/{cfg.train.epochs}" + (f" {phase.name}" if phase.name != "train" else "")
            bar = tqdm(batches, total=len(batches), desc=desc, disable=not show, leave=False)
            for batch, side in bar:
                batch = batch.to(device)
                side = side.to(device) if side is not None else None
                for losses, logs in _updates(method, batch, epoch, phase.name, side, use_amp):
                    loss = sum(losses.values())
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.train.grad_clip > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.train.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    for key, value in {**{f"loss_{k}": float(v.detach()) for k, v in losses.items()}, **logs}.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                n_steps += 1
        row.update({k: v / max(n_steps, 1) for k, v in sums.items()})
        row["train_seconds"] = round(time.perf_counter() - t0, 3)
        val = evaluate_method(
            method.backbones,
            data.val,
            data.vocab,
            protocol="single",
            settings=cfg.eval,
            device=device,
            n_images=cfg.data.val_max_images,
        )
        row.update({f"val_{k}": v for k, v in val.items()})
        if val["rsum"] > best["rsum"]:
            best = {"rsum": float(val["rsum"]), "epoch": epoch}
            export_weights(method, paths.best, weights_metadata(cfg, image_shape))
            write_json(paths.root / "best.json", {"epoch": epoch, "val": val})
        row["best_epoch"] = best["epoch"]
        logger.log_epoch(row)
        atomic_torch_save(
            {
                "epoch": epoch,
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "best": best,
                "history": logger.history,
            },
            paths.state,
        )
        if show:
            loss_sum = sum(v for k, v in row.items() if k.startswith("loss_"))
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.train.epochs}  loss {loss_sum:.3f}"
                f"  val rsum {val['rsum']:.1f}  (best {best['rsum']:.1f} @ {best['epoch'] + 1})"
            )
    logger.close()
    if have_matplotlib() and logger.history:
        plot_history(logger.history, paths.root / "curves.png")
    return finish(cfg, method, data, device, ctx)


def finish(
    cfg: Config, method: Method, data: PreparedData, device: torch.device, ctx: TrainContext
) -> dict[str, Any]:
    """Reload the best weights, evaluate on the test split, score the training pairs, write ``results.json``.

    ``pair_scores.npy`` holds the best model's clean probability of every training pair (see
    :meth:`Method.score_pairs`); with synthetic noise, ``results.json`` also scores it as a detector.
    """
    paths = RunPaths(Path(cfg.run.out_dir))
    load_weights(method, paths.best, expect=weights_metadata(cfg))
    results: dict[str, Any] = {"best": json.loads((paths.root / "best.json").read_text(encoding="utf-8"))}
    if data.test is not None:
        results["test"] = evaluate_method(
            method.backbones,
            data.test,
            data.vocab,
            settings=cfg.eval,
            device=device,
        )
    results["noise"] = noise_record(data)
    scores = method.score_pairs(ctx, seed=cfg.train.seed)
    atomic_write_bytes(paths.root / SCORES_FILE, _npy_bytes(scores.astype(np.float32)))
    if data.noise is not None:
        from noisycorr.eval.detection import detection_metrics, precision_at_top

        clean_pred = scores > 0.5
        results["detection"] = {
            **{k: float(v) for k, v in detection_metrics(scores, clean_pred, data.clean).items()},
            "precision_top10": precision_at_top(1.0 - scores, data.clean, 0.1),
        }
    results["resources"] = peak_memory()
    write_json(paths.root / "results.json", results)
    return results
