"""Run configuration: YAML preset -> dataclasses -> ``--set section.key=value`` overrides.

Every key is checked: an unknown section or key is a one-line :class:`InputError`. The method section
is checked against the chosen method's own ``Config`` dataclass.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from noisycorr.errors import InputError


@dataclass
class DataConfig:
    """Where the precomp data lives and how to read it."""

    root: str = "synthetic"  # a precomp folder, or "synthetic" for the embedded default data
    name: str = "custom"
    features: str = "ims"  # reads {split}_{features}.npy: "ims" regions (N, R, D), "pooled" (N, D)
    train_split: str = "train"
    val_split: str = "dev"
    test_split: str = "test"
    captions_per_image: int | None = None
    vocab: str | None = None  # NCR vocab JSON; None builds one from the training captions
    vocab_min_count: int = 4
    region_drop: float = 0.0
    token_aug: float = 0.0
    val_max_images: int | None = None  # validate on the first N images only (None: all)


@dataclass
class NoiseConfig:
    """Synthetic noise injected into the training pairs."""

    protocol: str = "per_caption"  # "per_caption" (NCR) or "per_image" (DECL/RCL)
    rate: float = 0.0
    file: str | None = None  # loaded when it exists, else created here with `seed` and saved
    seed: int | None = None  # None: the run seed


@dataclass
class ModelConfig:
    """Backbone choice and sizes; unused fields are ignored by backbones that lack them."""

    backbone: str = "vse"  # vse | sgraf | global
    embed_size: int = 1024
    word_dim: int = 300
    word_vectors: str | None = None  # GloVe text file, or .npy with a word list beside it
    text_layers: int = 1
    dropout: float = 0.0
    text_mlp: bool = False  # vse only: IN2R's per-word fc + MLP before the caption GPO
    head: str = "sgr"  # sgraf only: sgr | saf
    sim_dim: int = 256  # sgraf only
    sgr_steps: int = 3  # sgraf only


@dataclass
class TrainConfig:
    """Optimisation schedule and engine settings."""

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_update: int = 15  # multiply lr by lr_decay every lr_update epochs
    lr_decay: float = 0.1
    grad_clip: float = 2.0
    amp: bool = True  # used on CUDA only
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads


@dataclass
class EvalConfig:
    """Evaluation protocol and memory bounds."""

    protocol: str = "single"  # single (whole split) | 1k | coco5fold1k | coco5k | cc152k
    batch_size: int = 256
    img_chunk: int = 1000
    txt_chunk: int = 1000


@dataclass
class RunConfig:
    """Output and logging."""

    out_dir: str = "runs/default"
    tensorboard: bool = False
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "vanilla"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, typ: Any, source: str, key: str) -> Any:
    """Check a YAML value against a field type: bool, int, float, str, or an Optional of one."""
    allowed = [a for a in (get_args(typ) or (typ,)) if a is not type(None)]
    if value is None:
        if len(allowed) < len(get_args(typ) or (typ,)):
            return None
    else:
        for kind in allowed:
            if kind is bool and isinstance(value, bool):
                return value
            if isinstance(value, bool):
                continue
            if kind is int and isinstance(value, int):
                return value
            if kind is float and isinstance(value, (int, float)):
                return float(value)
            if kind is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            if kind is str and isinstance(value, (str, int, float)):
                return str(value)
    names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
    raise InputError(source, f"{names} for {key}", repr(value))


def _apply_section(obj: Any, values: dict[str, Any], source: str, section: str) -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in values.items():
        if key not in names:
            raise InputError(source, f"a key of [{section}] among {names}", repr(key), where=section)
        setattr(obj, key, _coerce(value, hints[key], source, f"{section}.{key}"))


def apply_sections(
    cfg: Any, raw: dict[str, Any], source: str, *, default_method: str, expected: str = "a section"
) -> None:
    """Fill ``cfg``'s dataclass sections from ``raw`` (section -> mapping), rejecting unknown ones.

    The ``method`` section stays a dict, named ``default_method`` unless it names another.
    """
    sections = [f.name for f in fields(cfg) if f.name != "task"]
    for section, values in raw.items():
        if section not in sections:
            raise InputError(source, f"{expected} among {sorted(sections)}", repr(section))
        if values is None:
            continue
        if not isinstance(values, dict):
            raise InputError(source, f"a mapping under {section!r}", type(values).__name__)
        if section == "method":
            cfg.method = {"name": default_method, **values}
        else:
            _apply_section(getattr(cfg, section), values, source, section)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections and keys."""
    if not isinstance(raw, dict):
        raise InputError(source, "a mapping of sections", type(raw).__name__)
    cfg = Config()
    apply_sections(cfg, raw, source, default_method="vanilla")
    return cfg


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a layer that names another method replaces the whole ``method`` section, since
    method keys belong to one method (``-c flickr-dev-vse --method ncr`` gets NCR's defaults)."""
    out = dict(base)
    new_method = extra.get("method", {}).get("name") if isinstance(extra.get("method"), dict) else None
    old_method = out.get("method", {}).get("name") if isinstance(out.get("method"), dict) else None
    if new_method is not None and old_method is not None and new_method != old_method:
        out["method"] = {}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "method.name=ncr"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise InputError("--set", "section.key=value", repr(pair))
        dotted, text = pair.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def preset_dir() -> Path:
    """The folder of the shipped YAML presets."""
    return Path(__file__).parent / "configs"


def resolve_named_yaml(name_or_path: str, folder: Path, *, what: str, option: str) -> Path:
    """A YAML file shipped in ``folder`` by its name, or a path to any YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not path.is_file():
            raise InputError(path, f"an existing {what} (YAML)", "no such file")
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise InputError(option, f"a YAML path or one of the shipped {what}s {names}", repr(name_or_path))
    return candidate


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (``flickr-dev-vse``) or a path to a YAML file."""
    return resolve_named_yaml(name_or_path, preset_dir(), what="preset", option="--config")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(path, "valid YAML", f"a parse error ({str(err).splitlines()[0]})") from None
    return raw or {}


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Preset (name or path; ``extends: other`` chains presets) + overrides -> checked :class:`Config`."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if preset:
        path = resolve_preset(preset)
        source = str(path)
        raw = read_yaml(path)
        chain = [raw]
        seen = {path.resolve()}
        while "extends" in chain[-1]:
            parent = resolve_preset(str(chain[-1].pop("extends")))
            if parent.resolve() in seen:
                raise InputError(path, "no cycle of `extends`", str(parent))
            seen.add(parent.resolve())
            chain.append(read_yaml(parent))
        raw = {}
        for layer in reversed(chain):
            raw = _merge(raw, layer)
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source = f"{source} + --set"
    return config_from_dict(raw, source)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
