"""A light backbone for one pooled feature vector per image (e.g. CNN global features or a practitioner's
own embeddings): residual MLPs into a joint space, cosine similarity.

Images: ``fc + MLP`` on the (B, D) feature, L2-normalise. Captions: BiGRU word features pooled by a
masked mean (or GPO), ``fc + MLP``, L2-normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from noisycorr.backbones.base import Backbone, TextBackboneConfig
from noisycorr.backbones.gpo import GPO
from noisycorr.backbones.ops import ResidualMLP, l2norm, length_mask, masked_mean
from noisycorr.backbones.text import BiGRUTextEncoder
from noisycorr.errors import InputError
from noisycorr.registry import register_backbone

__all__ = ["GlobalMLP"]

_TEXT_POOLS = ("mean", "gpo")


@register_backbone("global")
class GlobalMLP(Backbone):
    """Pooled image features and pooled caption features, each mapped by a residual MLP; cosine similarity.

    Args:
        vocab_size: number of token ids.
        img_dim: pooled image feature size D.
        embed_size: joint embedding size.
        word_dim: word embedding size.
        word_vectors: optional (vocab_size, word_dim) initial word embedding.
        text_layers: BiGRU layers.
        dropout: dropout on the image features and on the word embeddings.
        text_pool: ``"mean"`` (masked mean over words) or ``"gpo"``.
    """

    image_input = "pooled"

    @dataclass
    class Config(TextBackboneConfig):
        """The ``model`` section of a global run: the class arguments but those the data fixes
        (vocab_size, img_dim); ``word_vectors`` names the file to load."""

        backbone: str = "global"
        text_pool: str = "mean"

    def __init__(
        self,
        *,
        vocab_size: int,
        img_dim: int,
        embed_size: int = 1024,
        word_dim: int = 300,
        word_vectors: Tensor | None = None,
        text_layers: int = 1,
        dropout: float = 0.0,
        text_pool: str = "mean",
    ):
        super().__init__()
        if text_pool not in _TEXT_POOLS:
            raise InputError("text_pool", f"one of {list(_TEXT_POOLS)}", repr(text_pool))
        self.embed_size = embed_size
        self.img_dropout = nn.Dropout(dropout)
        self.img_proj = ResidualMLP(img_dim, embed_size)
        self.text = BiGRUTextEncoder(vocab_size, word_dim, embed_size, text_layers, dropout, word_vectors)
        self.txt_pool = GPO() if text_pool == "gpo" else None
        self.txt_proj = ResidualMLP(embed_size, embed_size)

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, D) pooled features -> (B, embed) unit vectors."""
        if images.dim() != 2:
            raise ValueError(
                f"global images: expected (B, D) pooled features, found shape {tuple(images.shape)}"
            )
        x = self.img_dropout(images.to(self.img_proj.fc.weight.dtype))
        return l2norm(self.img_proj(x), dim=-1)

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids, (B,) lengths -> (B, embed) unit vectors."""
        words, lengths = self.text(tokens, lengths)
        if self.txt_pool is None:
            pooled = masked_mean(words, length_mask(lengths, words.shape[1]))
        else:
            pooled = self.txt_pool(words, lengths)
        return l2norm(self.txt_proj(pooled), dim=-1)

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """Cosine scores: (n_img, embed), (n_txt, embed) -> (n_img, n_txt)."""
        return img_emb @ txt_emb.t()
