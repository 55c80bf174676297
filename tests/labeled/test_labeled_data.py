"""Readers of the labelled benchmark layouts, validation plans, and input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from noisycorr.data.labeled import (
    LabeledSplit,
    apply_plan,
    detect_layout,
    plan_validation,
    read_labeled,
    read_labeled_splits,
    write_npz,
)
from noisycorr.errors import InputError


def _arrays(n: int, di: int = 5, dt: int = 3, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    return rs.rand(n, di).astype(np.float32), rs.rand(n, dt).astype(np.float32), rs.randint(0, c, size=n)


def test_wikipedia_benchmark_loads(wiki_mat: Path) -> None:
    data = read_labeled(wiki_mat)
    assert data.layout == "wiki-mat"
    assert (len(data.train), len(data.test), data.val) == (2173, 693, None)
    assert data.train.images.shape == (2173, 128) and data.train.texts.shape == (2173, 10)
    assert data.num_classes == 10 and not data.multilabel
    assert (data.train.labels.sum(1) == 1).all()
    # the category column of the shipped list file is the same label, 1-based
    rows = (wiki_mat.parent / "trainset_txt_img_cat.list").read_text().split("\n")
    cats = np.array([int(r.split("\t")[2]) for r in rows if r.strip()])
    np.testing.assert_array_equal(data.train.labels.argmax(1), cats - 1)


def test_pascal_sentence_dscmr_folder(shared_data: Path) -> None:
    folder = shared_data / "pascal-sentence-100"
    if not folder.is_dir():
        pytest.skip("pascal-sentence-100 not in the shared data folder")
    assert detect_layout(folder) == "dscmr"
    splits = read_labeled_splits(folder)
    assert sorted(splits) == ["test"]  # the release has image features for the test split only
    test = splits["test"]
    assert test.images.shape == (100, 4096) and test.texts.shape == (100, 300)
    np.testing.assert_array_equal(test.labels.sum(0), np.full(20, 5))
    with pytest.raises(InputError, match="train split"):
        read_labeled(folder)


def test_npz_round_trip_keeps_absent_classes(tmp_path: Path) -> None:
    img, txt, y = _arrays(20, c=3)
    labels = np.eye(5, dtype=bool)[y]  # classes 3 and 4 never occur
    split = LabeledSplit(img, txt, labels)
    write_npz(tmp_path / "d.npz", {"train": split, "val": split.subset(np.arange(5)), "test": split})
    data = read_labeled(tmp_path / "d.npz")
    assert data.num_classes == 5 and data.val is not None and len(data.val) == 5
    np.testing.assert_array_equal(data.train.labels, labels)
    np.testing.assert_array_equal(data.train.images, img)


def test_npz_integer_labels_are_shifted_to_zero(tmp_path: Path) -> None:
    img, txt, y = _arrays(12, c=3)
    np.savez(
        tmp_path / "d.npz",
        train_images=img,
        train_texts=txt,
        train_labels=y + 1,
        test_images=img,
        test_texts=txt,
        test_labels=y + 1,
    )
    data = read_labeled(tmp_path / "d.npz")
    np.testing.assert_array_equal(data.train.labels.argmax(1), y)


def test_inria_mat_layout(tmp_path: Path) -> None:
    store = {}
    for pre, n in (("tr", 10), ("val", 4), ("te", 6)):
        img, txt, y = _arrays(n, seed=n)
        store.update({f"{pre}_img": img, f"{pre}_txt": txt, f"{pre}_img_lab": y[:, None], f"{pre}_txt_lab": y[:, None]})
    sio.savemat(tmp_path / "INRIA-Websearch.mat", store)
    data = read_labeled(tmp_path / "INRIA-Websearch.mat")
    assert data.layout == "inria-mat"
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)


def test_inria_mat_rejects_unpaired_labels(tmp_path: Path) -> None:
    store = {}
    for pre in ("tr", "te"):
        img, txt, y = _arrays(8)
        store.update({f"{pre}_img": img, f"{pre}_txt": txt, f"{pre}_img_lab": y, f"{pre}_txt_lab": (y + 1) % 4})
    sio.savemat(tmp_path / "x.mat", store)
    with pytest.raises(InputError, match="text labels equal to image labels"):
        read_labeled(tmp_path / "x.mat")


def test_xmedia_and_xmedianet_mat_layouts(tmp_path: Path) -> None:
    img, txt, y = _arrays(9)
    sio.savemat(
        tmp_path / "XMediaFeatures.mat",
        {"I_tr_CNN": img, "T_tr_BOW": txt, "trImgCat": y + 1, "I_te_CNN": img, "T_te_BOW": txt, "teImgCat": y + 1},
    )
    data = read_labeled(tmp_path / "XMediaFeatures.mat")
    assert data.layout == "xmedia-mat" and data.num_classes == 4

    def cell(*items: np.ndarray) -> np.ndarray:
        out = np.empty((1, len(items)), dtype=object)
        for i, a in enumerate(items):
            out[0, i] = a
        return out

    store = {}
    for key in ("train", "valid", "test"):
        store[key] = cell(img, txt, img)  # a third view is ignored
        store[f"{key}_labels"] = cell(y[:, None], y[:, None], y[:, None])
    sio.savemat(tmp_path / "XMediaNet5View_Doc2Vec.mat", store)
    data = read_labeled(tmp_path / "XMediaNet5View_Doc2Vec.mat")
    assert data.layout == "xmedianet-mat" and data.val is not None
    np.testing.assert_array_equal(data.test.labels.argmax(1), y)


def test_h5_layout_with_and_without_valid(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    img, txt, y = _arrays(10)
    with h5py.File(tmp_path / "wiki_deep_doc2vec_data_corr_ae.h5py", "w") as fh:
        for pre in ("train", "test"):
            fh[f"{pre}_imgs_deep"] = img
            fh[f"{pre}_texts" if pre == "train" else f"{pre}_text"] = txt
            fh[f"{pre}_imgs_labels"] = y + 1
            fh[f"{pre}_texts_labels"] = y + 1
    data = read_labeled(tmp_path / "wiki_deep_doc2vec_data_corr_ae.h5py")
    assert data.layout == "h5" and data.val is None and data.num_classes == 4
    plan = plan_validation(data, "test_head", 3)
    train, val, test = apply_plan(data, plan)
    assert (len(train), len(val), len(test)) == (10, 3, 7)
    np.testing.assert_array_equal(val.images, img[:3])


def test_validation_carved_from_train_is_seeded_and_disjoint(tiny_npz: Path) -> None:
    data = read_labeled(tiny_npz)
    a = plan_validation(data, "auto", 30, seed=0)
    b = plan_validation(data, "train", 30, seed=0)
    c = plan_validation(data, "train", 30, seed=1)
    assert a.source == "train"
    np.testing.assert_array_equal(a.val_index, b.val_index)
    assert not np.array_equal(a.val_index, c.val_index)
    assert len(a.val_index) == 30 and len(a.train_index) == len(data.train) - 30
    assert not set(a.val_index) & set(a.train_index)
    assert len(plan_validation(data, "train", 0.25).val_index) == 40
    with pytest.raises(InputError, match="val_size"):
        plan_validation(data, "train", len(data.train))
    with pytest.raises(InputError, match="validation split in the file"):
        plan_validation(data, "file")


@pytest.mark.parametrize(
    ("store", "match"),
    [
        (
            {"train_images": np.zeros((4, 2)), "train_texts": np.zeros((3, 2)), "train_labels": np.zeros(4)},
            "as many texts as images",
        ),
        (
            {"train_images": np.zeros((4, 2)), "train_texts": np.zeros((4, 2)), "train_labels": np.full(4, 0.5)},
            "integer or 0/1 labels",
        ),
        ({"train_images": np.zeros((4, 2)), "train_texts": np.zeros((4, 2)), "train_labels": np.zeros(3)}, "4 labels"),
        (
            {"train_images": np.full((4, 2), np.nan), "train_texts": np.zeros((4, 2)), "train_labels": np.zeros(4)},
            "finite features",
        ),
        ({"train_images": np.zeros((4, 2)), "train_labels": np.zeros(4)}, "train_texts"),
    ],
)
def test_bad_files_raise_one_line_input_errors(tmp_path: Path, store: dict, match: str) -> None:
    full = {"test_images": np.zeros((2, 2)), "test_texts": np.zeros((2, 2)), "test_labels": np.zeros(2), **store}
    np.savez(tmp_path / "bad.npz", **full)
    with pytest.raises(InputError, match=match) as err:
        read_labeled(tmp_path / "bad.npz")
    assert "\n" not in str(err.value) and "bad.npz" in str(err.value)


def test_unknown_layout_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(InputError, match="suffix"):
        read_labeled(tmp_path / "x.csv")
    with pytest.raises(InputError, match="no such file"):
        read_labeled(tmp_path / "missing.mat")
    sio.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(InputError, match="known layout"):
        read_labeled(tmp_path / "other.mat")
