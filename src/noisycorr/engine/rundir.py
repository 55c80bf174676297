"""A run folder: its file names, its resolved config, JSON records, and the one resume check.

Every file of a run is written atomically through :func:`noisycorr.data.paths.atomic_write_bytes`,
so a killed run never leaves a torn file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from noisycorr.config import AnyConfig, config_from_dict, save_config
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.errors import InputError
from noisycorr.factory import get_backbone_class

__all__ = [
    "RunPaths",
    "check_same_settings",
    "is_labeled_run",
    "read_json",
    "read_run_config",
    "save_config",
    "write_json",
    "write_npy",
]

# Where and how fast a run goes: these may differ between a run and its resumption.
MACHINE_KEYS = ("device", "threads", "num_workers")
COMPARED_SECTIONS = ("data", "noise", "model", "train", "method")


@dataclass
class RunPaths:
    """The files of a run folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def best_json(self) -> Path:
        return self.root / "best.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def noise_json(self) -> Path:
        return self.root / "noise.json"

    @property
    def scores(self) -> Path:
        return self.root / "pair_scores.npy"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON (atomic); non-JSON values are written as strings."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode("utf-8"))


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "a JSON file of the run", "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, "valid JSON", f"a parse error at line {err.lineno}") from None


def write_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` (atomic)."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _raw_config(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    path = RunPaths(Path(run_dir)).config
    if not path.is_file():
        raise InputError(Path(run_dir), "a run folder with config.yaml", "no config.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(path, "valid YAML", f"a parse error ({str(err).splitlines()[0]})") from None
    return raw, path


def _drop_legacy_model_keys(raw: Any) -> Any:
    """Runs saved before backbones had their own configs list every backbone's options in ``model``;
    the options the run's backbone lacks were ignored when it trained, so they are dropped here."""
    model = raw.get("model") if isinstance(raw, dict) and raw.get("task", "pairs") == "pairs" else None
    if not isinstance(model, dict):
        return raw
    try:
        known = {f.name for f in fields(get_backbone_class(str(model.get("backbone", "vse"))).Config)}
    except InputError:
        return raw  # an unknown backbone: the config check says so
    return {**raw, "model": {k: v for k, v in model.items() if k in known}}


def read_run_config(run_dir: str | Path) -> AnyConfig:
    """The resolved config saved in a run folder (its ``task`` picks the class)."""
    raw, path = _raw_config(run_dir)
    return config_from_dict(_drop_legacy_model_keys(raw), str(path))


def is_labeled_run(run_dir: str | Path) -> bool:
    """Whether a run folder holds a labelled-task run (its config says ``task: labels``)."""
    try:
        raw, _ = _raw_config(run_dir)
    except InputError:
        return False
    return isinstance(raw, dict) and raw.get("task") == "labels"


def check_same_settings(config_path: Path, cfg: AnyConfig, *, purpose: str = "to resume") -> None:
    """Raise :class:`InputError` when the run saved at ``config_path`` trained other settings than ``cfg``.

    Where and how fast a run goes (device, threads, workers) and the ``run`` section may differ.
    """
    try:
        saved_raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raise InputError(config_path, "the readable config.yaml of a run", "an unreadable file") from None
    saved = config_from_dict(_drop_legacy_model_keys(saved_raw), str(config_path))
    if type(saved) is not type(cfg):
        raise InputError(config_path, f"a run of the same task {purpose}", f"task {saved_raw.get('task', 'pairs')}")
    a, b = saved.to_dict(), cfg.to_dict()
    for key in MACHINE_KEYS:
        a["train"].pop(key, None), b["train"].pop(key, None)
    for section in COMPARED_SECTIONS:
        if a[section] != b[section]:
            diff = sorted(k for k in set(a[section]) | set(b[section]) if a[section].get(k) != b[section].get(k))
            raise InputError(config_path, f"the same {section} settings {purpose}", f"changed keys {diff}")
