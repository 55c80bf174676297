"""Chunked retrieval ranks and metrics against a naive full-argsort oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisycorr.errors import InputError
from noisycorr.eval import average_similarities, i2t_ranks, retrieval_metrics, t2i_ranks


def oracle_i2t(sims: np.ndarray, caption_image: np.ndarray) -> np.ndarray:
    out = np.empty(sims.shape[0], dtype=np.int64)
    for i, row in enumerate(sims):
        order = np.argsort(-row, kind="stable")
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order))
        out[i] = pos[caption_image == i].min()
    return out


def oracle_t2i(sims: np.ndarray, caption_image: np.ndarray) -> np.ndarray:
    out = np.empty(sims.shape[1], dtype=np.int64)
    for j in range(sims.shape[1]):
        order = np.argsort(-sims[:, j], kind="stable")
        out[j] = int(np.flatnonzero(order == caption_image[j])[0])
    return out


def oracle_metrics(sims: np.ndarray, caption_image: np.ndarray) -> dict[str, float]:
    out = {}
    for d, r in (("i2t", oracle_i2t(sims, caption_image)), ("t2i", oracle_t2i(sims, caption_image))):
        for k in (1, 5, 10):
            out[f"{d}_r{k}"] = 100.0 * len(np.where(r < k)[0]) / len(r)
        out[f"{d}_medr"] = float(np.floor(np.median(r)) + 1)
        out[f"{d}_meanr"] = float(r.mean() + 1)
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def tie_heavy(rng: np.random.Generator, n_img: int, n_cap: int, kind: str, dtype) -> np.ndarray:
    if kind == "int":
        return rng.integers(-3, 4, size=(n_img, n_cap)).astype(dtype)
    if kind == "rounded":
        return np.round(rng.normal(size=(n_img, n_cap)), 1).astype(dtype)
    return rng.normal(size=(n_img, n_cap)).astype(dtype)


def irregular_caption_image(rng: np.random.Generator, n_img: int, n_extra: int) -> np.ndarray:
    ci = np.concatenate([np.arange(n_img), rng.integers(0, n_img, size=n_extra)])
    return rng.permutation(ci)


def test_hand_computed_example():
    # 3 images x 6 captions, 2 captions per image in the usual k // 2 layout.
    sims = np.array(
        [
            [0.9, 0.1, 0.8, 0.2, 0.0, 0.0],  # image 0: caption 0 is top -> rank 0
            [0.5, 0.7, 0.6, 0.1, 0.0, 0.0],  # image 1: best own caption 2 (0.6) behind 1 (0.7) -> rank 1
            [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # image 2: all tied, own captions 4, 5 -> rank 4
        ]
    )
    ci = np.array([0, 0, 1, 1, 2, 2])
    assert i2t_ranks(sims, ci).tolist() == [0, 1, 4]
    # Column j ranks the three images for caption j; e.g. caption 1 (image 0 scores 0.1) has images 1 and
    # 2 ahead, caption 3 (image 1 scores 0.1) has images 2 and 0 ahead.
    assert t2i_ranks(sims, ci).tolist() == [0, 2, 1, 2, 0, 0]
    m = retrieval_metrics(sims, ci)
    assert m["i2t_r1"] == pytest.approx(100 / 3) and m["i2t_r5"] == 100.0
    assert m["t2i_r1"] == 50.0 and m["t2i_r5"] == 100.0
    assert m["i2t_medr"] == 2.0 and m["i2t_meanr"] == pytest.approx(8 / 3)
    assert m["t2i_medr"] == 1.0 and m["t2i_meanr"] == pytest.approx(11 / 6)  # median 0.5 -> floor + 1
    assert m["rsum"] == pytest.approx(100 / 3 + 100 + 100 + 50 + 100 + 100)


@pytest.mark.parametrize("kind", ["int", "rounded", "continuous"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n_img,layout,chunk", [(37, 5, 8), (41, 1, 7), (29, "irregular", 5), (23, 5, 256), (19, "irregular", 1)]
)
def test_matches_oracle_exactly(kind, dtype, n_img, layout, chunk):
    rng = np.random.default_rng(hash((kind, n_img, chunk)) % 2**32)
    if layout == "irregular":
        ci = irregular_caption_image(rng, n_img, 3 * n_img)
    else:
        ci = np.arange(n_img * layout) // layout
    sims = tie_heavy(rng, n_img, len(ci), kind, dtype)
    np.testing.assert_array_equal(i2t_ranks(sims, ci, chunk=chunk).numpy(), oracle_i2t(sims, ci))
    np.testing.assert_array_equal(t2i_ranks(sims, ci, chunk=chunk).numpy(), oracle_t2i(sims, ci))
    assert retrieval_metrics(sims, ci, chunk=chunk) == oracle_metrics(sims, ci)


def test_torch_numpy_memmap_and_infinities_agree(tmp_path):
    rng = np.random.default_rng(3)
    ci = irregular_caption_image(rng, 31, 60)
    sims = tie_heavy(rng, 31, len(ci), "int", np.float64)
    sims[rng.random(sims.shape) < 0.05] = np.inf
    sims[rng.random(sims.shape) < 0.05] = -np.inf
    path = tmp_path / "sims.npy"
    np.save(path, sims)
    mm = np.load(path, mmap_mode="r")
    expected = oracle_metrics(sims, ci)
    inputs = [sims, mm, torch.from_numpy(sims), torch.from_numpy(sims).T.contiguous().T]
    for x in inputs:
        for c in (4, 1000):
            assert retrieval_metrics(x, torch.as_tensor(ci), chunk=c) == expected


def test_ties_follow_the_given_dtype():
    # 1 + 1e-12 is above 1 in float64 but equal to it in float32 (then the lower row index wins).
    col = np.array([[1.0], [1.0 + 1e-12]])
    ci = np.array([0])
    assert t2i_ranks(col, ci).tolist() == [1]
    assert t2i_ranks(col.astype(np.float32), ci).tolist() == [0]
    assert t2i_ranks(torch.from_numpy(col), torch.tensor([0])).dtype == torch.int64


def test_images_without_captions():
    sims = np.zeros((3, 4))
    ci = np.array([0, 0, 2, 2])
    with pytest.raises(ValueError, match="image row 1"):
        i2t_ranks(sims, ci)
    with pytest.raises(InputError):
        retrieval_metrics(sims, ci)
    # Text-to-image is well defined with distractor images.
    rng = np.random.default_rng(0)
    sims = tie_heavy(rng, 6, 8, "int", np.float32)
    ci = np.array([0, 0, 2, 2, 5, 5, 5, 2])
    np.testing.assert_array_equal(t2i_ranks(sims, ci, chunk=4).numpy(), oracle_t2i(sims, ci))


@pytest.mark.parametrize(
    "sims,ci,match",
    [
        (np.zeros(5), np.zeros(5, dtype=int), "2-D"),
        (np.zeros((2, 4)), np.array([0, 0, 1]), r"shape \(4,\)"),
        (np.zeros((2, 4)), np.array([0, 0, 1, 2]), r"caption 3.*\[0, 2\)"),
        (np.zeros((2, 4)), np.array([0, 0, 1, -1]), "caption 3"),
        (np.zeros((2, 4)), np.array([0.0, 0.0, 1.0, 1.0]), "integer"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), np.array([0, 1]), "row 1.*NaN"),
        (np.zeros((2, 2), dtype=complex), np.array([0, 1]), "real-valued"),
    ],
)
def test_bad_input(sims, ci, match):
    with pytest.raises(InputError, match=match):
        retrieval_metrics(sims, ci)


def test_bad_options():
    with pytest.raises(InputError, match="chunk"):
        i2t_ranks(np.zeros((1, 1)), np.array([0]), chunk=0)
    with pytest.raises(InputError, match="ks"):
        retrieval_metrics(np.zeros((1, 1)), np.array([0]), ks=(0,))


def test_custom_ks():
    rng = np.random.default_rng(5)
    ci = np.arange(40) // 2
    sims = tie_heavy(rng, 20, 40, "rounded", np.float32)
    m = retrieval_metrics(sims, ci, ks=(2, 3))
    r = oracle_i2t(sims, ci)
    assert m["i2t_r3"] == 100.0 * np.count_nonzero(r < 3) / len(r)
    assert "i2t_r1" not in m and m["rsum"] == pytest.approx(
        m["i2t_r2"] + m["i2t_r3"] + m["t2i_r2"] + m["t2i_r3"]
    )


def test_average_similarities():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6)).astype(np.float32)
    b = torch.from_numpy(rng.normal(size=(4, 6)))
    avg = average_similarities([torch.from_numpy(a), b])
    assert avg.dtype == torch.float64
    torch.testing.assert_close(avg, (torch.from_numpy(a).double() + b) / 2, rtol=0, atol=0)
    assert torch.equal(average_similarities([a]), torch.from_numpy(a))
    with pytest.raises(InputError, match="item 1"):
        average_similarities([a, a[:, :5]])
    with pytest.raises(InputError, match="empty"):
        average_similarities([])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    ci = irregular_caption_image(rng, 50, 120)
    sims = torch.from_numpy(tie_heavy(rng, 50, len(ci), "int", np.float32))
    assert retrieval_metrics(sims.cuda(), torch.as_tensor(ci).cuda(), chunk=16) == oracle_metrics(
        sims.numpy(), ci
    )


@pytest.mark.slow
def test_coco5k_scale_matches_oracle():
    """5000 x 25000 float32 with heavy ties, default chunk: exact agreement with the oracle."""
    rng = np.random.default_rng(9)
    ci = np.arange(25000) // 5
    sims = np.round(rng.normal(size=(5000, 25000)), 2).astype(np.float32)
    assert retrieval_metrics(sims, ci) == oracle_metrics(sims, ci)


def test_integer_and_half_precision_scores():
    rng = np.random.default_rng(6)
    ci = np.arange(60) // 3
    sims = rng.integers(-3, 4, size=(20, 60))
    expected = oracle_metrics(sims, ci)
    for x in (
        sims,
        torch.from_numpy(sims).int(),
        torch.from_numpy(sims).half(),
        torch.from_numpy(sims).bfloat16(),
    ):
        assert retrieval_metrics(x, ci, chunk=6) == expected
