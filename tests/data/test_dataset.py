"""Pair / caption / image datasets, vectorised batches, seeded loaders and augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from noisycorr.data.dataset import (
    CaptionDataset,
    EncodedCaptions,
    ImageDataset,
    PairBatch,
    PairDataset,
    augment_tokens,
    collate_pairs,
    drop_regions,
    make_loader,
    pad_token_ids,
    set_epoch,
)
from noisycorr.data.noise import caption_to_image, make_per_image_noise
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import MASK, Vocabulary
from noisycorr.errors import InputError


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrecompSplit, Vocabulary]:
    root = write_synthetic(tmp_path_factory.mktemp("syn") / "d", seed=1, n_train=120, n_dev=10, n_test=10)
    return load_precomp(root, "train"), Vocabulary.from_json(root / "vocab.json")


def _fresh_vocab(syn: tuple[PrecompSplit, Vocabulary]) -> Vocabulary:
    return Vocabulary(syn[1].idx2word[4:])


def test_real_float16_regions_come_out_float32(shared_data: Path) -> None:
    split = load_precomp(shared_data / "flickr-dev", "dev")
    vocab = Vocabulary.from_json(shared_data / "vocab" / "f30k_precomp_vocab.json")
    ds = PairDataset(split, vocab)
    batch = next(iter(make_loader(ds, 32, shuffle=True, seed=0)))
    assert isinstance(batch, PairBatch) and len(batch) == 32
    assert batch.images.dtype == torch.float32 and batch.images.shape == (32, 16, 1280)
    k = int(batch.index[5])
    np.testing.assert_array_equal(batch.images[5].numpy(), split.images[k // 5].astype(np.float32))
    assert batch.tokens[5, : batch.lengths[5]].tolist() == vocab.encode(split.captions[k])
    assert batch.tokens.dtype == torch.int64 and batch.lengths.dtype == torch.int64


def test_noisy_pairing_is_used(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    pairing = caption_to_image(
        "per_image", make_per_image_noise(split.n_images, 0.5, seed=0), split.n_images, 5
    )
    ds = PairDataset(split, vocab, pairing)
    batch = ds.__getitems__([3, 250, 7, 3])
    assert not hasattr(batch, "image_index")  # a batch never tells which image row it came from
    np.testing.assert_array_equal(batch.images.numpy(), np.asarray(split.images)[pairing[[3, 250, 7, 3]]])
    assert batch.index.tolist() == [3, 250, 7, 3]
    width = int(batch.lengths.max())
    assert batch.tokens.shape == (4, width)
    for row, k in enumerate([3, 250, 7, 3]):
        ids = vocab.encode(split.captions[k])
        assert batch.tokens[row].tolist() == ids + [0] * (width - len(ids))


def test_pairing_validation(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    bad = split.image_of_caption()
    bad[11] = split.n_images
    with pytest.raises(InputError, match="position 11"):
        PairDataset(split, vocab, bad)
    with pytest.raises(InputError, match="shape"):
        PairDataset(split, vocab, bad[:-1])
    pooled = load_precomp(split.root, "train", features="pooled")
    with pytest.raises(InputError, match="region_drop"):
        PairDataset(pooled, vocab, train=True, region_drop=0.2)


def test_loader_order_is_seeded(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    ds = PairDataset(split, vocab)

    def order(loader: torch.utils.data.DataLoader) -> list[int]:
        return torch.cat([b.index for b in loader]).tolist()

    a = make_loader(ds, 64, shuffle=True, seed=5)
    first = order(a)
    assert sorted(first) == list(range(len(ds)))
    assert first == order(make_loader(ds, 64, shuffle=True, seed=5))
    assert first != order(make_loader(ds, 64, shuffle=True, seed=6))
    set_epoch(a, 1)
    assert order(a) != first and sorted(order(a)) == list(range(len(ds)))
    assert order(make_loader(ds, 64, shuffle=False, seed=0)) == list(range(len(ds)))
    dl = make_loader(ds, 64, shuffle=True, seed=5, drop_last=True)
    assert len(dl) == len(ds) // 64 and all(len(b) == 64 for b in dl)
    sub = np.arange(0, len(ds), 3)
    assert sorted(order(make_loader(ds, 16, shuffle=True, seed=0, indices=sub))) == sub.tolist()


def test_rank_shards_cut_the_one_process_batches(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    ds = PairDataset(split, vocab)
    whole = [b.index.tolist() for b in make_loader(ds, 50, shuffle=True, seed=2)]
    shards = [
        [b.index.tolist() for b in make_loader(ds, 50, shuffle=True, seed=2, rank=r, world_size=3)]
        for r in range(3)
    ]
    assert all(len(s) == len(whole) for s in shards), "every rank takes as many steps"
    for step, batch in enumerate(whole):
        assert shards[0][step] + shards[1][step] + shards[2][step] == batch
        assert [len(s[step]) for s in shards] == [len(batch[r::3]) for r in range(3)]


def test_workers_give_the_same_batches(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, _ = syn
    vocab = _fresh_vocab(syn)
    ds = PairDataset(split, vocab, train=True, region_drop=0.2, token_aug=0.2, seed=3)
    ds.set_epoch(2)
    serial = list(make_loader(ds, 100, shuffle=True, seed=1))
    parallel = list(make_loader(ds, 100, shuffle=True, seed=1, num_workers=2))
    for a, b in zip(serial, parallel):
        for name in ("images", "tokens", "lengths", "index"):
            assert torch.equal(getattr(a, name), getattr(b, name))


def test_augmentation_depends_only_on_seed_epoch_and_index(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, _ = syn
    vocab = _fresh_vocab(syn)
    ds = PairDataset(split, vocab, train=True, region_drop=0.3, token_aug=0.3, seed=0)
    a = ds.__getitems__([10, 20, 30])
    b = ds.__getitems__([30, 99, 10])
    assert torch.equal(a.images[0], b.images[2]) and torch.equal(a.images[2], b.images[0])
    assert a.tokens[0, : a.lengths[0]].tolist() == b.tokens[2, : b.lengths[2]].tolist()
    ds.set_epoch(1)
    c = ds.__getitems__([10, 20, 30])
    assert not torch.equal(a.images, c.images) or not torch.equal(a.tokens, c.tokens)
    plain = PairDataset(split, vocab, train=False, region_drop=0.3, token_aug=0.3).__getitems__([10])
    np.testing.assert_array_equal(plain.images[0].numpy(), np.asarray(split.images[2]))


def test_token_augmentation_rates(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, _ = syn
    vocab = _fresh_vocab(syn)
    n_before = len(vocab)
    ds = PairDataset(split, vocab, train=True, token_aug=0.3, seed=0)
    assert vocab(MASK) == n_before == ds.mask_id and len(vocab) == n_before + 1
    enc = EncodedCaptions.from_captions(split.captions, vocab)
    idx = np.arange(len(enc))
    tokens, lengths = enc.padded(idx)
    out, new_len = augment_tokens(
        tokens, lengths, idx, p=0.3, mask_id=ds.mask_id, n_words=n_before, seed=0, epoch=0
    )
    n_words = int((lengths - 2).sum())
    assert np.all(out[:, 0] == 1) and np.all(out[np.arange(len(idx)), new_len - 1] == 2)
    assert np.all(out[np.arange(out.shape[1])[None, :] >= new_len[:, None]] == 0)
    deleted = (lengths - new_len).sum() / n_words
    masked = (out == ds.mask_id).sum() / n_words
    assert abs(deleted - 0.12) < 0.015 and abs(masked - 0.15) < 0.015
    inner = out[:, 1:][(out[:, 1:] != 0) & (out[:, 1:] != 2)]
    assert inner.max() == ds.mask_id and inner.min() >= 4  # words, random words or <mask>, no specials


def test_region_drop_keeps_shape_and_uses_kept_regions() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((400, 6, 3)).astype(np.float32)
    idx = np.arange(400)
    out = drop_regions(images, idx, p=0.5, seed=0, epoch=0)
    assert out.shape == images.shape
    same = np.all(out == images, axis=2)  # (B, R) region left in place
    assert abs(1.0 - same.mean() - 0.5 * (1 - 0.5**5)) < 0.06  # dropped share (one region always kept)
    # every output region is one of the image's kept input regions
    eq = np.all(out[:, :, None, :] == images[:, None, :, :], axis=3)  # (B, R_out, R_in)
    kept_src = same
    assert np.all((eq & kept_src[:, None, :]).any(axis=2))
    heavy = drop_regions(images, idx, p=0.99, seed=0, epoch=0)
    assert np.all(np.all(heavy == images, axis=2).any(axis=1))


def test_collate_of_single_samples_matches_batch(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    ds = PairDataset(split, vocab)
    whole = ds.__getitems__([4, 9, 2])
    parts = collate_pairs([ds[4], ds[9], ds[2]])
    for name in ("images", "tokens", "lengths", "index"):
        assert torch.equal(getattr(whole, name), getattr(parts, name))
    moved = whole.to("cpu")
    assert isinstance(moved, PairBatch) and torch.equal(moved.tokens, whole.tokens)


def test_pad_token_ids() -> None:
    tokens, lengths = pad_token_ids([[1, 5, 2], [1, 2], [1, 7, 8, 9, 2]])
    assert tokens.tolist() == [[1, 5, 2, 0, 0], [1, 2, 0, 0, 0], [1, 7, 8, 9, 2]]
    assert lengths.tolist() == [3, 2, 5] and tokens.dtype == torch.int64


def test_eval_datasets_iterate_in_order(syn: tuple[PrecompSplit, Vocabulary]) -> None:
    split, vocab = syn
    caps = CaptionDataset(split, vocab)
    batches = list(caps.batches(256))
    assert torch.cat([b.index for b in batches]).tolist() == list(range(split.n_captions))
    assert batches[1].tokens[0, : batches[1].lengths[0]].tolist() == vocab.encode(split.captions[256])
    ims = ImageDataset(split)
    got = torch.cat([b.images for b in ims.batches(50)])
    np.testing.assert_array_equal(got.numpy(), np.asarray(split.images))
    loader = make_loader(ims, 50, shuffle=False, seed=0)
    assert torch.equal(torch.cat([b.images for b in loader]), got)


def test_pair_batches_are_unchanged_when_the_read_pages_are_released(tmp_path, monkeypatch) -> None:
    from noisycorr.data import dataset as ds
    from noisycorr.data.precomp import load_precomp
    from noisycorr.data.synthetic import write_synthetic
    from noisycorr.data.vocab import Vocabulary

    write_synthetic(tmp_path, seed=1, n_train=40, n_dev=10, n_test=10, n_regions=4, feat_dim=8, n_concepts=12)
    split = load_precomp(tmp_path, "train")
    vocab = Vocabulary.build(split.captions, min_count=1)
    idx = np.random.default_rng(0).permutation(split.n_captions)[:32]
    expected = ds.PairDataset(split, vocab).__getitems__(idx)
    released = []
    monkeypatch.setattr(ds, "_RELEASE_BYTES", 1)
    real_release = ds.release_pages
    monkeypatch.setattr(ds, "release_pages", lambda a: (released.append(a), real_release(a)))
    data = ds.PairDataset(split, vocab)
    for _ in range(3):
        got = data.__getitems__(idx)
        assert torch.equal(got.images, expected.images) and torch.equal(got.tokens, expected.tokens)
    assert len(released) == 3 and all(a is split.images for a in released)


def test_captions_tokenized_in_blocks_equal_one_block(
    syn: tuple[PrecompSplit, Vocabulary], monkeypatch: pytest.MonkeyPatch
) -> None:
    from noisycorr.data import dataset as ds

    split, vocab = syn
    whole = EncodedCaptions(vocab.encode_many(split.captions))
    monkeypatch.setattr(ds, "_ENCODE_BLOCK", 7)  # blocks that split images' caption groups
    blocks = EncodedCaptions.from_captions(split.captions, vocab)
    np.testing.assert_array_equal(blocks.offsets, whole.offsets)
    np.testing.assert_array_equal(blocks.flat, whole.flat)
    idx = np.array([0, 6, 7, len(whole) - 1])
    for got, want in zip(blocks.padded(idx), whole.padded(idx)):
        np.testing.assert_array_equal(got, want)
    assert blocks.padded(idx)[0].dtype == np.int64 and blocks.flat.dtype == np.int32


def test_a_training_size_batch_of_random_rows_is_released_after_its_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One random row may map a whole large page-cache folio (MiBs), so 128 rows can map hundreds of MiB:
    # the dataset must not wait for several batches before releasing them.
    from noisycorr.data import dataset as ds
    from noisycorr.data.precomp import load_precomp
    from noisycorr.data.synthetic import write_synthetic

    write_synthetic(tmp_path, seed=1, n_train=200, n_dev=10, n_test=10, n_regions=4, feat_dim=8, n_concepts=12)
    split = load_precomp(tmp_path, "train")
    vocab = Vocabulary.build(split.captions, min_count=1)
    released = []
    real_release = ds.release_pages
    monkeypatch.setattr(ds, "release_pages", lambda a: (released.append(a), real_release(a)))
    data = ds.PairDataset(split, vocab)
    rng = np.random.default_rng(0)
    for _ in range(3):
        data.__getitems__(rng.permutation(split.n_captions)[:128])
    assert len(released) == 3
