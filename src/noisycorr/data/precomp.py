"""Reader for the SCAN/NCR "precomp" layout: memory-mapped features plus caption text.

Layout of one split in a folder::

    {split}_{features}.npy   (N_img, R, D) region features or (N_img, D) pooled, float16/32/64
    {split}_caps.txt         one caption per line, caption k belongs to image k // captions_per_image
    {split}_caps.tsv         (CC152K instead of .txt) ``img_id<TAB>caption[<TAB>...]``, one per image
    {split}_ids.txt          optional, one image id per line
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noisycorr.errors import InputError

_NCR_DEV_REPEAT = 5  # rows per image in the NCR Flickr30K dev_ims.npy
_CHUNK_BYTES = 64 << 20  # bound on the memory a validation pass reads at once


@dataclass
class PrecompSplit:
    """One split of a precomp folder.

    Attributes:
        root: the data folder.
        split: split name, e.g. ``"train"``.
        images: (N_img, R, D) or (N_img, D) array, memory-mapped, dtype as on disk.
        captions: N_cap raw caption strings (stripped), caption k of image k // captions_per_image.
        captions_per_image: 5 for Flickr/COCO, 1 for CC152K.
        ids: one id per image (``{split}_ids.txt`` or the TSV id column), or None.
        features: the feature file stem used (``ims``, ``pooled``, ...).
        repeated_rows: True when the file stored every image once per caption and was de-duplicated.
    """

    root: Path
    split: str
    images: np.ndarray
    captions: list[str]
    captions_per_image: int
    ids: list[str] | None = None
    features: str = "ims"
    repeated_rows: bool = field(default=False)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def image_of_caption(self) -> np.ndarray:
        """The clean pairing: (N_cap,) int64, caption k -> image k // captions_per_image."""
        return np.arange(self.n_captions, dtype=np.int64) // self.captions_per_image

    @property
    def features_path(self) -> Path:
        return Path(self.root) / f"{self.split}_{self.features}.npy"

    def __getstate__(self) -> dict:
        # A memory map pickles as a full in-memory copy; send the recipe to re-open it instead
        # (data-loader workers started by spawn/forkserver, multi-process runs).
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and (
            os.path.realpath(str(self.images.filename)) == os.path.realpath(self.features_path)
        ):
            state["images"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.images is None:
            images = np.load(self.features_path, mmap_mode="r", allow_pickle=False)
            self.images = images[::_NCR_DEV_REPEAT] if self.repeated_rows else images


def _read_lines(path: Path) -> list[str]:
    """UTF-8 lines without the final newline; ``\\r\\n`` endings accepted."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise InputError(
            path, "UTF-8 text", f"undecodable byte {raw[err.start]:#04x}", where=f"line {line}"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_no_empty(captions: list[str], path: Path) -> None:
    try:
        k = captions.index("")
    except ValueError:
        return
    raise InputError(path, "a non-empty caption on every line", "an empty line", where=f"line {k + 1}")


def _read_txt_captions(path: Path) -> list[str]:
    captions = [line.strip() for line in _read_lines(path)]
    _check_no_empty(captions, path)
    return captions


def _read_tsv_captions(path: Path) -> tuple[list[str], list[str]]:
    """CC152K captions: ``img_id<TAB>caption`` (further columns such as a URL are ignored).

    Lines are split on tabs directly; NCR uses ``csv.reader(delimiter="\\t")``, which agrees on
    the released files (they contain no quote characters).
    """
    captions, ids = [], []
    for k, line in enumerate(_read_lines(path)):
        cols = line.rstrip("\r").split("\t")
        if len(cols) < 2:
            raise InputError(path, "img_id<TAB>caption", f"{len(cols)} column(s)", where=f"line {k + 1}")
        ids.append(cols[0].strip())
        captions.append(cols[1].strip())
    _check_no_empty(captions, path)
    return captions, ids


def _rows_repeated(images: np.ndarray, group: int, *, distinct: bool, n_probe: int = 8) -> bool:
    """True if each image is stored ``group`` times in a row, judged on a few evenly spaced groups.

    Within each probed group the rows must be identical; with ``distinct``, the probed groups must
    also not all hold the same row (constant placeholder features are not evidence of the layout).
    """
    n_groups = images.shape[0] // group
    if n_groups < 1 or images.shape[0] % group:
        return False
    firsts = []
    for g in np.unique(np.linspace(0, n_groups - 1, num=min(n_probe, n_groups)).astype(np.int64)):
        rows = np.asarray(images[g * group : (g + 1) * group])
        if not (rows == rows[:1]).all():
            return False
        firsts.append(rows[0])
    return not distinct or not all(np.array_equal(f, firsts[0]) for f in firsts[1:])


def release_pages(images: np.ndarray) -> None:
    """Drop the pages of a read-only memory-mapped array from this process's resident memory.

    They stay in the OS page cache and are mapped again on the next read, so values are unchanged;
    without this, every row ever read counts in the process's RSS (the whole file after one pass).
    A no-op for in-memory arrays and writable or copy-on-write maps.
    """
    base, mode = images, None
    while base is not None and not isinstance(base, mmap.mmap):
        mode = getattr(base, "mode", mode)
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    if base is not None and mode == "r" and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


def _first_nonfinite_row(images: np.ndarray) -> int | None:
    """Index of the first row holding NaN or Inf, reading at most ~64 MiB at a time."""
    row_bytes = max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    axes = tuple(range(1, images.ndim))
    for start in range(0, images.shape[0], step):
        chunk = np.asarray(images[start : start + step])
        if chunk.dtype.itemsize <= 4:
            # A float64 row sum of float16/32 values cannot overflow, so it is finite iff every value is.
            ok = np.isfinite(chunk.sum(axis=axes, dtype=np.float64))
        else:
            ok = np.isfinite(chunk).all(axis=axes)
        release_pages(images)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def _load_features(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(path, "a .npy array file", f"unreadable data ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(path, "a single .npy array", type(arr).__name__)
    if arr.ndim not in (2, 3):
        raise InputError(path, "2 dims (N, D) or 3 dims (N, R, D)", f"{arr.ndim} dims, shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(path, "float16/32/64 features", f"dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise InputError(path, "at least one image row", "0 rows")
    return arr


def load_precomp(
    root: str | Path,
    split: str,
    *,
    features: str = "ims",
    captions_per_image: int | None = None,
    validate: bool = True,
) -> PrecompSplit:
    """Load one split of a precomp folder, features memory-mapped.

    Args:
        root: the folder that holds ``{split}_{features}.npy`` and ``{split}_caps.txt`` / ``.tsv``.
        split: ``train``, ``dev``, ``test``, ``testall``, ...
        features: the feature file stem: ``ims`` gives ``{split}_ims.npy``, ``pooled`` gives
            ``{split}_pooled.npy``.
        captions_per_image: 5 or 1; inferred from N_cap / N_img when None.
        validate: also scan every feature row for NaN/Inf (chunked; reads the whole file once).

    The NCR Flickr30K dev quirk: its ``dev_ims.npy`` stores each image once per caption (5070 rows
    for 5070 captions, 5 identical consecutive rows per image). When ``captions_per_image`` is 5
    and N_img == N_cap, or when it is None and sampled groups of 5 consecutive rows are identical,
    the rows are de-duplicated with a lazy strided view (every 5th row), giving N_cap / 5 images
    with 5 captions each. NCR's own loader instead validates on the first 1000 captions / 200
    images; here the whole split is kept.

    Returns:
        The split; ``images`` stays memory-mapped (a strided view when de-duplicated).

    Raises:
        InputError: missing folder or file, wrong array rank or dtype, a caption count that does
            not fit the image count, an empty caption line, NaN/Inf features, an ids file of the
            wrong length.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "a precomp data folder", "no such directory")
    feat_path = root / f"{split}_{features}.npy"
    if not feat_path.is_file():
        raise InputError(feat_path, f"the {split!r} features file {feat_path.name}", "no such file")
    txt_path, tsv_path = root / f"{split}_caps.txt", root / f"{split}_caps.tsv"
    tsv_ids: list[str] | None = None
    if txt_path.is_file():
        cap_path = txt_path
        captions = _read_txt_captions(txt_path)
    elif tsv_path.is_file():
        cap_path = tsv_path
        captions, tsv_ids = _read_tsv_captions(tsv_path)
    else:
        raise InputError(txt_path, f"a caption file {txt_path.name} or {tsv_path.name}", "neither exists")
    if not captions:
        raise InputError(cap_path, "at least one caption", "an empty file")

    images = _load_features(feat_path)
    n_raw, n_cap = int(images.shape[0]), len(captions)
    if captions_per_image is not None and captions_per_image < 1:
        raise InputError("captions_per_image", "a positive integer", repr(captions_per_image))

    repeated = False
    maybe_repeated = cap_path is txt_path and n_raw == n_cap and n_cap % _NCR_DEV_REPEAT == 0
    if maybe_repeated and captions_per_image in (None, _NCR_DEV_REPEAT):
        repeated = _rows_repeated(images, _NCR_DEV_REPEAT, distinct=captions_per_image is None)
        if captions_per_image == _NCR_DEV_REPEAT and not repeated:
            raise InputError(
                feat_path,
                f"{n_cap // _NCR_DEV_REPEAT} image rows for {n_cap} captions at 5 per image, "
                "or one row per caption with 5 identical consecutive rows per image (NCR dev layout)",
                f"{n_raw} rows that are not repeated in groups of 5",
            )
    if repeated:
        images = images[::_NCR_DEV_REPEAT]
        cpi = _NCR_DEV_REPEAT
    elif captions_per_image is not None:
        cpi = captions_per_image
        if n_cap != n_raw * cpi:
            raise InputError(
                cap_path,
                f"{n_raw * cpi} captions ({n_raw} images in {feat_path.name} x {cpi} per image)",
                f"{n_cap} lines",
            )
    else:
        if n_cap % n_raw:
            raise InputError(
                cap_path,
                f"a caption count that is a multiple of the {n_raw} images in {feat_path.name}",
                f"{n_cap} captions",
            )
        cpi = n_cap // n_raw
    n_img = n_cap // cpi

    ids: list[str] | None = None
    ids_path = root / f"{split}_ids.txt"
    if ids_path.is_file():
        ids = [line.strip() for line in _read_lines(ids_path)]
        if repeated and len(ids) == n_raw:
            ids = ids[::_NCR_DEV_REPEAT]
        if len(ids) != n_img:
            raise InputError(ids_path, f"{n_img} ids (one per image)", f"{len(ids)} lines")
    elif tsv_ids is not None:
        ids = tsv_ids[::cpi]

    if validate:
        bad = _first_nonfinite_row(images)
        if bad is not None:
            file_row = bad * _NCR_DEV_REPEAT if repeated else bad
            raise InputError(feat_path, "finite feature values", "NaN or Inf", where=f"image row {file_row}")

    return PrecompSplit(
        root=root,
        split=split,
        images=images,
        captions=captions,
        captions_per_image=cpi,
        ids=ids,
        features=features,
        repeated_rows=repeated,
    )
