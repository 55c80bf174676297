"""The training loop: everything that is not the paper (devices, AMP, optimiser, schedule, clipping,
loaders, validation, model selection, checkpoints, resume, logging)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from noisycorr.config import Config, config_from_dict, save_config
from noisycorr.data.dataset import PairDataset, make_loader
from noisycorr.data.noise import save_noise
from noisycorr.engine.checkpoint import atomic_torch_save, export_weights, load_state, load_weights
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
from noisycorr.methods.base import Method

STATE_FILE = "checkpoint.pt"
BEST_FILE = "best.safetensors"


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


def _check_resume(paths: RunPaths, cfg: Config) -> None:
    saved = config_from_dict(yaml.safe_load(paths.config.read_text(encoding="utf-8")), str(paths.config))
    a, b = saved.to_dict(), cfg.to_dict()
    for key in _MACHINE_KEYS:  # where and how fast it runs may change between the two halves
        a["train"].pop(key), b["train"].pop(key)
    for section in ("data", "noise", "model", "train", "method"):
        if a[section] != b[section]:
            diff = sorted(k for k in set(a[section]) | set(b[section]) if a[section].get(k) != b[section].get(k))
            raise InputError(paths.config, f"the same {section} settings to resume", f"changed keys {diff}")


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
        _check_resume(paths, cfg)
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

    for epoch in range(start_epoch, cfg.train.epochs):
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        lr = step_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        loader = make_loader(
            train_set,
            cfg.train.batch_size,
            shuffle=True,
            seed=epoch_seed(cfg.train.seed, epoch),
            num_workers=cfg.train.num_workers,
            drop_last=True,
        )
        method.train()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(method.on_epoch_start(epoch))
        sums: dict[str, float] = {}
        n_steps, t0 = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not show, leave=False)
        for batch in bar:
            batch = batch.to(device)
            autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
            with autocast:
                losses, logs = method.training_step(batch, epoch)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            n_steps += 1
            for key, value in {**{f"loss_{k}": float(v.detach()) for k, v in losses.items()}, **logs}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
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
    return finish(cfg, method, data, device)


def finish(cfg: Config, method: Method, data: PreparedData, device: torch.device) -> dict[str, Any]:
    """Reload the best weights, evaluate on the test split, write ``results.json``."""
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
    write_json(paths.root / "results.json", results)
    return results
