"""Training methods register themselves on import."""

from noisycorr.methods.base import Method
from noisycorr.methods.vanilla import Vanilla

__all__ = ["Method", "Vanilla"]
