"""BiCro and BiCro++: soft correspondence labels from bidirectional similarity consistency.

BiCro (Yang et al., CVPR 2023) is NCR's two-network co-teaching with three changes, all options of
:class:`~noisycorr.methods.ncr.NCR` set here as defaults: the warm-up trains each network on the 30 %
lowest-loss pairs of every batch (``warmup_rate``); the split is a Beta mixture on the normalised
per-sample losses with its raw posterior (``estimator: bmm``, ``monotone: false``); and the targets
of both subsets are the bidirectional consistency labels of :mod:`noisycorr.methods.consistency`
(``targets: consistency``), computed by the peer network from the anchors of each clean batch, and
used as NCR's exponential soft margin in the hardest-negative hinge. The Beta-mixture probability
itself enters no target. The noisy subset joins from mid-training on (``noisy_start``).

BiCro++ (Yang et al., TPAMI 2026) adds diagonal-dominance purification of the anchors and the
hybrid (instance + codebook) consistency: see :mod:`noisycorr.methods.consistency` for our reading
of the abstract, the only public description.

Differences from the BiCro authors' code (xu5zhao/BiCro @0231631):

- Their ``scatter_`` writes the i-th label of the batch to the i-th *noisy-index position*, so the
  labels of non-anchor clean pairs land on other pairs; here each label lands on its own pair.
- With 1-D labels their caption-retrieval hinge uses the *negative's* soft margin; here pair i's
  margin applies in both directions where pair i is the positive (as in our NCR).
- The per-sample hinge averages over the B - 1 negatives (theirs over B with the zeroed diagonal),
  and a non-positive cosine counts as no consistency (theirs can give a negative ratio).
"""

from __future__ import annotations

import dataclasses

from noisycorr.methods.ncr import NCR
from noisycorr.registry import register_method

BICRO_CITATION = (
    "Yang et al. BiCro: Noisy Correspondence Rectification for Multi-modality "
    "Data via Bi-directional Cross-modal Similarity Consistency. CVPR 2023."
)


@register_method("bicro")
class BiCro(NCR):
    """BiCro: co-teaching, Beta-mixture splits, bidirectional-consistency soft labels (Yang et al., CVPR 2023)."""

    citation = BICRO_CITATION
    training_only_state = ("labeler.",)

    @dataclasses.dataclass
    class Config(NCR.Config):
        warmup_epochs: int = 10  # the authors' scripts, every dataset
        warmup_rate: float = 0.3
        estimator: str = "bmm"
        monotone: bool = False  # the raw Beta-mixture posterior, as the authors
        targets: str = "consistency"
        purify: bool = False
        codebook_size: int = 0
        codebook_weight: float = 0.0


@register_method("bicropp")
class BiCroPP(BiCro):
    """BiCro++: BiCro with diagonal-dominance anchor purification and hybrid codebook consistency (TPAMI'26)."""

    citation = (
        "Yang, Long, Wei, Xie, Yao, Xu, Nie. Noisy Correspondence Rectification in Multimodal Clustering Space "
        "for Cross-Modal Matching (BiCro++). IEEE TPAMI 48(4):4657-4672, 2026."
    )

    @dataclasses.dataclass
    class Config(BiCro.Config):
        purify: bool = True
        codebook_size: int = 64
        codebook_weight: float = 0.5
