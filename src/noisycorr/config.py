"""Run configuration: YAML preset -> dataclasses -> ``--set section.key=value`` overrides.

Every key is checked: an unknown section or key is a one-line :class:`InputError`. The method section
is checked against the chosen method's own ``Config`` dataclass, the model section against the chosen
backbone's (:func:`model_config`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from noisycorr.backbones.base import ModelConfig
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
    # D2S's dense texts (data/dense.py): a JSON-lines file of dense descriptions of the training images, or
    # standin (reserved): the run builds the stand-in from its own noisy pairing into <out>/dense_standin.jsonl;
    # standin-consensus: the same without the captions that disagree with the others of their image
    dense_captions: str | None = None
    train_text: str = "captions"  # captions | dense: train on the dense descriptions instead (D2S stage 1)
    # The meta set (pairs the user declares clean, MSCN): auto (val for a method that uses one, else none) |
    # none | val (whole validation images, removed from validation) | file (training pair indices in meta_file)
    meta_source: str = "auto"
    meta_size: float = 0.02  # val source: pairs, or a share of the training pairs when below 1 (MSCN F30K: 2 %)
    meta_file: str | None = None  # file source: hand-checked training pair indices (.npy, or one per line)
    meta_seed: int = 0  # which validation images (fixed across run seeds)


@dataclass
class NoiseConfig:
    """Synthetic noise injected into the training pairs."""

    protocol: str = "per_caption"  # "per_caption" (NCR) or "per_image" (DECL/RCL)
    rate: float = 0.0
    file: str | None = None  # loaded when it exists, else created here with `seed` and saved
    seed: int | None = None  # None: the run seed


# ModelConfig, the base of every backbone's ``Config``, is defined beside Backbone (imported above): the
# backbones cannot import this module, which looks them up.


def model_config(values: dict[str, Any], source: str = "model") -> ModelConfig:
    """The checked ``model`` section: an instance of the chosen backbone's ``Config``.

    Args:
        values: the flat YAML section; ``backbone`` defaults to ``vse``, the other keys must be fields
            of that backbone's ``Config``. A key it lacks whose value is null is left out (how a
            ``--set`` unsets a preset's key after changing the backbone).
    """
    from noisycorr.factory import get_backbone_class, list_backbones  # loads the plug-ins (and torch)

    name = _coerce(values.get("backbone", ModelConfig.backbone), str, source, "model.backbone")
    if name not in list_backbones():
        raise InputError(source, f"a backbone among {list_backbones()}", repr(name), where="model.backbone")
    model = get_backbone_class(name).Config()
    if not isinstance(model, ModelConfig):
        raise TypeError(f"backbone {name!r}: its Config must subclass noisycorr.backbones.base.ModelConfig")
    known = {f.name for f in fields(model)}
    values = {k: v for k, v in values.items() if k in known or v is not None}
    _apply_section(model, {**values, "backbone": name}, source, "model", owner=f"backbone {name!r}")
    return model


@dataclass
class TrainConfig:
    """Optimisation schedule and engine settings (both tasks; the labelled task has other defaults)."""

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 2e-4
    beta1: float = 0.9  # adam / adamw
    beta2: float = 0.999
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "step"  # step (x lr_decay every lr_update epochs) | constant | cosine (to 0 over the epochs)
    lr_update: int = 15  # step schedule: multiply lr by lr_decay every lr_update epochs
    lr_decay: float = 0.1
    grad_clip: float = 2.0  # 0: no clipping
    amp: bool = True  # used on CUDA only
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads


@dataclass
class EvalConfig:
    """Evaluation protocol, memory bounds and how the pair similarities are computed.

    ``mode: shortlist`` scores only a shortlist with the backbone's head (:mod:`noisycorr.eval.shortlist`):
    the cosine of cheap global vectors picks each caption's ``shortlist_k`` best images and each image's
    ``shortlist_k`` best captions, the head re-scores the union of those pairs, and every other pair
    ranks below them (ordered by the cosine). It applies to backbones with a pairwise head (SGRAF);
    VSE and global backbones, whose score already is a dot product of (B, D) embeddings, are evaluated
    exactly. R@k equals exact evaluation's when the cosine shortlists hold every caption or image that
    the head ranks in the top k; keep ``shortlist_k`` at or above the largest k reported (10). The head
    scores about ``shortlist_k / n_images`` of the pairs, so the speed-up is roughly its inverse; how
    much rSum is lost depends on how well the model's global vectors agree with its head (README,
    "Evaluation: exact or shortlist").
    """

    protocol: str = "single"  # single (whole split) | 1k | coco5fold1k | coco5k | cc152k
    batch_size: int = 256
    img_chunk: int = 1000
    txt_chunk: int = 1000
    mode: str = "exact"  # exact (the head scores every pair) | shortlist (the head scores the top-K pairs)
    shortlist_k: int = 50  # shortlist mode: candidates per image and per caption


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
    model: ModelConfig = field(default_factory=lambda: model_config({}))  # a backbone's Config
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "vanilla"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PAIRS, LABELS = "pairs", "labels"
TASKS = (PAIRS, LABELS)


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
class LabeledEvalConfig:
    """Evaluation settings of the labelled task."""

    val_labels: str = "noisy"  # noisy (what a user has) | clean (oracle selection, diagnostics)
    k: int | None = None  # mAP cut-off; None ranks every item
    batch_size: int = 1024
    chunk: int = 1024


def _label_train_defaults() -> TrainConfig:
    return TrainConfig(epochs=100, batch_size=256, lr=1e-4, schedule="constant", grad_clip=0.0)


@dataclass
class LabeledConfig:
    """A noisy-label run (``task: labels``)."""

    task: str = LABELS
    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)
    model: LabeledModelConfig = field(default_factory=LabeledModelConfig)
    train: TrainConfig = field(default_factory=_label_train_defaults)
    eval: LabeledEvalConfig = field(default_factory=LabeledEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/labels"))
    method: dict[str, Any] = field(default_factory=lambda: {"name": "mrl"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


AnyConfig = Config | LabeledConfig


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


def _apply_section(obj: Any, values: dict[str, Any], source: str, section: str, *, owner: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    for key, value in values.items():
        if key not in names:
            of = f"[{section}] for {owner}" if owner else f"[{section}]"
            raise InputError(source, f"a key of {of} among {names}", repr(key), where=section)
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
        elif section == "model" and isinstance(cfg.model, ModelConfig):
            cfg.model = model_config(values, source)
        else:
            _apply_section(getattr(cfg, section), values, source, section)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> AnyConfig:
    """Build the config of the task ``raw`` names (``task: pairs`` by default), rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise InputError(source, "a mapping of sections", type(raw).__name__)
    task = raw.get("task", PAIRS)
    if task not in TASKS:
        raise InputError(source, f"task: one of {', '.join(TASKS)}", repr(task), where="task")
    cfg: AnyConfig = Config() if task == PAIRS else LabeledConfig()
    sections = {k: v for k, v in raw.items() if k != "task"}
    apply_sections(cfg, sections, source, default_method="vanilla" if task == PAIRS else "mrl",
                   expected="task or a section")
    check_values(cfg, source)
    return cfg


# (key, kind, lowest, lowest allowed?, highest, highest allowed?): the range of every numeric setting
# whose bad values would otherwise surface only after files are written or epochs are trained.
_AT_LEAST_ONE = ("int", 1, True, None, False)
_POSITIVE = ("float", 0.0, False, None, False)
_NON_NEGATIVE = ("float", 0.0, True, None, False)
_NON_NEGATIVE_INT = ("int", 0, True, None, False)
_UNIT = ("float", 0.0, True, 1.0, True)
_UNIT_OPEN = ("float", 0.0, True, 1.0, False)
_RANGES_COMMON: dict[str, tuple[str, float, bool, float | None, bool]] = {
    "train.epochs": _AT_LEAST_ONE,
    "train.batch_size": _AT_LEAST_ONE,
    "train.lr": _POSITIVE,
    "train.beta1": _UNIT_OPEN,
    "train.beta2": _UNIT_OPEN,
    "train.momentum": _NON_NEGATIVE,
    "train.weight_decay": _NON_NEGATIVE,
    "train.lr_update": _AT_LEAST_ONE,
    "train.lr_decay": _POSITIVE,
    "train.grad_clip": _NON_NEGATIVE,
    "train.num_workers": _NON_NEGATIVE_INT,
    "train.threads": _AT_LEAST_ONE,
    "noise.rate": _UNIT,
}
_RANGES_PAIRS = {
    **_RANGES_COMMON,
    "data.captions_per_image": _AT_LEAST_ONE,
    "data.vocab_min_count": _AT_LEAST_ONE,
    "data.region_drop": _UNIT_OPEN,
    "data.token_aug": _UNIT_OPEN,
    "data.val_max_images": _AT_LEAST_ONE,
    "data.meta_size": _POSITIVE,
    "eval.batch_size": _AT_LEAST_ONE,
    "eval.img_chunk": _AT_LEAST_ONE,
    "eval.txt_chunk": _AT_LEAST_ONE,
    "eval.shortlist_k": _AT_LEAST_ONE,
}
_RANGES_LABELS = {
    **_RANGES_COMMON,
    "data.val_size": _POSITIVE,
    "model.hidden": _AT_LEAST_ONE,
    "model.hidden_layers": _NON_NEGATIVE_INT,
    "model.embed_dim": _AT_LEAST_ONE,
    "eval.k": _AT_LEAST_ONE,
    "eval.batch_size": _AT_LEAST_ONE,
    "eval.chunk": _AT_LEAST_ONE,
}
_NOISE_PROTOCOLS = ("per_caption", "per_image")
_EVAL_MODES = ("exact", "shortlist")
_META_SOURCES = ("auto", "none", "val", "file")


def _range_text(kind: str, low: float, low_ok: bool, high: float | None, high_ok: bool) -> str:
    noun = "an integer" if kind == "int" else "a number"
    low_text = f"{low:g}"
    if high is None:
        return f"{noun} {'>=' if low_ok else '>'} {low_text}"
    return f"{noun} in {'[' if low_ok else '('}{low_text}, {high:g}{']' if high_ok else ')'}"


def check_values(cfg: AnyConfig, source: str = "config") -> None:
    """Raise :class:`InputError` for a setting outside its range (``train.epochs`` of 0, a negative
    ``train.lr``, a ``noise.rate`` above 1, ...), so that every entry point refuses it before anything
    is written or trained. ``None`` (unset) is always accepted where the field allows it."""
    ranges = _RANGES_LABELS if isinstance(cfg, LabeledConfig) else _RANGES_PAIRS
    for key, (kind, low, low_ok, high, high_ok) in ranges.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        above = value >= low if low_ok else value > low
        below = high is None or (value <= high if high_ok else value < high)
        if not (above and below and math.isfinite(value)):
            raise InputError(source, _range_text(kind, low, low_ok, high, high_ok), repr(value), where=key)
    if isinstance(cfg, Config) and cfg.noise.protocol not in _NOISE_PROTOCOLS:
        raise InputError(source, f"one of {', '.join(_NOISE_PROTOCOLS)}", repr(cfg.noise.protocol),
                         where="noise.protocol")
    if isinstance(cfg, Config) and cfg.data.meta_source not in _META_SOURCES:
        raise InputError(source, f"one of {', '.join(_META_SOURCES)}", repr(cfg.data.meta_source),
                         where="data.meta_source")
    if isinstance(cfg, Config) and cfg.data.train_text not in ("captions", "dense"):
        raise InputError(source, "captions or dense", repr(cfg.data.train_text), where="data.train_text")
    if isinstance(cfg, Config) and cfg.data.train_text == "dense" and not cfg.data.dense_captions:
        raise InputError(source, "data.dense_captions (a dense-text file or standin) with data.train_text=dense",
                         "none", where="data.dense_captions")
    if isinstance(cfg, Config) and cfg.eval.mode not in _EVAL_MODES:
        raise InputError(source, f"one of {', '.join(_EVAL_MODES)}", repr(cfg.eval.mode), where="eval.mode")


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


SHARED_PREFIX = "../shared/data/"


def _shipped_layer(layer: dict[str, Any], path: Path) -> dict[str, Any]:
    """A shipped preset names the project's shared data as ``../shared/data/...``, which holds only
    from the project root: such a ``data.root`` / ``data.vocab`` is resolved here against the shared
    data folder (``$NOISYCORR_SHARED_DATA`` or ``<repo>/../shared/data``), so the preset works from
    any folder. A user's own YAML file is left as written (relative to the current folder)."""
    from noisycorr.data.paths import shared_data_dir

    data = layer.get("data")
    if path.resolve().parent != preset_dir().resolve() or not isinstance(data, dict):
        return layer
    if shared_data_dir() is None:
        return layer  # data_root's error then says how to point data.root
    data = {k: (resolve_shared(v) if k in ("root", "vocab") else v) for k, v in data.items()}
    return {**layer, "data": data}


def resolve_shared(value: Any) -> Any:
    """``../shared/data/X`` (as shipped presets and bench specs write it) -> the shared data folder's X;
    anything else, or when no shared data folder is found, unchanged."""
    from noisycorr.data.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is None or not isinstance(value, str) or not value.startswith(SHARED_PREFIX):
        return value
    return str(shared / value[len(SHARED_PREFIX):])


def read_preset_layers(preset: str) -> tuple[dict[str, Any], str]:
    """A preset (name or path) with its ``extends`` chain merged; returns (raw dict, source)."""
    path = resolve_preset(preset)
    chain = [_shipped_layer(read_yaml(path), path)]
    seen = {path.resolve()}
    while "extends" in chain[-1]:
        parent = resolve_preset(str(chain[-1].pop("extends")))
        if parent.resolve() in seen:
            raise InputError(path, "no cycle of `extends`", str(parent))
        seen.add(parent.resolve())
        chain.append(_shipped_layer(read_yaml(parent), parent))
    raw: dict[str, Any] = {}
    for layer in reversed(chain):
        raw = _merge(raw, layer)
    return raw, str(path)


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> AnyConfig:
    """Preset (name or path; ``extends: other`` chains presets) + overrides -> the checked config.

    The preset's ``task:`` (``pairs`` by default, or ``labels``) picks the config class.
    """
    raw, source = read_preset_layers(preset) if preset else ({}, "defaults")
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source = f"{source} + --set"
    return config_from_dict(raw, source)


def config_yaml(cfg: AnyConfig) -> str:
    """The resolved config as the YAML text saved in a run folder."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: AnyConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    from noisycorr.data.paths import atomic_write_bytes

    atomic_write_bytes(path, config_yaml(cfg).encode("utf-8"))
