"""The cleaned precomp copy: kept pairs only, one caption per image, nothing left behind on failure."""

from pathlib import Path

import numpy as np
import pytest

from noisycorr.data import cleancopy
from noisycorr.data.cleancopy import write_clean_copy
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.errors import InputError


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
    monkeypatch.setattr(cleancopy, "_CHUNK_BYTES", 1)  # one row per chunk: exercises the chunked copy
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
    real = cleancopy._copy_rows
    calls = []

    def copy_then_fail(src, rows, path):
        calls.append(real(src, rows, path))
        raise OSError("disk full")

    monkeypatch.setattr(cleancopy, "_copy_rows", copy_then_fail)
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


@pytest.mark.parametrize(
    "change, message",
    [
        # Mutant: the `arr < 0` test removed from check_pairing (-1 copies the last image row) -> fails.
        ({"caption_image": np.r_[np.zeros(29, np.int64), -1]}, r"^caption_image: caption 29: expected image rows"),
        # Mutant: the integer-dtype test removed from check_pairing (float rows cast silently) -> fails.
        ({"caption_image": np.zeros(30)}, r"^caption_image: expected integer image rows, found dtype float64$"),
        # Mutant: the shape test removed from check_mask (a (30, 1) mask then indexes wrongly) -> fails.
        ({"keep": np.ones((30, 1), bool)}, r"^keep: expected shape \(30,\), one entry per pair, found shape "),
    ],
)
def test_clean_copy_bad_arrays_are_named(tmp_path, change, message):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    kwargs = dict(split=split, caption_image=split.image_of_caption(), keep=np.ones(30, bool), src_root=root)
    kwargs.update(change)
    with pytest.raises(InputError, match=message):
        write_clean_copy(tmp_path / "out" / "clean", **kwargs)
    assert not (tmp_path / "out").exists()


# Mutant: check_mask accepting only bool (the 0/1 integer branch dropped) -> fails.
def test_clean_copy_takes_a_0_1_integer_keep(tmp_path):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    keep = (np.arange(30) % 2).astype(np.int8)
    info = write_clean_copy(
        tmp_path / "clean",
        split=split,
        caption_image=split.image_of_caption(),
        keep=keep,
        src_root=root,
        features=("ims", "pooled"),
    )
    assert info["n_pairs_kept"] == 15
    _check_copy(tmp_path / "clean", root, split.image_of_caption(), keep.astype(bool))


# Mutant: the captions written with `Path.write_bytes` instead of atomic_write_bytes -> fails.
def test_clean_copy_small_files_go_through_the_atomic_writer(tmp_path, monkeypatch):
    root = _tiny(tmp_path / "src", 5)
    split = load_precomp(root, "train")
    seen = []
    real = cleancopy.atomic_write_bytes

    def spy(path, data):
        seen.append(path.name)
        real(path, data)

    monkeypatch.setattr(cleancopy, "atomic_write_bytes", spy)
    write_clean_copy(
        tmp_path / "clean",
        split=split,
        caption_image=split.image_of_caption(),
        keep=np.ones(30, bool),
        src_root=root,
        link_other_splits=False,
    )
    assert sorted(seen) == ["README.txt", "train_caps.txt", "train_ids.txt", "train_source_pairs.npy"]
    # the rest is the feature file, copied in chunks through a memory map
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == sorted([*seen, "train_ims.npy"])
