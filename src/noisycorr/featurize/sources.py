"""Read a practitioner's pairs: a table (CSV, TSV, JSON lines, parquet) or a folder of webdataset shards.

Every record becomes a :class:`SourceRow`: its position in the source, the image as the source names it,
where its bytes are, and the caption. Rows that cannot be used are kept with a ``problem`` (the reason
that goes to ``skipped.csv``) instead of stopping the run; only a source that is unusable as a whole (no
such file, an unknown format, no such column) raises :class:`~noisycorr.errors.InputError`.

Tables name the image by a local path, relative to the table's folder (or ``image_root``). Webdataset
shards are uncompressed ``.tar`` files in which the files of one sample share a key (``{key}.jpg`` and
``{key}.txt``, as img2dataset writes them); their image is read from the shard at its byte offset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from noisycorr.errors import InputError

__all__ = [
    "FORMATS",
    "ImageRef",
    "Source",
    "SourceRow",
    "detect_format",
    "read_source",
]

FORMATS = ("csv", "tsv", "jsonl", "parquet", "webdataset")
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "filepath", "img", "jpg")
CAPTION_COLUMNS = ("caption", "text", "alt", "alt_text", "txt", "sentence", "title")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".tar": "webdataset"}
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape leaves for undecodable bytes

# The reasons a row is skipped (the `reason` column of skipped.csv).
MISSING = "missing image file"
UNDECODABLE = "undecodable image"
EMPTY = "empty caption"
BAD_TEXT = "caption not UTF-8"
BAD_PATH = "bad image path"
DUPLICATE = "duplicate row"
BAD_ROW = "unparseable row"
NO_IMAGE = "no image in sample"
NO_CAPTION = "no caption in sample"
BAD_SHARD = "unreadable shard"


@dataclass(frozen=True)
class ImageRef:
    """Where an image's bytes are: a whole file, or ``size`` bytes at ``offset`` inside a tar shard."""

    path: str
    offset: int = -1
    size: int = -1

    def read(self) -> bytes:
        """The image bytes (raises OSError when the file went away)."""
        if self.offset < 0:
            return Path(self.path).read_bytes()
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.size)


@dataclass
class SourceRow:
    """One record of the source.

    Attributes:
        row: 0-based record number (data rows of a table, samples of the shards in order); None for a
            problem that belongs to no record (an unreadable shard).
        line: 1-based line where the record starts (CSV / TSV / JSON lines), else None.
        image: the image as the source names it: the path in the table, or ``shard.tar/key``.
        caption: the caption as written (may hold newlines); "" when there is none.
        ref: where the image bytes are; None when they cannot be located.
        identity: what makes two rows share one image: the resolved file with its size and mtime, or
            the SHA-1 of a shard member's bytes.
        problem: why the row is skipped (one of the reasons above), None for a usable row.
        detail: more about the problem (the error text, the row it duplicates).
    """

    row: int | None
    line: int | None
    image: str
    caption: str
    ref: ImageRef | None = None
    identity: str = ""
    problem: str | None = None
    detail: str = ""

    @property
    def text(self) -> str:
        """The caption on one line (runs of whitespace, newlines included, become one space)."""
        return " ".join(self.caption.split())


@dataclass
class Source:
    """A read source: its records in order, and how they were found."""

    path: Path
    format: str
    image_col: str | None
    caption_col: str | None
    rows: list[SourceRow]

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.format, "image_col": self.image_col,
                "caption_col": self.caption_col, "records": sum(r.row is not None for r in self.rows)}


# ------------------------------------------------------------------------------------------ helpers


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The source format: ``fmt`` when given, a folder = webdataset shards, else by the file suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError("--format", f"one of {list(FORMATS)}", repr(fmt))
        return fmt
    if path.is_dir():
        return "webdataset"
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputError(path, f"a table ({', '.join(s for s in _SUFFIXES if s != '.tar')}), a .tar shard or a "
                         "folder of shards (or --format)", f"suffix {path.suffix or '(none)'!r}")
    return found


def _pick_column(names: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path,
                 option: str) -> str:
    if wanted is not None:
        if wanted not in names:
            raise InputError(path, f"a column {wanted!r} ({what}, {option})", f"the columns {names}")
        return wanted
    lower = {n.lower(): n for n in names}
    for d in defaults:
        if d in lower:
            return lower[d]
    raise InputError(path, f"a column with the {what} (one of {list(defaults)}, or {option})", f"the columns {names}")


def _file_row(row: int, line: int | None, raw_path: object, raw_caption: object, base: Path) -> SourceRow:
    """A table record: locate the image file and check the caption."""
    caption = raw_caption if isinstance(raw_caption, str) else ""
    if isinstance(raw_caption, bytes):
        try:
            caption = raw_caption.decode("utf-8")
        except UnicodeDecodeError:
            return SourceRow(row, line, _show(raw_path), "", problem=BAD_TEXT, detail="invalid UTF-8 bytes")
    if isinstance(raw_path, bytes):
        try:
            raw_path = raw_path.decode("utf-8")
        except UnicodeDecodeError:
            return SourceRow(row, line, _show(raw_path), caption, problem=BAD_PATH, detail="not UTF-8")
    image = raw_path if isinstance(raw_path, str) else ""
    out = SourceRow(row, line, image.strip(), caption)
    if raw_caption is not None and not isinstance(raw_caption, (str, bytes)):
        out.problem, out.detail = BAD_TEXT, f"a {type(raw_caption).__name__}, not text"
    elif _NOT_UTF8.search(caption):
        out.problem, out.detail = BAD_TEXT, "invalid UTF-8 bytes"
    if out.problem:
        return out
    if not out.image or _NOT_UTF8.search(out.image) or "\n" in out.image or "\0" in out.image:
        out.problem, out.detail = BAD_PATH, "empty" if not out.image else "not a one-line UTF-8 path"
        return out
    path = Path(out.image).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        st = path.stat()
    except OSError as err:
        out.problem, out.detail = MISSING, err.strerror or "cannot stat"
        return out
    if not path.is_file():
        out.problem, out.detail = MISSING, "not a regular file"
        return out
    out.ref = ImageRef(str(path))
    out.identity = f"file:{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
    if not out.text:
        out.problem = EMPTY
    return out


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


# -------------------------------------------------------------------------------------------- tables


def _open_text(path: Path):
    # surrogateescape: a row with bad bytes is skipped alone instead of failing the whole file.
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as err:
        raise InputError(path, "a readable table", err.strerror or "unreadable") from None


def delimited_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str] | None, str]]:
    """(start line, fields or None, parse error) per record after the header; blank lines are no record.

    The first item yielded is the header (line 1); it raises InputError when there is none.
    """
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            yield 1, next(reader), ""
        except StopIteration:
            raise InputError(path, "a header row naming the columns", "an empty file") from None
        except csv.Error as err:
            raise InputError(path, "a header row naming the columns", f"unparseable text ({err})") from None
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield line, None, str(err)
                continue
            if fields:
                yield line, fields, ""


def _read_delimited(path: Path, delimiter: str, image_col: str | None, caption_col: str | None,
                    base: Path) -> tuple[list[SourceRow], str, str]:
    records = delimited_records(path, delimiter)
    _, header, _ = next(records)
    img = _pick_column(header, image_col, IMAGE_COLUMNS, "image path", path, "--image-col")
    cap = _pick_column(header, caption_col, CAPTION_COLUMNS, "caption", path, "--caption-col")
    i_img, i_cap = header.index(img), header.index(cap)
    rows: list[SourceRow] = []
    for line, fields, err in records:
        if fields is None:
            rows.append(SourceRow(len(rows), line, "", "", problem=BAD_ROW, detail=err))
        elif len(fields) <= max(i_img, i_cap):
            rows.append(SourceRow(len(rows), line, "", "", problem=BAD_ROW,
                                  detail=f"{len(fields)} fields, the header has {len(header)}"))
        else:
            rows.append(_file_row(len(rows), line, fields[i_img], fields[i_cap], base))
    return rows, img, cap


def jsonl_records(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw text with its line ending) per non-blank line of a JSON-lines file."""
    with _open_text(path) as fh:
        for k, text in enumerate(fh, start=1):
            if text.strip():
                yield k, text


def _read_jsonl(path: Path, image_col: str | None, caption_col: str | None,
                base: Path) -> tuple[list[SourceRow], str, str]:
    records: list[tuple[int, dict | None, str]] = []
    for k, text in jsonl_records(path):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            records.append((k, None, f"invalid JSON ({err.msg})"))
            continue
        records.append((k, obj, "") if isinstance(obj, dict) else (k, None, f"a JSON {type(obj).__name__}"))
    first = next((obj for _, obj, _ in records if obj is not None), None)
    if first is None:
        raise InputError(path, "JSON lines holding objects", "no JSON object on any line")
    names = list(first)
    img = _pick_column(names, image_col, IMAGE_COLUMNS, "image path", path, "--image-col")
    cap = _pick_column(names, caption_col, CAPTION_COLUMNS, "caption", path, "--caption-col")
    rows: list[SourceRow] = []
    for line, obj, err in records:
        if obj is None:
            rows.append(SourceRow(len(rows), line, "", "", problem=BAD_ROW, detail=err))
        elif img not in obj:
            rows.append(SourceRow(len(rows), line, "", _show(obj.get(cap)), problem=BAD_PATH, detail=f"no {img!r} key"))
        else:
            rows.append(_file_row(len(rows), line, obj.get(img), obj.get(cap), base))
    return rows, img, cap


def require_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("noisycorr featurize", "pyarrow for parquet tables (pip install 'noisycorr[parquet]')",
                         "not installed") from None
    return pq


def _read_parquet(path: Path, image_col: str | None, caption_col: str | None,
                  base: Path) -> tuple[list[SourceRow], str, str]:
    pq = require_pyarrow()
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise InputError(path, "a parquet file", f"unreadable ({' '.join(str(err).split())[:160]})") from None
    names = list(pf.schema_arrow.names)
    img = _pick_column(names, image_col, IMAGE_COLUMNS, "image path", path, "--image-col")
    cap = _pick_column(names, caption_col, CAPTION_COLUMNS, "caption", path, "--caption-col")
    rows: list[SourceRow] = []
    for batch in pf.iter_batches(columns=[img, cap], batch_size=8192):
        for p, c in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            rows.append(_file_row(len(rows), None, p, c, base))
    return rows, img, cap


# --------------------------------------------------------------------------------------- webdataset


def shard_paths(path: Path) -> list[Path]:
    """The ``.tar`` shards of a webdataset source: the file itself, or a folder's ``*.tar`` in name order."""
    if path.is_file():
        return [path]
    shards = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
    if not shards:
        raise InputError(path, "a folder of webdataset .tar shards ({key}.jpg + {key}.txt)", "no .tar file")
    return shards


def _split_key(name: str) -> tuple[str, str]:
    """Webdataset naming: the key is the path up to the first dot of the file name, the rest its extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def iter_shard_samples(shard: Path) -> Iterator[tuple[str, dict[str, tarfile.TarInfo], tarfile.TarFile]]:
    """(key, {extension: member}, open tar) per sample, in the order of the shard; files of one key
    must be adjacent, as webdataset writers put them. Raises tarfile.ReadError on a broken shard."""
    with tarfile.open(shard, "r:") as tf:
        key, members = None, {}
        for m in tf:
            if not m.isfile():
                continue
            k, ext = _split_key(m.name)
            if k != key and key is not None:
                yield key, members, tf
                members = {}
            key = k
            members[ext] = m
        if key is not None:
            yield key, members, tf


def _read_webdataset(path: Path) -> list[SourceRow]:
    rows: list[SourceRow] = []
    for shard in shard_paths(path):
        try:
            for key, members, tf in iter_shard_samples(shard):
                label = f"{shard.name}/{key}"
                row = SourceRow(len(rows), None, label, "")
                rows.append(row)
                ext = next((e for e in IMAGE_EXTS if e in members), None)
                txt = members.get("txt")
                if txt is not None:
                    raw = tf.extractfile(txt).read()
                    try:
                        row.caption = raw.decode("utf-8-sig")
                    except UnicodeDecodeError:
                        row.problem, row.detail = BAD_TEXT, "invalid UTF-8 bytes"
                        continue
                if ext is None:
                    row.problem, row.detail = NO_IMAGE, f"files {sorted(members)}"
                    continue
                if txt is None:
                    row.problem, row.detail = NO_CAPTION, f"files {sorted(members)}"
                    continue
                m = members[ext]
                data = tf.extractfile(m).read()
                row.ref = ImageRef(str(shard), m.offset_data, m.size)
                row.identity = "sha1:" + hashlib.sha1(data).hexdigest()
                if not row.text:
                    row.problem = EMPTY
        except (tarfile.TarError, OSError, EOFError) as err:
            rows.append(SourceRow(None, None, shard.name, "", problem=BAD_SHARD, detail=" ".join(str(err).split())))
    return rows


# ------------------------------------------------------------------------------------------ reading


def _mark_duplicates(rows: list[SourceRow]) -> None:
    """A row with the same image and the same caption (on one line) as an earlier usable row is a duplicate."""
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.problem is not None:
            continue
        key = (r.identity, r.text)
        first = seen.setdefault(key, r.row)
        if first != r.row:
            r.problem, r.detail = DUPLICATE, f"same image and caption as row {first}"


def read_source(
    path: str | Path,
    *,
    fmt: str | None = None,
    image_col: str | None = None,
    caption_col: str | None = None,
    image_root: str | Path | None = None,
) -> Source:
    """Read every record of a table or of webdataset shards; bad rows carry their ``problem``.

    Args:
        path: the table file, a ``.tar`` shard, or a folder of shards.
        fmt: one of :data:`FORMATS`; None: by the suffix (a folder is webdataset).
        image_col: the table column with the image path (default: the first of :data:`IMAGE_COLUMNS`).
        caption_col: the table column with the caption (default: the first of :data:`CAPTION_COLUMNS`).
        image_root: the folder relative image paths start from (default: the table's folder).

    Raises:
        InputError: no such file or folder, an unknown format, a missing column, an unreadable table.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "a table or a folder of webdataset shards", "no such file or folder")
    fmt = detect_format(path, fmt)
    if fmt != "webdataset" and not path.is_file():
        raise InputError(path, f"a {fmt} file", "a folder")
    base = Path(image_root).expanduser() if image_root is not None else path.parent
    img = cap = None
    if fmt in ("csv", "tsv"):
        rows, img, cap = _read_delimited(path, "," if fmt == "csv" else "\t", image_col, caption_col, base)
    elif fmt == "jsonl":
        rows, img, cap = _read_jsonl(path, image_col, caption_col, base)
    elif fmt == "parquet":
        rows, img, cap = _read_parquet(path, image_col, caption_col, base)
    else:
        rows = _read_webdataset(path)
    _mark_duplicates(rows)
    return Source(path=path, format=fmt, image_col=img, caption_col=cap, rows=rows)
