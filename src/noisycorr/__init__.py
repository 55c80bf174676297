"""noisycorr: noise-robust image-text retrieval.

The public entry points; subpackages (``noisycorr.data``, ``noisycorr.eval``, ``noisycorr.backbones``,
``noisycorr.methods``) hold the parts.
"""

from noisycorr.api import find_mismatched_pairs, get_pair_quality_scores, rank_pairs
from noisycorr.config import Config, load_config
from noisycorr.engine.runs import evaluate_run, load_run
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError
from noisycorr.factory import create_backbone, create_method, list_backbones, list_methods
from noisycorr.registry import register_backbone, register_method

__version__ = "0.1.0"

__all__ = [
    "Config",
    "InputError",
    "create_backbone",
    "create_method",
    "evaluate_run",
    "find_mismatched_pairs",
    "get_pair_quality_scores",
    "list_backbones",
    "list_methods",
    "load_config",
    "load_run",
    "rank_pairs",
    "register_backbone",
    "register_method",
    "train",
]
