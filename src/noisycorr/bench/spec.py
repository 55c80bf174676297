"""A benchmark spec: a YAML grid of (dataset, method, noise protocol, noise rate, seed) cells.

Each cell is an ordinary training run (a preset plus ``--set`` overrides) in its own folder::

    {out}/{dataset}/{protocol}-{rate}/{method}/seed{seed}

The layout of a spec (see ``noisycorr/configs/bench/*.yaml``)::

    out: runs/bench/flickr-dev          # where the cells, the pinned noise files and the report go
    seeds: [0, 1]
    set: {train.epochs: 12}             # applied to every cell
    datasets:
      flickr-dev:
        set: {data.root: ../shared/data/flickr-dev}    # applied to this dataset's cells
        noise:                          # one mapping, or a list of them (one per protocol)
          protocol: per_caption
          rates: [0.0, 0.4, 0.8]
          seed: 0                       # draws the files that are not given, once, then pins them
          files: {0.4: /data/f30k_0.4.npy}     # or a template "/data/noise_{rate}.npy"
        methods:
          vanilla: {preset: flickr-dev-vse}
          ncr: {preset: flickr-dev-ncr, set: {method.noisy_start: 1.0}}

Settings are layered from the general to the particular: the spec's ``set``, the dataset's, the
method's, then the cell's own (noise, seed, folder), then ``--set`` of the command line. A value may
name its cell's ``{out}``, ``{dataset}``, ``{protocol}``, ``{rate}`` and ``{seed}``, e.g. to point two
methods at one earlier stage: ``method.stage1_dir: "{out}/{dataset}/{protocol}-{rate}/d2s/seed{seed}/stage1"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noisycorr.config import Config, load_config, read_yaml, resolve_named_yaml, resolve_shared
from noisycorr.errors import InputError

PROTOCOLS = ("per_caption", "per_image")


@dataclass(frozen=True)
class NoiseGrid:
    """The noise rates of one protocol on one dataset, and where their index files come from."""

    protocol: str
    rates: tuple[float, ...]
    seed: int = 0
    files: dict[float, str] | str | None = None  # rate -> file, or a template with "{rate}"

    def given_file(self, rate: float) -> str | None:
        """The user's pinned file for ``rate`` (None: the bench draws one with ``seed``)."""
        if isinstance(self.files, str):
            return self.files.format(rate=f"{rate:g}")
        if isinstance(self.files, dict):
            return self.files.get(rate)
        return None


@dataclass(frozen=True)
class MethodEntry:
    name: str
    preset: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    overrides: tuple[str, ...]
    noise: tuple[NoiseGrid, ...]
    methods: tuple[MethodEntry, ...]


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    dataset: str
    protocol: str
    rate: float
    method: str
    seed: int
    preset: str
    overrides: tuple[str, ...]  # the layered ``--set`` values, the noise file included
    dir: Path
    noise_file: str | None  # the index file shared by the cell's (dataset, protocol, rate); None when clean

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.protocol}-{self.rate:g}/{self.method}/seed{self.seed}"

    @property
    def noise_key(self) -> tuple[str, str, float]:
        return (self.dataset, self.protocol, self.rate)


@dataclass(frozen=True)
class BenchSpec:
    """A parsed benchmark spec."""

    source: str
    out: Path
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    datasets: tuple[DatasetEntry, ...]
    description: str = ""
    extra: tuple[str, ...] = field(default=())  # --set of the command line, applied last
    curves: tuple[str, ...] = field(default=())  # metrics.csv columns the report follows epoch by epoch

    @property
    def noise_dir(self) -> Path:
        return self.out / "noise"

    @property
    def report_dir(self) -> Path:
        """``{out}/report/{spec name}``: specs may share one output folder (and their common cells)."""
        return self.out / "report" / Path(self.source).stem

    def noise_grids(self) -> list[tuple[DatasetEntry, NoiseGrid]]:
        return [(d, g) for d in self.datasets for g in d.noise]

    def cells(self) -> list[Cell]:
        """Every cell, ordered dataset, protocol, rate, method, seed (spec order)."""
        out = []
        for ds in self.datasets:
            for grid in ds.noise:
                for rate in grid.rates:
                    noise_file = None
                    if rate > 0.0:
                        given = grid.given_file(rate)
                        noise_file = given or str(self.noise_dir / ds.name / f"{grid.protocol}-{rate:g}.npy")
                    for m in ds.methods:
                        for seed in self.seeds:
                            folder = self.out / ds.name / f"{grid.protocol}-{rate:g}" / m.name / f"seed{seed}"
                            own = (
                                f"noise.protocol={grid.protocol}",
                                f"noise.rate={rate}",
                                f"noise.seed={grid.seed}",
                                *([f"noise.file={noise_file}"] if noise_file else []),
                                f"train.seed={seed}",
                                f"run.out_dir={folder}",
                            )
                            fields = {"out": str(self.out), "dataset": ds.name, "protocol": grid.protocol,
                                      "rate": f"{rate:g}", "seed": str(seed)}
                            overrides = tuple(_fill(o, fields) for o in
                                              (*self.overrides, *ds.overrides, *m.overrides, *own, *self.extra))
                            out.append(Cell(ds.name, grid.protocol, rate, m.name, seed, m.preset, overrides, folder,
                                            noise_file))
        return out


def _fill(override: str, fields: dict[str, str]) -> str:
    """``key=value`` with the cell's ``{field}`` names in the value replaced by their values."""
    key, value = override.split("=", 1)
    for name, text in fields.items():
        value = value.replace("{" + name + "}", text)
    return f"{key}={value}"


def cell_config(cell: Cell) -> Config:
    """The resolved training config of a cell."""
    return load_config(cell.preset, list(cell.overrides))


# ---- parsing --------------------------------------------------------------------------------------


def _mapping(value: Any, source: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(source, f"a mapping under {where}", type(value).__name__)
    return value


def _only(values: dict[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in values:
        if key not in allowed:
            raise InputError(source, f"a key of {where} among {list(allowed)}", repr(key), where=where)


def _scalar_text(value: Any) -> str:
    """A value as ``--set`` text that reads back as the same value."""
    text = str(value)
    try:
        same = yaml.safe_load(text) == value
    except yaml.YAMLError:  # e.g. "{out}/..." reads as a broken mapping
        same = False
    return text if same else json.dumps(value)


def _set_list(value: Any, source: str, where: str) -> tuple[str, ...]:
    """``{a.b: 1}`` or ``["a.b=1"]`` -> ``("a.b=1",)``."""
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return tuple(value)
    if isinstance(value, dict):
        out = []
        for key, val in value.items():
            if not isinstance(key, str) or "." not in key or isinstance(val, (dict, list)):
                raise InputError(source, "section.key: scalar entries under set", repr(key), where=where)
            out.append(f"{key}={_scalar_text(val)}")
        return tuple(out)
    raise InputError(source, f"a mapping of section.key: value under {where}", repr(value))


def _rate(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise InputError(source, "a noise rate in [0, 1)", repr(value), where=where)
    return float(value)


def _noise(value: Any, source: str, where: str) -> tuple[NoiseGrid, ...]:
    items = value if isinstance(value, list) else [value]
    grids = []
    for k, item in enumerate(items):
        w = f"{where}[{k}]" if isinstance(value, list) else where
        item = _mapping(item, source, w)
        _only(item, ("protocol", "rates", "seed", "files"), source, w)
        protocol = item.get("protocol", "per_caption")
        if protocol not in PROTOCOLS:
            raise InputError(source, f"a protocol among {list(PROTOCOLS)}", repr(protocol), where=f"{w}.protocol")
        rates = item.get("rates", [0.0])
        if not isinstance(rates, list) or not rates:
            raise InputError(source, "a non-empty list of rates", repr(rates), where=f"{w}.rates")
        rates_t = tuple(_rate(r, source, f"{w}.rates") for r in rates)
        if len(set(rates_t)) != len(rates_t):
            raise InputError(source, "distinct rates", repr(rates), where=f"{w}.rates")
        seed = item.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(source, "an integer noise seed", repr(seed), where=f"{w}.seed")
        files = item.get("files")
        if isinstance(files, dict):
            files = {_rate(r, source, f"{w}.files"): str(p) for r, p in files.items()}
        elif files is not None and not (isinstance(files, str) and "{rate}" in files):
            raise InputError(source, "a mapping rate: file, or a path template with {rate}", repr(files),
                             where=f"{w}.files")
        grids.append(NoiseGrid(protocol, rates_t, seed, files))
    if len({g.protocol for g in grids}) != len(grids):
        raise InputError(source, "one noise entry per protocol", "a protocol listed twice", where=where)
    return tuple(grids)


def _methods(value: Any, source: str, where: str) -> tuple[MethodEntry, ...]:
    value = _mapping(value, source, where)
    if not value:
        raise InputError(source, "at least one method", "none", where=where)
    out = []
    for name, entry in value.items():
        w = f"{where}.{name}"
        if isinstance(entry, str):
            entry = {"preset": entry}
        entry = _mapping(entry, source, w)
        _only(entry, ("preset", "set"), source, w)
        if "preset" not in entry:
            raise InputError(source, "a preset name or YAML path", "no preset", where=w)
        out.append(MethodEntry(str(name), str(entry["preset"]), _set_list(entry.get("set"), source, f"{w}.set")))
    return tuple(out)


def _seeds(value: Any, source: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in value):
        raise InputError(source, "a non-empty list of integer seeds", repr(value), where="seeds")
    if len(set(value)) != len(value):
        raise InputError(source, "distinct seeds", repr(value), where="seeds")
    return tuple(value)


def _curves(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise InputError(source, "a list of metrics.csv column names", repr(value), where="curves")
    return tuple(value)


def spec_from_dict(raw: Any, source: str, *, out: str | None = None, extra: list[str] | None = None) -> BenchSpec:
    """Check and parse a spec mapping; every unknown key is a one-line :class:`InputError`."""
    if not isinstance(raw, dict):
        raise InputError(source, "a mapping (out, seeds, set, datasets)", type(raw).__name__)
    _only(raw, ("description", "out", "seeds", "set", "datasets", "curves"), source, "the spec")
    datasets = []
    for name, entry in _mapping(raw.get("datasets"), source, "datasets").items():
        w = f"datasets.{name}"
        entry = _mapping(entry, source, w)
        _only(entry, ("set", "noise", "methods"), source, w)
        datasets.append(DatasetEntry(
            str(name),
            _set_list(entry.get("set"), source, f"{w}.set"),
            _noise(entry.get("noise", {}), source, f"{w}.noise"),
            _methods(entry.get("methods"), source, f"{w}.methods"),
        ))
    if not datasets:
        raise InputError(source, "at least one dataset under datasets", "none", where="datasets")
    out_dir = out or raw.get("out")
    if not out_dir:
        raise InputError(source, "an output folder (out: or --out)", "none", where="out")
    return BenchSpec(
        source=source,
        out=Path(os.path.expanduser(str(out_dir))),
        seeds=_seeds(raw.get("seeds", [0]), source),
        overrides=_set_list(raw.get("set"), source, "set"),
        datasets=tuple(datasets),
        description=str(raw.get("description", "")),
        extra=tuple(extra or ()),
        curves=_curves(raw.get("curves", []), source),
    )


def spec_dir() -> Path:
    """The folder of the shipped benchmark specs."""
    return Path(__file__).resolve().parent.parent / "configs" / "bench"


def resolve_spec(name_or_path: str) -> Path:
    """A shipped spec name (``flickr-dev``) or a path to a YAML file."""
    return resolve_named_yaml(name_or_path, spec_dir(), what="bench spec", option="noisycorr bench")


def _shared_files(raw: Any) -> Any:
    """Every ``files`` value of a spec with its ``../shared/data/`` prefix resolved."""
    if isinstance(raw, dict):
        return {k: ({r: resolve_shared(f) for r, f in v.items()} if k == "files" and isinstance(v, dict)
                    else resolve_shared(v) if k == "files" else _shared_files(v)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_shared_files(v) for v in raw]
    return raw


def load_spec(name_or_path: str, *, out: str | None = None, extra: list[str] | None = None) -> BenchSpec:
    """Read a spec file (or a shipped spec by name) and check every cell's config resolves."""
    path = resolve_spec(name_or_path)
    raw = read_yaml(path)
    if path.resolve().parent == spec_dir().resolve():  # a shipped spec's ../shared/data files, from any folder
        raw = _shared_files(raw)
    spec = spec_from_dict(raw, str(path), out=out, extra=extra)
    for cell in spec.cells():  # a bad preset or key fails here, before anything runs
        cell_config(cell)
    return spec
