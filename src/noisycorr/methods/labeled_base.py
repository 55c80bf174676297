"""The contract of a noisy-label method: per-modality MLP encoders into one unit-sphere space.

A labelled-task method owns an image encoder and a text encoder (MLPs on pre-extracted features,
L2-normalised outputs) and whatever it adds (a shared classifier, class prototypes). It follows the
contract of :mod:`noisycorr.methods.base` (the same training loop drives both tasks): its
``on_epoch_start`` gets a :class:`~noisycorr.methods.context.LabelEpochContext` (the whole training
split: features and *noisy* labels), and its ``training_step`` a :class:`LabelBatch`. Retrieval uses
the cosine similarity of the two embeddings. A method never sees the clean labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisycorr.errors import InputError
from noisycorr.methods.base import Method, Phase, StepResult
from noisycorr.methods.context import LabelEpochContext

PURE, HARD, NOISY = 0, 1, 2


@dataclass
class LabelBatch:
    """One training batch of paired items.

    Attributes:
        index: (B,) int64 rows of the training split.
        images: (B, Di) image features.
        texts: (B, Dt) text features.
        image_labels: (B, C) float noisy multi-hot labels of the images.
        text_labels: (B, C) float noisy multi-hot labels of the texts (equal to ``image_labels``
            under per-pair noise).
    """

    index: Tensor
    images: Tensor
    texts: Tensor
    image_labels: Tensor
    text_labels: Tensor

    def to(self, device: torch.device) -> LabelBatch:
        return dataclasses.replace(
            self,
            index=self.index.to(device),
            images=self.images.to(device),
            texts=self.texts.to(device),
            image_labels=self.image_labels.to(device),
            text_labels=self.text_labels.to(device),
        )


class MLPEncoder(nn.Module):
    """Linear-ReLU layers then a linear projection, L2-normalised: (B, in_dim) -> (B, out_dim).

    Args:
        in_dim: input feature size.
        hidden: width of the hidden layers (MRL / NIRNL: 4096).
        out_dim: embedding size (512).
        hidden_layers: number of hidden Linear-ReLU layers (2).
        out_bias: whether the projection has a bias (NIRNL: no).
        out_init_bound: when set, the projection weight is drawn from U(-b, b) (NIRNL: 1 / sqrt(in_dim)).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        *,
        hidden_layers: int = 2,
        out_bias: bool = True,
        out_init_bound: float | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(width, out_dim, bias=out_bias)
        if out_init_bound is not None:
            nn.init.uniform_(self.proj.weight, -out_init_bound, out_init_bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(self.body(x)), dim=1)


class SharedClassifier(nn.Module):
    """MRL's shared linear classifier: (D, C) orthogonally initialised, columns kept at unit norm.

    The columns are projected back onto the unit sphere before every training step
    (:meth:`renormalize`), as MRL does; the logits are ``f @ W``.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        weight = torch.empty(embed_dim, num_classes)
        nn.init.orthogonal_(weight)
        self.weight = nn.Parameter(F.normalize(weight, dim=0))

    @torch.no_grad()
    def renormalize(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=0))

    def forward(self, feats: Tensor) -> Tensor:
        """(B, D) unit embeddings -> (B, C) logits."""
        return feats @ self.weight


def soft_cross_entropy(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-item cross-entropy against multi-hot targets: -sum_c w_c y_c log softmax(logits)_c.

    Args:
        logits: (B, C).
        targets: (B, C) multi-hot (one-hot for single-label data).
        weight: optional (B, C) per-class weights.

    Returns:
        (B,) losses.
    """
    t = targets if weight is None else targets * weight
    return -(t * F.log_softmax(logits, dim=1)).sum(1)


def _no_backbone() -> None:
    raise RuntimeError("labelled-task methods build their own encoders")


class LabelMethod(Method):
    """Base of the noisy-label methods: image and text MLP encoders into a shared unit-sphere space."""

    task: ClassVar[str] = "labels"
    encoder_out_bias: ClassVar[bool] = True
    encoder_uniform_out: ClassVar[bool] = False

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(
        self,
        cfg: Any,
        *,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        hidden: int = 4096,
        hidden_layers: int = 2,
        embed_dim: int = 512,
    ):
        super().__init__(cfg, _no_backbone)
        self.num_classes = num_classes
        self.embed_dim = embed_dim

        def encoder(in_dim: int) -> MLPEncoder:
            bound = 1.0 / float(np.sqrt(in_dim)) if self.encoder_uniform_out else None
            return MLPEncoder(
                in_dim,
                hidden,
                embed_dim,
                hidden_layers=hidden_layers,
                out_bias=self.encoder_out_bias,
                out_init_bound=bound,
            )

        self.image_net = encoder(image_dim)
        self.text_net = encoder(text_dim)

    def encode_images(self, x: Tensor) -> Tensor:
        """(B, Di) features -> (B, D) unit embeddings."""
        return self.image_net(x)

    def encode_texts(self, x: Tensor) -> Tensor:
        """(B, Dt) features -> (B, D) unit embeddings."""
        return self.text_net(x)

    @torch.no_grad()
    def embed(self, x: Tensor, encode: Callable[[Tensor], Tensor], batch_size: int = 1024) -> Tensor:
        """Embed (N, d) features in chunks without gradients (train mode is restored afterwards)."""
        was_training = self.training
        self.eval()
        out = torch.cat([encode(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        self.train(was_training)
        return out

    def on_epoch_start(self, epoch: int, ctx: LabelEpochContext) -> dict[str, float]:  # type: ignore[override]
        """Per-epoch work on the whole training split ``ctx`` (e.g. a partition); returns values to log."""
        return {}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """The passes of this epoch, trained one after the other (default: every training item)."""
        return [Phase()]

    def training_step(  # type: ignore[override]
        self,
        batch: LabelBatch,
        epoch: int,
        *,
        phase: str = "train",
        streams: Mapping[str, LabelBatch] | None = None,
        control: None = None,
    ) -> StepResult:
        """One batch: named losses (summed by the engine) and values to log."""
        raise NotImplementedError

    def score_pairs(self, ctx: Any, *, estimator: str | None = None, seed: int = 0) -> np.ndarray:
        name = type(self).__name__
        raise InputError("method", "a pair-task method to score pairs", f"the labelled-task method {name}")
