"""Backbones register themselves on import."""

from noisycorr.backbones import pooled, sgraf, vse  # noqa: F401  (run the @register_backbone decorators)
from noisycorr.backbones.base import Backbone, similarity_matrix
from noisycorr.backbones.pooled import GlobalMLP
from noisycorr.backbones.sgraf import SGRAF
from noisycorr.backbones.text import BiGRUTextEncoder, load_word_vectors
from noisycorr.backbones.vse import VSE

__all__ = [
    "SGRAF",
    "VSE",
    "Backbone",
    "BiGRUTextEncoder",
    "GlobalMLP",
    "load_word_vectors",
    "similarity_matrix",
]
