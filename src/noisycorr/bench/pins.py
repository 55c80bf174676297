"""Pinned noise files: every cell of one (dataset, protocol, rate) trains on the same index file.

The first run of a bench draws the files the spec does not give (with the spec's noise seed) and
records the sha256 of every index in ``{out}/noise/pins.json``. Later runs check the files against
those checksums, so a bench never mixes two noise draws under one column.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from noisycorr.bench.spec import BenchSpec, Cell, cell_config
from noisycorr.data.noise import load_noise, make_per_caption_noise, make_per_image_noise, save_noise
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import load_precomp
from noisycorr.engine.setup import data_root
from noisycorr.errors import InputError

PINS_FILE = "pins.json"


@dataclass(frozen=True)
class Pin:
    file: str
    checksum: str
    realised_rate: float
    drawn: bool  # True: drawn by the bench with the spec's noise seed; False: given by the spec


def pin_key(dataset: str, protocol: str, rate: float) -> str:
    return f"{dataset}/{protocol}/{rate:g}"


def read_pins(spec: BenchSpec) -> dict[str, Pin]:
    path = spec.noise_dir / PINS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: Pin(**v) for k, v in raw.items()}
    except (ValueError, TypeError) as err:
        raise InputError(path, "the bench's pinned noise checksums (JSON)", f"unreadable ({err})") from None


def _write_pins(spec: BenchSpec, pins: dict[str, Pin]) -> None:
    text = json.dumps({k: asdict(v) for k, v in sorted(pins.items())}, indent=2)
    spec.noise_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(spec.noise_dir / PINS_FILE, text.encode("utf-8"))


def pin_noise(spec: BenchSpec) -> dict[str, Pin]:
    """Draw the missing bench-owned noise files, check every file against its pin, record new pins.

    Returns:
        pin key (``dataset/protocol/rate``) -> :class:`Pin`, for every noisy (dataset, protocol, rate).

    Raises:
        InputError: a given file is missing or invalid, or a file no longer matches its pinned checksum.
    """
    pins = read_pins(spec)
    first: dict[tuple[str, str, float], Cell] = {}
    for cell in spec.cells():
        if cell.rate > 0.0:
            first.setdefault(cell.noise_key, cell)
    changed = False
    for (dataset, protocol, rate), cell in first.items():
        cfg = cell_config(cell)
        path = Path(cell.noise_file or "")
        train = load_precomp(data_root(cfg), cfg.data.train_split, features=cfg.data.features,
                             captions_per_image=cfg.data.captions_per_image)
        drawn = path.parent == spec.noise_dir / dataset
        if not path.is_file():
            if not drawn:
                raise InputError(path, f"the {protocol} noise file given for rate {rate:g}", "no such file")
            if protocol == "per_caption":
                index = make_per_caption_noise(train.n_captions, train.captions_per_image, rate, seed=cfg.noise.seed)
            else:
                index = make_per_image_noise(train.n_images, rate, seed=cfg.noise.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_noise(path, index)
        _, info = load_noise(path, protocol, n_images=train.n_images, n_captions=train.n_captions, rate=rate)
        key = pin_key(dataset, protocol, rate)
        old = pins.get(key)
        if old is not None and old.checksum != info.checksum:
            raise InputError(path, f"the index pinned for {key} (sha256 {old.checksum[:12]}…)",
                             f"sha256 {info.checksum[:12]}… (the file changed after cells were run)")
        if old is None:
            pins[key] = Pin(str(path), info.checksum, float(info.realised_rate), drawn)
            changed = True
    if changed:
        _write_pins(spec, pins)
    return pins
