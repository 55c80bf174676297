"""``noisycorr audit SOURCE``: from a table or webdataset shards to a ranked list of suspicious pairs.

Steps, each cached in the output folder ``OUT``:

1. featurize the source into ``OUT/features`` (:func:`noisycorr.featurize.featurize`; a finished one is
   reused, an interrupted one resumes);
2. write a validation split ``auditval`` there: a copy of up to ``val_size`` training pairs of distinct
   images, drawn with the run seed. It is not held out (every pair must be scored) and it is as noisy as
   the rest, so its rSum measures how well the model fits the data: the trainer's best epoch is then in
   practice the last one;
3. train the preset (default ``audit-global``: NCR on the pooled features) into ``OUT/run`` (resumed
   when interrupted; a run trained on other features is an error);
4. score every pair with the trained method, find the caption of the data each listed image matches
   best, and write ``pairs.csv``, ``report.html`` (thumbnails, self-contained), ``report.md``,
   ``scores.png`` and ``summary.json`` into ``OUT``;
5. with ``clean_copy``, write the source again without the flagged rows and without the rows that
   featurize skipped, in the source's own format.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.audit.report import write_audit
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import load_precomp
from noisycorr.errors import InputError
from noisycorr.featurize.encoders import ImageEncoder
from noisycorr.featurize.rewrite import write_source_copy
from noisycorr.featurize.sources import Source, read_source
from noisycorr.featurize.writer import featurize

__all__ = ["audit_source", "best_matching_captions", "is_run_folder"]

VAL_SPLIT = "auditval"
DEFAULT_PRESET = "audit-global"
_MARKER = "audit-features.json"


def is_run_folder(path: str | Path) -> bool:
    """True for a folder written by ``noisycorr train`` (it holds ``config.yaml``)."""
    return (Path(path) / "config.yaml").is_file()


def _write_val_split(features: Path, ids: list[str], size: int, seed: int) -> int:
    """``auditval_*``: up to ``size`` pairs, one per distinct image, drawn with ``seed``; returns the count."""
    first: dict[str, int] = {}
    for k, name in enumerate(ids):
        first.setdefault(name, k)
    candidates = np.fromiter(first.values(), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(candidates, size=min(size, candidates.size), replace=False))
    pooled = np.load(features / "train_pooled.npy", mmap_mode="r")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pooled[rows]))
    caps = (features / "train_caps.txt").read_text(encoding="utf-8").splitlines()
    atomic_write_bytes(features / f"{VAL_SPLIT}_pooled.npy", buf.getvalue())
    atomic_write_bytes(features / f"{VAL_SPLIT}_caps.txt", "".join(caps[k] + "\n" for k in rows).encode("utf-8"))
    atomic_write_bytes(features / f"{VAL_SPLIT}_ids.txt", "".join(ids[k] + "\n" for k in rows).encode("utf-8"))
    return int(rows.size)


def _read_pairs(features: Path) -> list[dict[str, str]]:
    with open(features / "train_pairs.csv", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        return list(csv.DictReader(fh))


def best_matching_captions(run: str | Path, features: str | Path, rows: Sequence[int], *,
                           device: str = "cpu") -> np.ndarray:
    """For each image row in ``rows``: the training caption the run's model scores highest with it.

    The evaluation networks' similarities are combined as the method evaluates (NCR: their mean).

    Returns:
        (len(rows),) int64 caption indices.
    """
    from noisycorr.backbones.base import similarity_matrix
    from noisycorr.engine.inference import encode_split
    from noisycorr.engine.runs import load_run

    cfg, method, vocab = load_run(run, device=device)
    split = load_precomp(features, "train", features=cfg.data.features, captions_per_image=1, validate=False)
    idx = np.asarray(rows, dtype=np.int64)
    sims = []
    for backbone in method.eval_backbones():
        img, txt, lens = encode_split(backbone, split, vocab, batch_size=cfg.eval.batch_size, device=device)
        sims.append(similarity_matrix(backbone, img[idx], txt, lens, img_chunk=cfg.eval.img_chunk,
                                      txt_chunk=cfg.eval.txt_chunk))
    return method.eval_similarity(sims).argmax(dim=1).numpy().astype(np.int64)


def _check_run_marker(run: Path, digest: str) -> None:
    marker = run / _MARKER
    if marker.is_file():
        found = json.loads(marker.read_text(encoding="utf-8")).get("plan_digest")
        if found != digest:
            raise InputError(run, "a run trained on the features in this audit folder",
                             "one trained on other features (delete the run folder, or use another --out)")
    elif is_run_folder(run):
        raise InputError(run, "an audit's run folder", "a run folder made by something else")


def audit_source(
    source: str | Path,
    out: str | Path,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    fmt: str | None = None,
    image_col: str | None = None,
    caption_col: str | None = None,
    image_root: str | Path | None = None,
    encoder: str | ImageEncoder = "efficientnet-lite0",
    encoder_weights: str | None = None,
    batch_size: int = 16,
    workers: int = 0,
    val_size: int = 1000,
    threshold: float = 0.5,
    top: int = 50,
    clean_copy: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Featurize, train, score and report a table or webdataset source (see the module docstring).

    Args:
        source: a CSV / TSV / JSON-lines / parquet table or webdataset shards.
        out: the audit folder (features, run and report go there).
        preset: the training preset (default ``audit-global``) and ``overrides`` (``section.key=value``).
        fmt, image_col, caption_col, image_root: how to read the source.
        encoder, encoder_weights, batch_size, workers: how to featurize it.
        val_size: pairs (of distinct images) in the validation split.
        threshold: flag pairs whose clean probability is below this.
        top: pairs listed in the reports.
        clean_copy: also write the source without the flagged and the skipped rows here.
        device: where featurization and training run (``train.device`` too unless overridden).

    Returns:
        The report summary, with ``seconds`` per step, the featurize counts and the clean copy's figures.

    Raises:
        InputError: an unusable source, a folder holding another audit, an existing ``clean_copy``.
    """
    from noisycorr.api import get_pair_quality_scores
    from noisycorr.config import load_config
    from noisycorr.engine.trainer import train
    from noisycorr.featurize.images import thumbnail_data_uri

    say = log or (lambda _msg: None)
    out = Path(out)
    if clean_copy is not None and Path(clean_copy).exists():
        raise InputError(clean_copy, "a new path for the cleaned copy", "an existing file or folder")
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 1:
        raise InputError("--val-size", "a positive integer", repr(val_size))
    features, run = out / "features", out / "run"
    base = [f"data.root={features}", f"run.out_dir={run}"]
    if device != "cpu":
        base.append(f"train.device={device}")
    cfg = load_config(preset or DEFAULT_PRESET, [*base, *overrides])
    if cfg.data.features != "pooled" or cfg.data.val_split != VAL_SPLIT:
        raise InputError("--config", f"a preset on pooled features validating on {VAL_SPLIT!r}",
                         f"data.features={cfg.data.features!r}, data.val_split={cfg.data.val_split!r}")
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    src: Source = read_source(source, fmt=fmt, image_col=image_col, caption_col=caption_col, image_root=image_root)
    feat = featurize(src, features, encoder=encoder, encoder_weights=encoder_weights, grid=False,
                     batch_size=batch_size, workers=workers, device=device, vocab_min_count=cfg.data.vocab_min_count,
                     progress=progress, log=log)
    seconds["featurize"] = round(time.perf_counter() - t, 1)
    counts = feat.manifest["counts"]
    say(f"featurized: {counts['pairs']} pairs of {counts['images']} images; rows skipped: {counts['skipped']} "
        f"(features/train_skipped.csv); {seconds['featurize']:.0f} s")
    pairs = _read_pairs(features)
    ids = [p["image"] for p in pairs]
    n_val = _write_val_split(features, ids, val_size, cfg.train.seed)

    t = time.perf_counter()
    digest = feat.manifest["plan_digest"]
    _check_run_marker(run, digest)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run / _MARKER, json.dumps({"plan_digest": digest}).encode("utf-8"))
    say(f"== training {cfg.method['name']} ({preset or DEFAULT_PRESET}) into {run}; validation: {n_val} pairs")
    train(cfg, resume=True)
    seconds["train"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    scores = get_pair_quality_scores(run)
    if scores.size != len(pairs):
        raise InputError(run / "pair_scores.npy", f"{len(pairs)} scores, one per pair", f"{scores.size}")
    names, image_of_pair = np.unique(np.asarray(ids, dtype=object), return_inverse=True)
    # distinct images in first-use order, so image numbers follow the source
    first_use = np.full(names.size, len(ids), dtype=np.int64)
    np.minimum.at(first_use, image_of_pair, np.arange(len(ids)))
    order = np.argsort(first_use, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(order.size)
    caption_image = renumber[image_of_pair]
    image_names = [str(names[j]) for j in order]
    rep_row = first_use[order]  # a pair row holding each distinct image's features

    from noisycorr.audit.scores import severity_order

    listed = np.unique(caption_image[severity_order(scores)[: max(0, min(top, scores.size))]])
    best = best_matching_captions(run, features, rep_row[listed], device=device) if listed.size else []
    best_captions = {int(j): int(c) for j, c in zip(listed.tolist(), np.asarray(best).tolist())}
    by_row = {r.row: r for r in src.rows if r.row is not None}

    def thumbnail(image: int) -> str | None:
        ref = by_row[int(pairs[int(rep_row[image])]["row"])].ref
        try:
            return None if ref is None else thumbnail_data_uri(ref.read())
        except OSError:
            return None

    summary = write_audit(
        out, scores=scores, captions=[p["caption"] for p in pairs], caption_image=caption_image,
        image_ids=image_names, threshold=threshold, top=top, title="noisycorr audit",
        source=f"{src.path} ({src.format}); {counts['pairs']} pairs; rows skipped: {counts['skipped']}; "
               f"run {run}",
        extra_columns={"row": [int(p["row"]) for p in pairs], "line": [p["line"] for p in pairs]},
        thumbnails=thumbnail, best_captions=best_captions, embed_plot=True,
    )
    seconds["report"] = round(time.perf_counter() - t, 1)
    summary["featurize"] = {"counts": counts, "skipped_by_reason": feat.manifest["skipped_by_reason"],
                            "reused": feat.reused}
    if clean_copy is not None:
        flagged = scores < threshold
        keep = [int(p["row"]) for p, bad in zip(pairs, flagged.tolist()) if not bad]
        summary["clean_copy"] = write_source_copy(src, clean_copy, keep)
        say(f"cleaned copy: {summary['clean_copy']['records_kept']} rows kept, "
            f"{summary['clean_copy']['records_dropped']} dropped -> {clean_copy}")
    summary["seconds"] = seconds
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8"))
    return summary
