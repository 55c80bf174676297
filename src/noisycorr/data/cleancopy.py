"""Write a copy of a precomp dataset without the pairs an audit flagged as mismatched.

The copy is a precomp folder of its own (one caption per image), readable by
:func:`noisycorr.data.precomp.load_precomp`. This module also holds the checks of the per-pair arrays
that both the copy and the audit report take: the pairing ``caption_image`` and boolean masks.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import _NCR_DEV_REPEAT, PrecompSplit
from noisycorr.errors import InputError

__all__ = ["check_mask", "check_pairing", "write_clean_copy"]

_CHUNK_BYTES = 64 << 20  # bound on the feature rows held in memory at once by write_clean_copy


# --------------------------------------------------------------------------------------------- checks


def check_mask(mask: Any, n: int, name: str) -> np.ndarray:
    """A per-pair boolean mask, checked.

    Args:
        mask: (n,) booleans, or integers that are all 0 or 1.
        n: the number of pairs.
        name: the argument's name, for the error message.

    Returns:
        (n,) bool.

    Raises:
        InputError: another shape, or values other than booleans / 0 / 1.
    """
    arr = np.asarray(mask)
    if arr.shape != (n,):
        raise InputError(name, f"shape ({n},), one entry per pair", f"shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
        raise InputError(name, "booleans or 0/1 integers", f"dtype {arr.dtype} with other values")
    return arr.astype(bool)


def check_pairing(caption_image: Any, n: int, n_images: int | None, name: str = "caption_image") -> np.ndarray:
    """A pairing (caption k with image row ``caption_image[k]``), checked.

    Args:
        caption_image: (n,) integer image rows.
        n: the number of captions (pairs).
        n_images: rows must be below this; None: any non-negative row.
        name: the argument's name, for the error message.

    Returns:
        (n,) int64.

    Raises:
        InputError: another shape, a non-integer dtype, or a row out of range (the first is named).
    """
    arr = np.asarray(caption_image)
    if arr.shape != (n,):
        raise InputError(name, f"shape ({n},), one image row per caption", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(name, "integer image rows", f"dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    limit = n_images if n_images is not None else np.iinfo(np.int64).max
    bad = (arr < 0) | (arr >= limit)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(name, f"image rows in [0, {limit})", str(int(arr[k])), where=f"caption {k}")
    return arr


# ------------------------------------------------------------------------------------------- writer


def _copy_rows(src: np.ndarray, rows: np.ndarray, dst_path: Path) -> int:
    """Write ``src[rows]`` to a new .npy file in chunks of at most ~``_CHUNK_BYTES``; returns its size."""
    out = np.lib.format.open_memmap(dst_path, mode="w+", dtype=src.dtype, shape=(rows.size, *src.shape[1:]))
    row_bytes = max(1, int(np.prod(src.shape[1:])) * src.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, rows.size, step):
        out[start : start + step] = src[rows[start : start + step]]
    out.flush()
    del out
    return dst_path.stat().st_size


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _feature_sources(
    src_root: Path, split: PrecompSplit, split_name: str, features: Sequence[str]
) -> tuple[dict[str, tuple[np.ndarray, int]], list[str]]:
    """Open each existing ``{split_name}_{name}.npy``; returns name -> (memmap, row stride) and the missing names."""
    found: dict[str, tuple[np.ndarray, int]] = {}
    missing = []
    for name in features:
        if not isinstance(name, str) or not name or "/" in name or os.sep in name:
            raise InputError("features", "feature file stems such as 'ims' or 'pooled'", repr(name))
        path = src_root / f"{split_name}_{name}.npy"
        if not path.is_file():
            missing.append(name)
            continue
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(path, "a .npy array file", f"unreadable data ({err})") from None
        if arr.ndim not in (2, 3):
            raise InputError(path, "2 dims (N, D) or 3 dims (N, R, D)", f"shape {arr.shape}")
        if arr.shape[0] == split.n_images:
            found[name] = (arr, 1)
        elif split.repeated_rows and arr.shape[0] == split.n_images * _NCR_DEV_REPEAT:
            found[name] = (arr, _NCR_DEV_REPEAT)  # NCR dev layout: one stored row per caption
        else:
            raise InputError(path, f"{split.n_images} image rows, as in the loaded split", f"{arr.shape[0]} rows")
    if not found:
        raise InputError(
            src_root, "a features file " + " or ".join(f"{split_name}_{f}.npy" for f in features), "none exists"
        )
    return found, missing


def _files_to_link(src_root: Path, split_name: str) -> list[str]:
    """Regular files of the other splits and shared files (vocab JSONs); not this split's, not READMEs."""
    names = []
    for p in sorted(src_root.iterdir()):
        if p.name.startswith((".", f"{split_name}_", "README")) or not p.is_file():
            continue
        names.append(p.name)
    return names


def write_clean_copy(
    dst: str | Path,
    *,
    split: PrecompSplit,
    caption_image: np.ndarray,
    keep: np.ndarray,
    src_root: str | Path,
    split_name: str = "train",
    features: Sequence[str] = ("ims",),
    link_other_splits: bool = True,
) -> dict:
    """Write a copy of a precomp dataset without the dropped pairs.

    The precomp layout pairs caption k with image ``k // captions_per_image``, so the copy uses one
    caption per image: output caption j is the j-th kept caption (original order) and output image
    row j a copy of its image row ``caption_image[k]``. With ``captions_per_image == 1`` and the
    identity pairing (web data such as CC152K) this just keeps rows; with 5 captions per image an
    image kept with m captions is stored m times (the returned ``bytes_written`` says how large the
    copy is). Load it with ``load_precomp(dst, split_name, captions_per_image=1)``: the explicit 1
    stops the NCR dev-layout detection from mistaking images kept with all five captions for that
    layout.

    Files in ``dst``:

    - ``{split_name}_{name}.npy`` for each name in ``features`` whose source file exists (region
      (N, R, D) or pooled (N, D)), same dtype, copied in chunks through a memory map;
    - ``{split_name}_caps.txt`` (also when the source had a CC152K ``.tsv``), ``{split_name}_ids.txt``
      when the split has ids (``{split}_ids.txt`` or the TSV id column), one per output row;
    - ``{split_name}_source_pairs.npy``: (n_kept, 2) int64, per output row the source caption index
      and source image row (the dropped pairs are the caption indices missing from column 0);
    - ``README.txt``: what was dropped and how;
    - with ``link_other_splits``: absolute symbolic links to every other regular file of
      ``src_root`` (other splits' captions / features / ids, vocab JSONs), except this split's
      files and README files. Absolute links keep working when ``dst`` is moved, not when the
      source is.

    Everything is written into a staging folder next to ``dst`` that is renamed to ``dst`` at the
    end, so a failure leaves nothing behind.

    Args:
        dst: new folder; must not exist, or be empty.
        split: the loaded split (captions, captions per image, ids, image count).
        caption_image: (N_cap,) int training pairing, caption k with image row ``caption_image[k]``.
        keep: (N_cap,) bool, True = keep the pair.
        src_root: the folder the split was loaded from (feature files and other splits).
        split_name: the split's file prefix.
        features: feature file stems to copy; missing ones are skipped (at least one must exist).
        link_other_splits: link the other files of ``src_root`` into the copy.

    Returns:
        Figures: pairs in / kept / dropped, output rows, features written (shape, dtype, bytes),
        total ``bytes_written``, linked files.

    Raises:
        InputError: ``dst`` exists and is not empty; arrays of the wrong shape or type; no kept pair;
            no features file; a features file whose row count does not fit the split.
    """
    dst = Path(dst)
    src_root = Path(src_root)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(dst, "a new or empty folder for the clean copy", "an existing non-empty path")
    if not isinstance(split, PrecompSplit):
        raise InputError("split", "a PrecompSplit from load_precomp", type(split).__name__)
    if not src_root.is_dir():
        raise InputError(src_root, "the precomp data folder", "no such directory")
    n_cap = split.n_captions
    pairing = check_pairing(caption_image, n_cap, split.n_images)
    kept = np.flatnonzero(check_mask(keep, n_cap, "keep"))
    if kept.size == 0:
        raise InputError("keep", "at least one kept pair", "all pairs dropped")
    sources, missing = _feature_sources(src_root, split, split_name, features)
    rows = pairing[kept]
    ids = None if split.ids is None else [split.ids[r] for r in rows.tolist()]
    linked = _files_to_link(src_root, split_name) if link_other_splits else []

    dst.parent.mkdir(parents=True, exist_ok=True)
    # A whole folder is published at once; atomic_write_bytes covers single files only.
    staging = dst.parent / f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        written: dict[str, dict[str, Any]] = {}
        for name, (arr, stride) in sources.items():
            size = _copy_rows(arr, rows * stride, staging / f"{split_name}_{name}.npy")
            written[name] = {
                "shape": [int(rows.size), *map(int, arr.shape[1:])],
                "dtype": str(arr.dtype),
                "bytes": size,
            }
        caps_text = "".join(split.captions[k] + "\n" for k in kept.tolist())
        atomic_write_bytes(staging / f"{split_name}_caps.txt", caps_text.encode("utf-8"))
        if ids is not None:
            atomic_write_bytes(staging / f"{split_name}_ids.txt", "".join(i + "\n" for i in ids).encode("utf-8"))
        source_pairs = np.stack([kept, rows], axis=1).astype(np.int64)
        atomic_write_bytes(staging / f"{split_name}_source_pairs.npy", _npy_bytes(source_pairs))
        for name in linked:
            os.symlink((src_root / name).resolve(), staging / name)
        info: dict[str, Any] = {
            "dst": str(dst),
            "src_root": str(src_root),
            "split": split_name,
            "captions_per_image_in": split.captions_per_image,
            "captions_per_image_out": 1,
            "n_pairs_in": n_cap,
            "n_pairs_kept": int(kept.size),
            "n_pairs_dropped": int(n_cap - kept.size),
            "n_images_in": split.n_images,
            "n_image_rows_out": int(rows.size),
            "n_distinct_images_out": int(np.unique(rows).size),
            "features": written,
            "features_missing": missing,
            "bytes_written": int(sum(f["bytes"] for f in written.values())),
            "linked": linked,
        }
        atomic_write_bytes(staging / "README.txt", _clean_readme(info).encode("utf-8"))
        if dst.exists():
            dst.rmdir()  # empty, checked above
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _clean_readme(info: dict[str, Any]) -> str:
    sp = info["split"]
    feats = "\n".join(
        f"  {sp}_{name}.npy  shape {tuple(f['shape'])}  {f['dtype']}  {f['bytes']} bytes"
        for name, f in info["features"].items()
    )
    lines = [
        f"noisycorr clean copy of {info['src_root']} (split {sp!r}), written by noisycorr.audit.write_clean_copy.",
        "",
        f"Source pairs:  {info['n_pairs_in']} (caption k with image row caption_image[k]; "
        f"{info['n_images_in']} images, {info['captions_per_image_in']} captions per image)",
        f"Kept pairs:    {info['n_pairs_kept']}",
        f"Dropped pairs: {info['n_pairs_dropped']} (flagged as suspected mismatches)",
        "",
        "Layout: one caption per image. Output caption j is the j-th kept caption in source order and",
        "output image row j a copy of its source image row, so an image kept with several captions is",
        f"stored once per caption ({info['n_image_rows_out']} rows, {info['n_distinct_images_out']} distinct images).",
        f"Load with load_precomp(<this folder>, {sp!r}, captions_per_image=1).",
        "",
        f"{sp}_source_pairs.npy: (n_kept, 2) int64, per output row [source caption index, source image row];",
        "the dropped pairs are the source caption indices missing from column 0.",
        "",
        "Features:",
        feats,
    ]
    if info["features_missing"]:
        lines.append("Not in the source (skipped): " + ", ".join(info["features_missing"]))
    if info["linked"]:
        lines += ["", "Absolute symbolic links to the source folder (other splits, vocabularies):"]
        lines += [f"  {name}" for name in info["linked"]]
    return "\n".join(lines) + "\n"
