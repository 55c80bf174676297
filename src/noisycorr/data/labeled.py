"""Labelled cross-modal datasets (the noisy-label task): readers, validation splits and label noise.

Every item is an image–text pair with one category label (or several, for multi-label sets). Labels
are kept as a multi-hot ``(N, C)`` bool matrix whatever the file stores.

Readers (``layout``; ``auto`` picks one from the file name and keys):

* ``wiki-mat``: the Wikipedia ``.mat`` of ``../shared/data/wikipedia`` (``I_tr``, ``T_tr``, ``L_tr``,
  ``I_te``, ``T_te``, ``L_te``; one-hot or integer labels). No validation split.
* ``inria-mat``: the MRL / NIRNL INRIA-Websearch ``.mat`` (``tr_img``, ``tr_txt``, ``tr_img_lab``,
  ``tr_txt_lab`` and the same with ``val_`` and ``te_``).
* ``xmedia-mat``: NIRNL's ``XMediaFeatures.mat`` (``I_tr_CNN``, ``T_tr_BOW``, ``trImgCat``, ``I_te_CNN``,
  ``T_te_BOW``, ``teImgCat``). No validation split (the authors use the first 500 test items).
* ``xmedianet-mat``: NIRNL's ``XMediaNet5View_Doc2Vec.mat`` (cell arrays ``train``, ``valid``, ``test``
  and ``*_labels``; view 0 = image, view 1 = text).
* ``h5``: the MRL ``*_deep_doc2vec*.h5py`` files of Wikipedia, NUS-WIDE and XMediaNet
  (``{split}_imgs_deep``, ``{split}_texts`` or ``{split}_text``, ``{split}_imgs_labels``,
  ``{split}_texts_labels`` for ``train``, optional ``valid``, ``test``). Needs the ``h5`` extra.
* ``npz``: our own layout, ``{split}_images`` (N, Di), ``{split}_texts`` (N, Dt), ``{split}_labels``
  ((N,) int or (N, C) multi-hot) for ``train``, optional ``val``, ``test``; optional ``class_names``.
* ``dscmr``: a folder in the DSCMR release layout (``{split}_img.mat``, ``{split}_txt.mat``,
  ``{split}_img_lab.mat``, each holding the key of its file name), e.g. Pascal Sentence.

Integer labels are shifted so that the smallest label over all splits is 0 (the MRL / NIRNL files
are 1-based or 0-based depending on the set).

The other benchmarks are distributed by their owners on request (MRL issues #8 / #9); with the
files at hand, any ``wiki-*`` preset trains on them through ``--set`` (features there are deep CNN
/ Doc2Vec vectors, so ``data.normalize=none`` and the authors' ``model.hidden=4096`` apply):

* INRIA-Websearch: ``--set data.root=INRIA-Websearch.mat --set data.val=file``;
* NUS-WIDE (MRL): ``--set data.root=nus_wide_deep_doc2vec_data_42941.h5py --set data.val=test_head
  --set data.val_size=5000``; NIRNL's file with ``valid_*`` keys: ``--set data.val=file``;
* XMediaNet (MRL): ``--set data.root=xmedianet_deep_doc2vec_data.h5py --set data.val=test_head
  --set data.val_size=4000``; NIRNL's ``XMediaNet5View_Doc2Vec.mat``: ``--set data.val=file``;
* the authors' own Wikipedia protocol (validation = the first 231 test items, clean):
  ``--set data.val=test_head --set data.val_size=231``.

Validation splits that come from the file or from the test head keep the file's labels (as the
authors do); a subset carved from train (``data.val=train``) carries the noisy labels.

Label noise is injected into the training items only, seeded and saved with the run:

* ``sym``: ``int(r * N)`` items drawn at random get a class drawn uniformly from all C classes (it
  may be the right one, so the realised rate is about ``r * (1 - 1/C)``); always in ``[0, C)``. A
  multi-label item gets as many distinct random classes as it had.
* ``asym``: the ``int(r * N)`` drawn items move through a fixed class transition: ``pairs`` (the
  MRL / NIRNL one: a seeded permutation maps the first half of the classes onto the second half,
  the other classes stay), ``cyclic`` (c -> c + 1 mod C) or an explicit list.
* scope ``per_pair`` (NIRNL): one draw per pair, shared by image and text; ``per_modality`` (MRL):
  image and text labels are drawn independently.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.errors import InputError

LAYOUTS = ("wiki-mat", "inria-mat", "xmedia-mat", "xmedianet-mat", "h5", "npz", "dscmr")
NOISE_KINDS = ("sym", "asym")
NOISE_SCOPES = ("per_pair", "per_modality")
VAL_SOURCES = ("auto", "file", "train", "test_head")


@dataclass
class LabeledSplit:
    """One split of paired items.

    Attributes:
        images: (N, Di) float32 image features.
        texts: (N, Dt) float32 text features.
        labels: (N, C) bool multi-hot category labels (as shipped, i.e. clean).
    """

    images: np.ndarray
    texts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> LabeledSplit:
        """The items at ``index`` (N',) as a new split."""
        return LabeledSplit(self.images[index], self.texts[index], self.labels[index])


@dataclass
class LabeledData:
    """The splits read from one benchmark file (``val`` is None when the file has none)."""

    source: str
    layout: str
    train: LabeledSplit
    test: LabeledSplit
    val: LabeledSplit | None = None
    class_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.train.labels.shape[1])

    @property
    def multilabel(self) -> bool:
        return bool(any((s.labels.sum(1) > 1).any() for s in (self.train, self.val, self.test) if s is not None))


# ----------------------------------------------------------------------------------------------- readers


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise InputError("h5 files", "h5py installed (pip install 'noisycorr[h5]')", "no h5py module") from None
    return h5py


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io as sio

    try:
        raw = sio.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        h5py = _h5py()
        with h5py.File(path, "r") as fh:
            # MATLAB writes column-major arrays, so the HDF5 view is transposed.
            return {k: np.asarray(v[()]).T for k, v in fh.items() if isinstance(v, h5py.Dataset)}
    except Exception as err:
        raise InputError(path, "a readable .mat file", f"an unreadable file ({type(err).__name__})") from None
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def _need(store: dict[str, Any], keys: Sequence[str], source: Path | str) -> Any:
    for key in keys:
        if key in store:
            return store[key]
    raise InputError(source, f"key {' or '.join(repr(k) for k in keys)}", f"keys {sorted(store)[:12]}")


def _features(x: Any, source: Path | str, key: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(source, f"a non-empty 2-D numeric feature matrix under {key!r}", f"{arr.dtype} {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(source, f"finite features under {key!r}", "NaN or infinite values")
    return arr


@dataclass
class _RawSplit:
    images: np.ndarray
    texts: np.ndarray
    labels: np.ndarray  # (N,) int or (N, C) multi-hot, not yet normalised
    text_labels: np.ndarray | None = None
    keys: str = ""


def _raw_labels(x: Any, n: int, source: Path | str, key: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape and arr.size == n:
        arr = arr.reshape(-1)
    if arr.shape[0] != n or arr.ndim not in (1, 2):
        raise InputError(source, f"{n} labels under {key!r}", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all() or (arr != np.round(arr)).any():
        raise InputError(source, f"integer or 0/1 labels under {key!r}", f"{arr.dtype} values")
    if arr.ndim == 2 and not np.isin(arr, (0, 1)).all():
        raise InputError(source, f"a 0/1 multi-hot matrix under {key!r}", "other values")
    return arr.astype(np.int64)


def _finish(raw: dict[str, _RawSplit], source: Path | str) -> dict[str, LabeledSplit]:
    """Check shapes, shift integer labels to start at 0, and turn every label into multi-hot."""
    for name, s in raw.items():
        n = s.images.shape[0]
        if s.texts.shape[0] != n:
            raise InputError(source, f"as many texts as images in {name} ({n})", f"{s.texts.shape[0]} ({s.keys})")
        if s.text_labels is not None and not np.array_equal(s.text_labels, s.labels):
            raise InputError(source, f"paired items: text labels equal to image labels in {name}", "other labels")
    splits = list(raw.values())
    dims = {(s.images.shape[1], s.texts.shape[1]) for s in splits}
    if len(dims) > 1:
        raise InputError(source, "the same feature sizes in every split", f"(image, text) sizes {sorted(dims)}")
    kinds = {s.labels.ndim for s in splits}
    if kinds == {1}:
        low = min(int(s.labels.min()) for s in splits)
        num = max(int(s.labels.max()) for s in splits) - low + 1
        eye = np.eye(num, dtype=bool)
        return {k: LabeledSplit(s.images, s.texts, eye[s.labels - low]) for k, s in raw.items()}
    if kinds == {2}:
        widths = {s.labels.shape[1] for s in splits}
        if len(widths) > 1:
            raise InputError(source, "the same number of classes in every split", f"widths {sorted(widths)}")
        out = {k: LabeledSplit(s.images, s.texts, s.labels.astype(bool)) for k, s in raw.items()}
        for k, s in out.items():
            if not s.labels.any(1).all():
                raise InputError(source, f"at least one label per item in {k}", "an item without a label")
        return out
    raise InputError(source, "the same label format (integers or multi-hot) in every split", "both")


def _split_from(
    store: dict[str, Any],
    source: Path,
    img: Sequence[str],
    txt: Sequence[str],
    lab: Sequence[str],
    txt_lab: Sequence[str] = (),
) -> _RawSplit:
    images = _features(_need(store, img, source), source, img[0])
    texts = _features(_need(store, txt, source), source, txt[0])
    labels = _raw_labels(_need(store, lab, source), images.shape[0], source, lab[0])
    text_labels = None
    if txt_lab and any(k in store for k in txt_lab):
        text_labels = _raw_labels(_need(store, txt_lab, source), texts.shape[0], source, txt_lab[0])
    return _RawSplit(images, texts, labels, text_labels, keys=f"{img[0]}, {txt[0]}")


def _read_wiki_mat(path: Path) -> tuple[dict[str, _RawSplit], None]:
    m = _loadmat(path)
    raw = {
        "train": _split_from(m, path, ["I_tr"], ["T_tr"], ["L_tr"]),
        "test": _split_from(m, path, ["I_te"], ["T_te"], ["L_te"]),
    }
    return raw, None


def _read_inria_mat(path: Path) -> tuple[dict[str, _RawSplit], None]:
    m = _loadmat(path)
    raw = {}
    for name, pre in (("train", "tr"), ("val", "val"), ("test", "te")):
        if name == "val" and f"{pre}_img" not in m:
            continue
        raw[name] = _split_from(m, path, [f"{pre}_img"], [f"{pre}_txt"], [f"{pre}_img_lab"], [f"{pre}_txt_lab"])
    return raw, None


def _read_xmedia_mat(path: Path) -> tuple[dict[str, _RawSplit], None]:
    m = _loadmat(path)
    raw = {
        "train": _split_from(m, path, ["I_tr_CNN"], ["T_tr_BOW"], ["trImgCat"], ["trTxtCat"]),
        "test": _split_from(m, path, ["I_te_CNN"], ["T_te_BOW"], ["teImgCat"], ["teTxtCat"]),
    }
    return raw, None


def _read_xmedianet_mat(path: Path) -> tuple[dict[str, _RawSplit], None]:
    m = _loadmat(path)
    raw = {}
    for name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        if name == "val" and key not in m:
            continue
        views = np.asarray(_need(m, [key], path), dtype=object).reshape(-1)
        labels = np.asarray(_need(m, [f"{key}_labels"], path), dtype=object).reshape(-1)
        if views.shape[0] < 2 or labels.shape[0] < 2:
            raise InputError(path, f"a cell array of >= 2 views under {key!r}", f"{views.shape[0]} entries")
        images = _features(views[0], path, f"{key}[0]")
        texts = _features(views[1], path, f"{key}[1]")
        lab = _raw_labels(labels[0], images.shape[0], path, f"{key}_labels[0]")
        txt_lab = _raw_labels(labels[1], texts.shape[0], path, f"{key}_labels[1]")
        raw[name] = _RawSplit(images, texts, lab, txt_lab, keys=f"{key}[0], {key}[1]")
    return raw, None


def _read_h5(path: Path) -> tuple[dict[str, _RawSplit], None]:
    h5py = _h5py()
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, "a readable HDF5 file", f"an unreadable file ({err})") from None
    with fh:
        store = {k: fh[k][()] for k in fh.keys() if isinstance(fh[k], h5py.Dataset)}
    raw = {}
    for name, pre in (("train", "train"), ("val", "valid"), ("test", "test")):
        if name == "val" and f"{pre}_imgs_deep" not in store:
            continue
        raw[name] = _split_from(
            store,
            path,
            [f"{pre}_imgs_deep"],
            [f"{pre}_texts", f"{pre}_text"],
            [f"{pre}_imgs_labels"],
            [f"{pre}_texts_labels", f"{pre}_text_labels"],
        )
    return raw, None


def _read_npz(path: Path) -> tuple[dict[str, _RawSplit], list[str] | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            store = {k: z[k] for k in z.files}
    except Exception as err:
        raise InputError(path, "a readable .npz file", f"an unreadable file ({type(err).__name__})") from None
    raw = {}
    for name in ("train", "val", "test"):
        if name == "val" and "val_images" not in store:
            continue
        raw[name] = _split_from(store, path, [f"{name}_images"], [f"{name}_texts"], [f"{name}_labels"])
    names = [str(c) for c in store["class_names"].tolist()] if "class_names" in store else None
    return raw, names


def _read_dscmr(folder: Path) -> tuple[dict[str, _RawSplit], None]:
    raw = {}
    for name, pre in (("train", "train"), ("val", "valid"), ("test", "test")):
        files = [folder / f"{pre}_{k}.mat" for k in ("img", "txt", "img_lab")]
        if not all(f.is_file() for f in files):
            continue
        store = {}
        for f in files:
            store.update(_loadmat(f))
        raw[name] = _split_from(store, folder, [f"{pre}_img"], [f"{pre}_txt"], [f"{pre}_img_lab"])
    return raw, None


_READERS = {
    "wiki-mat": _read_wiki_mat,
    "inria-mat": _read_inria_mat,
    "xmedia-mat": _read_xmedia_mat,
    "xmedianet-mat": _read_xmedianet_mat,
    "h5": _read_h5,
    "npz": _read_npz,
    "dscmr": _read_dscmr,
}


def detect_layout(path: str | Path) -> str:
    """The reader layout of a file or folder (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if list(path.glob("*_img_lab.mat")):
            return "dscmr"
        raise InputError(path, "a DSCMR-layout folder ({split}_img.mat, {split}_img_lab.mat, ...)", "other files")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".h5", ".h5py", ".hdf5"):
        return "h5"
    if suffix == ".mat":
        keys = set(_mat_keys(path))
        for layout, key in (
            ("wiki-mat", "I_tr"),
            ("inria-mat", "tr_img"),
            ("xmedia-mat", "I_tr_CNN"),
            ("xmedianet-mat", "train_labels"),
        ):
            if key in keys:
                return layout
        raise InputError(
            path, "a .mat file of a known layout (I_tr, tr_img, I_tr_CNN or train_labels)", f"keys {sorted(keys)[:12]}"
        )
    raise InputError(path, "a .mat, .h5/.h5py, .npz file or a DSCMR folder", f"suffix {suffix!r}")


def _mat_keys(path: Path) -> list[str]:
    import scipy.io as sio

    try:
        return [name for name, _, _ in sio.whosmat(str(path))]
    except NotImplementedError:
        h5py = _h5py()
        with h5py.File(path, "r") as fh:
            return list(fh.keys())
    except Exception as err:
        raise InputError(path, "a readable .mat file", f"an unreadable file ({type(err).__name__})") from None


def read_labeled(path: str | Path, *, layout: str = "auto") -> LabeledData:
    """Read a labelled cross-modal benchmark file (or DSCMR folder).

    Args:
        path: the file or folder.
        layout: one of :data:`LAYOUTS`, or ``auto``.

    Returns:
        The train and test splits, the validation split when the file has one, and class names
        when the file carries them. Labels are (N, C) bool.
    """
    path = Path(path).expanduser()
    layout, splits, names = _read_any(path, layout)
    for need in ("train", "test"):
        if need not in splits:
            raise InputError(path, f"a {need} split with both image and text features", "none")
    return LabeledData(str(path), layout, splits["train"], splits["test"], splits.get("val"), names)


def read_labeled_splits(path: str | Path, *, layout: str = "auto") -> dict[str, LabeledSplit]:
    """The splits of a file that hold both modalities (``train``, ``val``, ``test``), whichever exist.

    Pascal Sentence as released with DSCMR, for example, has image features for its test split only.
    """
    return _read_any(Path(path).expanduser(), layout)[1]


def _read_any(path: Path, layout: str) -> tuple[str, dict[str, LabeledSplit], list[str] | None]:
    if not path.exists():
        raise InputError(path, "a labelled dataset file or folder", "no such file")
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in _READERS:
        raise InputError("data.layout", f"one of auto, {', '.join(LAYOUTS)}", repr(layout))
    raw, names = _READERS[layout](path)
    if not raw:
        raise InputError(path, f"at least one split in the {layout} layout", "none")
    splits = _finish(raw, path)
    c = next(iter(splits.values())).labels.shape[1]
    if names is not None and len(names) != c:
        raise InputError(path, f"{c} class_names", str(len(names)))
    return layout, splits, names


# ------------------------------------------------------------------------------------------ validation


def _stream(purpose: str, seed: int) -> np.random.Generator:
    """A generator for one purpose: the validation draw must not reuse the noise draw's stream (with
    equal seeds, two ``RandomState(seed).permutation(N)`` calls would carve validation out of exactly
    the items picked for noise)."""
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    return np.random.default_rng([tag, seed])


@dataclass
class SplitPlan:
    """How the training file was divided: indices into the file's train (or test) split.

    Attributes:
        source: where validation comes from (``file``, ``train`` or ``test_head``).
        train_index: (N_train,) rows of the file's train split used for training.
        val_index: (N_val,) rows of the file's train split (``train``) or test split (``test_head``);
            empty for ``file``.
    """

    source: str
    train_index: np.ndarray
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def plan_validation(data: LabeledData, source: str = "auto", size: int | float = 0.1, seed: int = 0) -> SplitPlan:
    """Decide the validation items.

    Args:
        data: the file's splits.
        source: ``file`` (the file's own split), ``train`` (a seeded random subset of train, carved
            before training; it keeps its noisy labels), ``test_head`` (the first ``size`` test items,
            the MRL / NIRNL protocol), or ``auto`` (``file`` when there is one, else ``train``).
        size: items (int) or a share of the source split (float in (0, 1)).
        seed: seed of the ``train`` subset draw.
    """
    if source not in VAL_SOURCES:
        raise InputError("data.val", f"one of {', '.join(VAL_SOURCES)}", repr(source))
    n_train = len(data.train)
    if source == "auto":
        source = "file" if data.val is not None else "train"
    if source == "file":
        if data.val is None:
            raise InputError(data.source, "a validation split in the file (data.val=file)", "none")
        return SplitPlan("file", np.arange(n_train, dtype=np.int64))
    pool = n_train if source == "train" else len(data.test)
    k = int(round(size * pool)) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < k < pool:
        raise InputError("data.val_size", f"between 1 and {pool - 1} items (or a share in (0, 1))", repr(size))
    if source == "test_head":
        return SplitPlan("test_head", np.arange(n_train, dtype=np.int64), np.arange(k, dtype=np.int64))
    perm = _stream("validation", seed).permutation(n_train)
    return SplitPlan("train", np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64))


def apply_plan(data: LabeledData, plan: SplitPlan) -> tuple[LabeledSplit, LabeledSplit, LabeledSplit]:
    """(train, val, test) splits of ``plan`` with the file's (clean) labels."""
    if plan.source == "file":
        assert data.val is not None
        return data.train, data.val, data.test
    if plan.source == "train":
        return data.train.subset(plan.train_index), data.train.subset(plan.val_index), data.test
    rest = np.arange(plan.val_index.shape[0], len(data.test))
    return data.train, data.test.subset(plan.val_index), data.test.subset(rest)


# ---------------------------------------------------------------------------------------------- noise


def class_transition(num_classes: int, spec: str | Sequence[int] = "pairs", *, seed: int = 0) -> np.ndarray:
    """The class map of asymmetric noise.

    Args:
        num_classes: C.
        spec: ``pairs`` (a seeded permutation sends its first half onto its second half; the other
            classes map to themselves, as MRL and NIRNL do), ``cyclic`` (c -> c + 1 mod C), or a list
            of C target classes.
        seed: seed of the ``pairs`` permutation.

    Returns:
        (C,) int64 target class of each class.
    """
    if isinstance(spec, str):
        if spec == "cyclic":
            return (np.arange(num_classes, dtype=np.int64) + 1) % num_classes
        if spec == "pairs":
            perm = _stream("transition", seed).permutation(num_classes)
            out = np.arange(num_classes, dtype=np.int64)
            half = num_classes // 2
            out[perm[:half]] = perm[half : 2 * half]
            return out
        raise InputError("noise.transition", "pairs, cyclic or a list of classes", repr(spec))
    out = np.asarray(list(spec), dtype=np.int64)
    if out.shape != (num_classes,) or out.min() < 0 or out.max() >= num_classes:
        raise InputError("noise.transition", f"{num_classes} classes in [0, {num_classes})", repr(list(spec)))
    return out


def _noisy_copy(
    labels: np.ndarray, kind: str, rate: float, rs: np.random.Generator, transition: np.ndarray | None
) -> np.ndarray:
    n, c = labels.shape
    out = labels.copy()
    pick = rs.permutation(n)[: int(rate * n)]
    if kind == "sym":
        counts = labels[pick].sum(1)
        if (counts == 1).all():
            out[pick] = False
            out[pick, rs.integers(0, c, size=pick.shape[0])] = True
        else:
            for i, k in zip(pick, counts):
                out[i] = False
                out[i, rs.choice(c, size=int(k), replace=False)] = True
    else:
        assert transition is not None
        moved = np.zeros((pick.shape[0], c), dtype=bool)
        rows, cols = np.nonzero(labels[pick])
        moved[rows, transition[cols]] = True
        out[pick] = moved
    return out


@dataclass
class LabelNoise:
    """Noisy training labels and what a run records about them.

    Attributes:
        labels: (2, N, C) bool noisy labels of the images (0) and texts (1); equal under ``per_pair``.
        kind, scope, rate, seed: the request.
        transition: (C,) class map of ``asym`` noise, else None.
    """

    labels: np.ndarray
    kind: str
    scope: str
    rate: float
    seed: int
    transition: np.ndarray | None = None

    def record(self, clean: np.ndarray) -> dict[str, Any]:
        """Summary for ``noise.json``: realised rates against the (N, C) clean labels, checksum."""
        changed = (self.labels != clean[None]).any(-1)
        return {
            "kind": self.kind,
            "scope": self.scope,
            "rate": self.rate,
            "seed": self.seed,
            "transition": None if self.transition is None else self.transition.tolist(),
            "realised_rate_image": float(changed[0].mean()),
            "realised_rate_text": float(changed[1].mean()),
            "realised_rate_pair": float(changed.any(0).mean()),
            "n": int(self.labels.shape[1]),
            "num_classes": int(self.labels.shape[2]),
            "checksum": label_checksum(self.labels),
        }


def make_label_noise(
    labels: np.ndarray,
    *,
    rate: float,
    kind: str = "sym",
    scope: str = "per_pair",
    seed: int = 0,
    transition: str | Sequence[int] = "pairs",
) -> LabelNoise:
    """Draw noisy labels for the training items.

    Args:
        labels: (N, C) bool clean multi-hot labels.
        rate: share of items whose label is redrawn (``sym``) or moved (``asym``), in [0, 1].
        kind: ``sym`` or ``asym``.
        scope: ``per_pair`` (one draw shared by image and text) or ``per_modality`` (two draws).
        seed: seed of the draws (NumPy generators keyed by purpose, so the same seed for the
            validation subset draws unrelated items).
        transition: the ``asym`` class map, see :func:`class_transition`.

    Returns:
        A :class:`LabelNoise` with (2, N, C) bool labels.
    """
    if kind not in NOISE_KINDS:
        raise InputError("noise.kind", f"one of {', '.join(NOISE_KINDS)}", repr(kind))
    if scope not in NOISE_SCOPES:
        raise InputError("noise.scope", f"one of {', '.join(NOISE_SCOPES)}", repr(scope))
    if not 0.0 <= rate <= 1.0:
        raise InputError("noise.rate", "a rate in [0, 1]", repr(rate))
    labels = np.asarray(labels, dtype=bool)
    rs = _stream("label noise", seed)
    trans = class_transition(labels.shape[1], transition, seed=seed) if kind == "asym" else None
    first = _noisy_copy(labels, kind, rate, rs, trans)
    second = first.copy() if scope == "per_pair" else _noisy_copy(labels, kind, rate, rs, trans)
    return LabelNoise(np.stack([first, second]), kind, scope, float(rate), int(seed), trans)


def label_checksum(labels: np.ndarray) -> str:
    """sha256 of the labels as contiguous uint8 bytes."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()


def save_label_noise(path: str | Path, labels: np.ndarray) -> None:
    """Write (2, N, C) noisy labels as a uint8 ``.npy`` (atomic)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(labels, dtype=np.uint8))
    atomic_write_bytes(path, buf.getvalue())


def load_label_noise(path: str | Path, n: int, num_classes: int) -> np.ndarray:
    """Read and check a saved (2, N, C) noisy-label file; returns bool labels."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(path, "a noisy-label .npy file", f"an unreadable file ({type(err).__name__})") from None
    if arr.shape != (2, n, num_classes):
        raise InputError(path, f"shape (2, {n}, {num_classes})", f"shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise InputError(path, "0/1 labels", "other values")
    arr = arr.astype(bool)
    if not arr.any(-1).all():
        raise InputError(path, "at least one label per item", "an item without a label")
    return arr


def write_npz(path: str | Path, splits: dict[str, LabeledSplit], class_names: Sequence[str] | None = None) -> None:
    """Write splits (``train``, optional ``val``, ``test``) in the ``npz`` layout (atomic)."""
    store: dict[str, np.ndarray] = {}
    for name, s in splits.items():
        store[f"{name}_images"] = s.images
        store[f"{name}_texts"] = s.texts
        store[f"{name}_labels"] = s.labels.astype(np.uint8)  # multi-hot keeps C even when a class is absent
    if class_names is not None:
        store["class_names"] = np.asarray(list(class_names))
    buf = io.BytesIO()
    np.savez(buf, **store)
    atomic_write_bytes(path, buf.getvalue())
