import csv
import json
from pathlib import Path

import numpy as np
import pytest

from noisycorr import audit
from noisycorr.audit import find_mismatched_pairs, rank_pairs, write_audit, write_clean_copy
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.errors import InputError


def _oracle_order(scores) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


# ------------------------------------------------------------------------------ find / rank


def test_threshold_flags_below_and_ranks_by_severity():
    s = np.array([0.9, 0.2, 0.5, 0.49, 0.2, 1.0])
    mask = find_mismatched_pairs(s)
    assert mask.dtype == bool and mask.tolist() == [False, True, False, True, True, False]
    assert find_mismatched_pairs(s, return_indices=True).tolist() == [1, 4, 3]
    assert find_mismatched_pairs(s, threshold=0.95, return_indices=True).tolist() == [1, 4, 3, 2, 0]
    assert not find_mismatched_pairs(s, threshold=0.0).any()


def test_fraction_takes_lowest_with_ties_to_lower_index():
    s = np.array([0.3, 0.1, 0.3, 0.3])
    assert find_mismatched_pairs(s, fraction=0.5, return_indices=True).tolist() == [1, 0]
    assert find_mismatched_pairs(s, fraction=0.5).tolist() == [True, True, False, False]
    # fraction replaces the default threshold: a pair scoring 0.9 is flagged when the share asks for it
    assert find_mismatched_pairs(np.array([0.9, 0.95]), fraction=0.5).tolist() == [True, False]
    assert find_mismatched_pairs(s, fraction=0.0, threshold=None).sum() == 0
    assert find_mismatched_pairs(s, fraction=1.0, return_indices=True).tolist() == [1, 0, 2, 3]
    rng = np.random.default_rng(0)
    for n in (1, 6, 7, 10, 33):
        x = rng.random(n)
        for frac in (0.05, 0.25, 0.5, 0.7):
            idx = find_mismatched_pairs(x, fraction=frac, return_indices=True)
            assert idx.tolist() == _oracle_order(x.tolist())[: round(frac * n)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": None},
        {"threshold": 0.3, "fraction": 0.1},
        {"threshold": 0.5, "fraction": 0.1},  # an explicit 0.5 is as explicit as any other value
        {"fraction": 1.5},
        {"fraction": -0.1},
        {"threshold": 1.2},
    ],
)
def test_option_errors(kwargs):
    with pytest.raises(ValueError):
        find_mismatched_pairs(np.array([0.1, 0.9]), **kwargs)


@pytest.mark.parametrize("bad", [[0.1, float("nan")], [0.2, 1.2], [[0.1, 0.2]], [], ["a", "b"]])
def test_bad_scores(bad):
    with pytest.raises(InputError):
        find_mismatched_pairs(bad)
    with pytest.raises(InputError):
        rank_pairs(bad)


def test_rank_pairs_ties_and_consistency():
    assert rank_pairs(np.array([0.5, 0.1, 0.5, 0.1])).tolist() == [3, 1, 4, 2]
    x = np.random.default_rng(1).integers(0, 5, size=40) / 4.0  # many ties
    r = rank_pairs(x)
    assert sorted(r.tolist()) == list(range(1, 41))
    assert (np.argsort(r) + 0).tolist() == _oracle_order(x.tolist())
    assert find_mismatched_pairs(x, fraction=1.0, return_indices=True).tolist() == np.argsort(r).tolist()


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
    monkeypatch.setattr(audit, "have_matplotlib", lambda: False)
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


# -------------------------------------------------------------------------------- clean copy


def _tiny(root: Path, cpi: int) -> Path:
    return write_synthetic(
        root,
        seed=5,
        n_train=6,
        n_dev=2,
        n_test=2,
        captions_per_image=cpi,
        n_regions=3,
        feat_dim=4,
        n_concepts=4,
        concepts_per_image=(1, 2),
    )


def _check_copy(dst: Path, root: Path, pairing: np.ndarray, keep: np.ndarray, features=("ims", "pooled")) -> None:
    kept = np.flatnonzero(keep)
    src = load_precomp(root, "train")
    for feat in features:
        out = load_precomp(dst, "train", features=feat, captions_per_image=1)
        src_arr = np.load(root / f"train_{feat}.npy")
        assert out.captions_per_image == 1 and out.n_images == kept.size
        assert out.captions == [src.captions[k] for k in kept]
        assert out.ids == [src.ids[pairing[k]] for k in kept]
        np.testing.assert_array_equal(np.asarray(out.images), src_arr[pairing[kept]])
    np.testing.assert_array_equal(np.load(dst / "train_source_pairs.npy"), np.stack([kept, pairing[kept]], 1))


def test_clean_copy_cpi5(tmp_path, monkeypatch):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    rng = np.random.default_rng(0)
    pairing = split.image_of_caption()
    noisy = rng.choice(30, size=8, replace=False)
    pairing[noisy] = rng.permutation(pairing[noisy])
    keep = np.ones(30, bool)
    keep[[0, 3, 7, 12, 29]] = False
    monkeypatch.setattr(audit, "_CHUNK_BYTES", 1)  # one row per chunk: exercises the chunked copy
    info = write_clean_copy(
        tmp_path / "clean", split=split, caption_image=pairing, keep=keep, src_root=root, features=("ims", "pooled")
    )
    dst = tmp_path / "clean"
    _check_copy(dst, root, pairing, keep)
    assert info["n_pairs_kept"] == 25 and info["n_pairs_dropped"] == 5 and info["n_image_rows_out"] == 25
    assert info["features"]["ims"]["shape"] == [25, 3, 4]
    assert info["bytes_written"] == (dst / "train_ims.npy").stat().st_size + (dst / "train_pooled.npy").stat().st_size
    # other splits and the vocabulary are links to the source; this split's files and the README are not
    assert (dst / "dev_ims.npy").is_symlink() and (dst / "vocab.json").is_symlink()
    assert not (dst / "README.txt").is_symlink() and "Dropped pairs: 5" in (dst / "README.txt").read_text()
    assert load_precomp(dst, "dev").captions == load_precomp(root, "dev").captions
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_clean_copy_cpi1_keeps_rows(tmp_path):
    root = _tiny(tmp_path / "src", 1)
    split = load_precomp(root, "train")
    assert split.captions_per_image == 1
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    info = write_clean_copy(
        tmp_path / "clean",
        split=split,
        caption_image=split.image_of_caption(),
        keep=keep,
        src_root=root,
        features=("ims", "pooled", "missing"),
        link_other_splits=False,
    )
    _check_copy(tmp_path / "clean", root, split.image_of_caption(), keep)
    assert info["n_distinct_images_out"] == 4 and info["features_missing"] == ["missing"]
    assert info["linked"] == [] and not (tmp_path / "clean" / "dev_ims.npy").exists()


def test_clean_copy_repeated_rows_layout(tmp_path):
    # NCR dev layout: every image stored once per caption; the copy reads the first row of each group.
    root = tmp_path / "src"
    root.mkdir()
    feats = np.random.default_rng(2).random((4, 3), dtype=np.float32)
    np.save(root / "train_ims.npy", np.repeat(feats, 5, axis=0))
    (root / "train_caps.txt").write_text("".join(f"cap {k}\n" for k in range(20)))
    split = load_precomp(root, "train")
    assert split.repeated_rows
    keep = np.arange(20) % 3 == 0
    write_clean_copy(tmp_path / "clean", split=split, caption_image=split.image_of_caption(), keep=keep, src_root=root)
    out = load_precomp(tmp_path / "clean", "train", captions_per_image=1)
    np.testing.assert_array_equal(np.asarray(out.images), feats[np.flatnonzero(keep) // 5])


def test_clean_copy_refuses_non_empty_dst(tmp_path):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    dst = tmp_path / "clean"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="non-empty"):
        write_clean_copy(
            dst, split=split, caption_image=split.image_of_caption(), keep=np.ones(30, bool), src_root=root
        )
    assert [p.name for p in dst.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_clean_copy(empty, split=split, caption_image=split.image_of_caption(), keep=np.ones(30, bool), src_root=root)
    assert load_precomp(empty, "train", captions_per_image=1).n_images == 30


@pytest.mark.parametrize(
    "change",
    [
        {"keep": np.ones(29, bool)},
        {"keep": np.zeros(30, bool)},
        {"keep": np.full(30, 2)},
        {"caption_image": np.arange(29)},
        {"caption_image": np.full(30, 6)},  # 6 images: rows 0..5
        {"features": ("nope",)},
    ],
)
def test_clean_copy_bad_input_writes_nothing(tmp_path, change):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    kwargs = dict(split=split, caption_image=split.image_of_caption(), keep=np.ones(30, bool), src_root=root)
    kwargs.update(change)
    with pytest.raises(InputError):
        write_clean_copy(tmp_path / "out" / "clean", **kwargs)
    assert not (tmp_path / "out").exists()


def test_clean_copy_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    real = audit._copy_rows
    calls = []

    def copy_then_fail(src, rows, path):
        calls.append(real(src, rows, path))
        raise OSError("disk full")

    monkeypatch.setattr(audit, "_copy_rows", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_clean_copy(
            tmp_path / "clean",
            split=split,
            caption_image=split.image_of_caption(),
            keep=np.ones(30, bool),
            src_root=root,
        )
    assert calls  # a file was written before the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
