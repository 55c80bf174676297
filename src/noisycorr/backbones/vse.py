"""VSE-infinity backbone on precomputed regions (Chen et al., "Learning the Best Pooling Strategy for
Visual Semantic Embedding", CVPR 2021), as used by CRCL and IN2R.

Images: each region goes through ``fc + MLP`` (residual), GPO pools the regions, L2-normalise.
Captions: BiGRU word features (directions averaged), optionally ``fc + MLP`` per word (IN2R), GPO over
the words, L2-normalise. The score is the cosine, so evaluation is one matrix product.
IN2R's batch-mean centring of the embeddings is deliberately left out: it makes test embeddings depend
on the batch they are computed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from noisycorr.backbones.base import Backbone, TextBackboneConfig
from noisycorr.backbones.gpo import GPO
from noisycorr.backbones.ops import ResidualMLP, l2norm, length_mask
from noisycorr.backbones.text import BiGRUTextEncoder, check_lengths
from noisycorr.registry import register_backbone

__all__ = ["VSE"]


@register_backbone("vse")
class VSE(Backbone):
    """Region features + GPO pooling, cosine similarity.

    Args:
        vocab_size: number of token ids.
        img_dim: region feature size D.
        embed_size: joint embedding size.
        word_dim: word embedding size.
        word_vectors: optional (vocab_size, word_dim) initial word embedding.
        text_layers: BiGRU layers.
        dropout: element-wise dropout on the input region features and on the word embeddings, in
            training mode only (IN2R uses 0.3; two forward passes then give two views of a batch).
        text_mlp: add IN2R's per-word ``fc + MLP(embed -> embed/2 -> embed)`` before text GPO.
    """

    image_input = "regions"

    @dataclass
    class Config(TextBackboneConfig):
        """The ``model`` section of a VSE run: the class arguments but those the data fixes
        (vocab_size, img_dim); ``word_vectors`` names the file to load."""

        backbone: str = "vse"
        text_mlp: bool = False

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
        text_mlp: bool = False,
    ):
        super().__init__()
        self.embed_size = embed_size
        self.img_dropout = nn.Dropout(dropout)
        self.img_proj = ResidualMLP(img_dim, embed_size)
        self.img_pool = GPO()
        self.text = BiGRUTextEncoder(vocab_size, word_dim, embed_size, text_layers, dropout, word_vectors)
        self.txt_proj = ResidualMLP(embed_size, embed_size) if text_mlp else None
        self.txt_pool = GPO()

    def encode_images(self, images: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, R, D) regions (optionally only the first ``lengths[b]`` valid) -> (B, embed) unit vectors."""
        if images.dim() != 3:
            raise ValueError(
                f"VSE images: expected (B, R, D) region features, found shape {tuple(images.shape)}"
            )
        mask = None
        if lengths is not None:
            check_lengths(lengths, images.shape[0], images.shape[1])
            mask = length_mask(lengths, images.shape[1])
        x = self.img_dropout(images.to(self.img_proj.fc.weight.dtype))
        return l2norm(self.img_pool(self.img_proj(x, mask), lengths), dim=-1)

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids, (B,) lengths -> (B, embed) unit vectors."""
        return self.pool_words(*self.encode_words(tokens, lengths))

    def encode_words(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) token ids, (B,) lengths -> the word features the caption is pooled from, (B, L', embed),
        and their (B,) lengths (a head over the words, e.g. D2S's student, reads them)."""
        words, lengths = self.text(tokens, lengths)
        if self.txt_proj is not None:
            words = self.txt_proj(words, length_mask(lengths, words.shape[1]))
        return words, lengths

    def pool_words(self, words: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, embed) word features, (B,) lengths -> (B, embed) unit caption vectors (GPO)."""
        return l2norm(self.txt_pool(words, lengths), dim=-1)

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """Cosine scores: (n_img, embed), (n_txt, embed) -> (n_img, n_txt)."""
        return img_emb @ txt_emb.t()

    @property
    def vector_dim(self) -> int:
        return self.embed_size

    def similarity_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """The element-wise product of the unit embeddings times ``embed``, (n_img, embed), (n_txt, embed) ->
        (n_img, n_txt, embed): its mean is the cosine, so a head on it generalises the cosine.

        The factor gives the entries the size of the cosine (about 1/embed each without it): a freshly
        initialised head then sees pairs differ (on flickr-dev at embed 256, unscaled, the initial scores of
        a batch spread by 2e-4 and 220 warm-up steps hardly lowered the hinge)."""
        return img_emb[:, None, :] * txt_emb[None, :, :] * self.embed_size

    def pair_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """(B, embed), (B, embed) -> (B, embed) scaled element-wise products of pairs (b, b)."""
        return img_emb * txt_emb * self.embed_size
