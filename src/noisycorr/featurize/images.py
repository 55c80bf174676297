"""Image decoding and the fixed resize / crop / normalise pipeline (Pillow), plus report thumbnails.

Pillow is an optional dependency (the ``featurize`` extra); :func:`require_pillow` turns its absence into
a one-line error that names the extra.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from noisycorr.errors import InputError

__all__ = ["ImageDecodeError", "Preprocess", "decode_image", "require_pillow", "thumbnail_data_uri"]

_RESAMPLE = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


def require_pillow() -> ModuleType:
    """The ``PIL.Image`` module, or a one-line error naming the extra to install."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("noisycorr featurize", "Pillow (pip install 'noisycorr[featurize]')",
                         "not installed") from None
    return Image


class ImageDecodeError(Exception):
    """The bytes are not an image Pillow can decode (the message says why, on one line)."""


def decode_image(data: bytes):
    """Decode image bytes fully and convert to RGB.

    Returns:
        A loaded RGB ``PIL.Image.Image``.

    Raises:
        ImageDecodeError: empty, truncated or unknown data, or an image past Pillow's size limit.
    """
    Image = require_pillow()
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        # Pillow reports unknown formats, truncation and corrupt streams as these; the text fits one line.
        text = " ".join(str(err).split()) or type(err).__name__
        raise ImageDecodeError(text) from None


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, normalise: ``(pixel - mean) / std`` on the 0..255 scale.

    The short side becomes ``resize`` and the long side ``round(long * resize / short)``; the crop of
    ``crop`` x ``crop`` starts at ``floor((size - crop) / 2)`` on each axis.

    Attributes:
        resize: short side after resizing, in pixels.
        crop: side of the square centre crop.
        resample: Pillow filter name (``bicubic``, ``bilinear``, ...).
        mean: per-channel offset (R, G, B), 0..255 scale.
        std: per-channel divisor (R, G, B), 0..255 scale.
    """

    resize: int = 256
    crop: int = 224
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def __post_init__(self) -> None:
        if self.resample not in _RESAMPLE:
            raise InputError("preprocess.resample", f"one of {list(_RESAMPLE)}", repr(self.resample))
        if not 0 < self.crop <= self.resize:
            raise InputError("preprocess.crop", f"a size in (0, resize={self.resize}]", repr(self.crop))

    def pixels(self, image) -> np.ndarray:
        """RGB image -> (crop, crop, 3) uint8 after resize and centre crop."""
        Image = require_pillow()
        w, h = image.size
        short = min(w, h)
        size = (round(w * self.resize / short), round(h * self.resize / short))
        if size != (w, h):
            image = image.resize(size, getattr(Image.Resampling, self.resample.upper()))
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(image, dtype=np.uint8)

    def __call__(self, image) -> np.ndarray:
        """RGB image -> (3, crop, crop) float32 network input."""
        x = self.pixels(image).astype(np.float32)
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def describe(self) -> dict:
        return {"resize": self.resize, "crop": self.crop, "resample": self.resample,
                "mean": list(self.mean), "std": list(self.std)}


def thumbnail_data_uri(data: bytes, *, size: int = 160, quality: int = 80) -> str | None:
    """A small JPEG of the image as a ``data:`` URI for a self-contained HTML page; None if undecodable."""
    Image = require_pillow()
    try:
        image = decode_image(data)
    except ImageDecodeError:
        return None
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
