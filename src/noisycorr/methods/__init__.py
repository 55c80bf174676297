"""Training methods register themselves on import."""

from noisycorr.methods.base import Method, Phase
from noisycorr.methods.ncr import NCR
from noisycorr.methods.vanilla import Vanilla

__all__ = ["NCR", "Method", "Phase", "Vanilla"]
