"""A run folder: its file names, its resolved config, JSON records, and the one resume check.

Every file of a run is written atomically through :func:`noisycorr.data.paths.atomic_write_bytes`,
so a killed run never leaves a torn file.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from noisycorr.config import AnyConfig, config_from_dict, save_config
from noisycorr.data.paths import atomic_write_bytes, check_readable
from noisycorr.errors import InputError
from noisycorr.factory import get_backbone_class

__all__ = [
    "RunPaths",
    "check_same_data",
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


def _load_yaml(path: Path) -> Any:
    """A run's config.yaml parsed; unreadable, undecodable or unparsable text is an :class:`InputError`."""
    check_readable(path, what="the config.yaml of a run")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(path, "valid YAML", f"a parse error ({str(err).splitlines()[0]})") from None
    except UnicodeDecodeError as err:
        raise InputError(path, "UTF-8 YAML text", f"undecodable bytes at byte {err.start}") from None
    except OSError as err:
        raise InputError(path, "the readable config.yaml of a run", f"an unreadable file ({err.strerror})") from None


def _raw_config(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    check_readable(Path(run_dir), what="a run folder")
    path = RunPaths(Path(run_dir)).config
    if not path.is_file():
        raise InputError(Path(run_dir), "a run folder with config.yaml", "no config.yaml")
    raw = _load_yaml(path)
    if isinstance(raw, dict):
        missing = [s for s in COMPARED_SECTIONS if s not in raw]
        if missing:  # a truncated or hand-cut file: its defaults would silently stand in for the run's settings
            raise InputError(path, f"the resolved config of a run (sections {', '.join(COMPARED_SECTIONS)})",
                             f"no section {', '.join(missing)}")
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
    saved_raw = _load_yaml(config_path)
    saved = config_from_dict(_drop_legacy_model_keys(saved_raw), str(config_path))
    if type(saved) is not type(cfg):
        raise InputError(config_path, f"a run of the same task {purpose}", f"task {saved_raw.get('task', 'pairs')}")
    a, b = saved.to_dict(), cfg.to_dict()
    for key in MACHINE_KEYS:
        a["train"].pop(key, None), b["train"].pop(key, None)
    for d in (a, b):  # a run saved with a relative data.root matches the same folder named absolutely
        d["data"]["root"] = _same_root(d["data"]["root"])
    for section in COMPARED_SECTIONS:
        if a[section] != b[section]:
            diff = sorted(k for k in set(a[section]) | set(b[section]) if a[section].get(k) != b[section].get(k))
            raise InputError(config_path, f"the same {section} settings {purpose}", f"changed keys {diff}")


# The data keys that decide which examples a run is evaluated on (both tasks; absent keys compare equal).
DATA_IDENTITY_KEYS = ("root", "features", "layout", "test_split", "captions_per_image")


def _same_root(root: Any) -> Any:
    """``data.root`` as a comparable value: the real path of a folder or file, ``synthetic`` as it is."""
    if not isinstance(root, str) or root in ("", "synthetic"):
        return root
    return os.path.realpath(os.path.expanduser(root))


def check_same_data(run_dirs: Sequence[str | Path]) -> None:
    """Raise :class:`InputError` when runs to be averaged were trained on different data sets.

    Compares the task and the data keys of :data:`DATA_IDENTITY_KEYS` of every run with the first's;
    the error names both runs and the differing setting.
    """
    if len(run_dirs) < 2:
        return
    first_raw, _ = _raw_config(run_dirs[0])
    for other in run_dirs[1:]:
        raw, path = _raw_config(other)
        if not isinstance(first_raw, dict) or not isinstance(raw, dict):
            return  # the config check of each run says what is wrong
        task_a, task_b = first_raw.get("task", "pairs"), raw.get("task", "pairs")
        if task_a != task_b:
            raise InputError(path, f"a run of the task of {run_dirs[0]} (task {task_a}) to average the runs",
                             f"task {task_b}", where="task")
        data_a, data_b = (r.get("data") if isinstance(r.get("data"), dict) else {} for r in (first_raw, raw))
        for key in DATA_IDENTITY_KEYS:
            va, vb = data_a.get(key), data_b.get(key)
            if key == "root":
                va, vb = _same_root(va), _same_root(vb)
            if va != vb:
                raise InputError(path, f"the data of {run_dirs[0]} ({key} {va!r}) to average the runs",
                                 f"{key} {vb!r}", where=f"data.{key}")
