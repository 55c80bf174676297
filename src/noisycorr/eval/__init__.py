"""Evaluation: retrieval ranks and metrics, and the standard test protocols."""

from noisycorr.eval.protocols import PROTOCOLS, Protocol, SimsFn, evaluate_protocol
from noisycorr.eval.retrieval import average_similarities, i2t_ranks, retrieval_metrics, t2i_ranks

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "SimsFn",
    "average_similarities",
    "evaluate_protocol",
    "i2t_ranks",
    "retrieval_metrics",
    "t2i_ranks",
]
