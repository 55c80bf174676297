"""The meta set: a few image-caption pairs the *user* declares clean (MSCN's meta-data).

Two sources (``data.meta_source``):

- ``val``: whole images of the validation split, each with all its captions, drawn with
  ``data.meta_seed``. They are removed from the validation split, which shrinks by that many images
  (the run folder's ``meta.json`` says by how much); test is never touched. Whole images keep the
  remaining validation split in its ``captions_per_image`` layout.
- ``file``: training pairs listed in ``data.meta_file`` (a hand-checked list of training sample
  indices: ``.npy`` int array, or text with one index per line, ``#`` comments allowed). Each pair
  keeps the image it carries in the training data (what the user checked). The pairs are held
  apart from training by the methods that use the meta set.

The meta set never comes from the noise mask: drawing "clean training pairs" needs the user's file.
Negatives are formed by the method (each epoch: a meta caption with another meta image, see
:meth:`MetaPairs.other_images`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisycorr.data.dataset import EncodedCaptions, PairBatch
from noisycorr.data.precomp import PrecompSplit
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError


@dataclass
class MetaPairs:
    """The meta set in memory: M captions, each paired with one of ``images``.

    Attributes:
        images: (M_img, R, D) or (M_img, D) float32 features of the meta images.
        encoded: the M captions' token ids.
        pair_image: (M,) int64 row of ``images`` each caption is declared to match.
        source: ``val`` or ``file``.
        held_out: (M,) int64 training sample indices of the pairs (``file``); empty for ``val``.
        rows: (M_img,) int64 the meta images' rows in their source split (validation or training).
    """

    images: np.ndarray
    encoded: EncodedCaptions
    pair_image: np.ndarray
    source: str
    held_out: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.pair_image)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def batch(self, captions: np.ndarray, images: np.ndarray) -> PairBatch:
        """The pairs (caption ``captions[b]``, meta image ``images[b]``) as a batch on the CPU.

        Args:
            captions: (B,) meta caption positions; images: (B,) rows of ``images``.
        """
        captions = np.asarray(captions, dtype=np.int64)
        tokens, lengths = self.encoded.padded(captions)
        return PairBatch(
            images=torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(images, dtype=np.int64)])),
            tokens=torch.from_numpy(np.ascontiguousarray(tokens)),
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            index=torch.from_numpy(captions),
        )

    def other_images(self, rng: np.random.Generator) -> np.ndarray:
        """(M,) for each caption a uniformly drawn meta image other than its own (a sure negative)."""
        shift = rng.integers(1, self.n_images, size=len(self))
        return (self.pair_image + shift) % self.n_images


def _subset(split: PrecompSplit, rows: np.ndarray) -> PrecompSplit:
    """The split restricted to image ``rows`` (sorted), each with all its captions, in memory."""
    cpi = split.captions_per_image
    caps = (rows[:, None] * cpi + np.arange(cpi)[None, :]).reshape(-1)
    return dataclasses.replace(
        split,
        images=np.asarray(split.images[rows]),
        captions=[split.captions[int(k)] for k in caps],
        ids=None if split.ids is None else [split.ids[int(r)] for r in rows],
    )


def meta_from_val(
    val: PrecompSplit, vocab: Vocabulary, *, n_pairs: int, seed: int
) -> tuple[MetaPairs, PrecompSplit]:
    """Draw ``ceil(n_pairs / captions_per_image)`` whole validation images as the meta set.

    Returns:
        The meta set and the validation split without those images.

    Raises:
        InputError: fewer than 2 meta images, or none left for validation.
    """
    cpi = val.captions_per_image
    n_img = math.ceil(n_pairs / cpi)
    if not 2 <= n_img <= val.n_images - 1:
        raise InputError(
            "data.meta_size",
            f"between {2 * cpi} and {(val.n_images - 1) * cpi} pairs from the {val.n_images}-image validation "
            "split (2 meta images at least, 1 validation image left)",
            f"{n_pairs} pairs ({n_img} images)",
        )
    rows = np.sort(np.random.default_rng([seed, 0x3E7A]).choice(val.n_images, n_img, replace=False)).astype(np.int64)
    keep = np.setdiff1d(np.arange(val.n_images, dtype=np.int64), rows)
    meta_split = _subset(val, rows)
    meta = MetaPairs(
        images=np.asarray(meta_split.images, dtype=np.float32),
        encoded=EncodedCaptions.from_captions(meta_split.captions, vocab),
        pair_image=np.arange(n_img * cpi, dtype=np.int64) // cpi,
        source="val",
        held_out=np.zeros(0, dtype=np.int64),
        rows=rows,
    )
    return meta, _subset(val, keep)


def read_index_file(path: str | Path, n: int) -> np.ndarray:
    """(M,) distinct int64 sample indices in [0, n) from a ``.npy`` array or a text file (one per line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(path, "a file of training pair indices (data.meta_file)", "no such file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(path, "a .npy array of int indices", f"unreadable ({err})") from None
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(path, "a 1-D integer array", f"{arr.dtype} array of shape {arr.shape}")
        idx, lines = arr.astype(np.int64), np.arange(1, len(arr) + 1)
    else:
        values, where = [], []
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                values.append(int(text))
            except ValueError:
                raise InputError(path, "one integer pair index per line", repr(text), where=f"line {k}") from None
            where.append(k)
        idx, lines = np.asarray(values, dtype=np.int64), np.asarray(where)
    what = "row" if path.suffix == ".npy" else "line"
    bad = np.flatnonzero((idx < 0) | (idx >= n))
    if bad.size:
        raise InputError(path, f"a training pair index in [0, {n})", str(int(idx[bad[0]])),
                         where=f"{what} {int(lines[bad[0]])}")
    _, first = np.unique(idx, return_index=True)
    dup = np.setdiff1d(np.arange(len(idx)), first)
    if dup.size:
        k = int(dup[0])
        raise InputError(path, "distinct pair indices", f"{int(idx[k])} again", where=f"{what} {int(lines[k])}")
    return idx


def meta_from_file(
    train: PrecompSplit, vocab: Vocabulary, pairing: np.ndarray, path: str | Path
) -> MetaPairs:
    """The training pairs listed in ``path``, each with the image it carries in the training data.

    Args:
        pairing: (N_cap,) image row of each training pair as the run trains it.
    """
    idx = read_index_file(path, train.n_captions)
    rows, pair_image = np.unique(pairing[idx], return_inverse=True)
    if len(rows) < 2:
        raise InputError(path, "pairs of at least 2 distinct images (negatives pair a caption with another image)",
                         f"{len(rows)} image")
    return MetaPairs(
        images=np.asarray(train.images[rows], dtype=np.float32),
        encoded=EncodedCaptions.from_captions([train.captions[int(k)] for k in idx], vocab),
        pair_image=pair_image.astype(np.int64),
        source="file",
        held_out=idx,
        rows=rows.astype(np.int64),
    )


def meta_pairs_wanted(size: float, n_train: int) -> int:
    """``data.meta_size`` in pairs: a share of the training pairs when below 1, else a count."""
    return max(1, round(size * n_train)) if size < 1 else int(size)


def meta_record(meta: MetaPairs | None, *, val_before: PrecompSplit, val_after: PrecompSplit) -> dict[str, Any]:
    """What ``meta.json`` in the run folder says about the meta set (and how much validation shrank)."""
    if meta is None:
        return {"source": None}
    index = meta.rows if meta.source == "val" else meta.held_out
    return {
        "source": meta.source,
        "pairs": len(meta),
        "images": meta.n_images,
        "index": "validation image rows" if meta.source == "val" else "training pair indices",
        "index_sha256": hashlib.sha256(np.ascontiguousarray(index, dtype=np.int64).tobytes()).hexdigest(),
        "val_images_before": val_before.n_images,
        "val_images_after": val_after.n_images,
        "val_captions_before": val_before.n_captions,
        "val_captions_after": val_after.n_captions,
    }
