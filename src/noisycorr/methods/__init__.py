"""Training methods register themselves on import."""

from noisycorr.methods.base import Method, Phase
from noisycorr.methods.in2r import IN2R
from noisycorr.methods.ncr import NCR
from noisycorr.methods.vanilla import Vanilla

__all__ = ["IN2R", "NCR", "Method", "Phase", "Vanilla"]
from noisycorr.methods.ce import CrossEntropy  # noqa: E402  (labelled task)
from noisycorr.methods.labeled_base import LabelMethod  # noqa: E402
from noisycorr.methods.mrl import MRL  # noqa: E402
from noisycorr.methods.nirnl import NIRNL  # noqa: E402

__all__ += ["CrossEntropy", "LabelMethod", "MRL", "NIRNL"]
