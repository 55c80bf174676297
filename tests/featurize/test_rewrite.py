"""The clean copy of a source: the same format, only the kept records."""

from __future__ import annotations

import csv
import json

import pytest
from featurize_helpers import jpeg_bytes, write_images, write_shard

from noisycorr.errors import InputError
from noisycorr.featurize import read_source
from noisycorr.featurize.rewrite import write_source_copy

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")

KEEP = {0, 2, 3}


def _rows(path, **kw):
    return [(r.image, r.caption) for r in read_source(path, **kw).rows]


def test_csv_and_tsv_copies_keep_the_columns_and_the_kept_rows(tmp_path):
    write_images(tmp_path / "imgs", 2)
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        src = tmp_path / f"t{suffix}"
        with open(src, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter=delim)
            w.writerow(["id", "image", "caption"])
            for k in range(5):
                w.writerow([k, f"imgs/img{k % 2}.jpg", f"caption {k}, with\na newline" if k == 2 else f"caption {k}"])
        dst = tmp_path / "clean" / f"c{suffix}"
        info = write_source_copy(read_source(src), dst, KEEP)
        assert info == {"path": str(dst), "format": suffix[1:], "records_kept": 3, "records_dropped": 2}
        with open(dst, newline="", encoding="utf-8") as fh:
            got = list(csv.reader(fh, delimiter=delim))
        assert got[0] == ["id", "image", "caption"] and [r[0] for r in got[1:]] == ["0", "2", "3"]
        assert got[2][2] == "caption 2, with\na newline"
        # relative paths still resolve from the copy's folder when it sits beside the original
    with pytest.raises(InputError, match="an existing file"):
        write_source_copy(read_source(tmp_path / "t.csv"), tmp_path / "clean" / "c.csv", KEEP)


def test_jsonl_copy_is_verbatim(tmp_path):
    lines = [json.dumps({"image": f"i{k}.jpg", "caption": f"c{k}", "meta": {"k": k}}) for k in range(5)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    write_source_copy(read_source(tmp_path / "t.jsonl"), tmp_path / "c.jsonl", KEEP)
    assert (tmp_path / "c.jsonl").read_text().splitlines() == [lines[k] for k in sorted(KEEP)]


def test_parquet_copy_keeps_the_schema(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'noisycorr[parquet]')")
    import pyarrow.parquet as pq

    table = pa.table({"image": [f"i{k}.jpg" for k in range(5)], "caption": [f"c{k}" for k in range(5)],
                      "score": [0.1 * k for k in range(5)]})
    pq.write_table(table, tmp_path / "t.parquet")
    write_source_copy(read_source(tmp_path / "t.parquet"), tmp_path / "c.parquet", KEEP)
    got = pq.read_table(tmp_path / "c.parquet")
    assert got.schema == table.schema and got.column("caption").to_pylist() == ["c0", "c2", "c3"]


def test_webdataset_copy_keeps_every_file_of_the_kept_samples(tmp_path):
    (tmp_path / "shards").mkdir()
    samples = [(f"{k:03d}", {"jpg": jpeg_bytes(k), "txt": b"caption %d" % k, "json": b'{"k": %d}' % k})
               for k in range(5)]
    write_shard(tmp_path / "shards" / "a.tar", samples[:3])
    write_shard(tmp_path / "shards" / "b.tar", samples[3:])
    src = read_source(tmp_path / "shards")
    write_source_copy(src, tmp_path / "clean", KEEP)
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["a.tar", "b.tar"]
    copy = read_source(tmp_path / "clean")
    assert [(r.image, r.caption) for r in copy.rows] == [("a.tar/000", "caption 0"), ("a.tar/002", "caption 2"),
                                                        ("b.tar/003", "caption 3")]
    assert copy.rows[1].ref.read() == jpeg_bytes(2)
    import tarfile

    with tarfile.open(tmp_path / "clean" / "a.tar") as tf:
        assert tf.getnames() == ["000.jpg", "000.txt", "000.json", "002.jpg", "002.txt", "002.json"]
