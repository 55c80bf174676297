"""The embedded synthetic dataset: deterministic, loadable, fully in-vocabulary, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from noisycorr.data.noise import make_per_caption_noise
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError

SMALL = {"n_train": 300, "n_dev": 40, "n_test": 100}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "data", seed=0)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", seed=3, **SMALL)
    b = write_synthetic(tmp_path / "b", seed=3, **SMALL)
    c = write_synthetic(tmp_path / "c", seed=4, **SMALL)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "train_ims.npy").read_bytes() != (c / "train_ims.npy").read_bytes()
    assert not any(n.endswith(".tmp") for n in names)


def test_layout_loads(synthetic: Path) -> None:
    for split, n in (("train", 3000), ("dev", 100), ("test", 200)):
        ims = load_precomp(synthetic, split, features="ims")
        pooled = load_precomp(synthetic, split, features="pooled")
        assert ims.images.shape == (n, 8, 64) and ims.images.dtype == np.float32
        assert pooled.images.shape == (n, 64) and ims.n_captions == 5 * n and ims.captions_per_image == 5
        np.testing.assert_allclose(pooled.images, np.asarray(ims.images).mean(axis=1), rtol=1e-5, atol=1e-6)
        assert ims.ids is not None and len(set(ims.ids)) == n
        assert np.asarray(ims.images).min() >= 0.0  # ReLU features
    assert "seed" in (synthetic / "README.txt").read_text(encoding="utf-8")


def test_captions_fit_the_vocab(synthetic: Path) -> None:
    vocab = Vocabulary.from_json(synthetic / "vocab.json")
    assert 100 < len(vocab) < 400
    for split in ("train", "dev", "test"):
        caps = load_precomp(synthetic, split).captions
        ids = np.concatenate([np.asarray(x) for x in vocab.encode_many(caps)])
        assert not np.any(ids == 3), f"<unk> in {split}"
        lengths = [len(c.split()) for c in caps]
        assert min(lengths) >= 3 and max(lengths) > 12  # varied length


def _bow(vocab: Vocabulary, captions: list[str]) -> np.ndarray:
    enc = vocab.encode_many(captions)
    rows = np.repeat(np.arange(len(enc)), [len(e) for e in enc])
    x = np.zeros((len(enc), len(vocab)))
    np.add.at(x, (rows, np.concatenate(enc)), 1.0)
    return x


def _ridge_t2i_recall(root: Path, rates: tuple[float, ...]) -> list[np.ndarray]:
    """Ridge regression caption bag-of-words -> standardised pooled features; t2i R@1/5/10 on test
    after training on pairs with each per-caption noise rate."""
    vocab = Vocabulary.from_json(root / "vocab.json")
    tr, te = load_precomp(root, "train", features="pooled"), load_precomp(root, "test", features="pooled")
    mu, sd = np.mean(tr.images, axis=0), np.std(tr.images, axis=0) + 1e-6
    y, y_te = (np.asarray(tr.images) - mu) / sd, (np.asarray(te.images) - mu) / sd
    x, x_te = _bow(vocab, tr.captions), _bow(vocab, te.captions)
    y_te /= np.linalg.norm(y_te, axis=1, keepdims=True)
    gt = te.image_of_caption()
    out = []
    for rate in rates:
        pairing = make_per_caption_noise(tr.n_captions, 5, rate, seed=0)
        w = np.linalg.solve(x.T @ x + 10.0 * np.eye(x.shape[1]), x.T @ y[pairing])
        pred = x_te @ w
        sims = (pred / (np.linalg.norm(pred, axis=1, keepdims=True) + 1e-9)) @ y_te.T
        rank = (sims > sims[np.arange(len(gt)), gt][:, None]).sum(axis=1)
        out.append(np.array([np.mean(rank < k) for k in (1, 5, 10)]))
    return out


def test_task_is_learnable_and_noise_hurts(synthetic: Path) -> None:
    clean, noisy = _ridge_t2i_recall(synthetic, (0.0, 0.6))
    # 200 test images: chance is 0.5% / 2.5% / 5%. Measured clean: 13.6 / 35.1 / 48.6 %.
    assert clean[0] > 0.08 and clean[2] > 0.35
    assert np.all(noisy < clean) and noisy[2] < clean[2] - 0.05


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="concepts_per_image"):
        write_synthetic(tmp_path, concepts_per_image=(3, 9), n_regions=8)
