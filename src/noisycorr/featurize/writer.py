"""``featurize``: from a table or webdataset shards to the precomp layout, in resumable chunks.

The distinct images of the source (in the order they are first used) are encoded in chunks of
``chunk_size`` images, batch by batch; each finished chunk is saved in a work folder
``{out}/.featurize-{split}/``, so a killed run continues after its last finished chunk and ends with
the same files. Memory is bounded by one batch of decoded images and one chunk of features. At the end
the pair-level files are assembled from the chunks through memory maps, each file is moved into place
atomically, and the manifest ``{split}_featurize.json`` is written last: a folder with a manifest is
finished.

Captions per image: the precomp layout has a fixed count, and web data has any number of captions per
image, so the output has one caption per image row (``captions_per_image: 1``): every usable source row
is one pair, and an image shared by several rows is encoded once and its features repeated on each of
their rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError
from noisycorr.featurize.encoders import GRID, ImageEncoder, create_encoder
from noisycorr.featurize.images import ImageDecodeError, decode_image, require_pillow
from noisycorr.featurize.sources import MISSING, UNDECODABLE, ImageRef, Source, SourceRow, read_source

__all__ = ["FeaturizeResult", "featurize", "manifest_path", "read_manifest"]

FORMAT_VERSION = 1
_GATHER_ROWS = 2048  # output rows copied at once when the pair-level arrays are assembled


def manifest_path(out: str | Path, split: str = "train") -> Path:
    """The manifest a finished featurization leaves: ``{out}/{split}_featurize.json``."""
    return Path(out) / f"{split}_featurize.json"


def read_manifest(out: str | Path, split: str = "train") -> dict[str, Any] | None:
    """The manifest of a finished featurization, or None when there is none."""
    path = manifest_path(out, split)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(path, "a featurize manifest (JSON)", "unreadable JSON") from None


@dataclass
class FeaturizeResult:
    """What a featurize call did.

    Attributes:
        out: the output folder.
        split: the split prefix of the files.
        manifest: the contents of ``{split}_featurize.json`` (counts, files, encoder, source).
        reused: True when the folder already held this featurization (nothing was computed).
        seconds: wall time of this call.
        images_encoded: images encoded by this call (0 when reused; fewer than all when resumed).
    """

    out: Path
    split: str
    manifest: dict[str, Any]
    reused: bool = False
    seconds: float = 0.0
    images_encoded: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Plan:
    images: list[ImageRef]  # distinct images, in first-use order
    image_rows: list[list[int]]  # per image: the indices into ``rows`` of the pairs that use it
    pairs: list[int]  # indices into ``rows`` of the usable rows, in source order
    pair_image: np.ndarray  # (n_pairs,) image index of each usable row


def _plan(source: Source) -> _Plan:
    index: dict[str, int] = {}
    images: list[ImageRef] = []
    image_rows: list[list[int]] = []
    pairs, pair_image = [], []
    for k, r in enumerate(source.rows):
        if r.problem is not None:
            continue
        j = index.get(r.identity)
        if j is None:
            j = index[r.identity] = len(images)
            images.append(r.ref)
            image_rows.append([])
        image_rows[j].append(k)
        pairs.append(k)
        pair_image.append(j)
    return _Plan(images, image_rows, pairs, np.asarray(pair_image, dtype=np.int64))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------- encoding


def _load(ref: ImageRef, encoder: ImageEncoder) -> tuple[np.ndarray | None, str]:
    """(3, H, W) network input of one image, or None and the reason it failed."""
    try:
        data = ref.read()
    except OSError as err:
        return None, f"{MISSING}: {err.strerror or err}"
    try:
        return encoder.preprocess(decode_image(data)), ""
    except ImageDecodeError as err:
        return None, f"{UNDECODABLE}: {err}"


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _encode_chunk(refs: list[ImageRef], encoder: ImageEncoder, *, batch_size: int, grid: bool,
                  pool: ThreadPoolExecutor | None, bar: Any) -> bytes:
    """Encode one chunk of images; returns the chunk file (npz: pooled, grid, ok, errors)."""
    n, d = len(refs), encoder.dim
    pooled = np.zeros((n, d), dtype=np.float32)
    cells = np.zeros((n, GRID * GRID, d) if grid else (0,), dtype=np.float16)
    errors = [""] * n
    for start in range(0, n, batch_size):
        batch = refs[start : start + batch_size]
        loaded = list(pool.map(lambda r: _load(r, encoder), batch)) if pool else [_load(r, encoder) for r in batch]
        good = [i for i, (x, _) in enumerate(loaded) if x is not None]
        for i, (_, err) in enumerate(loaded):
            errors[start + i] = err
        if good:
            x = torch.from_numpy(np.stack([loaded[i][0] for i in good]))
            p, g = encoder.encode(x)
            rows = np.asarray(good) + start
            pooled[rows] = p.numpy()
            if grid:
                cells[rows] = g.numpy()
        bar.update(len(batch))
    ok = np.asarray([not e for e in errors], dtype=bool)
    return _npz_bytes(pooled=pooled, grid=cells, ok=ok, errors=np.asarray(errors, dtype=str))


# ---------------------------------------------------------------------------------------- assembly


def _assemble_images(work: Path, n_chunks: int, n_images: int, dim: int, grid: bool) -> tuple[np.ndarray, list[str]]:
    """Concatenate the chunks into image-level memory maps in ``work``; returns (ok mask, errors)."""
    pooled = np.lib.format.open_memmap(work / "images_pooled.npy", "w+", np.float32, (n_images, dim))
    cells = (np.lib.format.open_memmap(work / "images_grid.npy", "w+", np.float16, (n_images, GRID * GRID, dim))
             if grid else None)
    ok = np.zeros(n_images, dtype=bool)
    errors: list[str] = []
    start = 0
    for c in range(n_chunks):
        with np.load(work / f"chunk-{c:05d}.npz", allow_pickle=False) as z:
            p = z["pooled"]
            stop = start + p.shape[0]
            pooled[start:stop] = p
            if cells is not None:
                cells[start:stop] = z["grid"]
            ok[start:stop] = z["ok"]
            errors += [str(e) for e in z["errors"]]
            start = stop
    pooled.flush()
    del pooled
    if cells is not None:
        cells.flush()
        del cells
    return ok, errors


def _gather(src: Path, rows: np.ndarray, dst: Path) -> None:
    """Write ``load(src)[rows]`` as a new .npy at ``dst`` (through a temp name), block by block."""
    arr = np.load(src, mmap_mode="r")
    tmp = dst.with_name(f".{dst.name}.tmp")
    out = np.lib.format.open_memmap(tmp, "w+", arr.dtype, (rows.size, *arr.shape[1:]))
    for a in range(0, rows.size, _GATHER_ROWS):
        out[a : a + _GATHER_ROWS] = arr[rows[a : a + _GATHER_ROWS]]
    out.flush()
    del out, arr
    tmp.replace(dst)


def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    # surrogateescape: bytes that were not UTF-8 in the source are written back as they were.
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


def _opt(x: int | None) -> Any:
    return "" if x is None else x


def _skipped_rows(rows: list[SourceRow]) -> list[list[Any]]:
    return [[_opt(r.row), _opt(r.line), r.image, r.problem, r.detail, r.caption] for r in rows]


# ------------------------------------------------------------------------------------------- driver


def featurize(
    source: str | Path | Source,
    out: str | Path,
    *,
    split: str = "train",
    fmt: str | None = None,
    image_col: str | None = None,
    caption_col: str | None = None,
    image_root: str | Path | None = None,
    encoder: str | ImageEncoder = "efficientnet-lite0",
    encoder_weights: str | None = None,
    grid: bool | None = None,
    batch_size: int = 32,
    chunk_size: int = 512,
    workers: int = 0,
    device: str = "cpu",
    vocab_min_count: int = 4,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FeaturizeResult:
    """Encode the images of a table or of webdataset shards into the precomp layout.

    Files in ``out`` (one pair per usable source row, ``captions_per_image: 1``):

    - ``{split}_pooled.npy`` (N_pairs, D) float32; ``{split}_ims.npy`` (N_pairs, 16, D) float16 grid
      (4 x 4 cells, row-major) when the encoder has one and ``grid`` is not False;
    - ``{split}_caps.txt``: caption k on line k (whitespace runs, newlines included, become one space);
      ``{split}_ids.txt``: the image of pair k as the source names it;
    - ``{split}_pairs.csv``: ``pair, row, line, image, caption`` per pair: its source record (0-based row,
      1-based start line for text tables) and the caption exactly as written;
    - ``{split}_skipped.csv``: ``row, line, image, reason, detail, caption`` per unusable record;
    - ``vocab.json`` (split ``train`` only): the NCR vocabulary of the captions;
    - ``{split}_featurize.json``: the manifest (source, encoder, counts), written last.

    Args:
        source: a CSV / TSV / JSON-lines / parquet table, a ``.tar`` shard or a folder of shards; or a
            source already read by :func:`read_source` (then ``fmt``, the columns and ``image_root`` are
            not used).
        out: the output folder (created); a run with the same inputs and settings resumes in it.
        split: the file prefix (``train``, ``dev``, ``test``, ...).
        fmt, image_col, caption_col, image_root: how to read the source (see :func:`read_source`).
        encoder: an encoder spec (:func:`create_encoder`) or a built encoder.
        encoder_weights: weights for a spec (None: its default).
        grid: write the grid features; None: when the encoder has them.
        batch_size: images per forward pass.
        chunk_size: images per saved chunk (the resume granularity).
        workers: threads that decode images (0: in the calling thread).
        device: where the encoder runs.
        vocab_min_count: words seen fewer times are ``<unk>`` in ``vocab.json``.
        overwrite: replace a finished or unfinished featurization of other inputs in ``out``.
        progress: show a progress bar.
        log: where one-line notes go (None: silent).

    Returns:
        A :class:`FeaturizeResult`.

    Raises:
        InputError: an unusable source (no such file, unknown format, missing column, no usable row), a
            folder holding the features of other inputs (without ``overwrite``), bad options.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"--{name.replace('_', '-')}", "a positive integer", repr(value))
    if not split or any(c in split for c in "/\\.") or split.startswith("-"):
        raise InputError("--split", "a split name such as train, dev or test", repr(split))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "an output folder", "an existing file")
    src = source if isinstance(source, Source) else read_source(
        source, fmt=fmt, image_col=image_col, caption_col=caption_col, image_root=image_root)
    plan = _plan(src)
    if not plan.pairs:
        _no_usable_row(src.path, src.rows)
    require_pillow()
    enc = encoder if isinstance(encoder, ImageEncoder) else create_encoder(encoder, weights=encoder_weights,
                                                                            device=device)
    if grid and not enc.has_grid:
        raise InputError("--grid", f"an encoder with grid features ({enc.name} has none)", "grid requested")
    use_grid = enc.has_grid if grid is None else bool(grid)

    chunk_key = {"version": FORMAT_VERSION, "encoder": enc.describe(), "grid": use_grid, "batch_size": batch_size,
                 "chunk_size": chunk_size, "images": [r.identity for r in (src.rows[p[0]] for p in plan.image_rows)]}
    chunks_digest = _digest(chunk_key)
    plan_digest = _digest({"chunks": chunks_digest, "split": split, "vocab_min_count": vocab_min_count,
                           "source": src.describe(),
                           "rows": [[r.row, r.line, r.image, r.caption, r.identity, r.problem, r.detail]
                                    for r in src.rows]})
    done = read_manifest(out, split)
    if done is not None and done.get("plan_digest") == plan_digest:
        say(f"{out}: {split} features of this source are there already ({done['counts']['pairs']} pairs)")
        return FeaturizeResult(out, split, done, reused=True, seconds=time.perf_counter() - t0,
                               counts=dict(done["counts"]))
    if done is not None and not overwrite:
        raise InputError(manifest_path(out, split), "the features of this source and these settings",
                         "those of other inputs (use another --out, or --overwrite)")
    work = out / f".featurize-{split}"
    state = work / "work.json"
    if state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("digest") != chunks_digest:
        if not overwrite:
            raise InputError(work, "an unfinished featurization of this source and these settings",
                             "one of other inputs (use another --out, or --overwrite to discard it)")
        shutil.rmtree(work)
    if done is not None:
        manifest_path(out, split).unlink()  # overwrite: the old manifest no longer describes the folder
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state, json.dumps({"digest": chunks_digest, "n_images": len(plan.images),
                                          "chunk_size": chunk_size}).encode("utf-8"))

    n_img = len(plan.images)
    n_chunks = -(-n_img // chunk_size)
    todo = [c for c in range(n_chunks) if not (work / f"chunk-{c:05d}.npz").is_file()]
    finished = n_img - sum(min(chunk_size, n_img - c * chunk_size) for c in todo)
    if finished:
        say(f"{out}: resuming {split} after {n_chunks - len(todo)} finished chunk(s) ({finished} of {n_img} images)")
    encoded = 0
    bar = tqdm(total=n_img, initial=finished, desc=f"featurize {split}", unit="img", disable=not progress)
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    try:
        for c in todo:
            refs = plan.images[c * chunk_size : (c + 1) * chunk_size]
            data = _encode_chunk(refs, enc, batch_size=batch_size, grid=use_grid, pool=pool, bar=bar)
            _save_chunk(work / f"chunk-{c:05d}.npz", data)
            encoded += len(refs)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()

    manifest = _finish(out, work, split, src, plan, enc, use_grid, n_chunks, vocab_min_count, plan_digest)
    shutil.rmtree(work, ignore_errors=True)
    return FeaturizeResult(out, split, manifest, seconds=time.perf_counter() - t0, images_encoded=encoded,
                           counts=dict(manifest["counts"]))


def _save_chunk(path: Path, data: bytes) -> None:
    """One finished chunk (a separate function so that tests can kill a run right after it)."""
    atomic_write_bytes(path, data)


def _no_usable_row(path: Path, rows: list[SourceRow]) -> None:
    reasons = Counter(r.problem for r in rows if r.problem)
    found = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "no record"
    raise InputError(path, "at least one usable image-caption row", f"none ({found})")


def _finish(out: Path, work: Path, split: str, src: Source, plan: _Plan, enc: ImageEncoder, grid: bool,
            n_chunks: int, vocab_min_count: int, plan_digest: str) -> dict[str, Any]:
    """Image failures -> skipped rows; pair-level files into ``out``; the manifest last."""
    ok, errors = _assemble_images(work, n_chunks, len(plan.images), enc.dim, grid)
    rows = src.rows
    for j in np.flatnonzero(~ok).tolist():
        reason, _, detail = errors[j].partition(": ")
        for k in plan.image_rows[j]:
            rows[k].problem, rows[k].detail = reason, detail
    keep = ok[plan.pair_image]
    pairs = [k for k, good in zip(plan.pairs, keep.tolist()) if good]
    if not pairs:  # every image failed to decode: leave nothing behind
        shutil.rmtree(work, ignore_errors=True)
        if not any(out.iterdir()):
            out.rmdir()
        _no_usable_row(src.path, rows)
    pair_image = plan.pair_image[keep]

    files = {f"{split}_pooled.npy": ("images_pooled.npy", (len(pairs), enc.dim), "float32")}
    if grid:
        files[f"{split}_ims.npy"] = ("images_grid.npy", (len(pairs), GRID * GRID, enc.dim), "float16")
    for name, (src_name, _, _) in files.items():
        _gather(work / src_name, pair_image, out / name)
    used = [rows[k] for k in pairs]
    texts = [r.text for r in used]
    atomic_write_bytes(out / f"{split}_caps.txt", "".join(t + "\n" for t in texts).encode("utf-8"))
    atomic_write_bytes(out / f"{split}_ids.txt", "".join(r.image + "\n" for r in used).encode("utf-8"))
    atomic_write_bytes(out / f"{split}_pairs.csv", _csv_bytes(
        ["pair", "row", "line", "image", "caption"],
        [[i, r.row, _opt(r.line), r.image, r.caption] for i, r in enumerate(used)]))
    skipped = [r for r in rows if r.problem is not None]
    atomic_write_bytes(out / f"{split}_skipped.csv", _csv_bytes(
        ["row", "line", "image", "reason", "detail", "caption"], _skipped_rows(skipped)))
    names = [*files, f"{split}_caps.txt", f"{split}_ids.txt", f"{split}_pairs.csv", f"{split}_skipped.csv"]
    if split == "train":
        Vocabulary.build(texts, min_count=vocab_min_count).to_json(out / "vocab.json")
        names.append("vocab.json")
    by_reason = Counter(r.problem for r in skipped)
    manifest = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "plan_digest": plan_digest,
        "source": src.describe(),
        "encoder": enc.describe(),
        "captions_per_image": 1,
        "counts": {"records": src.describe()["records"], "pairs": len(pairs),
                   "images": int(np.unique(pair_image).size), "skipped": len(skipped)},
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "features": {name: {"shape": list(shape), "dtype": dtype} for name, (_, shape, dtype) in files.items()},
        "files": names,
        "load": f"load_precomp(folder, {split!r}, features='pooled', captions_per_image=1)",
    }
    atomic_write_bytes(manifest_path(out, split), (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest
