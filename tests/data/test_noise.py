"""Noise protocols: the released RCL per-image files, our generators, file round trips, validation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from noisycorr.data.noise import (
    PROTOCOLS,
    caption_to_image,
    checksum,
    clean_mask,
    load_noise,
    make_per_caption_noise,
    make_per_image_noise,
    noise_info,
    save_noise,
)
from noisycorr.errors import InputError

RATES = (0.2, 0.4, 0.5, 0.6, 0.8)
SIZES = {"f30k": 29000, "coco": 113287}
# A shuffle of k entries leaves Poisson(1)-many fixed points; the RCL files have 0 to 2.
MAX_FIXED = 6


def _ncr_reference(n_cap: int, cpi: int, rate: float, seed: int) -> np.ndarray:
    """The NCR data.py procedure, written out with the global np.random state."""
    np.random.seed(seed)
    t2i = np.arange(n_cap) // cpi
    idx = np.arange(n_cap)
    np.random.shuffle(idx)
    k = int(rate * n_cap)
    shuffled = t2i[idx[:k]]
    np.random.shuffle(shuffled)
    t2i[idx[:k]] = shuffled
    return t2i


def _decl_reference(n_img: int, rate: float, seed: int) -> np.ndarray:
    """The DECL data.py procedure, written out with the global np.random state."""
    np.random.seed(seed)
    out = np.arange(n_img)
    inx = np.arange(n_img)
    np.random.shuffle(inx)
    picked = inx[: int(rate * n_img)]
    shuffled = np.array(picked)
    np.random.shuffle(shuffled)
    out[picked] = shuffled
    return out


@pytest.mark.parametrize("data", sorted(SIZES))
def test_released_rcl_files(shared_data: Path, data: str) -> None:
    n_img = SIZES[data]
    for rate in RATES:
        path = shared_data / "noise-index" / f"{data}_precomp" / f"noise_inx_{rate}.npy"
        index, info = load_noise(path, "per_image", n_images=n_img, n_captions=5 * n_img, rate=rate)
        assert index.dtype == np.int64 and index.shape == (n_img,)
        moved = int(np.sum(index != np.arange(n_img)))
        assert info.image_rate == moved / n_img
        assert 0 <= int(rate * n_img) - moved <= MAX_FIXED
        # Every caption of a moved image is mismatched: the caption rate equals the image rate.
        assert info.realised_rate == pytest.approx(info.image_rate, abs=1e-12)
        assert info.n == n_img and info.protocol == "per_image" and info.path == str(path)
        assert info.checksum == checksum(np.load(path))
    if data == "f30k":  # the figures quoted in the reference
        _, info = load_noise(
            path.with_name("noise_inx_0.2.npy"), "per_image", n_images=n_img, n_captions=5 * n_img
        )
        assert round(info.image_rate, 5) == 0.19997


@pytest.mark.parametrize("data", sorted(SIZES))
def test_generators_at_benchmark_sizes(data: str) -> None:
    n_img = SIZES[data]
    for rate in RATES:
        inx = make_per_image_noise(n_img, rate, seed=1)
        assert np.array_equal(np.sort(inx), np.arange(n_img))
        assert 0 <= int(rate * n_img) - int(np.sum(inx != np.arange(n_img))) <= MAX_FIXED
        t2i = make_per_caption_noise(5 * n_img, 5, rate, seed=1)
        wrong = int(np.sum(~clean_mask(t2i, 5)))
        assert 0 <= int(rate * 5 * n_img) - wrong <= 3 * MAX_FIXED  # fixed points: same image, any caption
        # NCR permutes the image ids of the picked captions: every image keeps 5 captions.
        assert np.all(np.bincount(t2i, minlength=n_img) == 5)


def test_generators_reproduce_the_authors_call_order() -> None:
    state = np.random.get_state()
    try:
        _compare_with_references()
    finally:
        np.random.set_state(state)


def _compare_with_references() -> None:
    for seed in (0, 7):
        np.testing.assert_array_equal(
            make_per_caption_noise(1000, 5, 0.5, seed=seed), _ncr_reference(1000, 5, 0.5, seed)
        )
        np.testing.assert_array_equal(
            make_per_image_noise(300, 0.6, seed=seed), _decl_reference(300, 0.6, seed)
        )


def test_seeded_determinism() -> None:
    a = make_per_caption_noise(5000, 5, 0.4, seed=3)
    assert np.array_equal(a, make_per_caption_noise(5000, 5, 0.4, seed=3))
    assert not np.array_equal(a, make_per_caption_noise(5000, 5, 0.4, seed=4))
    assert np.array_equal(make_per_image_noise(900, 0.4, seed=3), make_per_image_noise(900, 0.4, seed=3))
    np.testing.assert_array_equal(make_per_image_noise(50, 0.0, seed=0), np.arange(50))


def test_caption_to_image_and_clean_mask() -> None:
    inx = np.array([2, 1, 0])
    pairing = caption_to_image("per_image", inx, 3, 2)
    np.testing.assert_array_equal(pairing, [2, 2, 1, 1, 0, 0])
    np.testing.assert_array_equal(clean_mask(pairing, 2), [False, False, True, True, False, False])
    t2i = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(caption_to_image("per_caption", t2i, 2, 2), t2i)
    info = noise_info(t2i, "per_caption", n_images=2, n_captions=4, rate=0.5)
    assert info.realised_rate == 0.5 and info.image_rate == 1.0 and info.rate == 0.5
    with pytest.raises(InputError, match="per_caption, per_image"):
        caption_to_image("per_pair", t2i, 2, 2)
    with pytest.raises(InputError, match=r"shape \(3,\) for per_image"):
        caption_to_image("per_image", t2i, 3, 2)
    assert PROTOCOLS == ("per_caption", "per_image")


def test_save_load_round_trip(tmp_path: Path) -> None:
    index = make_per_caption_noise(500, 5, 0.5, seed=0)
    path = tmp_path / "f30k_precomp_0.5.npy"
    save_noise(path, index.astype(np.int32))  # stored as int64 whatever comes in
    buf = io.BytesIO()
    np.save(buf, index.astype(np.int64))
    assert path.read_bytes() == buf.getvalue()
    back, info = load_noise(path, "per_caption", n_images=100, n_captions=500, rate=0.5)
    np.testing.assert_array_equal(back, index)
    assert info.checksum == checksum(index) and info.rate == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_per_caption_rejects_a_per_image_file(shared_data: Path) -> None:
    path = shared_data / "noise-index" / "f30k_precomp" / "noise_inx_0.2.npy"
    with pytest.raises(
        InputError,
        match=r"expected 145000 entries \(one per caption, protocol per_caption\), "
        r"found 29000 \(the length of a per_image file\)",
    ):
        load_noise(path, "per_caption", n_images=29000, n_captions=145000)


def test_per_image_rejects_a_per_caption_file(tmp_path: Path) -> None:
    path = tmp_path / "t2i.npy"
    save_noise(path, make_per_caption_noise(50, 5, 0.5, seed=0))
    with pytest.raises(InputError, match="expected 10 entries .* per_image"):
        load_noise(path, "per_image", n_images=10, n_captions=50)


def test_validation_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, np.array([0, 1, 7, 2]))
    with pytest.raises(InputError, match=r"position 2: expected an image index in \[0, 4\), found 7"):
        load_noise(p, "per_image", n_images=4, n_captions=4)
    np.save(p, np.array([0, 1, 1, 2]))
    with pytest.raises(InputError, match="position 2: expected a permutation"):
        load_noise(p, "per_image", n_images=4, n_captions=4)
    np.save(p, np.array([0, 1, 1, 2]))  # the same values are fine per caption
    assert load_noise(p, "per_caption", n_images=4, n_captions=4)[1].realised_rate == 0.5
    np.save(p, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="dtype float64"):
        load_noise(p, "per_image", n_images=4, n_captions=4)
    np.save(p, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(InputError, match="1-D"):
        load_noise(p, "per_image", n_images=4, n_captions=4)
    p.write_bytes(b"hello")
    with pytest.raises(InputError, match=".npy array file"):
        load_noise(p, "per_image", n_images=4, n_captions=4)
    with pytest.raises(InputError, match="no such file"):
        load_noise(tmp_path / "none.npy", "per_image", n_images=4, n_captions=4)
    with pytest.raises(InputError, match="noise protocol"):
        load_noise(p, "per_pair", n_images=4, n_captions=4)
    with pytest.raises(InputError, match=r"rate in \[0, 1\]"):
        make_per_image_noise(4, 1.5, seed=0)
