"""Evaluation: retrieval ranks and metrics, and the standard test protocols."""

from noisycorr.eval.detection import detection_metrics, precision_at_top, roc_points
from noisycorr.eval.protocols import PROTOCOLS, Protocol, SimsFn, evaluate_protocol
from noisycorr.eval.retrieval import average_similarities, i2t_ranks, retrieval_metrics, t2i_ranks

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "SimsFn",
    "average_similarities",
    "detection_metrics",
    "evaluate_protocol",
    "i2t_ranks",
    "precision_at_top",
    "retrieval_metrics",
    "roc_points",
    "t2i_ranks",
]
