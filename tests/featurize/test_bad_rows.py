"""Dirty web data: bad rows are skipped, counted and listed in skipped.csv; only an unusable source fails."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from featurize_helpers import jpeg_bytes, write_images

from noisycorr.cli.main import main
from noisycorr.data.precomp import load_precomp
from noisycorr.errors import InputError
from noisycorr.featurize import featurize
from noisycorr.featurize.images import decode_image

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")


@pytest.fixture
def dirty_table(tmp_path):
    """A CSV with two good images and every kind of bad row; returns (path, {row: expected reason})."""
    write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    (tmp_path / "imgs" / "truncated.jpg").write_bytes(jpeg_bytes(7)[:200])
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    lines = [
        b"image,caption",
        b"imgs/img0.jpg,a good caption",  # 0
        b"imgs/garbage.jpg,undecodable",  # 1
        b"imgs/missing.jpg,no such file",  # 2
        b"imgs/img1.jpg,",  # 3 empty caption
        b"imgs/img1.jpg,\"  \n \"",  # 4 whitespace only (a quoted newline)
        b"imgs/img1.jpg,caf\xe9 latin-1",  # 5 not UTF-8
        b"imgs/img0.jpg,a good caption",  # 6 duplicate of 0
        b"imgs/img1.jpg,another good one",  # 7
        b"imgs/truncated.jpg,cut short",  # 8
        b"imgs/empty.jpg,zero bytes",  # 9
        b",no path",  # 10
        b"imgs/img0.jpg,  a   good\tcaption ",  # 11 the same caption on one line: duplicate
        b"onlyonefield",  # 12
        b"imgs/img0.jpg,a second caption of img0",  # 13
    ]
    path = tmp_path / "t.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reasons = {1: "undecodable image", 2: "missing image file", 3: "empty caption", 4: "empty caption",
               5: "caption not UTF-8", 6: "duplicate row", 8: "undecodable image", 9: "undecodable image",
               10: "bad image path", 11: "duplicate row", 12: "unparseable row"}
    return path, reasons


def test_bad_rows_are_skipped_counted_and_listed(dirty_table, tmp_path, tiny_encoder):
    path, reasons = dirty_table
    res = featurize(path, tmp_path / "out", encoder=tiny_encoder, batch_size=4, progress=False, log=None)
    with open(tmp_path / "out" / "train_skipped.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        skipped = list(csv.DictReader(fh))
    assert {int(r["row"]): r["reason"] for r in skipped} == reasons
    assert skipped[5]["detail"] == "same image and caption as row 0"
    assert skipped[0]["line"] == "3"  # row 1 is on line 3 (the header is line 1)
    assert res.manifest["counts"] == {"records": 14, "pairs": 3, "images": 2, "skipped": 11}
    assert res.manifest["skipped_by_reason"]["undecodable image"] == 3
    with open(tmp_path / "out" / "train_pairs.csv", newline="", encoding="utf-8") as fh:
        pairs = list(csv.DictReader(fh))
    assert [int(p["row"]) for p in pairs] == [0, 7, 13]

    split = load_precomp(tmp_path / "out", "train", features="pooled", captions_per_image=1)
    assert split.captions == ["a good caption", "another good one", "a second caption of img0"]
    assert split.ids == ["imgs/img0.jpg", "imgs/img1.jpg", "imgs/img0.jpg"]
    # the features of each kept row are those of its image encoded alone
    for k, name in enumerate(split.ids):
        x = torch.from_numpy(tiny_encoder.preprocess(decode_image((path.parent / name).read_bytes())))[None]
        assert np.array_equal(split.images[k], tiny_encoder.encode(x)[0][0].numpy())
    assert np.array_equal(split.images[0], split.images[2])  # img0 encoded once, its row repeated


def test_a_source_without_a_usable_row_is_one_error_and_writes_nothing(tmp_path, tiny_encoder):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    (tmp_path / "t.csv").write_text("image,caption\nbad.jpg,a caption\nmissing.jpg,another\n")
    with pytest.raises(InputError, match="at least one usable image-caption row") as err:
        featurize(tmp_path / "t.csv", tmp_path / "out", encoder=tiny_encoder, progress=False, log=None)
    assert "1 missing image file" in str(err.value) and "1 undecodable image" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("file,label\nx.jpg,y\n")
    assert main(["featurize", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisycorr: error:") and len(err.strip().splitlines()) == 1
    assert "['file', 'label']" in err and not (tmp_path / "out").exists()
    (tmp_path / "only_missing.csv").write_text("image,caption\nnope.jpg,a caption\n")
    assert main(["featurize", str(tmp_path / "only_missing.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "1 missing image file" in capsys.readouterr().err
