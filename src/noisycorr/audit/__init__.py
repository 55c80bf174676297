"""Pair audit: turn per-pair quality scores into decisions, reports and a cleaned dataset copy.

A score is the model's estimated probability that a training pair (caption k with image row
``caption_image[k]``) is a true match: 1 = surely clean, 0 = surely mismatched, as cleanlab's label
quality scores.

- :mod:`noisycorr.audit.scores`: array functions. ``pair_scores_from_losses`` turns per-pair losses
  into scores; ``find_mismatched_pairs`` flags suspected mismatches; ``rank_pairs`` ranks every pair.
- :mod:`noisycorr.audit.report`: ``write_audit`` writes ``pairs.csv``, ``scores.png``, ``report.md``,
  ``report.html`` and ``summary.json``.
- ``write_clean_copy`` (from :mod:`noisycorr.data.cleancopy`) writes a copy of a precomp dataset
  without the suspicious pairs.
"""

from noisycorr.audit.report import write_audit
from noisycorr.audit.scores import find_mismatched_pairs, pair_scores_from_losses, rank_pairs
from noisycorr.data.cleancopy import write_clean_copy

__all__ = ["find_mismatched_pairs", "pair_scores_from_losses", "rank_pairs", "write_audit", "write_clean_copy"]
