"""Reopen a finished (or interrupted) run folder: its resolved config, vocabulary and best or last weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from noisycorr.config import Config, config_from_dict
from noisycorr.data.precomp import load_precomp
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.checkpoint import check_weights_choice, load_last_weights, load_weights
from noisycorr.engine.inference import evaluate_method
from noisycorr.engine.setup import build_method, data_root, pick_device
from noisycorr.engine.trainer import RunPaths, weights_metadata
from noisycorr.errors import InputError
from noisycorr.methods.base import Method


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config saved in a run folder."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise InputError(paths.root, "a run folder with config.yaml", "no config.yaml")
    return config_from_dict(yaml.safe_load(paths.config.read_text(encoding="utf-8")), str(paths.config))


def load_run(
    run_dir: str | Path, *, device: str = "cpu", weights: str = "best"
) -> tuple[Config, Method, Vocabulary]:
    """The config, the method (eval mode, on ``device``) and the vocabulary.

    ``weights`` is ``best`` (best.safetensors, the epoch chosen on validation) or ``last``
    (checkpoint.pt, the last finished epoch).
    """
    check_weights_choice(weights)
    paths = RunPaths(Path(run_dir))
    cfg = read_run_config(run_dir)
    vocab = Vocabulary.from_json(paths.root / "vocab.json")
    method = build_method(cfg, vocab, _image_shape(paths))
    if weights == "last":
        load_last_weights(method, paths.state)
    else:
        load_weights(method, paths.best, expect=weights_metadata(cfg))
    return cfg, method.to(pick_device(device)).eval(), vocab


def _image_shape(paths: RunPaths) -> tuple[int, ...]:
    from noisycorr.engine.checkpoint import read_metadata

    if not paths.best.is_file():
        raise InputError(paths.best, "the best weights of a run", "no such file")
    meta = read_metadata(paths.best)
    if "image_shape" not in meta:
        raise InputError(paths.best, "metadata key image_shape", "a file without it")
    return tuple(int(d) for d in meta["image_shape"].split(","))


def evaluate_run(
    run_dirs: str | Path | Sequence[str | Path],
    *,
    split: str | None = None,
    protocol: str | None = None,
    data: str | None = None,
    device: str = "cpu",
    weights: str = "best",
) -> dict[str, float]:
    """Evaluate one run, or the averaged similarity of several runs.

    Split, protocol and data default to those of the first run (its test split); ``weights`` is
    ``best`` (the validation-chosen epoch) or ``last`` (the last finished epoch).
    """
    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    loaded = [load_run(d, device=device, weights=weights) for d in dirs]
    cfg = loaded[0][0]
    if data is not None:
        cfg.data.root = data
    precomp = load_precomp(
        data_root(cfg),
        split or cfg.data.test_split,
        features=cfg.data.features,
        captions_per_image=cfg.data.captions_per_image,
    )
    backbones = [b for _, method, _ in loaded for b in method.backbones]
    vocabs = [v for _, method, v in loaded for _ in method.backbones]
    return evaluate_method(
        backbones,
        precomp,
        vocabs,
        protocol=protocol,
        settings=cfg.eval,
        device=pick_device(device),
    )
