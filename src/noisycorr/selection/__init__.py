"""Per-sample clean-probability estimators (GMM, Beta mixture) and the clean/noisy split."""

from noisycorr.selection.mixtures import (
    ESTIMATORS,
    BetaMixture1D,
    Selection,
    bmm_clean_probability,
    clean_probability,
    gmm_clean_probability,
    minmax_normalise,
    monotone_in_loss,
    split_clean,
)

__all__ = [
    "ESTIMATORS",
    "BetaMixture1D",
    "Selection",
    "bmm_clean_probability",
    "clean_probability",
    "gmm_clean_probability",
    "minmax_normalise",
    "monotone_in_loss",
    "split_clean",
]
