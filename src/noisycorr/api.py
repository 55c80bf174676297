"""The data-cleaning API: a quality score for every training pair of a run, and the suspicious ones.

Scores come from the run's own method (:meth:`noisycorr.methods.base.Method.score_pairs`): each
network's per-sample hinge over a fixed set of in-batch negatives, turned into a clean probability by a
two-component mixture, averaged over the networks. For co-teaching methods (NCR and its followers)
these networks did not simply memorise the pairs: each one was trained on its peer's clean split, and
on the rest only with a margin shrunk by the rectified target. A ``vanilla`` run fits every pair,
noisy ones included, so its scores separate worse; prefer a robust method for auditing.

The array functions (``find_mismatched_pairs``, ``rank_pairs``, ``pair_scores_from_losses``) live in
:mod:`noisycorr.audit.scores` and are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from noisycorr.audit.scores import find_mismatched_pairs, pair_scores_from_losses, rank_pairs
from noisycorr.data.dataset import PairDataset
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.engine.context import pair_context
from noisycorr.engine.pairs import SCORES_FILE
from noisycorr.engine.rundir import RunPaths, read_run_config
from noisycorr.engine.runs import load_run, run_image_shape
from noisycorr.engine.setup import PreparedData, pick_device, prepare_data
from noisycorr.errors import InputError

__all__ = [
    "find_mismatched_pairs",
    "get_pair_quality_scores",
    "load_run_data",
    "pair_scores_from_losses",
    "rank_pairs",
    "score_data_folder",
]


def load_run_data(run: str | Path, *, data: str | None = None) -> PreparedData:
    """The splits, vocabulary and (noisy) training pairing a run was trained on.

    The pairing comes from the run's saved ``noise_index.npy`` when there is one; ``data``
    replaces the data folder (the same dataset moved elsewhere).
    """
    paths = RunPaths(Path(run))
    cfg = read_run_config(paths.root)
    if data is not None:
        cfg.data.root = data
    saved = paths.root / "noise_index.npy"
    if saved.is_file():
        cfg.noise.file = str(saved)
    elif cfg.noise.rate > 0:
        raise InputError(paths.root, "noise_index.npy for a run trained with noise", "no such file")
    cfg.data.vocab = str(paths.root / "vocab.json")
    return prepare_data(cfg, with_test=False)


def get_pair_quality_scores(
    run: str | Path,
    *,
    data: str | None = None,
    recompute: bool = False,
    estimator: str | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """One score per training pair of ``run`` in [0, 1]: the probability that the pair is a true match.

    Args:
        run: a run folder written by ``noisycorr train``.
        data: the data folder, when it moved since training.
        recompute: score again from the best weights instead of reading the run's ``pair_scores.npy``.
        estimator: ``"gmm"`` or ``"bmm"`` mixture over the per-sample losses (recomputes); None: the
            run's own method setting.
        device: where the networks run.
        batch_size: per-sample pass batch (default: the run's training batch); it fixes how many
            negatives each pair is compared with.
        progress: show a progress bar.

    Returns:
        (N_pairs,) float64, indexed like the training captions (pair k = caption k and its image).
    """
    paths = RunPaths(Path(run))
    saved = paths.root / SCORES_FILE
    if saved.is_file() and not recompute and estimator is None:
        return np.load(saved).astype(np.float64)
    cfg, method, _ = load_run(run, device=device)
    prepared = load_run_data(run, data=data)
    dataset = PairDataset(prepared.train, prepared.vocab, prepared.caption_image)
    ctx = pair_context(method, dataset, batch_size=batch_size or cfg.train.batch_size, device=pick_device(device),
                       seed=cfg.train.seed, epochs=cfg.train.epochs, progress=progress)
    return np.asarray(method.score_pairs(ctx, estimator=estimator, seed=cfg.train.seed), dtype=np.float64)


def score_data_folder(
    run: str | Path,
    data_root: str | Path,
    *,
    split: str = "train",
    captions_per_image: int | None = None,
    estimator: str | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, PrecompSplit]:
    """Score every pair of another precomp folder with a finished run's networks (no training).

    The run is only the scorer: its best weights, vocabulary and method settings (margin, estimator,
    per-sample pass) score the pairs of ``data_root`` as they are written there (caption k with image
    ``k // captions_per_image``), exactly as the run scored its own training pairs.

    Args:
        run: a run folder written by ``noisycorr train``.
        data_root: a precomp folder with ``{split}_{features}.npy`` (the run's ``data.features``) and
            ``{split}_caps.txt``; features of the shape the run was trained on.
        split: the split to score.
        captions_per_image: default: the run's ``data.captions_per_image`` (None there: inferred).
        estimator: ``"gmm"`` or ``"bmm"``; None: the run's method setting.
        device: where the networks run.
        batch_size: per-sample pass batch (default: the run's training batch).
        progress: show a progress bar.

    Returns:
        (N_pairs,) float64 scores (pair k = caption k) and the loaded split (features memory-mapped).

    Raises:
        InputError: a missing or malformed folder or split, features of another shape than the run's.
    """
    cfg, method, vocab = load_run(run, device=device)
    cpi = cfg.data.captions_per_image if captions_per_image is None else captions_per_image
    data = load_precomp(Path(data_root), split, features=cfg.data.features, captions_per_image=cpi)
    trained = run_image_shape(run)
    if tuple(data.images.shape[1:]) != trained:
        raise InputError(
            data.features_path,
            f"image features of shape (N, {', '.join(map(str, trained))}) as {run} was trained on",
            f"shape {tuple(data.images.shape)}",
        )
    dataset = PairDataset(data, vocab)
    ctx = pair_context(method, dataset, batch_size=batch_size or cfg.train.batch_size, device=pick_device(device),
                       seed=cfg.train.seed, epochs=cfg.train.epochs, progress=progress)
    scores = np.asarray(method.score_pairs(ctx, estimator=estimator, seed=cfg.train.seed), dtype=np.float64)
    return scores, data


def run_summary(run: str | Path) -> dict:
    """The run's ``results.json`` (empty when the run has not finished)."""
    path = Path(run) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
