"""The contract every backbone follows: embed images, embed captions, score them."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """Embeds images and captions and scores every image against every caption.

    A backbone has no optimizer, no loss and no device logic.

    Attributes:
        image_input: ``"regions"`` for (B, R, D) region features, ``"pooled"`` for (B, D).
    """

    image_input: ClassVar[str] = "regions"

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, R, D) or (B, D) features -> image embedding (B, ...)."""
        raise NotImplementedError

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids padded with 0, (B,) lengths -> caption embedding (B, ...)."""
        raise NotImplementedError

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """Score every image against every caption: (n_img, ...), (n_txt, ...) -> (n_img, n_txt)."""
        raise NotImplementedError


@torch.no_grad()
def similarity_matrix(
    backbone: Backbone,
    img_emb: Tensor,
    txt_emb: Tensor,
    txt_lengths: Tensor | None = None,
    *,
    img_chunk: int = 1000,
    txt_chunk: int = 1000,
) -> Tensor:
    """Tile ``backbone.similarity`` over image and caption blocks; memory is bounded by one block.

    Returns:
        (n_img, n_txt) float32 tensor on the CPU.
    """
    n_img, n_txt = img_emb.shape[0], txt_emb.shape[0]
    out = torch.empty(n_img, n_txt, dtype=torch.float32)
    for i in range(0, n_img, img_chunk):
        for j in range(0, n_txt, txt_chunk):
            lens = None if txt_lengths is None else txt_lengths[j : j + txt_chunk]
            block = backbone.similarity(img_emb[i : i + img_chunk], txt_emb[j : j + txt_chunk], lens)
            out[i : i + img_chunk, j : j + txt_chunk] = block.float().cpu()
    return out
