"""Standard test protocols: block selection, fold averaging, split-size checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from noisycorr.errors import InputError
from noisycorr.eval import PROTOCOLS, evaluate_protocol, retrieval_metrics

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NOISYCORR_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (set NOISYCORR_SHARED_DATA)")
    return path


def n_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


class BlockScorer:
    """Scores image/caption blocks from small integer embeddings (many ties) and records each request."""

    def __init__(self, n_img: int, n_cap: int, caption_image: np.ndarray, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.img = torch.randint(-2, 3, (n_img, 4), generator=g).float()
        self.cap = (
            self.img[torch.as_tensor(caption_image)] + torch.randint(-2, 3, (n_cap, 4), generator=g).float()
        )
        self.calls: list[tuple[slice, slice]] = []

    def __call__(self, img: slice, cap: slice) -> torch.Tensor:
        self.calls.append((img, cap))
        return self.img[img] @ self.cap[cap].T


def test_coco5fold1k_scores_only_diagonal_blocks_and_averages():
    path = shared_file("precomp-captions/coco_precomp/testall_caps.txt")
    ci = np.arange(n_lines(path)) // 5  # precomp layout: caption k belongs to image k // 5
    scorer = BlockScorer(5000, len(ci), ci)
    out = evaluate_protocol(scorer, ci, "coco5fold1k", captions_per_image=5)
    assert scorer.calls == [
        (slice(f * 1000, (f + 1) * 1000), slice(f * 5000, (f + 1) * 5000)) for f in range(5)
    ]
    folds = [
        retrieval_metrics(
            scorer.img[f * 1000 : (f + 1) * 1000] @ scorer.cap[f * 5000 : (f + 1) * 5000].T,
            ci[f * 5000 : (f + 1) * 5000] - f * 1000,
        )
        for f in range(5)
    ]
    assert out["folds"] == folds
    for key in folds[0]:
        if key != "rsum":
            assert out[key] == sum(m[key] for m in folds) / 5
    recalls = [out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
    assert out["rsum"] == sum(recalls)
    # Not NCR's printed value (6 x the mean image-to-text recall).
    assert out["rsum"] != pytest.approx(2 * (out["i2t_r1"] + out["i2t_r5"] + out["i2t_r10"]))


def test_full_matrix_equals_function_and_single_block():
    rng = np.random.default_rng(4)
    ci = np.arange(1000) // 1
    sims = np.round(rng.normal(size=(1000, 1000)), 1)
    expected = retrieval_metrics(sims, ci)
    assert evaluate_protocol(sims, ci, "1k", captions_per_image=1) == expected
    assert (
        evaluate_protocol(torch.from_numpy(sims), torch.from_numpy(ci), "single", captions_per_image=1)
        == expected
    )
    assert evaluate_protocol(lambda a, b: sims[a, b], ci, "cc152k", captions_per_image=1) == expected
    assert "folds" not in expected


def test_cc152k_real_test_size():
    n = n_lines(shared_file("cc152k-test/test_caps_img_urls.csv"))
    ci = np.arange(n)
    sims = np.eye(n) + 0.5 * np.eye(n, k=1)
    out = evaluate_protocol(sims, ci, "cc152k", captions_per_image=1)
    assert out["i2t_r1"] == 100.0 and out["t2i_r1"] == 100.0 and out["rsum"] == 600.0
    with pytest.raises(InputError, match="1 for protocol 'cc152k'"):
        evaluate_protocol(sims, ci, "cc152k", captions_per_image=5)


def test_flickr30k_1k_real_test_size():
    ci = np.arange(n_lines(shared_file("precomp-captions/f30k_precomp/test_caps.txt"))) // 5
    scorer = BlockScorer(1000, len(ci), ci, seed=1)
    out = evaluate_protocol(scorer, ci, "1k", captions_per_image=5)
    assert scorer.calls == [(slice(0, 1000), slice(0, 5000))]
    assert out == retrieval_metrics(scorer.img @ scorer.cap.T, ci)


def test_coco5k_asks_for_one_full_block():
    ci = np.arange(25000) // 5
    calls = []

    def constant(img: slice, cap: slice) -> torch.Tensor:  # all scores tied, without allocating 5000 x 25000
        calls.append((img, cap))
        return torch.zeros(1, 1).expand(img.stop - img.start, cap.stop - cap.start)

    out = evaluate_protocol(constant, ci, "coco5k", captions_per_image=5)
    assert calls == [(slice(0, 5000), slice(0, 25000))]
    # All tied: image i's first caption 5i sits at rank 5i, caption j's image at rank j // 5.
    assert (out["i2t_r1"], out["i2t_r5"], out["i2t_r10"]) == (100 / 5000, 100 / 5000, 200 / 5000)
    assert (out["t2i_r1"], out["t2i_r5"]) == (500 / 25000, 2500 / 25000)


@pytest.mark.parametrize(
    "n_img,cpi,protocol,match",
    [
        (4000, 5, "coco5fold1k", "5000 images x 5 captions"),
        (5000, 1, "coco5fold1k", "5 for protocol 'coco5fold1k'"),
        (999, 5, "1k", "1000 images"),
        (1000, 5, "cc152k", "1 for protocol"),
        (10, 5, "f30k", "one of"),
    ],
)
def test_split_sizes_must_fit(n_img, cpi, protocol, match):
    ci = np.arange(n_img * 5) // 5

    def never(img, cap):
        raise AssertionError("scored a split that does not fit")

    with pytest.raises(InputError, match=match):
        evaluate_protocol(never, ci, protocol, captions_per_image=cpi)


def test_caption_outside_its_fold():
    ci = np.arange(25000) // 5
    ci[12345] = 10  # a fold-2 caption pointing at a fold-0 image
    scorer = BlockScorer(5000, 25000, np.arange(25000) // 5)
    with pytest.raises(InputError, match=r"caption 12345.*\[2000, 3000\)"):
        evaluate_protocol(scorer, ci, "coco5fold1k", captions_per_image=5)


def test_bad_blocks_and_matrices():
    ci = np.arange(10) // 5
    with pytest.raises(InputError, match="sims_fn"):
        evaluate_protocol(lambda a, b: torch.zeros(3, 3), ci, "single", captions_per_image=5)
    with pytest.raises(InputError, match=r"shape \(2, 10\)"):
        evaluate_protocol(np.zeros((10, 10)), ci, "single", captions_per_image=5)
    with pytest.raises(InputError, match="multiple of captions_per_image=3"):
        evaluate_protocol(np.zeros((2, 10)), ci, "single", captions_per_image=3)


def test_protocol_table():
    assert {"1k", "coco5fold1k", "coco5k", "cc152k"} <= set(PROTOCOLS)
    assert PROTOCOLS["coco5fold1k"].n_folds == 5 and PROTOCOLS["cc152k"].captions_per_image == 1
