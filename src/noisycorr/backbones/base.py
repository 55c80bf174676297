"""The contract every backbone follows: embed images, embed captions, score them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from noisycorr.backbones.ops import length_mask, masked_mean


@dataclass
class ModelConfig:
    """The ``model`` section: ``backbone`` names a registered backbone, every other key is an option of it.

    Each backbone declares its options as a nested ``Config`` dataclass subclassing this one, and a run's
    ``cfg.model`` is an instance of it (see :func:`noisycorr.config.model_config`), so the section stays
    flat in YAML. A key the chosen backbone lacks is an error, also when ``--set model.backbone=...``
    switches away from a preset that set it; ``model.KEY=null`` removes such a key.
    """

    backbone: str = "vse"  # a registered backbone: vse | sgraf | global | a plug-in


@dataclass
class TextBackboneConfig(ModelConfig):
    """The options of the built-in backbones' caption side and embedding (a base for their ``Config``)."""

    embed_size: int = 1024
    word_dim: int = 300
    word_vectors: str | None = None  # GloVe text file, or .npy with a word list beside it
    text_layers: int = 1
    dropout: float = 0.0


class Backbone(nn.Module):
    """Embeds images and captions and scores every image against every caption.

    A backbone has no optimizer, no loss and no device logic.

    Attributes:
        image_input: ``"regions"`` for (B, R, D) region features, ``"pooled"`` for (B, D).
        Config: the dataclass of every option the user sets in the ``model`` section, a subclass of
            :class:`ModelConfig` whose fields are keyword arguments of ``__init__``.
    """

    image_input: ClassVar[str] = "regions"
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        *,
        vocab_size: int,
        image_shape: tuple[int, ...],
        word_vectors: Tensor | None = None,
    ) -> Backbone:
        """Build the backbone from its ``model`` section and the sizes the data dictates.

        Args:
            cfg: an instance of ``cls.Config``.
            vocab_size: number of token ids.
            image_shape: one image's features, (R, D) regions or (D,) pooled.
            word_vectors: (vocab_size, word_dim) initial word embedding, loaded from the file that
                ``cfg.word_vectors`` names; None for a random one.
        """
        if not isinstance(cfg, cls.Config):
            raise TypeError(f"{cls.__name__}.from_config needs a {cls.__name__}.Config, got {type(cfg).__name__}")
        options = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "backbone"}
        if "word_vectors" in options:  # the config holds the file's path, the constructor the matrix
            options["word_vectors"] = word_vectors
        elif word_vectors is not None:
            raise TypeError(f"{cls.__name__} takes no word_vectors")
        return cls(vocab_size=vocab_size, **cls.data_arguments(image_shape), **options)

    @classmethod
    def data_arguments(cls, image_shape: tuple[int, ...]) -> dict[str, Any]:
        """Constructor arguments read off one image's feature shape (default: ``img_dim``, the last size)."""
        return {"img_dim": int(image_shape[-1])}

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, R, D) or (B, D) features -> image embedding (B, ...)."""
        raise NotImplementedError

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids padded with 0, (B,) lengths -> caption embedding (B, ...)."""
        raise NotImplementedError

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """Score every image against every caption: (n_img, ...), (n_txt, ...) -> (n_img, n_txt)."""
        raise NotImplementedError

    @property
    def vector_dim(self) -> int:
        """Size S of the similarity representation (:meth:`similarity_vectors`); 0 when there is none."""
        return 0

    def similarity_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """The representation of every (image, caption) pair the score is read from, before the score head:
        (n_img, ...), (n_txt, ...) -> (n_img, n_txt, S). A learned head on it (MSCN's meta-net) can replace
        the backbone's own. Backbones without one raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} exposes no similarity representation")

    def pair_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """The representation of pairs (image b, caption b) only: (B, ...), (B, ...) -> (B, S), the diagonal
        of :meth:`similarity_vectors` without the other pairs' cost."""
        raise NotImplementedError(f"{type(self).__name__} exposes no similarity representation")

    def global_embeddings(
        self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One vector per image and per caption from ``encode_*`` outputs: (B, D) each.

        (B, D) embeddings are returned as they are; (B, R, D) regions are averaged, (B, L, D) words
        averaged over the first ``txt_lengths[b]`` positions (BiCro's global features).
        """
        img = img_emb.mean(1) if img_emb.dim() == 3 else img_emb
        if txt_emb.dim() == 3:
            n = txt_emb.shape[1]
            lengths = txt_lengths if txt_lengths is not None else torch.full((txt_emb.shape[0],), n)
            txt = masked_mean(txt_emb, length_mask(lengths.to(txt_emb.device), n))
        else:
            txt = txt_emb
        return img, txt


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
