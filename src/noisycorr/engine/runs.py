"""Reopen a finished (or interrupted) run folder: its resolved config, vocabulary and best or last weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from noisycorr.config import Config
from noisycorr.data.paths import check_readable
from noisycorr.data.precomp import load_precomp
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.checkpoint import check_weights_choice, load_last_weights, load_weights
from noisycorr.engine.inference import evaluate_method
from noisycorr.engine.pairs import weights_metadata
from noisycorr.engine.rundir import RunPaths, read_run_config
from noisycorr.engine.setup import build_method, data_root, pick_device
from noisycorr.errors import InputError
from noisycorr.methods.base import Method


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
    for path, what in ((paths.root / "vocab.json", "the vocabulary of a run"),
                       (paths.best, "the best weights of a run"), (paths.state, "the training checkpoint of a run")):
        check_readable(path, what=what)
    vocab = Vocabulary.from_json(paths.root / "vocab.json")
    method = build_method(cfg, vocab, _image_shape(paths), pretrained_words=False)  # weights loaded below
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


def run_image_shape(run_dir: str | Path) -> tuple[int, ...]:
    """The shape of one image's features that the run's weights expect, e.g. (1280,) pooled."""
    return _image_shape(RunPaths(Path(run_dir)))


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
    root, split = data_root(cfg), split or cfg.data.test_split
    precomp = load_precomp(root, split, features=cfg.data.features, captions_per_image=cfg.data.captions_per_image)
    trained = _image_shape(RunPaths(Path(dirs[0])))
    if tuple(precomp.images.shape[1:]) != trained:
        raise InputError(
            root / f"{split}_{cfg.data.features}.npy",
            f"image features of shape (N, {', '.join(map(str, trained))}) as {dirs[0]} was trained on",
            f"shape {tuple(precomp.images.shape)}",
        )
    combine = None
    if len(loaded) == 1:  # one run: its method says how its networks are combined
        _, method, vocab = loaded[0]
        backbones, combine = method.eval_backbones(), method.eval_similarity
        vocabs = [vocab] * len(backbones)
    else:  # an ensemble of runs: the mean of every run's networks
        backbones = [b for _, method, _ in loaded for b in method.eval_backbones()]
        vocabs = [v for _, method, v in loaded for _ in method.eval_backbones()]
    return evaluate_method(
        backbones, precomp, vocabs, protocol=protocol, settings=cfg.eval, device=pick_device(device), combine=combine
    )
