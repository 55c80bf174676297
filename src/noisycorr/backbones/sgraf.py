"""SGRAF backbone (Diao et al., "Similarity Reasoning and Filtration for Image-Text Matching", AAAI 2021),
the shared backbone of NCR, DECL, RCL, BiCro, MSCN and L2RM.

Images are L2-normalised region vectors, captions L2-normalised BiGRU word vectors. For every
(image, caption) pair the score is built from similarity *vectors*:
- a global one, from self-attended image and caption vectors: ``l2norm(W_glo (img_glo - cap_glo)^2)``;
- one per word, from text-to-image attention (SCAN, smoothing lambda):
  ``l2norm(W_loc (attended_regions - word)^2)``.
The head reasons over these nodes -- SGR: a few steps of graph reasoning, read the global node; SAF:
attention filtration (weighted sum) -- and ``sigmoid(Linear)`` gives a score in (0, 1).

Unlike the research code, which loops over captions, a whole (images x captions) block is one batched
computation with padded words masked. Memory per block is dominated by a few tensors of
``n_img * n_txt * L * embed_size`` floats; ``chunk_elems`` bounds that product, so ``similarity`` splits
large requests into sub-blocks (captions grouped by length, so short captions carry little padding).
When gradients are recorded, the sub-blocks' intermediates would all be kept for the backward pass (several
GiB for a training batch of 128); ``checkpoint_blocks`` recomputes each sub-block in the backward pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from noisycorr.backbones.base import Backbone, TextBackboneConfig
from noisycorr.backbones.ops import (
    EPS,
    l1norm,
    l2norm,
    length_mask,
    masked_batch_norm,
    masked_mean,
    xavier_linear_,
)
from noisycorr.backbones.text import BiGRUTextEncoder, check_lengths
from noisycorr.errors import InputError
from noisycorr.registry import register_backbone

__all__ = ["SGRAF", "AttentionFiltration", "GlobalSelfAttention", "GraphReasoning"]

_HEADS = ("sgr", "saf")
# Default sub-block bounds (elements of n_img * n_txt * L * embed): CPU caches favour small blocks,
# GPUs favour large ones. Sub-blocks hold at least this many captions when memory allows.
_DEFAULT_CHUNK = {"cpu": 2**22, "cuda": 2**25}
_MIN_CAPTIONS = 8
# checkpoint_blocks=None recomputes sub-blocks when a request's n_img * n_txt * L * embed exceeds this
# (2**26 floats = 256 MiB; the plain backward keeps several such tensors): a batch of 64 captions of <= 20 words.
_AUTO_CHECKPOINT_ELEMS = 2**26


class GlobalSelfAttention(nn.Module):
    """Attention pooling of local vectors against their mean (SGRAF's VisualSA / TextSA), then L2-norm.

    Args:
        dim: feature size.
        dropout: dropout after each tanh.
        num_positions: with a value, batch norm is applied (VisualSA): over the ``num_positions`` region
            slots for the local branch, over channels for the global branch. None: no batch norm (TextSA).
    """

    def __init__(self, dim: int, dropout: float = 0.0, num_positions: int | None = None):
        super().__init__()
        self.local = xavier_linear_(nn.Linear(dim, dim))
        self.glob = xavier_linear_(nn.Linear(dim, dim))
        self.common = xavier_linear_(nn.Linear(dim, 1))
        self.local_bn = nn.BatchNorm1d(num_positions) if num_positions else None
        self.glob_bn = nn.BatchNorm1d(dim) if num_positions else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, local: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, d) local vectors, optional (B, N) validity mask -> (B, d) unit vectors."""
        mean = local.mean(1) if mask is None else masked_mean(local, mask)
        loc, glo = self.local(local), self.glob(mean)
        if self.local_bn is not None:
            loc, glo = self.local_bn(loc), self.glob_bn(glo)
        loc, glo = self.dropout(torch.tanh(loc)), self.dropout(torch.tanh(glo))
        scores = self.common(loc * glo.unsqueeze(1)).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return l2norm((weights.unsqueeze(-1) * local).sum(1), dim=-1)


class GraphReasoning(nn.Module):
    """One step of similarity graph reasoning: ``x <- ReLU(W_g softmax(W_q x (W_k x)^T) x)``."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.query = xavier_linear_(nn.Linear(sim_dim, sim_dim))
        self.key = xavier_linear_(nn.Linear(sim_dim, sim_dim))
        self.update = xavier_linear_(nn.Linear(sim_dim, sim_dim))

    def forward(self, nodes: Tensor, key_mask: Tensor, first_only: bool = False) -> Tensor:
        """Update the nodes of many graphs at once.

        Args:
            nodes: (..., N, s) node vectors.
            key_mask: bool, broadcastable to (..., 1, N); False nodes (padding) receive no attention.
            first_only: update only node 0 (enough before the read-out), returning (..., 1, s).
        """
        queries = nodes[..., :1, :] if first_only else nodes
        # The softmax over keys drops terms that are constant per query, so
        # (W_q x_i + b_q) . (W_k x_j + b_k) acts as (W_k^T (W_q x_i + b_q)) . x_j: one (s x s) map on the
        # queries replaces both projections, and b_k has no effect (as in the original formula).
        merged_weight = self.key.weight.t() @ self.query.weight
        merged_bias = self.key.weight.t() @ self.query.bias
        edges = F.linear(queries, merged_weight, merged_bias) @ nodes.transpose(-1, -2)
        edges = torch.softmax(edges.masked_fill(~key_mask, float("-inf")), dim=-1)
        return F.relu(self.update(edges @ nodes))


class AttentionFiltration(nn.Module):
    """SAF: ``a = l1norm(sigmoid(BN(W x)))`` over the valid nodes, output ``l2norm(sum_n a_n x_n)``."""

    def __init__(self, sim_dim: int):
        super().__init__()
        self.attn = xavier_linear_(nn.Linear(sim_dim, 1))
        self.bn = nn.BatchNorm1d(1)

    def forward(self, nodes: Tensor, node_mask: Tensor, update_stats: bool = True) -> Tensor:
        """(..., N, s) nodes, (..., N) bool mask (broadcast) -> (..., s).

        Training-mode batch statistics are taken over the valid nodes of every pair in the block;
        ``update_stats=False`` leaves the running statistics as they are (a recomputed forward pass).
        """
        logits = self.attn(nodes)
        full_mask = node_mask.expand(nodes.shape[:-1])
        normed = masked_batch_norm(self.bn, logits, full_mask, update_stats=update_stats)
        weights = torch.sigmoid(normed).squeeze(-1)
        weights = l1norm(weights * full_mask, dim=-1)
        return l2norm((weights.unsqueeze(-1) * nodes).sum(-2), dim=-1)


@register_backbone("sgraf")
class SGRAF(Backbone):
    """Region/word features scored by a similarity-graph (SGR) or attention-filtration (SAF) head.

    ``encode_images`` returns (B, R, embed) unit region vectors and ``encode_texts`` (B, L, embed) unit
    word vectors (zeros on padding); the global vectors are computed inside ``similarity``. Pass the
    caption lengths to ``similarity``.

    Args:
        vocab_size: number of token ids.
        img_dim: region feature size D.
        embed_size: region / word embedding size.
        word_dim: word embedding size.
        word_vectors: optional (vocab_size, word_dim) initial word embedding.
        text_layers: BiGRU layers.
        dropout: dropout on word embeddings and in the self-attention modules (the research code uses 0.4).
        head: ``"sgr"`` or ``"saf"``.
        sim_dim: size of the similarity vectors.
        sgr_steps: graph reasoning steps (SGR only).
        lambda_softmax: smoothing of the text-to-image attention softmax.
        num_regions: regions per image R; the visual self-attention batch-normalises per region slot.
        chunk_elems: upper bound on ``n_img * n_txt * L * embed_size`` per internal sub-block (peak
            memory is about four times this many floats); None: 2**22 on CPU, 2**25 on GPU. In eval
            mode it also bounds the rows of the global self-attention per pass.
        checkpoint_blocks: when gradients are recorded, keep only each sub-block's inputs and scores
            and recompute its intermediates in the backward pass (``torch.utils.checkpoint``); scores
            and gradients are those of the plain computation. True: always; False: never; None
            (auto): when ``n_img * n_txt * L * embed_size`` exceeds 2**26, e.g. a training batch of
            64+ captions of 20 words at embed 1024. Recomputation costs time only: at batch 128 (NCR's
            shapes, SGR) the training step's peak RSS falls from 6.2 to 1.6 GiB for +2 % (1 CPU thread)
            to +28 % (2 threads) step time, provisional figures from a loaded 2-core machine
            (``benchmarks/bench_sgraf_memory.py``). ``_block`` draws no random numbers, and SAF's batch
            norm updates its running statistics in the first run only.
    """

    image_input = "regions"

    @dataclass
    class Config(TextBackboneConfig):
        """The ``model`` section of an SGRAF run: the class arguments but those the data fixes
        (vocab_size, img_dim, num_regions); ``word_vectors`` names the file to load."""

        backbone: str = "sgraf"
        head: str = "sgr"
        sim_dim: int = 256
        sgr_steps: int = 3
        lambda_softmax: float = 9.0
        chunk_elems: int | None = None
        checkpoint_blocks: bool | None = None  # None: auto, by the size of the request

    @classmethod
    def data_arguments(cls, image_shape: tuple[int, ...]) -> dict[str, Any]:
        """``img_dim`` and ``num_regions`` from one image's (R, D) region features."""
        if len(image_shape) != 2:
            raise ValueError(f"SGRAF needs (R, D) region features per image, found shape {tuple(image_shape)}")
        return {"img_dim": int(image_shape[1]), "num_regions": int(image_shape[0])}

    def __init__(
        self,
        *,
        vocab_size: int,
        img_dim: int,
        embed_size: int = 1024,
        word_dim: int = 300,
        word_vectors: Tensor | None = None,
        text_layers: int = 1,
        dropout: float = 0.0,
        head: str = "sgr",
        sim_dim: int = 256,
        sgr_steps: int = 3,
        lambda_softmax: float = 9.0,
        num_regions: int = 36,
        chunk_elems: int | None = None,
        checkpoint_blocks: bool | None = None,
    ):
        super().__init__()
        if head not in _HEADS:
            raise InputError("head", f"one of {list(_HEADS)}", repr(head))
        self.head = head
        self.lambda_softmax = lambda_softmax
        self.num_regions = num_regions
        self.chunk_elems = chunk_elems
        self.checkpoint_blocks = checkpoint_blocks
        self.img_fc = xavier_linear_(nn.Linear(img_dim, embed_size))
        self.text = BiGRUTextEncoder(
            vocab_size, word_dim, embed_size, text_layers, dropout, word_vectors, per_word=True
        )
        self.img_attn = GlobalSelfAttention(embed_size, dropout, num_positions=num_regions)
        self.txt_attn = GlobalSelfAttention(embed_size, dropout)
        self.local_proj = xavier_linear_(nn.Linear(embed_size, sim_dim))
        self.global_proj = xavier_linear_(nn.Linear(embed_size, sim_dim))
        if head == "sgr":
            self.sgr = nn.ModuleList(GraphReasoning(sim_dim) for _ in range(sgr_steps))
        else:
            self.saf = AttentionFiltration(sim_dim)
        self.score = xavier_linear_(nn.Linear(sim_dim, 1))

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, R, D) regions -> (B, R, embed) unit region vectors."""
        self._check_regions(images, "images")
        return l2norm(self.img_fc(images.to(self.img_fc.weight.dtype)), dim=-1)

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids, (B,) lengths -> (B, L, embed) unit word vectors, zeros on padding."""
        return self.text(tokens, lengths)[0]

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """Score every image against every caption.

        Args:
            img_emb: (n_img, R, embed) from ``encode_images``.
            txt_emb: (n_txt, L, embed) from ``encode_texts``.
            txt_lengths: (n_txt,) caption lengths; None means all L words are valid.

        Returns:
            (n_img, n_txt) scores in (0, 1).
        """
        return self._tiled(img_emb, txt_emb, txt_lengths, vectors=False)

    @property
    def vector_dim(self) -> int:
        return int(self.score.in_features)

    def similarity_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """The head's input for every pair: SGR's read-out global node or SAF's filtered vector, the
        (n_img, n_txt, sim_dim) vectors ``similarity`` applies ``sigmoid(score(.))`` to (same sub-blocks)."""
        return self._tiled(img_emb, txt_emb, txt_lengths, vectors=True)

    def pair_vectors(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """(B, R, embed) regions, (B, L, embed) words -> (B, sim_dim) head inputs of pairs (b, b) only.

        The word-region attention is computed per pair (B x R x L, not B x B x R x L); the nodes then go
        through the same reasoning / filtration as a (1, B) block. Not sub-blocked: callers bound B.
        """
        self._check_regions(img_emb, "img_emb")
        n, max_len = txt_emb.shape[0], txt_emb.shape[1]
        if txt_lengths is None:
            txt_lengths = torch.full((n,), max_len, dtype=torch.long, device=txt_emb.device)
        check_lengths(txt_lengths, n, max_len)
        txt_lengths = txt_lengths.to(txt_emb.device)
        budget = self.chunk_elems or _DEFAULT_CHUNK.get(img_emb.device.type, _DEFAULT_CHUNK["cuda"])
        img_glo = _global_vectors(self.img_attn, img_emb, None, budget)
        used = int(txt_lengths.max()) if n else 0
        words = txt_emb[:, :used]
        mask = length_mask(txt_lengths, used)
        txt_glo = _global_vectors(self.txt_attn, words, mask, budget)
        return self._pair_block(img_emb, img_glo, words, txt_glo, mask, vectors=True)

    def pair_scores_with_globals(
        self, imgs: Tensor, img_glo: Tensor, words: Tensor, txt_glo: Tensor, mask: Tensor
    ) -> Tensor:
        """Scores of pairs (image p, caption p) on precomputed self-attended global vectors, for callers
        that score a list of pairs against the same encodings (shortlist evaluation).

        (P, R, d) regions, (P, d) image globals, (P, L, d) words, (P, d) caption globals, (P, L) bool mask
        -> (P,) scores; no sub-blocking (the caller bounds P). Equal to the matching cells of ``similarity``.
        """
        return self._pair_block(imgs, img_glo, words, txt_glo, mask, update_stats=False)

    def _pair_block(
        self, imgs: Tensor, img_glo: Tensor, words: Tensor, txt_glo: Tensor, mask: Tensor,
        update_stats: bool = True, vectors: bool = False,
    ) -> Tensor:
        """``_block`` on the pairs (p, p) only: (P,) scores, or with ``vectors`` the (P, sim_dim) head inputs."""
        # Laid out (P, L, R), words first: both batched products then read contiguous operands (faster than
        # (P, R, L) on CPU). L2 over words, softmax over regions, as in ``_block``.
        attn = F.leaky_relu(torch.bmm(words, imgs.transpose(1, 2)), 0.1) * mask[:, :, None]
        # l2norm over dim 1 without ``Tensor.norm``, which is ~40x slower on a middle dimension on CPU. The
        # clamp (far below EPS) gives an all-zero column (a zero region) norm ~0 with a zero gradient, as
        # ``norm``'s, instead of sqrt's infinite one.
        words_norm = attn.pow(2).sum(1, keepdim=True).clamp_min(1e-30).sqrt()
        attn = torch.softmax(attn / (words_norm + EPS) * self.lambda_softmax, dim=2)
        attended = l2norm(torch.bmm(attn, imgs), dim=-1)  # (P, L, d)
        local = l2norm(self.local_proj((attended - words).pow(2)), dim=-1)
        glob = l2norm(self.global_proj((img_glo - txt_glo).pow(2)), dim=-1)
        nodes = torch.cat([glob.unsqueeze(1), local], dim=1).unsqueeze(0)  # (1, P, 1 + L, s)
        node_mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        vec = self._head_input(nodes, node_mask, update_stats)[0]
        return vec if vectors else torch.sigmoid(self.score(vec)).squeeze(-1)

    def _tiled(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None, *, vectors: bool) -> Tensor:
        """``similarity`` (scores) or ``similarity_vectors`` (head inputs) over length-sorted sub-blocks."""
        self._check_regions(img_emb, "img_emb")
        n_img, n_txt, max_len = img_emb.shape[0], txt_emb.shape[0], txt_emb.shape[1]
        if txt_lengths is None:
            txt_lengths = torch.full((n_txt,), max_len, dtype=torch.long, device=txt_emb.device)
        check_lengths(txt_lengths, n_txt, max_len)
        txt_lengths = txt_lengths.to(txt_emb.device)
        if n_img == 0 or n_txt == 0:
            return img_emb.new_zeros(n_img, n_txt, *((self.vector_dim,) if vectors else ()))
        budget = self.chunk_elems or _DEFAULT_CHUNK.get(img_emb.device.type, _DEFAULT_CHUNK["cuda"])
        img_glo = _global_vectors(self.img_attn, img_emb, None, budget)
        used = int(txt_lengths.max())
        txt_emb = txt_emb[:, :used]
        txt_mask = length_mask(txt_lengths, used)
        txt_glo = _global_vectors(self.txt_attn, txt_emb, txt_mask, budget)

        # Captions sorted by length, so each sub-block is trimmed to its own longest caption.
        order = torch.argsort(txt_lengths, descending=True, stable=True)
        sorted_lens = txt_lengths[order].tolist()
        dim = img_emb.shape[-1]
        block = self._block
        if self._recompute(n_img * n_txt * used * dim):
            block = self._recomputed_block
        img_step = max(1, min(n_img, budget // (used * dim * _MIN_CAPTIONS)))
        rows = []
        for i in range(0, n_img, img_step):
            imgs, glos = img_emb[i : i + img_step], img_glo[i : i + img_step]
            cols, start = [], 0
            while start < n_txt:
                width = sorted_lens[start]
                step = max(1, budget // (imgs.shape[0] * width * dim))
                idx = order[start : start + step]
                cols.append(block(imgs, glos, txt_emb[idx, :width], txt_glo[idx], txt_mask[idx, :width],
                                  vectors=vectors))
                start += step
            rows.append(torch.cat(cols, dim=1))
        scores = torch.cat(rows, dim=0)
        return scores[:, torch.argsort(order)]

    def _recompute(self, volume: int) -> bool:
        """Whether sub-blocks are checkpointed, for a request of ``n_img * n_txt * L * embed`` = ``volume``."""
        if not torch.is_grad_enabled():
            return False
        if self.checkpoint_blocks is None:
            return volume > _AUTO_CHECKPOINT_ELEMS
        return self.checkpoint_blocks

    def _recomputed_block(self, *inputs: Tensor, vectors: bool = False) -> Tensor:
        """``_block`` keeping only its inputs for the backward pass, which runs it again; the SAF batch
        norm's running statistics are updated by the first run only."""
        runs = 0

        def run(*args: Tensor) -> Tensor:
            nonlocal runs
            runs += 1
            return self._block(*args, update_stats=runs == 1, vectors=vectors)

        return checkpoint(run, *inputs, use_reentrant=False)

    def score_with_globals(
        self, imgs: Tensor, img_glo: Tensor, words: Tensor, txt_glo: Tensor, mask: Tensor
    ) -> Tensor:
        """The head on precomputed self-attended global vectors (``img_attn`` / ``txt_attn`` outputs), for
        callers that score many caption subsets against the same encodings (shortlist evaluation).

        (a, R, d) regions, (a, d) image globals, (b, L, d) words, (b, d) caption globals, (b, L) bool mask
        -> (a, b) scores; no sub-blocking or recomputation (the caller bounds the sizes).
        """
        return self._block(imgs, img_glo, words, txt_glo, mask)

    def global_scores(self, img_glo: Tensor, txt_glo: Tensor) -> Tensor:
        """The head on the global similarity node alone, without the word nodes: a cheap score of every
        (image, caption) pair from the self-attended global vectors (``img_attn`` / ``txt_attn`` outputs).

        (a, d) image globals, (b, d) caption globals -> (a, b) scores in (0, 1). Per pair it costs one
        ``d x sim_dim`` projection and the head on one node, against ``1 + L`` nodes and the word-region
        attention of the exact score (shortlist evaluation ranks candidates with it). Chunked over images
        by ``chunk_elems``.
        """
        a, dim = img_glo.shape
        b = txt_glo.shape[0]
        budget = self.chunk_elems or _DEFAULT_CHUNK.get(img_glo.device.type, _DEFAULT_CHUNK["cuda"])
        rows = max(1, budget // max(1, b * dim))
        one = torch.ones(b, 1, dtype=torch.bool, device=txt_glo.device)
        out = []
        for i in range(0, a, rows):
            glob = l2norm(self.global_proj((img_glo[i : i + rows].unsqueeze(1) - txt_glo).pow(2)), dim=-1)
            nodes = glob.unsqueeze(2)  # (a', b, 1, s): a graph of the global node only
            if self.head == "sgr":
                for k, reason in enumerate(self.sgr):
                    nodes = reason(nodes, one.unsqueeze(1), first_only=k == len(self.sgr) - 1)
                vec = nodes[..., 0, :]
            else:
                vec = self.saf(nodes, one, False)
            out.append(torch.sigmoid(self.score(vec)).squeeze(-1))
        return torch.cat(out) if out else img_glo.new_zeros(0, b)

    def shortlist_scores(self, img_glo: Tensor, txt_glo: Tensor) -> Tensor:
        """Cheap scores that pick each query's candidates in shortlist evaluation, from the self-attended
        global vectors: (a, d) image globals, (b, d) caption globals -> (a, b), higher = better match.

        SAF: the global node's logit before its L2 normalisation, ``w . (P (x - y)^2 + p)`` (``P, p`` =
        ``global_proj``, ``w`` = ``score``). It is linear in the element-wise squared difference, so with
        ``u = P^T w`` it is ``u . x^2 + u . y^2 - 2 (x * u) . y`` up to a constant: one (a, d) @ (d, b)
        product instead of a ``d x sim_dim`` projection per pair. SGR: its reasoning steps are not linear in
        the node, so the head on the global node alone (:meth:`global_scores`).
        """
        if self.head != "saf":
            return self.global_scores(img_glo, txt_glo)
        u = self.global_proj.weight.t() @ self.score.weight[0]  # (d,)
        x, y = img_glo.to(u.dtype), txt_glo.to(u.dtype)
        return (x.pow(2) @ u)[:, None] + (y.pow(2) @ u)[None, :] - 2.0 * ((x * u) @ y.t())

    def _block(
        self, imgs: Tensor, img_glo: Tensor, words: Tensor, txt_glo: Tensor, mask: Tensor, update_stats: bool = True,
        vectors: bool = False,
    ) -> Tensor:
        """(a, R, d) regions, (a, d) image globals, (b, L, d) words, (b, d) caption globals, (b, L) mask -> (a, b),
        or with ``vectors`` the (a, b, sim_dim) head inputs.

        ``update_stats=False``: SAF's training-mode batch norm leaves its running statistics untouched.
        """
        a, n_reg, dim = imgs.shape
        b, n_words, _ = words.shape
        # Text-to-image attention, laid out (a, R, b, L): LeakyReLU, L2 over words, softmax over regions.
        attn = (imgs.reshape(a * n_reg, dim) @ words.reshape(b * n_words, dim).t()).view(a, n_reg, b, n_words)
        attn = F.leaky_relu(attn, 0.1) * mask
        attn = torch.softmax(l2norm(attn, dim=3) * self.lambda_softmax, dim=1)
        attended = torch.bmm(attn.view(a, n_reg, b * n_words).transpose(1, 2), imgs)
        attended = l2norm(attended.view(a, b, n_words, dim), dim=-1)
        local = l2norm(self.local_proj((attended - words).pow(2)), dim=-1)
        glob = l2norm(self.global_proj((img_glo.unsqueeze(1) - txt_glo).pow(2)), dim=-1)
        nodes = torch.cat([glob.unsqueeze(2), local], dim=2)  # (a, b, 1 + L, s)
        node_mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        vec = self._head_input(nodes, node_mask, update_stats)
        return vec if vectors else torch.sigmoid(self.score(vec)).squeeze(-1)

    def _head_input(self, nodes: Tensor, node_mask: Tensor, update_stats: bool) -> Tensor:
        """(a, b, 1 + L, s) nodes, (b, 1 + L) mask -> (a, b, s): SGR's read-out node or SAF's filtered vector."""
        if self.head == "sgr":
            key_mask = node_mask.unsqueeze(1)  # (b, 1, 1 + L) broadcasts over (a, b, queries, keys)
            for k, step in enumerate(self.sgr):
                nodes = step(nodes, key_mask, first_only=k == len(self.sgr) - 1)
            return nodes[..., 0, :]
        return self.saf(nodes, node_mask, update_stats)

    def _check_regions(self, x: Tensor, name: str) -> None:
        if x.dim() != 3 or x.shape[1] != self.num_regions:
            raise ValueError(
                f"SGRAF {name}: expected (B, {self.num_regions}, D) region features (num_regions), "
                f"found shape {tuple(x.shape)}"
            )


def _global_vectors(attn: GlobalSelfAttention, local: Tensor, mask: Tensor | None, budget: int) -> Tensor:
    """``attn(local, mask)``: (B, N, d), (B, N) -> (B, d); in eval mode in passes of at most ``budget``
    elements of ``local`` (exact there: no dropout, batch norm on running statistics)."""
    if attn.training:
        return attn(local, mask)
    step = max(1, budget // max(1, local.shape[1] * local.shape[2]))
    parts = [
        attn(local[i : i + step], None if mask is None else mask[i : i + step]) for i in range(0, local.shape[0], step)
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0]
