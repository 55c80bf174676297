"""Precomp reader: real Flickr8k-derived features, CC152K TSV captions, the NCR dev quirk, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from noisycorr.data.precomp import load_precomp
from noisycorr.errors import InputError


def _write(
    root: Path, split: str, feats: np.ndarray, captions: list[str], ids: list[str] | None = None
) -> None:
    np.save(root / f"{split}_ims.npy", feats)
    (root / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    if ids is not None:
        (root / f"{split}_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")


def _caps(n: int) -> list[str]:
    return [f"caption number {k} ." for k in range(n)]


@pytest.mark.parametrize("split,n_img", [("train", 2795), ("dev", 250), ("test", 500)])
def test_flickr_dev_splits(shared_data: Path, split: str, n_img: int) -> None:
    root = shared_data / "flickr-dev"
    ims = load_precomp(root, split, features="ims", validate=split != "train")
    assert ims.images.shape == (n_img, 16, 1280) and ims.images.dtype == np.float16
    assert isinstance(ims.images, np.memmap)
    assert ims.n_images == n_img and ims.n_captions == 5 * n_img and ims.captions_per_image == 5
    assert ims.ids is not None and len(ims.ids) == n_img and ims.ids[0].endswith(".jpg")
    assert not ims.repeated_rows
    pooled = load_precomp(root, split, features="pooled")
    assert pooled.images.shape == (n_img, 1280) and pooled.images.dtype == np.float32
    assert pooled.captions == ims.captions
    lines = (root / f"{split}_caps.txt").read_text(encoding="utf-8").splitlines()
    assert ims.captions[7] == lines[7].strip()
    np.testing.assert_array_equal(ims.image_of_caption()[:11], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2])


def test_split_pickles_as_a_reopened_memmap(shared_data: Path) -> None:
    split = load_precomp(shared_data / "flickr-dev", "dev")
    blob = pickle.dumps(split)
    assert len(blob) < 1_000_000  # the 10 MB feature file is not inside
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap)
    np.testing.assert_array_equal(back.images[17], split.images[17])


def test_cc152k_tsv_captions(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "cc152k-test" / "test_caps_img_urls.csv"  # id<TAB>caption<TAB>url
    (tmp_path / "test_caps.tsv").write_bytes(src.read_bytes())
    np.save(tmp_path / "test_ims.npy", np.zeros((1000, 3, 4), dtype=np.float16))
    split = load_precomp(tmp_path, "test")
    assert split.captions_per_image == 1 and split.n_images == split.n_captions == 1000
    first = src.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    assert split.ids is not None and split.ids[0] == first[0] and split.captions[0] == first[1]
    assert all("http" not in c for c in split.captions)


def test_ncr_dev_repeated_rows_are_deduplicated(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 3, 2)).astype(np.float32)
    _write(tmp_path, "dev", np.repeat(base, 5, axis=0), _caps(20))
    for cpi in (None, 5):
        split = load_precomp(tmp_path, "dev", captions_per_image=cpi)
        assert split.repeated_rows and split.captions_per_image == 5
        assert split.images.shape == (4, 3, 2) and isinstance(split.images, np.memmap)
        np.testing.assert_array_equal(np.asarray(split.images), base)
    # Explicitly one caption per row: no de-duplication.
    split = load_precomp(tmp_path, "dev", captions_per_image=1)
    assert not split.repeated_rows and split.n_images == 20
    back = pickle.loads(pickle.dumps(load_precomp(tmp_path, "dev")))
    np.testing.assert_array_equal(np.asarray(back.images), base)


def test_distinct_rows_with_equal_counts_mean_one_caption_per_image(tmp_path: Path) -> None:
    _write(tmp_path, "dev", np.zeros((20, 2), dtype=np.float32), _caps(20))
    assert load_precomp(tmp_path, "dev").captions_per_image == 1  # constant rows: not evidence
    assert load_precomp(tmp_path, "dev", captions_per_image=5).n_images == 4  # but fit the layout
    _write(tmp_path, "dev", np.arange(20 * 2, dtype=np.float32).reshape(20, 2), _caps(20))
    assert load_precomp(tmp_path, "dev").captions_per_image == 1
    with pytest.raises(InputError, match="identical consecutive rows"):
        load_precomp(tmp_path, "dev", captions_per_image=5)


def test_missing_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        load_precomp(tmp_path / "nope", "train")
    with pytest.raises(InputError, match="train_ims.npy"):
        load_precomp(tmp_path, "train")
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InputError, match="train_caps.txt or train_caps.tsv"):
        load_precomp(tmp_path, "train")
    with pytest.raises(InputError, match="train_pooled.npy"):
        load_precomp(tmp_path, "train", features="pooled")


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4, 5)])
def test_wrong_rank(tmp_path: Path, shape: tuple[int, ...]) -> None:
    _write(tmp_path, "train", np.zeros(shape, dtype=np.float32), _caps(shape[0]))
    with pytest.raises(InputError, match=r"2 dims \(N, D\) or 3 dims"):
        load_precomp(tmp_path, "train")


def test_integer_features_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "train", np.zeros((2, 3), dtype=np.int32), _caps(2))
    with pytest.raises(InputError, match="dtype int32"):
        load_precomp(tmp_path, "train")


def test_caption_count_mismatch(tmp_path: Path) -> None:
    _write(tmp_path, "train", np.zeros((3, 4), dtype=np.float32), _caps(7))
    with pytest.raises(InputError, match="multiple of the 3 images.*found 7 captions"):
        load_precomp(tmp_path, "train")
    _write(tmp_path, "train", np.zeros((3, 4), dtype=np.float32), _caps(6))
    assert load_precomp(tmp_path, "train").captions_per_image == 2
    with pytest.raises(InputError, match=r"15 captions \(3 images .* x 5 per image\), found 6 lines"):
        load_precomp(tmp_path, "train", captions_per_image=5)


def test_empty_caption_line_is_named(tmp_path: Path) -> None:
    caps = _caps(10)
    caps[6] = "   "
    _write(tmp_path, "train", np.zeros((2, 4), dtype=np.float32), caps)
    with pytest.raises(InputError, match="train_caps.txt: line 7: expected a non-empty caption"):
        load_precomp(tmp_path, "train")


def test_undecodable_caption_file(tmp_path: Path) -> None:
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 4), dtype=np.float32))
    (tmp_path / "train_caps.txt").write_bytes(b"a dog .\na cat .\n\xff\xfe bad\nok .\n")
    with pytest.raises(InputError, match="line 3: expected UTF-8"):
        load_precomp(tmp_path, "train")


def test_tsv_line_without_tab(tmp_path: Path) -> None:
    np.save(tmp_path / "train_ims.npy", np.zeros((2, 4), dtype=np.float32))
    (tmp_path / "train_caps.tsv").write_text("id1\ta dog .\nid2 a cat .\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2: expected img_id<TAB>caption"):
        load_precomp(tmp_path, "train")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_features_name_the_row(
    tmp_path: Path, value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    feats = np.ones((50, 3, 4), dtype=np.float16)
    feats[37, 2, 1] = value
    _write(tmp_path, "train", feats, _caps(50))
    monkeypatch.setattr("noisycorr.data.precomp._CHUNK_BYTES", 5 * 3 * 4 * 2)  # 5 rows per chunk
    with pytest.raises(InputError, match="image row 37: expected finite feature values"):
        load_precomp(tmp_path, "train")
    assert load_precomp(tmp_path, "train", validate=False).n_images == 50


def test_float16_extremes_are_finite(tmp_path: Path) -> None:
    feats = np.full((4, 16, 64), 65504.0, dtype=np.float16)  # float16 max: a float16 sum would overflow
    _write(tmp_path, "train", feats, _caps(4))
    assert load_precomp(tmp_path, "train").n_images == 4


def test_nonfinite_row_reported_in_file_rows_after_dedup(tmp_path: Path) -> None:
    feats = np.repeat(np.ones((4, 2), dtype=np.float32), 5, axis=0)
    feats[10:15] = np.nan  # image 2, file rows 10..14
    _write(tmp_path, "dev", feats, _caps(20))
    with pytest.raises(InputError, match="image row"):
        load_precomp(tmp_path, "dev", captions_per_image=1)
    with pytest.raises(InputError, match="identical consecutive rows"):
        load_precomp(tmp_path, "dev", captions_per_image=5)  # NaN != NaN: not a repeated layout


def test_ids_file_length(tmp_path: Path) -> None:
    _write(tmp_path, "train", np.zeros((3, 4), dtype=np.float32), _caps(15), ids=["a", "b"])
    with pytest.raises(InputError, match=r"train_ids.txt: expected 3 ids \(one per image\), found 2 lines"):
        load_precomp(tmp_path, "train")
    _write(tmp_path, "train", np.zeros((3, 4), dtype=np.float32), _caps(15), ids=["a", "b", "c"])
    assert load_precomp(tmp_path, "train").ids == ["a", "b", "c"]


def test_not_an_npy_file(tmp_path: Path) -> None:
    (tmp_path / "train_ims.npy").write_bytes(b"not numpy at all")
    (tmp_path / "train_caps.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(InputError, match="expected a .npy array file"):
        load_precomp(tmp_path, "train")


def test_shared_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from noisycorr.data.paths import shared_data_dir

    monkeypatch.setenv("NOISYCORR_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv("NOISYCORR_SHARED_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc")
def test_release_pages_drops_read_rows_from_rss_and_keeps_values(tmp_path: Path) -> None:
    from noisycorr.data.precomp import release_pages

    arr = np.random.default_rng(0).standard_normal((4096, 2048)).astype(np.float32)  # 32 MiB
    np.save(tmp_path / "x.npy", arr)
    del arr
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    view = mm[::2]
    total = float(view.sum(dtype=np.float64)) + float(mm[1::2].sum(dtype=np.float64))  # touches every page
    before = _rss_file_kib()
    release_pages(view)  # through a view, as a de-duplicated split holds it
    assert before - _rss_file_kib() > 24 * 1024
    assert float(mm[::2].sum(dtype=np.float64)) + float(mm[1::2].sum(dtype=np.float64)) == total


def test_release_pages_leaves_copy_on_write_changes_and_plain_arrays_alone(tmp_path: Path) -> None:
    from noisycorr.data.precomp import release_pages

    np.save(tmp_path / "x.npy", np.zeros((2048, 1024), dtype=np.float32))
    cow = np.load(tmp_path / "x.npy", mmap_mode="c")
    cow[5, 5] = 7.0  # a private page: dropping it would lose the change
    release_pages(cow)
    assert cow[5, 5] == 7.0
    plain = np.ones(3)
    release_pages(plain)
    assert plain.sum() == 3.0
