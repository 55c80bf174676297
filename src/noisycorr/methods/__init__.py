"""Training methods (they register themselves on import) and the contract they follow.

A new method's author starts with :mod:`noisycorr.methods.base` (the contract) and
:mod:`noisycorr.methods.context` (what the engine offers a method).
"""

from noisycorr.methods.base import Method, OptimizerSpec, Phase, Update
from noisycorr.methods.bicro import BiCro, BiCroPP
from noisycorr.methods.ce import CrossEntropy
from noisycorr.methods.context import EpochContext, LabelEpochContext, PairEpochContext, StepControl
from noisycorr.methods.d2s import D2S, D2SNCR
from noisycorr.methods.in2r import IN2R
from noisycorr.methods.labeled_base import LabelMethod
from noisycorr.methods.mrl import MRL
from noisycorr.methods.mscn import MSCN
from noisycorr.methods.ncr import NCR
from noisycorr.methods.nirnl import NIRNL
from noisycorr.methods.pcsr import PCSR
from noisycorr.methods.vanilla import Vanilla

__all__ = [
    "BiCro",
    "BiCroPP",
    "IN2R",
    "MRL",
    "MSCN",
    "NCR",
    "NIRNL",
    "PCSR",
    "D2S",
    "D2SNCR",
    "CrossEntropy",
    "EpochContext",
    "LabelEpochContext",
    "LabelMethod",
    "Method",
    "OptimizerSpec",
    "PairEpochContext",
    "Phase",
    "StepControl",
    "Update",
    "Vanilla",
]
