"""Tiny images, shards and a fast stand-in encoder for the featurize tests (the real network: oracle test)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from noisycorr.featurize.encoders import GRID, ImageEncoder, grid_from_map
from noisycorr.featurize.images import Preprocess


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small random-colour JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_images(folder: Path, n: int) -> list[str]:
    """``img{k}.jpg`` for k < n in ``folder``; returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        (folder / f"img{k}.jpg").write_bytes(jpeg_bytes(k))
        names.append(f"img{k}.jpg")
    return names


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A webdataset shard: per sample its key and {extension: bytes}, files of a key adjacent."""
    with tarfile.open(path, "w") as tf:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


class TinyEncoder(ImageEncoder):
    """Stands in for a network: 8 x 8 average colours of a 32 x 32 crop as a (B, 3, 8, 8) "feature map"."""

    name = "tiny-test"
    dim = 3
    has_grid = True

    def __init__(self) -> None:
        self.preprocess = Preprocess(resize=32, crop=32, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
        self.calls = 0

    def encode(self, images: torch.Tensor):
        self.calls += 1
        fmap = torch.nn.functional.avg_pool2d(images, 4)
        return fmap.mean(dim=(2, 3)), grid_from_map(fmap, GRID)

    def describe(self) -> dict:
        return {"encoder": self.name, "preprocess": self.preprocess.describe()}
