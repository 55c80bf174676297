"""IN2R: Intra-modal Neighbor-aware Noise Rectification ("Intra-Modal Neighbors Never Lie: Rectifying
Inter-Modal Noisy Correspondence via Graph-Based Intra-Modal Reasoning", ICML 2026; authors' code
github.com/liuyyy111/IN2R).

In plain words: two VSE-infinity networks A and B are trained. In the warm-up (one epoch by default)
each network sees every pair; the batch is encoded twice with different dropout masks, and a bounded
contrastive loss (cross-entropy plus reverse cross-entropy over a softmax at temperature 0.05) pulls
each image to its caption, and each image and each caption to its own second view. Then, every
epoch, the pairs are split as in NCR: each network's per-sample mean-negative hinge is fitted with a
two-component mixture, and a pair whose clean probability w exceeds 0.5 is clean. Network A trains
on B's split and B on A's (co-teaching), in one optimiser step per batch that sums:

- on a batch of clean pairs, the hardest-negative hinge (margin 0.2), and the hardest-negative
  hinge (margin 0.3) between two dropout views of the same images and of the same captions. The
  clean pairs that are surer than average (w above the mean w of the clean subset) are written,
  detached, into the training network's memory: a first-in first-out ring of (image, caption)
  embedding pairs;
- on a batch of noisy pairs drawn alongside, a rectified target instead of the unreliable partner:
  each noisy image looks up its k most similar *images* in the peer network's memory (neighbours
  within one modality are trusted more than a mismatched caption), takes the captions stored with
  them, and a small graph refiner (multi-head self-attention over the k neighbours, residual and
  layer norm, then their mean, L2-normalised) turns them into one soft caption prototype; the
  bounded contrastive loss between the noisy images and their prototypes, weighted 0.5, is added.
  Symmetrically, each noisy caption looks up its nearest memory captions and the images stored with
  them give a prototype image.

Evaluation averages the similarity matrices of both networks. As in the authors' co_train.py, the
warm-up runs before the epoch counter of the learning-rate step starts (``epoch_counting:
co_training``; ``train.epochs`` is the warm-up plus their ``num_epochs``).

As in the authors' code, network B starts as a copy of network A's weights (``init_b: copy``;
``independent`` builds each from its own random draws, as NCR's authors do), and ``train.grad_clip``
clips the gradient norm of the encoders only, not of the refiners (``clip_refiners: true`` clips
everything together).

Documented differences from the authors' code:

- The split statistic (NCR's per-sample mean-negative hinge) is computed on the stored features as
  they are: no region drop, no token augmentation, no batch-mean centring, in batches fixed by the
  run seed (``ctx.per_sample``), so a split does not depend on the loader's shuffling. The authors
  compute it in eval mode but with their training loader (shuffled, region drop and shuffle, token
  masking/replacement/deletion) and batch-centred embeddings (``eval_train`` in co_train.py on the
  ``warmup`` loader of data.py; ``forward_emb`` in vse.py), so their statistic is noisier from epoch
  to epoch. Their variant is not offered: the engine's per-sample pass has no augmentation.

- No batch-mean centring of the embeddings, in training or evaluation: evaluation does not depend on
  the composition of the test batches (the backbone computes every embedding on its own).
- The refiners (one per network and direction) are ordinary submodules from construction, so they
  are in the optimiser and in every checkpoint from epoch 0 (the authors add them to the optimiser
  on the first co-training call, so they are missing from saved optimiser state).
- Word vectors come from the configurable ``model.word_vectors`` file (any GloVe text file or
  ``.npy``), not from a hard-coded GloVe cache directory.
- The refiner's edge MLP, which the authors define but never call, is not built.
- The enqueue threshold and the w it is compared with come from the same split (the peer's, which
  the network is trained on); the authors compare the peer's w with the mean clean probability of
  the training network's own split.
- The memory is part of the resumable ``checkpoint.pt`` (a resumed run continues with the same
  memory, so it ends like an uninterrupted one) but not of ``best.safetensors``: evaluation never
  reads it. At the paper's sizes (2 networks x 65,536 pairs x 2 x 1024 floats) it adds 1 GiB to
  ``checkpoint.pt``.

Plug-in (ours): ``targets: consistency`` replaces the clean subset's fixed hinge margin by NCR's soft
margin of BiCro++'s consistency labels (:mod:`noisycorr.methods.consistency`), computed by the peer;
the noisy subset keeps IN2R's rectification.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from noisycorr.backbones.base import Backbone
from noisycorr.backbones.ops import l2norm
from noisycorr.data.dataset import PairBatch
from noisycorr.distributed import gather_rows
from noisycorr.errors import InputError
from noisycorr.losses import SOFT_MARGINS, rce_infonce_loss, soft_margin, triplet_loss
from noisycorr.methods.base import OptimizerSpec, Phase, StepOutput
from noisycorr.methods.consistency import ConsistencyLabeler, ConsistencyOptions
from noisycorr.methods.context import EpochContext
from noisycorr.methods.coteaching import CoTeachingMethod
from noisycorr.methods.memory import KNN_BACKENDS, PairMemory, import_faiss, nearest_neighbours
from noisycorr.registry import register_method
from noisycorr.selection import ESTIMATORS

__all__ = ["IN2R", "GraphRefiner", "PairMemory", "nearest_neighbours"]

INIT_B = ("copy", "independent")  # method.init_b: how network B's weights start



class GraphRefiner(nn.Module):
    """Turns k neighbour embeddings into one soft prototype by relational reasoning.

    The neighbours are the nodes of a complete graph: multi-head scaled dot-product self-attention
    (q/k/v projections, output projection), dropout, a residual connection and layer norm; then the
    mean over the nodes, L2-normalised.

    Args:
        dim: embedding size D (divisible by ``heads``).
        heads: attention heads.
        dropout: dropout on the attention output before the residual sum.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if heads < 1 or dim % heads:
            raise InputError("method.refiner_heads", f"a divisor of the embedding size {dim}", repr(heads))
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _per_head(self, x: Tensor) -> Tensor:
        """(B, k, D) -> (B, heads, k, D / heads)."""
        b, k, d = x.shape
        return x.reshape(b, k, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, neighbours: Tensor) -> Tensor:
        """(B, k, D) neighbour embeddings -> (B, D) unit prototypes."""
        b, k, d = neighbours.shape
        q, key, v = (self._per_head(proj(neighbours)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        attn = torch.softmax(q @ key.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)  # (B, h, k, k)
        mixed = (attn @ v).transpose(1, 2).reshape(b, k, d)
        nodes = self.norm(neighbours + self.dropout(self.out_proj(mixed)))
        return l2norm(nodes.mean(dim=1), dim=-1)


def mean_prototype(neighbours: Tensor) -> Tensor:
    """(B, k, D) -> (B, D): the L2-normalised mean of the neighbours (the refiner-free ablation)."""
    return l2norm(neighbours.mean(dim=1), dim=-1)


@register_method("in2r")
class IN2R(CoTeachingMethod):
    """Intra-modal neighbour-aware noise rectification: cross-model memory and graph-refined prototypes (ICML 2026)."""

    citation = (
        "Intra-Modal Neighbors Never Lie: Rectifying Inter-Modal Noisy Correspondence via Graph-Based "
        "Intra-Modal Reasoning. ICML 2026. https://github.com/liuyyy111/IN2R"
    )
    training_only_state = ("memory.", "labeler.")

    @dataclasses.dataclass
    class Config(ConsistencyOptions):
        margin: float = 0.2  # hardest-negative hinge on the clean subset (and the split statistic)
        intra_margin: float = 0.3  # hinge between two dropout views of the same images / captions
        temperature: float = 0.05  # of the contrastive (CE + reverse CE) losses
        warmup_epochs: int = 1  # contrastive warm-up on all pairs, each network alone
        # co_training: the lr step counts the epochs after the warm-up, as the authors' co_train.py
        # (train.epochs = warm-up + their num_epochs); run: it counts from the run's epoch 0
        epoch_counting: str = "co_training"
        k: int = 5  # memory neighbours per noisy sample
        i2t: bool = True  # rectify noisy images (caption prototypes)
        t2i: bool = True  # rectify noisy captions (image prototypes)
        queue_size: int = 65536  # pairs kept in each network's memory
        refiner_heads: int = 4
        refiner_dropout: float = 0.1
        refiner: bool = True  # False: the prototype is the plain normalised mean of the k neighbours
        estimator: str = "gmm"  # clean-probability estimator: gmm (NCR) or bmm
        monotone: bool = True  # clean probability made non-increasing in the loss; False: the raw posterior
        p_threshold: float = 0.5  # clean if the clean probability is above this
        min_noisy_fraction: float = 0.01  # when everything looks clean, the least clean 1 % is called noisy
        knn_backend: str = "torch"  # torch (matrix products) | faiss (optional extra)
        pass_batch_size: int | None = None  # per-sample pass batch (default: the training batch size)
        rectify_weight: float = 0.5  # weight of each direction's rectification loss (authors' value)
        targets: str = "hinge"  # hinge (IN2R) | consistency: BiCro++'s soft labels set the clean hinge's margins
        soft_margin: str = "exponential"  # with targets: consistency, NCR's margin function of the label
        init_b: str = "copy"  # copy: network B starts as A's weights (authors' co_train.py) | independent
        clip_refiners: bool = False  # False: train.grad_clip covers the encoders only (authors); True: all

    knn_chunk = 16384  # memory rows per block of the torch neighbour search

    def __init__(self, cfg: Config, build_backbone: Callable[[], Backbone]):
        if cfg.knn_backend not in KNN_BACKENDS:
            raise InputError("method.knn_backend", f"one of {list(KNN_BACKENDS)}", repr(cfg.knn_backend))
        if cfg.knn_backend == "faiss":
            import_faiss()
        if cfg.estimator not in ESTIMATORS:
            raise InputError("method.estimator", f"one of {list(ESTIMATORS)}", repr(cfg.estimator))
        if cfg.k < 1 or cfg.queue_size < cfg.k:
            raise InputError("method.k", f"1 <= k <= queue_size ({cfg.queue_size})", repr(cfg.k))
        if cfg.targets not in ("hinge", "consistency"):
            raise InputError("method.targets", "one of ['hinge', 'consistency']", repr(cfg.targets))
        if cfg.soft_margin not in SOFT_MARGINS:
            raise InputError("method.soft_margin", f"one of {sorted(SOFT_MARGINS)}", repr(cfg.soft_margin))
        if cfg.init_b not in INIT_B:
            raise InputError("method.init_b", f"one of {list(INIT_B)}", repr(cfg.init_b))
        super().__init__(cfg, build_backbone)
        if cfg.init_b == "copy":  # B is still built (same random draws either way), then takes A's weights
            self.net_b.load_state_dict(self.net_a.state_dict())
        if cfg.targets == "consistency":
            self.labeler = ConsistencyLabeler(cfg)
        dim = getattr(self.net_a, "embed_size", None)
        if not isinstance(dim, int):
            raise InputError(
                "model.backbone", "a backbone with (B, D) unit embeddings and cosine scores (vse, global)",
                type(self.net_a).__name__,
            )
        self.memory = nn.ModuleDict({name: PairMemory(cfg.queue_size, dim) for name in ("A", "B")})
        directions = [d for d in ("i2t", "t2i") if getattr(cfg, d)]
        self.refiners = nn.ModuleDict(
            {
                f"{name}_{d}": GraphRefiner(dim, cfg.refiner_heads, cfg.refiner_dropout)
                for name in ("A", "B")
                for d in directions
            }
            if cfg.refiner
            else {}
        )
        # Per training network: its enqueue threshold this epoch (the mean w of the subset it trains on).
        self._enqueue_threshold: dict[str, float] = {}

    def optimizer_specs(self) -> list[OptimizerSpec]:
        """One optimiser over every parameter; the refiners are left out of gradient clipping unless
        ``clip_refiners`` (the authors clip ``net.params``, the two encoders, only)."""
        (spec,) = super().optimizer_specs()
        if not self.cfg.clip_refiners:
            spec.unclipped = [p for p in self.refiners.parameters() if p.requires_grad]
        return [spec]

    # ---------------------------------------------------------------- epoch hooks

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        logs = {f"memory_{name}": float(len(mem)) for name, mem in self.memory.items()}
        if epoch < self.cfg.warmup_epochs:
            self.selections = {}
            return {"warmup": 1.0, **logs}
        logs.update({"warmup": 0.0, **self.fit_selections(ctx)})
        for name in ("A", "B"):
            split = self.selections[self.peer(name)]
            clean_prob = split.prob[split.clean]
            self._enqueue_threshold[name] = float(clean_prob.mean()) if clean_prob.size else 0.0
            logs[f"enqueue_threshold_{name}"] = self._enqueue_threshold[name]
        return logs

    def epoch_phases(self, epoch: int) -> list[Phase]:
        """Warm-up: each network on all pairs. Then network X trains on its peer's clean split with
        the peer's noisy split alongside, from the first co-training epoch on."""
        if self.in_warmup(epoch):
            return [Phase("A"), Phase("B")]
        return self.peer_phases(with_side=True)

    # ---------------------------------------------------------------- training

    @staticmethod
    def _two_views(net: Backbone, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Two forward passes (different dropout masks in training mode): img1, txt1, img2, txt2 (B, D)."""
        img1 = net.encode_images(batch.images)
        txt1 = net.encode_texts(batch.tokens, batch.lengths)
        img2 = net.encode_images(batch.images)
        txt2 = net.encode_texts(batch.tokens, batch.lengths)
        return img1, txt1, img2, txt2

    def prototypes(self, name: str, direction: str, queries: Tensor) -> Tensor | None:
        """Soft targets for noisy embeddings from the peer of network ``name``'s memory.

        ``i2t``: (B, D) image queries -> nearest memory images -> their captions -> (B, D) caption
        prototypes. ``t2i``: caption queries -> nearest memory captions -> their images. None while
        the peer's memory holds fewer than k pairs.
        """
        memory = self.memory[self.peer(name)]
        if len(memory) < self.cfg.k:
            return None
        mem_img, mem_txt = memory.contents()
        keys, values = (mem_img, mem_txt) if direction == "i2t" else (mem_txt, mem_img)
        idx = nearest_neighbours(queries, keys, self.cfg.k, chunk=self.knn_chunk, backend=self.cfg.knn_backend)
        neighbours = values[idx].to(queries.dtype)  # (B, k, D)
        if not self.cfg.refiner:
            return mean_prototype(neighbours)
        return self.refiners[f"{name}_{direction}"](neighbours)

    def training_step(
        self, batch: PairBatch, epoch: int, *, phase: str = "A", streams: Mapping[str, PairBatch] | None = None,
        control: None = None,
    ) -> StepOutput:
        net = self.nets()[phase]
        side = (streams or {}).get("noisy")
        tau = self.cfg.temperature
        img1, txt1, img2, txt2 = self._two_views(net, batch)
        if self.in_warmup(epoch):
            losses = {
                "warmup": rce_infonce_loss(img1 @ txt1.t(), tau),
                "warmup_intra": rce_infonce_loss(img1 @ img2.t(), tau) + rce_infonce_loss(txt1 @ txt2.t(), tau),
            }
            return losses, {}

        margin: float | Tensor = self.cfg.margin
        if self.cfg.targets == "consistency":
            y, _, _ = self.consistency_targets(phase, batch)
            margin = soft_margin(y, self.cfg.margin, self.cfg.soft_margin)
        losses = {
            "clean": triplet_loss(img1 @ txt1.t(), margin, hardest=True),
            "intra": triplet_loss(img1 @ img2.t(), self.cfg.intra_margin, hardest=True)
            + triplet_loss(txt1 @ txt2.t(), self.cfg.intra_margin, hardest=True),
        }
        w = self._peer_prob[self.peer(phase)][batch.index.cpu()]
        sure = (w > self._enqueue_threshold[phase]).to(img1.device)
        # Every rank stores the whole global batch's sure pairs, in one-process order.
        self.memory[phase].push(gather_rows(img1[sure].detach()), gather_rows(txt1[sure].detach()))
        logs = {"enqueued": float(sure.float().mean())}

        if side is not None and len(side) > 1:
            img_u = net.encode_images(side.images)
            txt_u = net.encode_texts(side.tokens, side.lengths)
            for direction, query in (("i2t", img_u), ("t2i", txt_u)):
                if not getattr(self.cfg, direction):
                    continue
                target = self.prototypes(phase, direction, query.detach())
                if target is not None:
                    losses[f"rect_{direction}"] = self.cfg.rectify_weight * rce_infonce_loss(query @ target.t(), tau)
        return losses, logs
