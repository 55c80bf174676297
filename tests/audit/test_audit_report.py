"""The pair audit report: ranked CSV, histogram, Markdown / HTML pages, JSON figures."""

import csv
import json

import numpy as np
import pytest

from noisycorr.audit import report, write_audit
from noisycorr.errors import InputError


def _oracle_order(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


# ------------------------------------------------------------------------------------- audit


CAPTIONS = [
    "a dog, a cat",
    'she said "hello", then left',
    "<script>alert(1)</script>",
    "plain words",
    "pipes | and *stars*",
    "unicode: café ☕",
    "another, with 'single' quotes",
    "seven",
    "eight",
    "nine",
]
# Pair k with image CAPTION_IMAGE[k]; hand-made scores and ground truth.
CAPTION_IMAGE = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
SCORES = np.array([0.9, 0.05, 0.45, 0.99, 0.3, 0.8, 0.1, 0.95, 0.6, 0.7])
TRUE_CLEAN = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
IDS = ["img-a", "img,b", "img-c", "img-d", "img-e"]


def test_csv_round_trip(tmp_path):
    write_audit(
        tmp_path / "a",
        scores=SCORES,
        captions=CAPTIONS,
        caption_image=CAPTION_IMAGE,
        image_ids=IDS,
        true_clean=TRUE_CLEAN,
        threshold=0.5,
    )
    with open(tmp_path / "a" / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["rank", "pair", "image", "image_id", "score", "flagged", "caption", "truly_mismatched"]
    assert len(rows) == len(SCORES)
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))
    assert [int(r["pair"]) for r in rows] == _oracle_order(SCORES.tolist())
    for r in rows:
        k = int(r["pair"])
        assert r["caption"] == CAPTIONS[k]
        assert int(r["image"]) == CAPTION_IMAGE[k]
        assert r["image_id"] == IDS[CAPTION_IMAGE[k]]
        assert float(r["score"]) == pytest.approx(SCORES[k], abs=1e-6)
        assert int(r["flagged"]) == int(SCORES[k] < 0.5)
        assert int(r["truly_mismatched"]) == int(not TRUE_CLEAN[k])


def test_csv_without_ids_or_truth(tmp_path):
    write_audit(tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE)
    with open(tmp_path / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert "truly_mismatched" not in rows[0]
    assert all(r["image_id"] == r["image"] for r in rows)


def test_summary_figures_hand_made(tmp_path):
    summary = write_audit(
        tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, true_clean=TRUE_CLEAN
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["n_pairs"] == 10
    assert summary["n_flagged"] == 4  # 0.05, 0.45, 0.3, 0.1
    q = summary["score_quantiles"]
    assert (q["min"], q["max"]) == (0.05, 0.99)
    assert q["median"] == pytest.approx(0.65)  # sorted: .05 .1 .3 .45 .6 .7 .8 .9 .95 .99
    gt = summary["ground_truth"]
    assert gt["n_truly_mismatched"] == 3
    # clean scores 0.9 .45 .99 .8 .1 .95 .7 vs mismatched .05 .3 .6: clean above mismatched in 7 + 6 + 5 of 21
    assert gt["roc_auc"] == pytest.approx(18 / 21)
    # ranked: .05 (mismatch), .1 (match), .3 (mismatch), .45, ...: the top 10% is the first pair only
    assert gt["precision_at_top"]["10%"] == {"n": 1, "precision": 1.0}
    assert gt["precision_at_top"]["1%"]["precision"] == 1.0
    # flagged {1, 2, 4, 6}: truly mismatched {1, 4}; all mismatched {1, 4, 8}
    assert gt["flagged_precision"] == pytest.approx(2 / 4)
    assert gt["flagged_recall"] == pytest.approx(2 / 3)


def test_summary_single_class_auc_is_none(tmp_path):
    summary = write_audit(
        tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, true_clean=np.ones(10, bool)
    )
    assert summary["ground_truth"]["roc_auc"] is None
    assert summary["ground_truth"]["flagged_recall"] is None
    json.loads((tmp_path / "summary.json").read_text())  # strict JSON (no NaN)


def test_reports_escape_and_list_other_captions(tmp_path):
    summary = write_audit(
        tmp_path,
        scores=SCORES,
        captions=CAPTIONS,
        caption_image=CAPTION_IMAGE,
        image_ids=IDS,
        true_clean=TRUE_CLEAN,
        top=4,
        title="audit <b>x</b>",
        source="run & <folder>",
    )
    names = {p.name for p in tmp_path.iterdir()}
    assert {"pairs.csv", "scores.png", "report.md", "report.html", "summary.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "audit &lt;b&gt;x&lt;/b&gt;" in page and "run &amp; &lt;folder&gt;" in page
    assert '<img src="scores.png"' in page and "http" not in page and "<link" not in page
    # The 4 most suspicious pairs: 1 (image 0), 6 (image 3), 4 (image 2), 2 (image 1); each row lists the
    # image's other caption: 0, 7, 5, 3. Pairs 8 and 9 (image 4) appear nowhere.
    assert summary["top"] == 4
    for k in (1, 6, 4, 2):
        assert f'<td class="num">{k}</td><td>' in page
    for other in ("a dog, a cat", "seven", "unicode: café ☕", "plain words"):
        assert f"<li>{other}</li>" in page
    assert "eight" not in page and "nine" not in page
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "](scores.png)" in md
    assert "pipes \\| and \\*stars\\*" in md  # pair 4 is in the top 4


def test_other_captions_highest_scoring_first(tmp_path):
    # Image 0 has captions 0..4; pair 0 is the most suspicious; its others are 3 (0.9) and 1 (0.8), not 2 or 4.
    scores = np.array([0.01, 0.8, 0.2, 0.9, 0.3, 0.5])
    caps = ["c0", "c1", "c2", "c3", "c4", "c5"]
    write_audit(tmp_path, scores=scores, captions=caps, caption_image=np.array([0, 0, 0, 0, 0, 1]), top=1)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<ul><li>c3</li><li>c1</li></ul>" in page
    assert "c2" not in page and "c4" not in page


def test_no_matplotlib_skips_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    summary = write_audit(tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE)
    assert summary["plot"] is None and "matplotlib" in summary["plot_skipped"]
    assert not (tmp_path / "scores.png").exists()
    assert "scores.png" not in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No plot" in (tmp_path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "change",
    [
        {"captions": CAPTIONS[:-1]},
        {"caption_image": CAPTION_IMAGE[:-1]},
        {"true_clean": TRUE_CLEAN[:-1]},
        {"image_ids": IDS[:-1]},  # image 4 has no id
        {"scores": np.append(SCORES[:-1], np.nan)},
        {"caption_image": CAPTION_IMAGE.astype(float)},
        {"captions": [*CAPTIONS[:-1], 7]},
        {"threshold": 2.0},
    ],
)
def test_bad_audit_input_writes_nothing(tmp_path, change):
    kwargs = dict(scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, image_ids=IDS, true_clean=TRUE_CLEAN)
    kwargs.update(change)
    with pytest.raises(ValueError):  # InputError is a ValueError
        write_audit(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "change, message",
    [
        # Mutant: `top < 0` flipped to `top < -1` -> fails.
        ({"top": -1}, r"^top: expected a non-negative integer, found -1$"),
        # Mutant: the `numbers.Integral` test of top removed (int(2.5) == 2 is used silently) -> fails.
        ({"top": 2.5}, r"^top: expected a non-negative integer, found 2\.5$"),
        # Mutant: check_unit(threshold) replaced by the old `float(threshold)` range test -> fails.
        ({"threshold": "0.5"}, r"^threshold: expected a number in \[0, 1\], found '0\.5'$"),
        # Mutant: the `np.isin(arr, (0, 1))` test removed from check_mask (2 read as True) -> fails.
        ({"true_clean": np.full(10, 2)}, r"^true_clean: expected booleans or 0/1 integers, found dtype int64"),
        # Mutant: the `arr < 0` test removed from check_pairing (-1 read as the last image) -> fails.
        ({"caption_image": np.r_[CAPTION_IMAGE[:-1], -1]}, r"^caption_image: caption 9: expected image rows in "),
    ],
)
def test_bad_options_are_named_and_write_nothing(tmp_path, change, message):
    kwargs = dict(scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, image_ids=IDS, true_clean=TRUE_CLEAN)
    kwargs.update(change)
    with pytest.raises(InputError, match=message):
        write_audit(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# Mutant: one file written with `(out_dir / name).write_bytes(data)` instead of atomic_write_bytes -> fails.
def test_every_file_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    seen = []
    real = report.atomic_write_bytes

    def spy(path, data):
        seen.append(path.name)
        real(path, data)

    monkeypatch.setattr(report, "atomic_write_bytes", spy)
    summary = write_audit(tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE)
    assert sorted(seen) == sorted(summary["files"]) == sorted(p.name for p in tmp_path.iterdir())


def test_thumbnails_best_captions_extra_columns_and_embedded_plot(tmp_path):
    asked = []

    def thumb(row):
        asked.append(row)
        return f"data:image/jpeg;base64,IMG{row}" if row != 1 else None

    write_audit(
        tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, image_ids=IDS, top=4,
        thumbnails=thumb, best_captions={0: 7, 1: 2, 2: 8, 3: 0}, embed_plot=True,
        extra_columns={"row": [100 + k for k in range(len(SCORES))]},
    )
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    # the top 4 pairs 1, 6, 4, 2 show images 0, 3, 2, 1: each thumbnail asked once, in that order
    assert asked == [0, 3, 2, 1]
    assert '<img class="thumb" src="data:image/jpeg;base64,IMG0"' in page and "IMG1" not in page
    assert '<img src="data:image/png;base64,' in page and 'src="scores.png"' not in page
    assert "best-matching caption" in page
    assert "seven <span class=\"muted\">(pair 7)</span>" in page  # image 0's best caption is pair 7
    assert page.count("(its own)") == 1  # pair 2 (image 1) is itself image 1's best caption
    with open(tmp_path / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["pair"]): int(r["row"]) for r in rows} == {k: 100 + k for k in range(len(SCORES))}
    assert "(pair 8)" in (tmp_path / "report.md").read_text(encoding="utf-8")
    asked.clear()
    write_audit(tmp_path / "all", scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE, top=10,
                thumbnails=thumb)
    assert sorted(asked) == [0, 1, 2, 3, 4]  # 10 listed pairs, 5 images: each image's thumbnail made once
    with pytest.raises(InputError, match="extra_columns"):
        write_audit(tmp_path, scores=SCORES, captions=CAPTIONS, caption_image=CAPTION_IMAGE,
                    extra_columns={"row": [1, 2]})
