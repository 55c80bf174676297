"""The noisy-label task: its config, data preparation, training loop and run-folder evaluation.

A labelled config is a YAML file with ``task: labels`` and the sections ``data``, ``noise``, ``model``,
``train``, ``eval``, ``run`` and ``method`` (checked against the dataclasses below; ``extends`` and
``--set section.key=value`` work as for the pair task). :func:`train_labeled` writes a run folder:

* ``config.yaml``: the resolved config;
* ``noise.json`` (kind, scope, requested and realised rates, seed, sha256 of the labels) and
  ``noisy_labels.npy`` ((2, N, C) uint8 image and text labels of the file's *whole* training split);
* ``split.json``: where validation comes from and the validation rows;
* ``metrics.csv``: one row per epoch (losses, validation mAP, the method's logs, and for methods
  that split the data the share of truly correct labels in each subset: diagnostics only);
* ``checkpoint.pt`` (resumable, ``weights_only``), ``best.safetensors`` (best validation average
  mAP), ``best.json`` and ``results.json`` (test mAP of the best weights).

Validation: when the file has no validation split (Wikipedia), ``data.val: train`` carves a seeded
subset of the training split *after* the noise is drawn, so the validation items carry noisy labels
like the rest, and model selection uses those noisy labels (``eval.val_labels: noisy``), since clean
labels are unknown in practice. ``eval.val_labels: clean`` selects on the file's labels instead (an
oracle, for diagnostics). The validation mAP under the file's labels is logged as
``val_clean_avg_map`` either way; it never drives anything.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from noisycorr.config import RunConfig, _merge, apply_sections, parse_overrides, read_yaml, resolve_preset
from noisycorr.data.labeled import (
    LAYOUTS,
    NOISE_KINDS,
    NOISE_SCOPES,
    VAL_SOURCES,
    LabeledData,
    LabeledSplit,
    LabelNoise,
    SplitPlan,
    apply_plan,
    label_checksum,
    load_label_noise,
    make_label_noise,
    plan_validation,
    read_labeled,
    save_label_noise,
)
from noisycorr.engine.checkpoint import (
    atomic_torch_save,
    check_weights_choice,
    export_weights,
    load_last_weights,
    load_state,
    load_weights,
)
from noisycorr.engine.logger import MetricsLogger
from noisycorr.engine.seeding import epoch_seed, seed_everything
from noisycorr.engine.setup import pick_device, write_json
from noisycorr.errors import InputError
from noisycorr.eval.labels import cross_modal_map
from noisycorr.methods.base import Phase, StepOutput
from noisycorr.methods.labeled_base import HARD, NOISY, PURE, LabelBatch, LabelMethod, TrainSet
from noisycorr.factory import get_method_class

TASK = "labels"
STATE_FILE = "checkpoint.pt"
BEST_FILE = "best.safetensors"
NOISE_FILE = "noisy_labels.npy"


# ------------------------------------------------------------------------------------------------ config


@dataclass
class LabeledDataConfig:
    """Which labelled benchmark file to read and how to split it."""

    root: str = ""  # the .mat / .h5 / .npz file, or a DSCMR folder
    name: str = "custom"
    layout: str = "auto"  # auto | wiki-mat | inria-mat | xmedia-mat | xmedianet-mat | h5 | npz | dscmr
    val: str = "auto"  # auto | file | train (seeded subset of train) | test_head (first val_size test items)
    val_size: int | float = 0.1  # items, or a share of the source split
    val_seed: int = 0  # the validation subset stays fixed across run seeds
    normalize: str = "none"  # none | zscore (train statistics) | l2 (per row)


@dataclass
class LabelNoiseConfig:
    """Synthetic label noise injected into the file's training split."""

    kind: str = "sym"  # sym | asym
    scope: str = "per_pair"  # per_pair (NIRNL: shared by image and text) | per_modality (MRL)
    rate: float = 0.0
    seed: int | None = None  # None: the run seed
    transition: str = "pairs"  # asym only: pairs | cyclic | comma-separated target classes
    file: str | None = None  # (2, N, C) noisy labels: loaded when it exists, else written there


@dataclass
class LabeledModelConfig:
    """Sizes of the per-modality MLP encoders (MRL / NIRNL: 4096, 2 hidden layers, 512)."""

    hidden: int = 4096
    hidden_layers: int = 2
    embed_dim: int = 512


@dataclass
class LabeledTrainConfig:
    """Optimisation schedule and engine settings."""

    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine (to 0 over the epochs)
    grad_clip: float = 0.0  # 0: no clipping
    seed: int = 0
    device: str = "auto"
    threads: int | None = None


@dataclass
class LabeledEvalConfig:
    """Evaluation settings."""

    val_labels: str = "noisy"  # noisy (what a user has) | clean (oracle selection, diagnostics)
    k: int | None = None  # mAP cut-off; None ranks every item
    batch_size: int = 1024
    chunk: int = 1024


@dataclass
class LabeledConfig:
    """A noisy-label run (``task: labels``)."""

    task: str = TASK
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)
    model: LabeledModelConfig = field(default_factory=LabeledModelConfig)
    train: LabeledTrainConfig = field(default_factory=LabeledTrainConfig)
    eval: LabeledEvalConfig = field(default_factory=LabeledEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/labels"))
    method: dict[str, Any] = field(default_factory=lambda: {"name": "mrl"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def labeled_config_from_dict(raw: dict[str, Any], source: str = "config") -> LabeledConfig:
    """Build a :class:`LabeledConfig` from nested dicts, rejecting unknown sections and keys."""
    if not isinstance(raw, dict):
        raise InputError(source, "a mapping of sections", type(raw).__name__)
    if "task" in raw and raw["task"] != TASK:
        raise InputError(source, f"task: {TASK}", repr(raw["task"]), where="task")
    cfg = LabeledConfig()
    sections = {k: v for k, v in raw.items() if k != "task"}
    apply_sections(cfg, sections, source, default_method="mrl", expected="task or a section")
    return cfg


def check_labeled_config(cfg: LabeledConfig) -> None:
    """Reject bad enumerations and sizes before anything is read or written."""
    choices = {
        "data.layout": (cfg.data.layout, ("auto", *LAYOUTS)),
        "data.val": (cfg.data.val, VAL_SOURCES),
        "data.normalize": (cfg.data.normalize, ("none", "zscore", "l2")),
        "noise.kind": (cfg.noise.kind, NOISE_KINDS),
        "noise.scope": (cfg.noise.scope, NOISE_SCOPES),
        "train.optimizer": (cfg.train.optimizer, ("adam", "adamw", "sgd")),
        "train.schedule": (cfg.train.schedule, ("constant", "cosine")),
        "eval.val_labels": (cfg.eval.val_labels, ("noisy", "clean")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(key, f"one of {', '.join(allowed)}", repr(value))
    positive = {
        "model.hidden": cfg.model.hidden,
        "model.embed_dim": cfg.model.embed_dim,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise InputError(key, "a positive integer", repr(value))
    if not 0.0 <= cfg.noise.rate <= 1.0:
        raise InputError("noise.rate", "a rate in [0, 1]", repr(cfg.noise.rate))
    if cfg.train.lr <= 0:
        raise InputError("train.lr", "a positive learning rate", repr(cfg.train.lr))


def read_preset_layers(preset: str) -> tuple[dict[str, Any], str]:
    """A preset (name or path) with its ``extends`` chain merged; returns (raw dict, source)."""
    path = resolve_preset(preset)
    chain = [read_yaml(path)]
    seen = {path.resolve()}
    while "extends" in chain[-1]:
        parent = resolve_preset(str(chain[-1].pop("extends")))
        if parent.resolve() in seen:
            raise InputError(path, "no cycle of `extends`", str(parent))
        seen.add(parent.resolve())
        chain.append(read_yaml(parent))
    raw: dict[str, Any] = {}
    for layer in reversed(chain):
        raw = _merge(raw, layer)
    return raw, str(path)


def load_labeled_config(preset: str | None = None, overrides: list[str] | None = None) -> LabeledConfig:
    """Preset (name or path) + ``section.key=value`` overrides -> checked :class:`LabeledConfig`."""
    raw, source = read_preset_layers(preset) if preset else ({}, "defaults")
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source = f"{source} + --set"
    return labeled_config_from_dict(raw, source)


def save_labeled_config(cfg: LabeledConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def read_run_config(run_dir: str | Path) -> LabeledConfig:
    """The resolved config saved in a labelled run folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise InputError(Path(run_dir), "a run folder with config.yaml", "no config.yaml")
    return labeled_config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


# -------------------------------------------------------------------------------------------------- data


@dataclass
class PreparedLabels:
    """Everything a labelled run reads, loaded and checked before anything is written.

    Attributes:
        data: the file's splits.
        plan: the validation plan (rows of the file's train / test splits).
        train, val, test: the splits used, with the file's (clean) labels and normalised features.
        noisy: (2, N_file_train, C) bool noisy labels of the file's whole training split.
        noise: the draw (None when loaded from a file or when the rate is 0).
        noise_record: what ``noise.json`` holds.
    """

    data: LabeledData
    plan: SplitPlan
    train: LabeledSplit
    val: LabeledSplit
    test: LabeledSplit
    noisy: np.ndarray
    noise: LabelNoise | None
    noise_record: dict[str, Any]

    @property
    def train_noisy(self) -> np.ndarray:
        """(2, N_train, C) noisy labels of the training items."""
        return self.noisy[:, self.plan.train_index]

    @property
    def val_noisy(self) -> np.ndarray | None:
        """(2, N_val, C) noisy labels of the validation items when they come from the training split."""
        return self.noisy[:, self.plan.val_index] if self.plan.source == "train" else None


def _transition_spec(text: str) -> str | list[int]:
    if text in ("pairs", "cyclic"):
        return text
    try:
        return [int(t) for t in str(text).split(",")]
    except ValueError:
        raise InputError("noise.transition", "pairs, cyclic or comma-separated classes", repr(text)) from None


def _normalize(splits: Sequence[LabeledSplit], mode: str) -> list[LabeledSplit]:
    """Normalise features; ``zscore`` uses the statistics of the first split (train)."""
    if mode == "none":
        return list(splits)
    if mode == "l2":

        def l2(x: np.ndarray) -> np.ndarray:
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

        return [LabeledSplit(l2(s.images), l2(s.texts), s.labels) for s in splits]
    if mode == "zscore":
        ref = splits[0]
        stats = []
        for x in (ref.images, ref.texts):
            std = x.std(0)
            stats.append((x.mean(0), np.where(std > 1e-12, std, 1.0)))
        (mi, si), (mt, st) = stats
        return [
            LabeledSplit(((s.images - mi) / si).astype(np.float32), ((s.texts - mt) / st).astype(np.float32), s.labels)
            for s in splits
        ]
    raise InputError("data.normalize", "none, zscore or l2", repr(mode))


def prepare_labeled(cfg: LabeledConfig, *, noise_file: str | Path | None = None) -> PreparedLabels:
    """Read the data, draw (or load) the label noise, plan validation and normalise features.

    Args:
        cfg: the run config.
        noise_file: a (2, N, C) noisy-label file that overrides ``cfg.noise`` (re-evaluating a run).
    """
    check_labeled_config(cfg)
    if not cfg.data.root:
        raise InputError("data.root", "a labelled dataset file or folder", "nothing (set data.root)")
    data = read_labeled(cfg.data.root, layout=cfg.data.layout)
    n, c = data.train.labels.shape
    nz = cfg.noise
    seed = cfg.train.seed if nz.seed is None else nz.seed
    noise: LabelNoise | None = None
    given = Path(noise_file) if noise_file else (Path(nz.file).expanduser() if nz.file else None)
    if given is not None and given.is_file():
        noisy = load_label_noise(given, n, c)
        record: dict[str, Any] = {"kind": nz.kind, "scope": nz.scope, "rate": nz.rate, "file": str(given)}
    else:
        noise = make_label_noise(
            data.train.labels,
            rate=nz.rate,
            kind=nz.kind,
            scope=nz.scope,
            seed=seed,
            transition=_transition_spec(nz.transition),
        )
        noisy = noise.labels
        record = noise.record(data.train.labels)
    changed = (noisy != data.train.labels[None]).any(-1)
    record.update(
        realised_rate_image=float(changed[0].mean()),
        realised_rate_text=float(changed[1].mean()),
        realised_rate_pair=float(changed.any(0).mean()),
        checksum=label_checksum(noisy),
    )
    plan = plan_validation(data, cfg.data.val, cfg.data.val_size, cfg.data.val_seed)
    train, val, test = _normalize(apply_plan(data, plan), cfg.data.normalize)
    if noise is not None and given is not None:  # written once everything else has been checked
        given.parent.mkdir(parents=True, exist_ok=True)
        save_label_noise(given, noisy)
    return PreparedLabels(data, plan, train, val, test, noisy, noise, record)


# ------------------------------------------------------------------------------------------ method / loop


def build_labeled_method(cfg: LabeledConfig, image_dim: int, text_dim: int, num_classes: int) -> LabelMethod:
    """Instantiate the configured labelled-task method."""
    values = dict(cfg.method)
    name = str(values.pop("name"))
    cls = get_method_class(name)
    if getattr(cls, "task", "pairs") != TASK:
        raise InputError("method.name", "a method of the labelled task (ce, mrl, nirnl)", repr(name))
    m = cfg.model
    return cls(
        cls.make_config(values, source="method"),
        image_dim=image_dim,
        text_dim=text_dim,
        num_classes=num_classes,
        hidden=m.hidden,
        hidden_layers=m.hidden_layers,
        embed_dim=m.embed_dim,
    )


def make_labeled_optimizer(cfg: LabeledConfig, method: LabelMethod) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in method.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    raise InputError("train.optimizer", "adam, adamw or sgd", repr(t.optimizer))


def epoch_lr(cfg: LabeledConfig, epoch: int) -> float:
    """``constant``: lr; ``cosine``: lr * (1 + cos(pi * epoch / epochs)) / 2."""
    t = cfg.train
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(t.epochs, 1)))
    raise InputError("train.schedule", "constant or cosine", repr(t.schedule))


def weights_metadata(cfg: LabeledConfig, image_dim: int, text_dim: int, num_classes: int) -> dict[str, str]:
    """What identifies compatible weights, and the sizes needed to rebuild the method."""
    return {
        "task": TASK,
        "method": str(cfg.method["name"]),
        "format": "noisycorr-1",
        "image_dim": str(image_dim),
        "text_dim": str(text_dim),
        "num_classes": str(num_classes),
    }


def _batches(phase: Phase, n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Shuffled index batches of a phase (the last, smaller one kept; single items dropped)."""
    idx = np.arange(n) if phase.indices is None else np.asarray(phase.indices)
    order = idx[np.random.RandomState(seed % (2**32)).permutation(idx.shape[0])]
    for start in range(0, order.shape[0], batch_size):
        chunk = order[start : start + batch_size]
        if chunk.shape[0] >= 2:
            yield chunk


def _updates(method: LabelMethod, batch: LabelBatch, epoch: int, phase: str) -> Iterator[StepOutput]:
    result = method.training_step(batch, epoch, phase=phase)
    if isinstance(result, tuple):
        yield result
    else:
        yield from result


@torch.no_grad()
def embed_split(
    method: LabelMethod, split: LabeledSplit, device: torch.device, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) image and (N, D) text embeddings of a split, on the CPU."""
    method.eval()
    img = method.embed(torch.from_numpy(split.images).to(device), method.encode_images, batch_size)
    txt = method.embed(torch.from_numpy(split.texts).to(device), method.encode_texts, batch_size)
    return img.cpu(), txt.cpu()


def _map(cfg: LabeledConfig, img: Any, txt: Any, labels: np.ndarray) -> dict[str, float]:
    """mAP with (2, N, C) image / text labels (or (N, C) shared ones)."""
    li, lt = (labels[0], labels[1]) if labels.ndim == 3 else (labels, labels)
    return cross_modal_map(img, txt, li, lt, k=cfg.eval.k, chunk=cfg.eval.chunk)


def validate(cfg: LabeledConfig, method: LabelMethod, prep: PreparedLabels, device: torch.device) -> dict[str, float]:
    """Validation mAP under the selection labels (``avg_map`` ...) and the file's labels (``clean_*``)."""
    img, txt = embed_split(method, prep.val, device, cfg.eval.batch_size)
    clean = _map(cfg, img, txt, prep.val.labels)
    noisy = prep.val_noisy
    if cfg.eval.val_labels not in ("noisy", "clean"):
        raise InputError("eval.val_labels", "noisy or clean", repr(cfg.eval.val_labels))
    chosen = clean if noisy is None or cfg.eval.val_labels == "clean" else _map(cfg, img, txt, noisy)
    return {**chosen, **{f"clean_{k}": v for k, v in clean.items()}}


def partition_diagnostics(method: LabelMethod, clean_labels: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    """How right a method's pure / hard / noisy split is; reads the clean labels, so only the log sees it.

    Args:
        clean_labels: (N, C) clean labels of the training items.
        noisy: (2, N, C) the noisy labels the method trained with.
    """
    codes = method.partition()
    if codes is None:
        return {}
    correct = (noisy == clean_labels[None]).all(-1)  # (2, N)
    both = correct.all(0)
    out = {"diag_clean_share": float(both.mean())}
    for name, code in (("pure", PURE), ("hard", HARD), ("noisy", NOISY)):
        sel = codes == code
        out[f"diag_{name}_clean"] = float(both[sel].mean()) if sel.any() else float("nan")
    return out


def _check_resume(root: Path, cfg: LabeledConfig) -> None:
    saved = read_run_config(root).to_dict()
    now = cfg.to_dict()
    for d in (saved, now):
        for key in ("device", "threads"):
            d["train"].pop(key)
    for section in ("data", "noise", "model", "train", "method"):
        if saved[section] != now[section]:
            diff = sorted(
                k for k in set(saved[section]) | set(now[section]) if saved[section].get(k) != now[section].get(k)
            )
            raise InputError(root / "config.yaml", f"the same {section} settings to resume", f"changed keys {diff}")


def train_labeled(cfg: LabeledConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train a labelled-task method into ``cfg.run.out_dir``; returns the best validation and test mAP.

    With ``resume=True`` a run folder with a checkpoint continues after its last finished epoch and
    ends as an uninterrupted run would (every epoch reseeds Python, NumPy and torch, and its batch
    order depends only on (seed, epoch, phase)).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    root = Path(cfg.run.out_dir)
    state_path, best_path = root / STATE_FILE, root / BEST_FILE
    if state_path.exists() and not resume:
        raise InputError(root, "an empty run folder (or --resume)", "a run that already has a checkpoint")
    if resume and state_path.exists():
        _check_resume(root, cfg)
        prep = prepare_labeled(cfg, noise_file=root / NOISE_FILE)
    else:
        prep = prepare_labeled(cfg)
    seed_everything(cfg.train.seed)
    dims = (prep.train.images.shape[1], prep.train.texts.shape[1], prep.data.num_classes)
    method = build_labeled_method(cfg, *dims).to(device)
    optimizer = make_labeled_optimizer(cfg, method)
    meta = weights_metadata(cfg, *dims)

    start_epoch, best, history = 0, {"avg_map": -math.inf, "epoch": -1}, []
    if resume and state_path.exists():
        state = load_state(state_path)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, history = state["epoch"] + 1, dict(state["best"]), list(state["history"])
    else:
        root.mkdir(parents=True, exist_ok=True)
        save_labeled_config(cfg, root / "config.yaml")
        save_label_noise(root / NOISE_FILE, prep.noisy)
        write_json(root / "noise.json", prep.noise_record)
        write_json(
            root / "split.json",
            {
                "val": prep.plan.source,
                "n_train": len(prep.train),
                "n_val": len(prep.val),
                "n_test": len(prep.test),
                "val_index": prep.plan.val_index.tolist(),
            },
        )
    logger = MetricsLogger(root, history, tensorboard=cfg.run.tensorboard)

    train_noisy = prep.train_noisy
    train_set = TrainSet(
        torch.from_numpy(prep.train.images).to(device),
        torch.from_numpy(prep.train.texts).to(device),
        torch.from_numpy(train_noisy.astype(np.float32)).to(device),
    )
    n = len(train_set)
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.train.epochs):
        seed = epoch_seed(cfg.train.seed, epoch)
        seed_everything(seed)
        lr = epoch_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        method.train()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(method.on_epoch_start(epoch, train_set))
        method.train()
        row.update(partition_diagnostics(method, prep.train.labels, train_noisy))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for stream, phase in enumerate(method.epoch_phases(epoch)):
            for idx in _batches(phase, n, cfg.train.batch_size, seed + 7919 * stream):
                rows = torch.from_numpy(idx).to(device)
                batch = LabelBatch(
                    rows,
                    train_set.images[rows],
                    train_set.texts[rows],
                    train_set.labels[0, rows],
                    train_set.labels[1, rows],
                )
                for losses, logs in _updates(method, batch, epoch, phase.name):
                    loss = sum(losses.values())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.train.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.train.grad_clip)
                    optimizer.step()
                    for key, value in {**{f"loss_{k}": float(v.detach()) for k, v in losses.items()}, **logs}.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                        counts[key] = counts.get(key, 0) + 1
        row.update({k: v / counts[k] for k, v in sums.items()})
        row["train_seconds"] = round(time.perf_counter() - t0, 3)
        val = validate(cfg, method, prep, device)
        row.update({f"val_{k}": v for k, v in val.items()})
        if val["avg_map"] > best["avg_map"]:
            best = {"avg_map": float(val["avg_map"]), "epoch": epoch}
            export_weights(method, best_path, meta)
            write_json(root / "best.json", {"epoch": epoch, "val": val})
        row["best_epoch"] = best["epoch"]
        logger.log_epoch(row)
        atomic_torch_save(
            {
                "epoch": epoch,
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": best,
                "history": logger.history,
            },
            state_path,
        )
        if cfg.run.progress:
            loss_sum = sum(v for k, v in row.items() if k.startswith("loss_"))
            print(
                f"epoch {epoch + 1}/{cfg.train.epochs}  loss {loss_sum:.3f}"
                f"  val mAP i2t {val['i2t_map']:.4f} t2i {val['t2i_map']:.4f} avg {val['avg_map']:.4f}"
                f"  (best {best['avg_map']:.4f} @ {best['epoch'] + 1})",
                flush=True,
            )
    logger.close()
    return finish_labeled(cfg, method, prep, device, train_seconds=time.perf_counter() - t_start)


def finish_labeled(
    cfg: LabeledConfig, method: LabelMethod, prep: PreparedLabels, device: torch.device, *, train_seconds: float = 0.0
) -> dict[str, Any]:
    """Reload the best weights, evaluate on the test split, write ``results.json``."""
    root = Path(cfg.run.out_dir)
    dims = (prep.train.images.shape[1], prep.train.texts.shape[1], prep.data.num_classes)
    load_weights(method, root / BEST_FILE, expect=weights_metadata(cfg, *dims))
    img, txt = embed_split(method, prep.test, device, cfg.eval.batch_size)
    results: dict[str, Any] = {
        "task": TASK,
        "method": str(cfg.method["name"]),
        "best": read_json(root / "best.json"),
        "test": _map(cfg, img, txt, prep.test.labels),
        "noise": prep.noise_record,
        "split": {
            "val": prep.plan.source,
            "n_train": len(prep.train),
            "n_val": len(prep.val),
            "n_test": len(prep.test),
        },
        "train_seconds": round(train_seconds, 1),
    }
    write_json(root / "results.json", results)
    return results


def read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


# -------------------------------------------------------------------------------------------- run folders


def is_labeled_run(run_dir: str | Path) -> bool:
    """Whether a run folder holds a labelled-task run (its config says ``task: labels``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return False
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and raw.get("task") == TASK


def load_labeled_run(
    run_dir: str | Path, *, device: str = "cpu", weights: str = "best"
) -> tuple[LabeledConfig, LabelMethod, PreparedLabels]:
    """A run's config, its method (eval mode; ``best`` or ``last`` weights) and its data with the run's noise."""
    check_weights_choice(weights)
    root = Path(run_dir)
    cfg = read_run_config(root)
    prep = prepare_labeled(cfg, noise_file=root / NOISE_FILE)
    dims = (prep.train.images.shape[1], prep.train.texts.shape[1], prep.data.num_classes)
    method = build_labeled_method(cfg, *dims)
    if weights == "last":
        load_last_weights(method, root / STATE_FILE)
    else:
        load_weights(method, root / BEST_FILE, expect=weights_metadata(cfg, *dims))
    return cfg, method.to(pick_device(device)).eval(), prep


def evaluate_labeled_run(
    run_dirs: str | Path | Sequence[str | Path],
    *,
    split: str | None = None,
    device: str = "cpu",
    weights: str = "best",
) -> dict[str, float]:
    """mAP of one run, or of several runs' averaged cosine similarities.

    Args:
        run_dirs: one run folder or several (trained on the same data file).
        split: ``test`` (default) or ``val``; ``val`` scores with the labels the runs selected on
            (``avg_map`` ...) and with the file's labels (``clean_*``).
        device: where to embed.
        weights: ``best`` (the validation-chosen epoch) or ``last`` (the last finished epoch).
    """
    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not dirs:
        raise InputError("eval", "at least one run folder", "none")
    split = split or "test"
    if split not in ("test", "val"):
        raise InputError("--split", "test or val", repr(split))
    loaded = [load_labeled_run(d, device=device, weights=weights) for d in dirs]
    cfg, _, prep = loaded[0]
    for d, (_, _, other) in zip(dirs[1:], loaded[1:]):
        if other.data.source != prep.data.source or len(getattr(other, split)) != len(getattr(prep, split)):
            raise InputError(d, f"a run on the same data as {dirs[0]}", f"data {other.data.source}")
    dev = pick_device(device)
    target = getattr(prep, split)
    embs = [embed_split(method, target, dev, cfg.eval.batch_size) for _, method, _ in loaded]
    imgs, txts = [e[0] for e in embs], [e[1] for e in embs]
    clean = _map(cfg, imgs, txts, target.labels)
    if split == "test":
        return clean
    noisy = prep.val_noisy
    chosen = clean if noisy is None or cfg.eval.val_labels == "clean" else _map(cfg, imgs, txts, noisy)
    return {**chosen, **{f"clean_{k}": v for k, v in clean.items()}}
