"""Command-line entry points of the noisy-label task, called by ``noisycorr train`` / ``eval``.

``noisycorr train -c wiki-nirnl --set noise.rate=0.6`` reaches :func:`train_labeled_cli` when the
preset says ``task: labels`` (:func:`is_labeled_config`); ``noisycorr eval RUN`` reaches
:func:`eval_labeled_cli` when the run folder holds a labelled run (:func:`is_labeled_run`).
Bad input raises :class:`~noisycorr.errors.InputError`, which the main CLI turns into exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from noisycorr.config import load_config, read_preset_layers
from noisycorr.engine.labels import TASK, evaluate_labeled_run
from noisycorr.engine.rundir import is_labeled_run
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError

__all__ = ["eval_labeled_cli", "is_labeled_config", "is_labeled_run", "train_labeled_cli"]


def is_labeled_config(preset_or_path: str | None) -> bool:
    """Whether a preset name or YAML path (with its ``extends`` chain) declares ``task: labels``.

    An unknown preset or unreadable file answers False, so the pair-task loader reports the error.
    """
    if not preset_or_path:
        return False
    try:
        raw, _ = read_preset_layers(preset_or_path)
    except InputError:
        return False
    return raw.get("task") == TASK


def _fmt(m: dict[str, float]) -> str:
    return f"mAP i2t {m['i2t_map']:.4f}  t2i {m['t2i_map']:.4f}  avg {m['avg_map']:.4f}"


def train_labeled_cli(
    preset_or_path: str | None,
    overrides: Sequence[str],
    method: str | None = None,
    out: str | None = None,
    resume: bool = False,
) -> int:
    """``noisycorr train`` for a labelled config: train, print best validation and test mAP; returns 0.

    Args:
        preset_or_path: a preset name (``wiki-nirnl``) or a YAML file.
        overrides: ``section.key=value`` strings.
        method: shortcut for ``method.name=...``.
        out: shortcut for ``run.out_dir=...``.
        resume: continue the run in ``run.out_dir`` after its last finished epoch.
    """
    extra = list(overrides)
    if method:
        extra.append(f"method.name={method}")
    if out:
        extra.append(f"run.out_dir={out}")
    cfg = load_config(preset_or_path, extra)
    results = train(cfg, resume=resume)
    if not results:  # a rank other than 0 of a multi-process run: rank 0 reports
        return 0
    best = results["best"]
    val_kind = "noisy" if results["split"]["val"] == "train" and cfg.eval.val_labels == "noisy" else "given"
    print(f"best validation (epoch {best['epoch'] + 1}, {val_kind} labels): {_fmt(best['val'])}")
    print(f"test: {_fmt(results['test'])}")
    print(f"run folder: {cfg.run.out_dir}")
    return 0


def eval_labeled_cli(run_dirs: Sequence[str | Path], split: str | None = None, weights: str = "best") -> int:
    """``noisycorr eval`` for labelled runs: mAP of the best or last weights (several runs: averaged similarity)."""
    metrics = evaluate_labeled_run(list(run_dirs), split=split, weights=weights)
    title = " + ".join(str(d) for d in run_dirs)
    print(f"{title} [{split or 'test'}, {weights} weights]: {_fmt(metrics)}")
    if "clean_avg_map" in metrics and metrics["clean_avg_map"] != metrics["avg_map"]:
        clean = {k[6:]: v for k, v in metrics.items() if k.startswith("clean_")}
        print(f"  with the file's labels: {_fmt(clean)}")
    return 0
