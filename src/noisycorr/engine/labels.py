"""The labelled task (noisy labels): what the training loop needs that is specific to items with
category labels, and re-opening a labelled run folder.

A labelled config is a YAML file with ``task: labels`` and the sections ``data``, ``noise``, ``model``,
``train``, ``eval``, ``run`` and ``method`` (:class:`noisycorr.config.LabeledConfig`). The training
loop (:func:`noisycorr.engine.trainer.train`) writes a run folder:

* ``config.yaml``: the resolved config;
* ``noise.json`` (kind, scope, requested and realised rates, seed, sha256 of the labels) and
  ``noisy_labels.npy`` ((2, N, C) uint8 image and text labels of the file's *whole* training split);
* ``split.json``: where validation comes from and the validation rows;
* ``metrics.csv``: one row per epoch (losses, validation mAP, the method's logs, and for methods
  that split the data the share of truly correct labels in each subset: diagnostics only);
* ``checkpoint.pt`` (resumable, ``weights_only``), ``best.safetensors`` (best validation average
  mAP), ``best.json``, ``results.json`` (test mAP of the best weights) and ``curves.png``.

Validation: when the file has no validation split (Wikipedia), ``data.val: train`` carves a seeded
subset of the training split *after* the noise is drawn, so the validation items carry noisy labels
like the rest, and model selection uses those noisy labels (``eval.val_labels: noisy``), since clean
labels are unknown in practice. ``eval.val_labels: clean`` selects on the file's labels instead (an
oracle, for diagnostics). The validation mAP under the file's labels is logged as
``val_clean_avg_map`` either way; it never drives anything. ``data.val: test_head`` is the MRL /
NIRNL authors' protocol: the first ``data.val_size`` test items validate with their clean labels,
training keeps every training item and the test split keeps the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisycorr import distributed as dist
from noisycorr.config import LabeledConfig
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
from noisycorr.distributed import shard
from noisycorr.engine.checkpoint import check_weights_choice, load_last_weights, load_weights
from noisycorr.engine.context import LabelTrainContext
from noisycorr.engine.optim import OPTIMIZERS, SCHEDULES
from noisycorr.engine.rundir import RunPaths, read_json, read_run_config, write_json
from noisycorr.engine.seeding import epoch_seed
from noisycorr.engine.setup import pick_device
from noisycorr.errors import InputError
from noisycorr.eval.labels import cross_modal_map
from noisycorr.factory import get_method_class
from noisycorr.methods.base import Phase
from noisycorr.methods.labeled_base import LabelBatch, LabelMethod

TASK = "labels"
NOISE_FILE = "noisy_labels.npy"


def check_labeled_config(cfg: LabeledConfig) -> None:
    """Reject bad enumerations and sizes before anything is read or written."""
    choices = {
        "data.layout": (cfg.data.layout, ("auto", *LAYOUTS)),
        "data.val": (cfg.data.val, VAL_SOURCES),
        "data.normalize": (cfg.data.normalize, ("none", "zscore", "l2")),
        "noise.kind": (cfg.noise.kind, NOISE_KINDS),
        "noise.scope": (cfg.noise.scope, NOISE_SCOPES),
        "train.optimizer": (cfg.train.optimizer, OPTIMIZERS),
        "train.schedule": (cfg.train.schedule, SCHEDULES),
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


# ------------------------------------------------------------------------------------------ method


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


def _batches(phase: Phase, n: int, batch_size: int, seed: int, *, rank: int = 0,
             world_size: int = 1) -> Iterator[np.ndarray]:
    """Shuffled index batches of a phase (the last, smaller one kept; single items dropped).

    With several ranks each batch is this rank's slice of the one-process batch; a last batch that
    would leave some rank a single item is dropped on every rank.
    """
    idx = np.arange(n) if phase.indices is None else np.asarray(phase.indices)
    order = idx[np.random.RandomState(seed % (2**32)).permutation(idx.shape[0])]
    for start in range(0, order.shape[0], batch_size):
        chunk = order[start : start + batch_size]
        if chunk.shape[0] >= 2 * world_size:
            yield chunk[shard(chunk.shape[0], world_size, rank)] if world_size > 1 else chunk


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




@dataclass
class LabelTrainSet:
    """The training split on the training device: features and the *noisy* labels the method sees."""

    images: torch.Tensor
    texts: torch.Tensor
    labels: torch.Tensor  # (2, N, C) float

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: np.ndarray) -> LabelBatch:
        rows = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.images.device)
        return LabelBatch(rows, self.images[rows], self.texts[rows], self.labels[0, rows], self.labels[1, rows])

class PhaseItems:
    """Shuffled index batches of one phase as :class:`LabelBatch` es (the last, smaller batch kept)."""

    def __init__(self, train_set: LabelTrainSet, phase: Phase, batch_size: int, seed: int, *, rank: int = 0,
                 world_size: int = 1):
        self.train_set = train_set
        self.chunks = list(_batches(phase, len(train_set), batch_size, seed, rank=rank, world_size=world_size))
        n = len(train_set) if phase.indices is None else len(phase.indices)
        self.samples = n
        if phase.streams:
            raise RuntimeError("the labelled task has no side streams (Phase.streams)")

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[tuple[LabelBatch, dict[str, LabelBatch]]]:
        for idx in self.chunks:
            yield self.train_set.batch(idx), {}


class LabelTask:
    """Items with noisy category labels: a labelled benchmark file, label noise, validation mAP."""

    name = TASK
    metric = "avg_map"
    metric_format = ".4f"
    metric_label = "validation mAP (average)"

    def prepare(self, cfg: LabeledConfig, paths: RunPaths, *, resuming: bool) -> PreparedLabels:
        return prepare_labeled(cfg, noise_file=paths.root / NOISE_FILE if resuming else None)

    @staticmethod
    def dims(prep: PreparedLabels) -> tuple[int, int, int]:
        return prep.train.images.shape[1], prep.train.texts.shape[1], prep.data.num_classes

    def build_train_set(self, cfg: LabeledConfig, prep: PreparedLabels) -> LabelTrainSet:
        return LabelTrainSet(
            torch.from_numpy(prep.train.images), torch.from_numpy(prep.train.texts),
            torch.from_numpy(prep.train_noisy.astype(np.float32)),
        )

    def build_method(self, cfg: LabeledConfig, prep: PreparedLabels) -> LabelMethod:
        return build_labeled_method(cfg, *self.dims(prep))

    def weights_metadata(self, cfg: LabeledConfig, prep: PreparedLabels) -> dict[str, str]:
        return weights_metadata(cfg, *self.dims(prep))

    def write_run_files(self, cfg: LabeledConfig, prep: PreparedLabels, paths: RunPaths) -> None:
        save_label_noise(paths.root / NOISE_FILE, prep.noisy)
        write_json(paths.noise_json, prep.noise_record)
        write_json(paths.root / "split.json", {**split_record(prep), "val_index": prep.plan.val_index.tolist()})

    def context(self, cfg: LabeledConfig, method: LabelMethod, prep: PreparedLabels, train_set: LabelTrainSet,
                device: torch.device) -> LabelTrainContext:
        for name in ("images", "texts", "labels"):
            setattr(train_set, name, getattr(train_set, name).to(device))
        return LabelTrainContext(
            method, train_set.batch, len(train_set), cfg.train.batch_size, device, seed=cfg.train.seed,
            epochs=cfg.train.epochs, progress=cfg.run.progress, images=train_set.images, texts=train_set.texts,
            labels=train_set.labels,
        )

    def truth(self, prep: PreparedLabels) -> np.ndarray:
        """(N,) bool: whether both of an item's noisy labels equal the file's labels (diagnostics only)."""
        return (prep.train_noisy == prep.train.labels[None]).all(-1).all(0)

    def pairing(self, prep: PreparedLabels) -> None:
        """No pairing to score: items carry no replacement partners."""
        return None

    def set_epoch(self, train_set: LabelTrainSet, epoch: int) -> None:
        pass

    def phase_batches(self, cfg: LabeledConfig, train_set: LabelTrainSet, phase: Phase, epoch: int,
                      k: int) -> PhaseItems:
        return PhaseItems(train_set, phase, cfg.train.batch_size, epoch_seed(cfg.train.seed, epoch) + 7919 * k,
                          rank=dist.rank(), world_size=dist.world_size())

    def validate(self, cfg: LabeledConfig, method: LabelMethod, prep: PreparedLabels,
                 device: torch.device) -> dict[str, float]:
        return validate(cfg, method, prep, device)

    @staticmethod
    def summary(val: dict[str, float]) -> str:
        return f"val mAP i2t {val['i2t_map']:.4f} t2i {val['t2i_map']:.4f} avg {val['avg_map']:.4f}"

    def finish(self, cfg: LabeledConfig, method: LabelMethod, prep: PreparedLabels, device: torch.device,
               ctx: Any, paths: RunPaths, *, train_seconds: float) -> dict[str, Any]:
        """Reload the best weights, evaluate on the test split, write ``results.json``."""
        if not dist.is_main():
            return {}
        load_weights(method, paths.best, expect=self.weights_metadata(cfg, prep))
        img, txt = embed_split(method, prep.test, device, cfg.eval.batch_size)
        results: dict[str, Any] = {
            "task": TASK,
            "method": str(cfg.method["name"]),
            "best": read_json(paths.best_json),
            "test": _map(cfg, img, txt, prep.test.labels),
            "noise": prep.noise_record,
            "split": split_record(prep),
            "train_seconds": round(train_seconds, 1),
        }
        write_json(paths.results, results)
        return results


def split_record(prep: PreparedLabels) -> dict[str, Any]:
    return {"val": prep.plan.source, "n_train": len(prep.train), "n_val": len(prep.val), "n_test": len(prep.test)}


# -------------------------------------------------------------------------------------------- run folders


def load_labeled_run(
    run_dir: str | Path, *, device: str = "cpu", weights: str = "best"
) -> tuple[LabeledConfig, LabelMethod, PreparedLabels]:
    """A run's config, its method (eval mode; ``best`` or ``last`` weights) and its data with the run's noise."""
    check_weights_choice(weights)
    root = Path(run_dir)
    cfg = read_run_config(root)
    prep = prepare_labeled(cfg, noise_file=root / NOISE_FILE)
    dims = LabelTask.dims(prep)
    method = build_labeled_method(cfg, *dims)
    if weights == "last":
        load_last_weights(method, RunPaths(root).state)
    else:
        load_weights(method, RunPaths(root).best, expect=weights_metadata(cfg, *dims))
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
