"""The two synthetic-noise protocols of the field, as named options that are never mixed.

* ``per_caption`` (NCR; also BiCro, MSCN, IN2R, CREAM): an int64 ``t2i_index`` with one entry per
  caption, the image row each caption is paired with. ``int(r * N_cap)`` captions are drawn and
  their image ids are shuffled among themselves.
* ``per_image`` (DECL, RCL, L2RM): an int64 ``noise_inx`` with one entry per image, a permutation
  of the image rows; caption k is paired with image ``noise_inx[k // captions_per_image]``.
  ``int(r * N_img)`` images are drawn and shuffled among themselves, so all captions of a moved
  image point to the same wrong image.

Both generators reproduce the authors' code given the same ``np.random`` state: they use a
``np.random.RandomState(seed)`` and the authors' call order, ``shuffle(arange(N))`` to pick the
moved entries, then ``shuffle`` of a copy of the picked values. Realised rates are slightly below
``r`` because a shuffle can send an entry back to its own place.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.errors import InputError

PROTOCOLS = ("per_caption", "per_image")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise InputError("noise protocol", f"one of {', '.join(PROTOCOLS)}", repr(protocol))


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise InputError("noise rate", "a rate in [0, 1]", repr(rate))


def _shuffle_subset(values: np.ndarray, rate: float, rs: np.random.RandomState) -> np.ndarray:
    """Shuffle the values at ``int(rate * n)`` random positions among themselves (in place)."""
    n = values.shape[0]
    pick = np.arange(n)
    rs.shuffle(pick)
    pick = pick[: int(rate * n)]
    moved = values[pick]  # fancy indexing: a copy
    rs.shuffle(moved)
    values[pick] = moved
    return values


def make_per_caption_noise(n_captions: int, captions_per_image: int, rate: float, *, seed: int) -> np.ndarray:
    """NCR per-caption noise: the image row each caption is paired with.

    Args:
        n_captions: N_cap, a multiple of ``captions_per_image``.
        captions_per_image: 5 (Flickr30K / COCO) or 1.
        rate: requested share of shuffled captions, in [0, 1].
        seed: seed of the ``np.random.RandomState`` (NCR: ``np.random.seed``).

    Returns:
        (N_cap,) int64 ``t2i_index``.
    """
    _check_rate(rate)
    if captions_per_image < 1 or n_captions % captions_per_image:
        raise InputError(
            "n_captions", f"a multiple of captions_per_image={captions_per_image}", str(n_captions)
        )
    t2i = np.arange(n_captions, dtype=np.int64) // captions_per_image
    return _shuffle_subset(t2i, rate, np.random.RandomState(seed))


def make_per_image_noise(n_images: int, rate: float, *, seed: int) -> np.ndarray:
    """DECL/RCL per-image noise: a permutation of the image rows.

    Args:
        n_images: N_img.
        rate: requested share of moved images, in [0, 1].
        seed: seed of the ``np.random.RandomState`` (DECL: ``np.random.seed``).

    Returns:
        (N_img,) int64 ``noise_inx``.
    """
    _check_rate(rate)
    return _shuffle_subset(np.arange(n_images, dtype=np.int64), rate, np.random.RandomState(seed))


def caption_to_image(protocol: str, index: np.ndarray, n_images: int, captions_per_image: int) -> np.ndarray:
    """The image row each caption is paired with under a protocol's index array.

    Args:
        protocol: ``per_caption`` or ``per_image``.
        index: (N_cap,) for per_caption, (N_img,) for per_image.
        n_images: N_img.
        captions_per_image: captions per image.

    Returns:
        (N_cap,) int64.
    """
    _check_protocol(protocol)
    index = np.asarray(index)
    n_cap = n_images * captions_per_image
    if protocol == "per_caption":
        if index.shape != (n_cap,):
            raise InputError("noise index", f"shape ({n_cap},) for per_caption", f"shape {index.shape}")
        return index.astype(np.int64, copy=True)
    if index.shape != (n_images,):
        raise InputError("noise index", f"shape ({n_images},) for per_image", f"shape {index.shape}")
    return index.astype(np.int64, copy=False)[np.arange(n_cap) // captions_per_image]


def clean_mask(caption_image: np.ndarray, captions_per_image: int) -> np.ndarray:
    """(N_cap,) bool: caption k is paired with its own image k // captions_per_image."""
    caption_image = np.asarray(caption_image)
    return caption_image == np.arange(caption_image.shape[0]) // captions_per_image


def checksum(index: np.ndarray) -> str:
    """sha256 hex digest of the index as contiguous little-endian int64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(index, dtype="<i8").tobytes()).hexdigest()


@dataclass
class NoiseInfo:
    """What a run records about its noise.

    Attributes:
        protocol: ``per_caption`` or ``per_image``.
        rate: the requested rate (None when only a file is known).
        realised_rate: share of captions whose paired image is not their own.
        image_rate: per_image: share of images moved; per_caption: share of images with at least
            one caption paired elsewhere.
        checksum: sha256 of the index (see :func:`checksum`).
        path: the index file, if any.
        n: length of the index array.
    """

    protocol: str
    rate: float | None
    realised_rate: float
    image_rate: float
    checksum: str
    path: str | None
    n: int


def noise_info(
    index: np.ndarray,
    protocol: str,
    *,
    n_images: int,
    n_captions: int,
    rate: float | None = None,
    path: str | Path | None = None,
) -> NoiseInfo:
    """Summarise an index array of ``protocol`` (it must have the protocol's length)."""
    _check_protocol(protocol)
    if n_images < 1 or n_captions % n_images:
        raise InputError("n_captions", f"a multiple of n_images={n_images}", str(n_captions))
    cpi = n_captions // n_images
    pairing = caption_to_image(protocol, index, n_images, cpi)
    clean = clean_mask(pairing, cpi)
    if protocol == "per_image":
        image_rate = float(np.mean(np.asarray(index) != np.arange(n_images)))
    else:
        image_rate = float(np.mean(~clean.reshape(n_images, cpi).all(axis=1)))
    return NoiseInfo(
        protocol=protocol,
        rate=None if rate is None else float(rate),
        realised_rate=float(np.mean(~clean)),
        image_rate=image_rate,
        checksum=checksum(index),
        path=None if path is None else str(path),
        n=int(np.asarray(index).shape[0]),
    )


def load_noise(
    path: str | Path,
    protocol: str,
    *,
    n_images: int,
    n_captions: int,
    rate: float | None = None,
) -> tuple[np.ndarray, NoiseInfo]:
    """Read and validate a noise index file of ``protocol``.

    Args:
        path: an ``.npy`` file (NCR ``t2i_index`` or DECL/RCL ``noise_inx``).
        protocol: ``per_caption`` (length N_cap) or ``per_image`` (length N_img, a permutation).
        n_images: N_img of the training split.
        n_captions: N_cap of the training split.
        rate: the nominal rate, recorded in the info when known.

    Returns:
        The (N,) int64 index and its :class:`NoiseInfo`.

    Raises:
        InputError: not a .npy array, not 1-D, not integer, wrong length for the protocol,
            out-of-range entries, a per-image file that is not a permutation.
    """
    _check_protocol(protocol)
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"a {protocol} noise index .npy file", "no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, "a .npy array file", f"unreadable data ({err})") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise InputError(path, "a single .npy array", f"a {type(arr).__name__} archive")
    if arr.ndim != 1:
        raise InputError(path, "a 1-D index array", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(path, "integer image indices (int64)", f"dtype {arr.dtype}")
    want = n_captions if protocol == "per_caption" else n_images
    if arr.shape[0] != want:
        unit = "caption" if protocol == "per_caption" else "image"
        hint = ""
        other = n_images if protocol == "per_caption" else n_captions
        if arr.shape[0] == other:
            hint = f" (the length of a {'per_image' if protocol == 'per_caption' else 'per_caption'} file)"
        raise InputError(
            path, f"{want} entries (one per {unit}, protocol {protocol})", f"{arr.shape[0]}{hint}"
        )
    bad = np.flatnonzero((arr < 0) | (arr >= n_images))
    if bad.size:
        k = int(bad[0])
        raise InputError(path, f"an image index in [0, {n_images})", str(arr[k]), where=f"position {k}")
    arr = arr.astype(np.int64, copy=False)
    if protocol == "per_image":
        seen = np.zeros(n_images, dtype=bool)
        seen[arr] = True
        if not seen.all():
            missing = int(np.argmin(seen))
            dup = _first_duplicate(arr)
            raise InputError(
                path,
                "a permutation of the image rows (per_image protocol)",
                f"image {arr[dup]} repeated and image {missing} missing",
                where=f"position {dup}",
            )
    return arr, noise_info(arr, protocol, n_images=n_images, n_captions=n_captions, rate=rate, path=path)


def _first_duplicate(arr: np.ndarray) -> int:
    """Position of the first entry whose value occurred earlier."""
    order = np.argsort(arr, kind="stable")
    dup_sorted = np.flatnonzero(arr[order][1:] == arr[order][:-1]) + 1
    return int(order[dup_sorted].min())


def save_noise(path: str | Path, index: np.ndarray) -> None:
    """Save an index as int64 ``.npy`` atomically (temp file in the same folder, then rename)."""
    index = np.asarray(index)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise InputError("noise index", "a 1-D integer array", f"dtype {index.dtype}, shape {index.shape}")
    buf = io.BytesIO()
    np.save(buf, index.astype(np.int64, copy=False))
    atomic_write_bytes(path, buf.getvalue())
