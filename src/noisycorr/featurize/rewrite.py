"""Write a source again without some of its records, in its own format (the audit's ``--clean-copy``).

Records are numbered as :func:`noisycorr.featurize.sources.read_source` numbers them, so the ``row``
of ``pairs.csv`` and ``skipped.csv`` picks them here. CSV / TSV rows are written again by the csv module
(same columns and delimiter; quoting may differ from the input), JSON lines are copied verbatim,
parquet through pyarrow batch by batch with the same schema, and webdataset shards are written as new
shards of the same names holding every file of the kept samples.
"""

from __future__ import annotations

import csv
import os
import shutil
import tarfile
import uuid
from collections.abc import Collection
from pathlib import Path

from noisycorr.errors import InputError
from noisycorr.featurize.sources import (
    Source,
    delimited_records,
    iter_shard_samples,
    jsonl_records,
    require_pyarrow,
    shard_paths,
)

__all__ = ["write_source_copy"]


def _tmp_next_to(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _copy_delimited(src: Path, delimiter: str, keep: Collection[int], tmp: Path) -> int:
    n = 0
    with open(tmp, "x", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        records = delimited_records(src, delimiter)
        writer.writerow(next(records)[1])
        for row, (_, fields, _) in enumerate(records):
            if fields is not None and row in keep:
                writer.writerow(fields)
                n += 1
    return n


def _copy_jsonl(src: Path, keep: Collection[int], tmp: Path) -> int:
    n = 0
    with open(tmp, "x", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for row, (_, text) in enumerate(jsonl_records(src)):
            if row in keep:
                fh.write(text if text.endswith("\n") else text + "\n")
                n += 1
    return n


def _copy_parquet(src: Path, keep: Collection[int], tmp: Path) -> int:
    pq = require_pyarrow()
    import pyarrow as pa

    pf = pq.ParquetFile(src)
    n, start = 0, 0
    with pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
        for batch in pf.iter_batches(batch_size=8192):
            mask = pa.array([start + i in keep for i in range(batch.num_rows)])
            start += batch.num_rows
            kept = batch.filter(mask)
            if kept.num_rows:
                writer.write_batch(kept)
                n += kept.num_rows
    return n


def _copy_shards(src: Path, keep: Collection[int], tmp: Path) -> int:
    tmp.mkdir()
    n, row = 0, 0
    for shard in shard_paths(src):
        with tarfile.open(tmp / shard.name, "x:") as out:
            try:
                for _, members, tf in iter_shard_samples(shard):
                    if row in keep:
                        for m in members.values():
                            out.addfile(m, tf.extractfile(m))
                        n += 1
                    row += 1
            except (tarfile.TarError, OSError, EOFError):
                pass  # the samples before the damage are numbered and copied as read_source saw them
    return n


def write_source_copy(source: Source, dst: str | Path, keep_rows: Collection[int]) -> dict:
    """Write ``source`` again at ``dst`` with only the records numbered in ``keep_rows``.

    Args:
        source: the source as read by :func:`~noisycorr.featurize.sources.read_source`.
        dst: a new file (tables) or folder (webdataset shards); it must not exist.
        keep_rows: the 0-based record numbers to keep.

    Returns:
        ``{"path", "format", "records_kept", "records_dropped"}``.

    Raises:
        InputError: ``dst`` exists, or is the source itself.
    """
    dst = Path(dst)
    if dst.exists():
        raise InputError(dst, "a new path for the cleaned copy", "an existing file or folder")
    if dst.resolve() == source.path.resolve():
        raise InputError(dst, "a path other than the source", "the source itself")
    keep = frozenset(int(k) for k in keep_rows)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_next_to(dst)
    try:
        if source.format in ("csv", "tsv"):
            n = _copy_delimited(source.path, "," if source.format == "csv" else "\t", keep, tmp)
        elif source.format == "jsonl":
            n = _copy_jsonl(source.path, keep, tmp)
        elif source.format == "parquet":
            n = _copy_parquet(source.path, keep, tmp)
        else:
            n = _copy_shards(source.path, keep, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    total = sum(r.row is not None for r in source.rows)
    return {"path": str(dst), "format": source.format, "records_kept": n, "records_dropped": total - n}
