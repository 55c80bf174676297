"""Torch datasets, batches and loaders over a :class:`PrecompSplit`.

Batches are built whole: the datasets implement ``__getitems__`` (used by torch's map-style
fetcher with a batch sampler), so one batch is one fancy-indexed read of the feature array and
one vectorised padding of the token ids, not a Python loop over samples.

Augmentation randomness is a counter-based hash of (seed, epoch, sample index, position), so it
is the same whatever the batch composition, worker count or process rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from noisycorr.data.precomp import PrecompSplit, release_pages
from noisycorr.data.vocab import MASK, Vocabulary
from noisycorr.distributed import shard
from noisycorr.errors import InputError

_N_SPECIAL = 4
_RELEASE_BYTES = 64 << 20  # mapped feature bytes a dataset may hold before it drops them from its RSS
# The file bytes one random row read may map into the process: up to a 2 MiB page-cache folio on kernels with
# large folios (6.x; 64 KiB fault-around before). A random batch of 128 rows mapped ~200 MiB on this machine's
# kernel, so a batch of rows is released after each read and mapped memory stays bounded by one batch.
_FAULT_AROUND = 2 << 20
_ENCODE_BLOCK = 1 << 16  # captions tokenized at a time at load


# --------------------------------------------------------------------------- batches


def _to(obj: object, device: torch.device | str, non_blocking: bool) -> object:
    kwargs = {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]
    return type(obj)(**{k: v.to(device, non_blocking=non_blocking) for k, v in kwargs.items()})


@dataclass
class PairBatch:
    """A training batch of (image, caption) pairs.

    Attributes:
        images: (B, R, D) or (B, D) float32.
        tokens: (B, L) int64, padded with 0 (``<pad>``); each row starts with ``<start>``.
        lengths: (B,) int64, tokens per caption including ``<start>``/``<end>``.
        index: (B,) int64 sample index = caption index in the split (keys per-sample passes).

    A batch carries no image row: with the clean pairing known (caption k // captions_per_image)
    the image row would reveal which pairs are mismatched, and methods must not see that.
    """

    images: Tensor
    tokens: Tensor
    lengths: Tensor
    index: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PairBatch:
        return _to(self, device, non_blocking)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class CaptionBatch:
    """Captions in order: tokens (B, L) int64, lengths (B,) int64, index (B,) int64."""

    tokens: Tensor
    lengths: Tensor
    index: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CaptionBatch:
        return _to(self, device, non_blocking)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class ImageBatch:
    """Images in order: images (B, R, D) or (B, D) float32, index (B,) int64."""

    images: Tensor
    index: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        return _to(self, device, non_blocking)  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.index.shape[0])


# --------------------------------------------------------------------------- tokens


class EncodedCaptions:
    """All captions of a split as token ids, stored flat: ``flat`` (T,) int32 and ``offsets`` (N+1,) int64.

    Caption k is ``flat[offsets[k]:offsets[k + 1]]`` (with ``<start>`` and ``<end>``).
    """

    def __init__(self, ids: Sequence[Sequence[int]]):
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        self.offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(self.offsets[-1]))

    @classmethod
    def from_captions(cls, captions: Sequence[str], vocab: Vocabulary) -> EncodedCaptions:
        """Tokenize each caption once (the one per-caption loop, at load time).

        Blocks of ``_ENCODE_BLOCK`` captions are tokenized at a time, so the Python lists of token ids
        alive at once stay bounded by the block, not by the split (~150 bytes a caption otherwise).
        """
        parts = [
            cls(vocab.encode_many(captions[start : start + _ENCODE_BLOCK]))
            for start in range(0, len(captions), _ENCODE_BLOCK)
        ]
        out = cls([])
        if parts:
            out.flat = np.concatenate([p.flat for p in parts])
            starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
            out.offsets = np.concatenate([out.offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return out

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (B, L) int64 zero-padded to the longest of the batch, and lengths (B,)."""
        start = self.offsets[index]
        lengths = self.offsets[index + 1] - start
        pos = np.arange(int(lengths.max()) if len(index) else 0)
        valid = pos < lengths[:, None]
        gather = np.where(valid, start[:, None] + pos, 0)
        return np.where(valid, self.flat[gather].astype(np.int64), 0), lengths


def pad_token_ids(ids: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Pad lists of token ids: tokens (B, L) int64 with 0, lengths (B,) int64."""
    enc = EncodedCaptions(ids)
    tokens, lengths = enc.padded(np.arange(len(enc)))
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


# --------------------------------------------------------------------------- augmentation randomness


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective scramble of uint64 values."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, epoch: int, stream: int, index: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, epoch, stream, index, pos).

    Args:
        index: (B, 1) or (B,) sample indices; pos: (1, P) or scalar positions (broadcast).

    Returns:
        float64 array of the broadcast shape.
    """
    with np.errstate(over="ignore"):
        key = _mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLDEN * np.uint64(stream + 1))
        key = _mix64(key ^ (np.uint64(epoch & 0xFFFFFFFF) * _GOLDEN))
        x = _mix64(key ^ (np.asarray(index, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
        x = _mix64(x + np.asarray(pos, dtype=np.uint64) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def augment_tokens(
    tokens: np.ndarray,
    lengths: np.ndarray,
    index: np.ndarray,
    *,
    p: float,
    mask_id: int,
    n_words: int,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """VSE-infinity text augmentation, vectorised over a padded batch.

    Each word (not ``<start>``/``<end>``/padding) is picked with probability ``p``; a picked word
    becomes ``<mask>`` with probability 0.5, a random word id in [4, n_words) with 0.1, and is
    deleted with 0.4.

    Args:
        tokens: (B, L) int64; lengths: (B,) int64; index: (B,) sample indices.

    Returns:
        New tokens (B, L') and lengths (B,).
    """
    b, width = tokens.shape
    pos = np.arange(width)[None, :]
    word = (pos >= 1) & (pos < lengths[:, None] - 1)
    u_pick = hash_uniform(seed, epoch, 1, index[:, None], pos)
    u_kind = hash_uniform(seed, epoch, 2, index[:, None], pos)
    u_word = hash_uniform(seed, epoch, 3, index[:, None], pos)
    picked = word & (u_pick < p)
    out = tokens.copy()
    out[picked & (u_kind < 0.5)] = mask_id
    rand = picked & (u_kind >= 0.5) & (u_kind < 0.6)
    if n_words > _N_SPECIAL:
        out[rand] = _N_SPECIAL + np.floor(u_word[rand] * (n_words - _N_SPECIAL)).astype(np.int64)
    keep = (pos < lengths[:, None]) & ~(picked & (u_kind >= 0.6))
    new_lengths = keep.sum(axis=1)
    # Stable-sort kept tokens to the front of each row, then cut to the new longest length.
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(out, order, axis=1)
    width = int(new_lengths.max()) if b else 0
    out = out[:, :width]
    out[np.arange(width)[None, :] >= new_lengths[:, None]] = 0
    return out, new_lengths


def drop_regions(images: np.ndarray, index: np.ndarray, *, p: float, seed: int, epoch: int) -> np.ndarray:
    """Region dropout that keeps R fixed: each dropped region is replaced by a copy of a kept one.

    Each region is dropped with probability ``p`` and at least one region is always kept. Filling
    the holes with copies of kept regions (instead of zeros plus an image-length tensor) keeps
    every backbone's input contract, and the pooled content is that of the kept regions.

    Args:
        images: (B, R, D); index: (B,) sample indices.

    Returns:
        (B, R, D) array.
    """
    b, r = images.shape[:2]
    pos = np.arange(r)[None, :]
    u_drop = hash_uniform(seed, epoch, 4, index[:, None], pos)
    keep = u_drop >= p
    keep[np.arange(b), np.argmax(u_drop, axis=1)] = True  # the least-dropped region always stays
    n_keep = keep.sum(axis=1, keepdims=True)
    # Dropped region j takes the c-th kept region, c uniform in [0, n_keep).
    choice = np.floor(hash_uniform(seed, epoch, 5, index[:, None], pos) * n_keep).astype(np.int64)
    kept_pos = np.argsort(~keep, axis=1, kind="stable")  # kept region ids first, in order
    source = np.where(keep, pos, np.take_along_axis(kept_pos, choice, axis=1))
    return np.take_along_axis(images, source[:, :, None], axis=1)


# --------------------------------------------------------------------------- datasets


def _as_index(idx: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(idx, Tensor):
        idx = idx.numpy()
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def _read_images(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Gather rows of a (memory-mapped) array as float32, reading the sorted unique rows once."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(images[uniq], dtype=np.float32)[inverse]


class PairDataset(Dataset):
    """Sample k = (caption k, image ``caption_image[k]``) of a split.

    Args:
        split: the loaded split.
        vocab: vocabulary; when ``token_aug > 0`` and ``train``, ``<mask>`` is added to it (build
            the model's embedding after creating the dataset).
        caption_image: (N_cap,) image row paired with each caption (e.g. noisy); defaults to
            ``split.image_of_caption()``.
        train: apply the augmentations below.
        region_drop: probability of dropping each region (see :func:`drop_regions`); needs
            (N, R, D) features.
        token_aug: per-word augmentation probability (see :func:`augment_tokens`).
        seed: augmentation seed; together with :meth:`set_epoch` and the sample index it fixes
            every random choice.
        encoded: pre-tokenized captions of ``split`` to reuse (skips tokenization).
    """

    def __init__(
        self,
        split: PrecompSplit,
        vocab: Vocabulary,
        caption_image: np.ndarray | None = None,
        *,
        train: bool = False,
        region_drop: float = 0.0,
        token_aug: float = 0.0,
        seed: int = 0,
        encoded: EncodedCaptions | None = None,
    ):
        self.split = split
        n_cap = split.n_captions
        if caption_image is None:
            caption_image = split.image_of_caption()
        caption_image = np.asarray(caption_image)
        if caption_image.shape != (n_cap,) or not np.issubdtype(caption_image.dtype, np.integer):
            raise InputError(
                "caption_image",
                f"an integer array of shape ({n_cap},)",
                f"{caption_image.dtype} array of shape {caption_image.shape}",
            )
        bad = np.flatnonzero((caption_image < 0) | (caption_image >= split.n_images))
        if bad.size:
            raise InputError(
                "caption_image",
                f"image rows in [0, {split.n_images})",
                str(caption_image[bad[0]]),
                where=f"position {int(bad[0])}",
            )
        self.caption_image = caption_image.astype(np.int64)
        for name, value in (("region_drop", region_drop), ("token_aug", token_aug)):
            if not 0.0 <= value < 1.0:
                raise InputError(name, "a probability in [0, 1)", repr(value))
        if region_drop > 0 and split.images.ndim != 3:
            raise InputError("region_drop", "0 for pooled (N, D) features", repr(region_drop))
        self.train, self.region_drop, self.token_aug, self.seed = train, region_drop, token_aug, seed
        self.epoch = 0
        self._bytes_read = 0
        self.encoded = (
            encoded if encoded is not None else EncodedCaptions.from_captions(split.captions, vocab)
        )
        if len(self.encoded) != n_cap:
            raise InputError("encoded", f"{n_cap} encoded captions", str(len(self.encoded)))
        # Random replacement words come from the real words: ids 4 .. before "<mask>".
        self.n_words = vocab(MASK) if MASK in vocab else len(vocab)
        self.mask_id = vocab.add_word(MASK) if (train and token_aug > 0) else vocab(MASK)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.caption_image)

    def __getitems__(self, indices: Sequence[int]) -> PairBatch:
        idx = _as_index(indices)
        rows = self.caption_image[idx]
        images = _read_images(self.split.images, rows)
        row_bytes = images[0].size * self.split.images.dtype.itemsize if len(images) else 0
        self._bytes_read += len(idx) * max(row_bytes, _FAULT_AROUND)
        if self._bytes_read >= _RELEASE_BYTES:
            release_pages(self.split.images)
            self._bytes_read = 0
        tokens, lengths = self.encoded.padded(idx)
        if self.train and self.region_drop > 0:
            images = drop_regions(images, idx, p=self.region_drop, seed=self.seed, epoch=self.epoch)
        if self.train and self.token_aug > 0:
            tokens, lengths = augment_tokens(
                tokens,
                lengths,
                idx,
                p=self.token_aug,
                mask_id=self.mask_id,
                n_words=self.n_words,
                seed=self.seed,
                epoch=self.epoch,
            )
        return PairBatch(
            images=torch.from_numpy(images),
            tokens=torch.from_numpy(np.ascontiguousarray(tokens)),
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            index=torch.from_numpy(idx),
        )

    def __getitem__(self, index: int) -> PairBatch:
        """One sample as a batch of one."""
        return self.__getitems__([int(index)])


class CaptionDataset(Dataset):
    """The captions of a split in order, for evaluation (``__getitems__`` gives a CaptionBatch)."""

    def __init__(self, split: PrecompSplit, vocab: Vocabulary, *, encoded: EncodedCaptions | None = None):
        self.encoded = (
            encoded if encoded is not None else EncodedCaptions.from_captions(split.captions, vocab)
        )

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitems__(self, indices: Sequence[int]) -> CaptionBatch:
        idx = _as_index(indices)
        tokens, lengths = self.encoded.padded(idx)
        return CaptionBatch(torch.from_numpy(tokens), torch.from_numpy(lengths), torch.from_numpy(idx))

    def __getitem__(self, index: int) -> CaptionBatch:
        return self.__getitems__([int(index)])

    def batches(self, batch_size: int) -> Iterator[CaptionBatch]:
        """Consecutive batches in caption order."""
        for start in range(0, len(self), batch_size):
            yield self.__getitems__(np.arange(start, min(start + batch_size, len(self))))


class ImageDataset(Dataset):
    """The images of a split in order, for evaluation (``__getitems__`` gives an ImageBatch)."""

    def __init__(self, split: PrecompSplit):
        self.split = split

    @property
    def images(self) -> np.ndarray:
        return self.split.images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        idx = _as_index(indices)
        return ImageBatch(torch.from_numpy(_read_images(self.images, idx)), torch.from_numpy(idx))

    def __getitem__(self, index: int) -> ImageBatch:
        return self.__getitems__([int(index)])

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Consecutive batches in image order (contiguous reads of the memory map)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            feats = np.array(self.images[start:stop], dtype=np.float32)  # a writable copy
            yield ImageBatch(torch.from_numpy(feats), torch.arange(start, stop, dtype=torch.int64))


# --------------------------------------------------------------------------- loading


Batch = PairBatch | CaptionBatch | ImageBatch


def collate_pairs(samples: Batch | Sequence[Batch]) -> Batch:
    """Collate function: a batch built by ``__getitems__`` passes through; a list of single-sample
    batches (from ``__getitem__``) is concatenated field by field (tokens re-padded)."""
    if isinstance(samples, (PairBatch, CaptionBatch, ImageBatch)):
        return samples
    samples = list(samples)
    cls = type(samples[0])
    out = {}
    for f in fields(cls):
        parts = [getattr(s, f.name) for s in samples]
        if f.name == "tokens":
            width = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
        out[f.name] = torch.cat(parts)
    return cls(**out)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of sample indices, shuffled by ``(seed, epoch)``, optionally sharded by rank.

    With several ranks every rank walks the same global batches (those of one process) and takes
    its contiguous slice of each (:func:`noisycorr.distributed.shard`), so the ranks' slices of a
    step together are the one-process batch and every rank takes as many steps.

    Args:
        n: dataset length (used when ``indices`` is None).
        batch_size: samples per global batch (all ranks together).
        shuffle: permute the indices each epoch.
        seed: permutation seed.
        drop_last: drop a last incomplete batch.
        indices: restrict to these sample indices (e.g. the clean subset of a method).
        rank, world_size: this process's shard.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        indices: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise InputError("batch_size", "a positive integer", repr(batch_size))
        self.indices = np.arange(n, dtype=np.int64) if indices is None else _as_index(indices)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> np.ndarray:
        idx = self.indices
        if self.shuffle:
            idx = idx[np.random.default_rng([self.seed, self.epoch]).permutation(len(idx))]
        return idx

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for b in range(len(self)):
            chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                chunk = chunk[shard(len(chunk), self.world_size, self.rank)]
            yield chunk.tolist()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    epoch: int = 0,
    indices: np.ndarray | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)`` (see :class:`EpochBatchSampler`).

    Each batch is fetched whole through the dataset's ``__getitems__``. Call
    :func:`set_epoch` (or pass ``epoch``) before iterating to move to another epoch.
    """
    sampler = EpochBatchSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        indices=indices,
        rank=rank,
        world_size=world_size,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_pairs, num_workers=num_workers, pin_memory=False
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Move a loader from :func:`make_loader` (its order) and its dataset (its augmentation) to ``epoch``."""
    for obj in (loader.batch_sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
