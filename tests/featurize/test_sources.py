"""Reading pairs from tables (CSV, TSV, JSON lines, parquet) and webdataset shards."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from featurize_helpers import jpeg_bytes, write_images, write_shard

from noisycorr.data.precomp import load_precomp
from noisycorr.errors import InputError
from noisycorr.featurize import featurize, read_source
from noisycorr.featurize.sources import EMPTY, _split_key

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")

CAPTIONS = ["a red square", "two dogs,\nrunning", "a blue sky", "a cat"]


def _csv(path, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerows(rows)


@pytest.fixture
def table_dir(tmp_path):
    names = write_images(tmp_path / "imgs", 3)
    rows = [("imgs/" + names[k % 3], CAPTIONS[k]) for k in range(4)]
    return tmp_path, rows


def _write_all_formats(folder, rows):
    _csv(folder / "t.csv", [("image", "caption"), *rows])
    _csv(folder / "t.tsv", [("image", "caption"), *rows], delimiter="\t")
    with open(folder / "t.jsonl", "w", encoding="utf-8") as fh:
        for img, cap in rows:
            fh.write(json.dumps({"image": img, "caption": cap, "extra": 1}) + "\n\n")  # blank lines are no rows
    return ["t.csv", "t.tsv", "t.jsonl"]


def test_csv_tsv_and_jsonl_give_the_same_rows(table_dir):
    folder, rows = table_dir
    for name in _write_all_formats(folder, rows):
        src = read_source(folder / name)
        assert [(r.image, r.caption) for r in src.rows] == rows, name
        assert [r.row for r in src.rows] == [0, 1, 2, 3]
        assert all(r.problem is None for r in src.rows), name
        assert src.rows[0].identity == src.rows[3].identity != src.rows[1].identity  # rows 0 and 3 share img0
        assert src.rows[1].text == "two dogs, running"


def test_parquet_table(table_dir):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'noisycorr[parquet]')")
    import pyarrow.parquet as pq

    folder, rows = table_dir
    pq.write_table(pa.table({"path": [r[0] for r in rows], "text": [r[1] for r in rows]}), folder / "t.parquet")
    src = read_source(folder / "t.parquet")
    assert (src.image_col, src.caption_col) == ("path", "text")
    assert [(r.image, r.caption) for r in src.rows] == rows


def test_column_options_and_image_root(tmp_path):
    write_images(tmp_path / "elsewhere", 1)
    _csv(tmp_path / "t.csv", [("url", "file", "alt"), ("http://x", "img0.jpg", "a caption")])
    src = read_source(tmp_path / "t.csv", image_col="file", caption_col="alt", image_root=tmp_path / "elsewhere")
    assert src.rows[0].problem is None and src.rows[0].ref.path == str(tmp_path / "elsewhere" / "img0.jpg")
    with pytest.raises(InputError, match="found the columns \\['url', 'file', 'alt'\\]") as err:
        read_source(tmp_path / "t.csv", image_col="nope")
    assert "\n" not in str(err.value)
    _csv(tmp_path / "u.csv", [("file", "label"), ("img0.jpg", "x")])
    with pytest.raises(InputError, match="a column with the caption"):
        read_source(tmp_path / "u.csv")


@pytest.mark.parametrize("content, expected", [
    ("", "an empty file"),
    ("a,b\n", "a column with the image path"),
])
def test_unusable_tables_are_one_line_errors(tmp_path, content, expected):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(InputError, match=expected):
        read_source(tmp_path / "t.csv")


def test_unknown_suffix_and_missing_source(tmp_path):
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputError, match="suffix '.xlsx'"):
        read_source(tmp_path / "t.xlsx")
    with pytest.raises(InputError, match="no such file or folder"):
        read_source(tmp_path / "missing.csv")
    (tmp_path / "shards").mkdir()
    with pytest.raises(InputError, match="no .tar file"):
        read_source(tmp_path / "shards")


def test_webdataset_shards_in_order_with_their_bad_samples(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "00000.tar", [
        ("000000000", {"jpg": jpeg_bytes(0), "txt": b"first caption", "json": b"{}"}),
        ("000000001", {"jpg": jpeg_bytes(1)}),  # no caption
        ("000000002", {"txt": b"no image here"}),
    ])
    write_shard(shards / "00001.tar", [
        ("sub/000000003", {"png": jpeg_bytes(3), "txt": "caf\u00e9 \u2615".encode()}),
        ("000000004", {"jpg": jpeg_bytes(4), "txt": b"bad \xff byte"}),
        ("000000005", {"jpg": jpeg_bytes(0), "txt": b"   "}),
    ])
    (shards / "notes.txt").write_text("not a shard")
    src = read_source(shards)
    assert src.format == "webdataset"
    got = [(r.row, r.image, r.problem) for r in src.rows]
    assert got == [
        (0, "00000.tar/000000000", None),
        (1, "00000.tar/000000001", "no caption in sample"),
        (2, "00000.tar/000000002", "no image in sample"),
        (3, "00001.tar/sub/000000003", None),
        (4, "00001.tar/000000004", "caption not UTF-8"),
        (5, "00001.tar/000000005", EMPTY),
    ]
    assert src.rows[3].caption == "caf\u00e9 \u2615"
    assert src.rows[0].ref.read() == jpeg_bytes(0)  # read back at its offset inside the shard
    assert src.rows[5].identity == src.rows[0].identity  # same bytes: the same image


def test_webdataset_keys_end_at_the_first_dot_of_the_file_name():
    assert _split_key("a/b.c/000.seg.txt") == ("a/b.c/000", "seg.txt")
    assert _split_key("000000001.JPG") == ("000000001", "jpg")
    assert _split_key("README") == ("README", "")


def test_a_truncated_shard_keeps_the_samples_before_the_damage(tmp_path):
    write_shard(tmp_path / "a.tar", [(f"{k:04d}", {"jpg": jpeg_bytes(k), "txt": b"cap %d" % k}) for k in range(4)])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[: len(data) // 2 + 100])
    src = read_source(tmp_path / "a.tar")
    assert src.rows[-1].problem == "unreadable shard" and src.rows[-1].row is None
    assert len(src.rows) >= 2 and src.rows[0].problem is None


def test_featurize_writes_the_precomp_layout_from_shards(tmp_path, tiny_encoder):
    write_shard(tmp_path / "s.tar", [(f"{k:04d}", {"jpg": jpeg_bytes(k), "txt": b"caption number %d" % k})
                                     for k in range(5)])
    res = featurize(tmp_path / "s.tar", tmp_path / "out", encoder=tiny_encoder, progress=False, log=None)
    assert res.manifest["counts"] == {"records": 5, "pairs": 5, "images": 5, "skipped": 0}
    split = load_precomp(tmp_path / "out", "train", features="pooled", captions_per_image=1)
    assert split.ids == [f"s.tar/{k:04d}" for k in range(5)] and split.captions[2] == "caption number 2"
    grid = load_precomp(tmp_path / "out", "train", features="ims", captions_per_image=1)
    assert grid.images.shape == (5, 16, 3) and grid.images.dtype == np.float16
