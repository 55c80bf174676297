"""NCR: Noisy Correspondence Rectifier (Huang et al., "Learning with Noisy Correspondence for
Cross-modal Matching", NeurIPS 2021).

In plain words: two networks A and B are first warmed up on every pair with the hinge loss averaged
over all in-batch negatives, which fits clean pairs before noisy ones. Then, every epoch, each
network's per-sample losses are fitted with a two-component mixture; the low-loss component's
posterior w is the probability that a pair is clean, and w > 0.5 splits the data into a clean and
a noisy subset. Each network trains on the split made by its peer (co-teaching). The targets are
rectified: a clean pair's target is ``w + (1 - w) * p``, with p the training network's own matching
confidence; a noisy pair's target is the mean confidence of both networks. A target y scales the
margin of the hardest-negative hinge (soft margin ``m * s(y)``), so a doubtful pair is pushed
less. Noisy pairs join the training from mid-training on. Evaluation averages both networks.
``negatives: mean`` (not the authors') averages the co-training hinge over the batch's negatives
instead: after a short warm-up on small data the hardest-negative hinge can undo the warm-up (README,
BiCro and MSCN); the flickr-dev BiCro presets use it.

Epochs are counted as the authors do (``epoch_counting: co_training``): ``train.epochs`` is the
warm-up plus their ``num_epochs``, and the learning-rate step and the noisy subset's start
(``noisy_start`` x the co-training epochs, their ``epoch >= num_epochs // 2``) count the epochs
after the warm-up (:class:`~noisycorr.methods.coteaching.CoTeachingMethod`).

With ``targets: consistency`` the rectified targets are replaced by BiCro's bidirectional
consistency labels (:mod:`noisycorr.methods.consistency`; with the default options, BiCro++'s
purified anchors and hybrid codebook level): the plug-in mode in which BiCro++ drives NCR's
soft-margin loss. ``warmup_rate`` < 1 trains the warm-up on the lowest-loss share of each batch.

Difference from the authors' code: there the clean target has shape (B, 1) and the prediction
(B,), so the target broadcasts to a (B, B) matrix and the margin of cell (i, j) mixes pair i's
probability with pair j's prediction; the noisy target has shape (B, 1), so in the text-to-image
direction (anchor caption j, negative image i) the margin is that of the *negative* image's pair i
(model.py ContrastiveLoss.forward:484-486, co_train.py:252 and 259-261 at 60256ba). Here, by default
(``margin_of: pair``), the target is per pair, as the paper describes: pair i's margin is
``m * s(y_i)`` in both retrieval directions where pair i is the positive. ``margin_of: authors``
reproduces the authors' broadcasts: cell (i, j) of the clean hinge has margin
``m * s(w_i + (1 - w_i) p_j)``, cell (i, j) of the noisy hinge ``m * s(y_i)``, in both directions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor

from noisycorr.backbones.base import Backbone
from noisycorr.data.dataset import PairBatch
from noisycorr.errors import InputError
from noisycorr.losses import NEGATIVES, SOFT_MARGINS, match_confidence, soft_margin, triplet_loss
from noisycorr.methods.base import Phase, StepOutput
from noisycorr.methods.consistency import ConsistencyLabeler, ConsistencyOptions
from noisycorr.methods.context import EpochContext
from noisycorr.methods.coteaching import CoTeachingMethod
from noisycorr.registry import register_method

TARGETS = ("rectified", "consistency")
MARGIN_OF = ("pair", "authors")
CONFIDENCE_FROM = ("eval_pass", "forward")


def warmup_loss(scores: Tensor, margin: float, rate: float = 1.0) -> Tensor:
    """Mean-negative hinge summed over the ``max(1, floor(B * rate))`` pairs of lowest loss (all when rate is 1).

    Args:
        scores: (B, B) similarities, positives on the diagonal.
    """
    per_pair = triplet_loss(scores, margin, hardest=False, reduction="none")
    if rate >= 1.0:
        return per_pair.sum()
    k = max(1, int(scores.shape[0] * rate))
    return per_pair.topk(k, largest=False).values.sum()


@register_method("ncr")
class NCR(CoTeachingMethod):
    """Noisy Correspondence Rectifier: co-teaching with GMM splits and soft margins (Huang et al., NeurIPS 2021)."""

    citation = (
        "Huang, Niu, Peng, Xu, Zhou, Peng. Learning with Noisy Correspondence for Cross-modal Matching. NeurIPS 2021."
    )

    @dataclasses.dataclass
    class Config(ConsistencyOptions):
        margin: float = 0.2
        warmup_epochs: int = 5  # mean-negative hinge on all pairs, each network alone
        warmup_rate: float = 1.0  # share of each warm-up batch trained on, lowest mean hinge first (BiCro: 0.3)
        targets: str = "rectified"  # rectified (NCR) | consistency (BiCro / BiCro++ labels; options below)
        estimator: str = "gmm"  # clean-probability estimator: gmm (NCR) or bmm (BiCro's Beta mixture)
        monotone: bool = True  # clean probability made non-increasing in the loss; False: NCR's raw posterior
        p_threshold: float = 0.5  # clean if the clean probability is above this
        min_noisy_fraction: float = 0.01  # when everything looks clean, the least clean 1 % is called noisy
        soft_margin: str = "exponential"  # exponential | linear | sine
        margin_of: str = "pair"  # pair (each positive pair's own margin) | authors (their broadcasts, see above)
        negatives: str = "hardest"  # after the warm-up: hardest (the authors') | mean over the batch's negatives
        # eval_pass: the training network's confidence p from a no-grad eval-mode pass, as the authors' predict;
        # forward: from the training forward's own (detached) scores, one batch similarity per network and batch
        # instead of two -- the same p when train and eval mode agree (no dropout, no batch norm), else close
        confidence_from: str = "eval_pass"
        noisy_start: float = 0.5  # the noisy subset joins at this fraction of the co-training epochs; 1.0 = never
        # co_training: the lr schedule and noisy_start count the epochs after the warm-up, as the authors'
        # co_train.py (train.epochs = warm-up + their num_epochs); run: both count from the run's epoch 0
        epoch_counting: str = "co_training"
        pass_batch_size: int | None = None  # per-sample pass batch (default: the training batch size)
        confidence_top_fraction: float = 0.1  # p is divided by the mean of the top floor(B * this) + 1 values

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        if not 0.0 <= cfg.confidence_top_fraction <= 1.0:
            raise InputError("method.confidence_top_fraction", "a value in [0, 1]", repr(cfg.confidence_top_fraction))
        if cfg.soft_margin not in SOFT_MARGINS:
            raise InputError("method.soft_margin", f"one of {sorted(SOFT_MARGINS)}", repr(cfg.soft_margin))
        if cfg.margin_of not in MARGIN_OF:
            raise InputError("method.margin_of", f"one of {list(MARGIN_OF)}", repr(cfg.margin_of))
        if cfg.margin_of == "authors" and cfg.targets != "rectified":
            expected = "pair with targets: consistency (authors is NCR's rectified loss)"
            raise InputError("method.margin_of", expected, repr(cfg.margin_of))
        if cfg.negatives not in NEGATIVES:
            raise InputError("method.negatives", f"one of {list(NEGATIVES)}", repr(cfg.negatives))
        if cfg.targets not in TARGETS:
            raise InputError("method.targets", f"one of {list(TARGETS)}", repr(cfg.targets))
        if cfg.confidence_from not in CONFIDENCE_FROM:
            raise InputError("method.confidence_from", f"one of {list(CONFIDENCE_FROM)}", repr(cfg.confidence_from))
        if not 0.0 < cfg.warmup_rate <= 1.0:
            raise InputError("method.warmup_rate", "a value in (0, 1]", repr(cfg.warmup_rate))
        super().__init__(cfg, build_backbone)
        if cfg.targets == "consistency":
            self.labeler = ConsistencyLabeler(cfg)
        self.noisy_from_epoch = 0

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        self.noisy_from_epoch = self.epoch_at(self.cfg.noisy_start, ctx.epochs)
        if epoch < self.cfg.warmup_epochs:
            self.selections = {}
            return {"warmup": 1.0}
        return {"warmup": 0.0, **self.fit_selections(ctx)}

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """Warm-up: each network on all pairs. Then network X trains on its peer's clean split,
        with the peer's noisy split alongside from ``noisy_start`` on."""
        if self.in_warmup(epoch):
            return [Phase("A"), Phase("B")]
        return self.peer_phases(with_side=epoch >= self.noisy_from_epoch)

    def _scores(self, net: Backbone, batch: PairBatch) -> Tensor:
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        return net.similarity(img, txt, batch.lengths)

    @torch.no_grad()
    def predict(self, net: Backbone, batch: PairBatch) -> Tensor:
        """(B,) the network's confidence that each pair of the batch matches (eval mode)."""
        was = net.training
        net.eval()
        try:
            return match_confidence(self._scores(net, batch), self.cfg.margin, self.cfg.confidence_top_fraction)
        finally:
            net.train(was)

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "A", streams: Mapping[str, PairBatch] | None = None,
        control: None = None,
    ) -> Iterator[StepOutput]:
        net = self.nets()[phase]
        side = (streams or {}).get("noisy")
        if self.in_warmup(epoch):
            loss = warmup_loss(self._scores(net, batch), self.cfg.margin, self.cfg.warmup_rate)
            yield {f"warmup_{phase}": loss}, {}
            return
        if self.cfg.targets == "consistency":
            yield from self._consistency_step(net, phase, batch, side if self._side_on(side, epoch) else None)
            return
        peer = self.nets()[self.peer(phase)]
        w = self._peer_prob[self.peer(phase)][batch.index.cpu()].to(batch.images.device)
        scores, p = self._scores_and_confidence(net, batch)
        target = w + (1.0 - w) * p
        authors = self.cfg.margin_of == "authors"
        cell = w[:, None] + (1.0 - w[:, None]) * p[None, :] if authors else target  # (B, B): the authors'
        margin = soft_margin(cell, self.cfg.margin, self.cfg.soft_margin)
        loss = self._hinge(scores, margin)
        yield {"clean": loss}, {"target_clean": float(target.mean())}
        if self._side_on(side, epoch):
            scores_u, p_u = self._scores_and_confidence(net, side)
            target_u = (p_u + self.predict(peer, side)) / 2
            margin_u = soft_margin(target_u, self.cfg.margin, self.cfg.soft_margin)
            if authors:  # row i's margin in every cell: the negative image's in the caption-anchor direction
                margin_u = margin_u[:, None].expand(-1, margin_u.shape[0])
            loss_u = self._hinge(scores_u, margin_u)
            yield {"noisy": loss_u}, {"target_noisy": float(target_u.mean())}

    def _scores_and_confidence(self, net: Backbone, batch: PairBatch) -> tuple[Tensor, Tensor]:
        """The training forward's (B, B) scores and the network's (B,) confidence p in each pair
        (``confidence_from``: a separate eval-mode pass, or the detached scores themselves)."""
        if self.cfg.confidence_from == "forward":
            scores = self._scores(net, batch)
            p = match_confidence(scores.detach(), self.cfg.margin, self.cfg.confidence_top_fraction)
            return scores, p
        p = self.predict(net, batch)
        return self._scores(net, batch), p

    def _hinge(self, scores: Tensor, margin: Tensor) -> Tensor:
        """The co-training hinge of (B, B) scores with soft margins: hardest or mean negative (``negatives``)."""
        return triplet_loss(scores, margin, hardest=self.cfg.negatives == "hardest")

    def _side_on(self, side: PairBatch | None, epoch: int) -> bool:
        return side is not None and epoch >= self.noisy_from_epoch and len(side) > 1

    def _consistency_step(
        self, net: Backbone, phase: str, batch: PairBatch, side: PairBatch | None
    ) -> Iterator[StepOutput]:
        """Both subsets' labels from the peer before either update, then the noisy and the clean step
        (the authors' order)."""
        y, y_side, anchors = self.consistency_targets(phase, batch, side)
        if side is not None and y_side is not None:
            margin_u = soft_margin(y_side, self.cfg.margin, self.cfg.soft_margin)
            loss_u = self._hinge(self._scores(net, side), margin_u)
            yield {"noisy": loss_u}, {"target_noisy": float(y_side.mean())}
        margin = soft_margin(y, self.cfg.margin, self.cfg.soft_margin)
        loss = self._hinge(self._scores(net, batch), margin)
        yield {"clean": loss}, {
            "target_clean": float(y.mean()),
            "target_zero": float((y == 0).float().mean()),
            "anchors": float(anchors.sum()),
        }
