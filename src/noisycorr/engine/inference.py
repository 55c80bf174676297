"""Encode a split once per backbone and evaluate a method on a retrieval protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from noisycorr.backbones.base import Backbone, similarity_matrix
from noisycorr.config import EvalConfig
from noisycorr.data.dataset import CaptionDataset, ImageDataset
from noisycorr.data.precomp import PrecompSplit
from noisycorr.data.vocab import Vocabulary
from noisycorr.eval.protocols import evaluate_protocol
from noisycorr.eval.retrieval import average_similarities
from noisycorr.eval.shortlist import has_pairwise_head, shortlist_similarities


def _pad_dim1(chunks: list[Tensor]) -> Tensor:
    """Concatenate (B, L_b, d) chunks along B, zero-padding L to the longest chunk."""
    if chunks[0].ndim < 3:
        return torch.cat(chunks)
    longest = max(c.shape[1] for c in chunks)
    return torch.cat([torch.nn.functional.pad(c, (0, 0, 0, longest - c.shape[1])) for c in chunks])


@torch.no_grad()
def encode_split(
    backbone: Backbone,
    split: PrecompSplit,
    vocab: Vocabulary,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    n_images: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Embed each image once and every caption of the first ``n_images`` images.

    Returns:
        img_emb (N_img, ...), txt_emb (N_cap, ...), txt_lengths (N_cap,), all on ``device``.
    """
    backbone.eval()
    n_img = split.n_images if n_images is None else min(n_images, split.n_images)
    n_cap = n_img * split.captions_per_image
    img_chunks = []
    images = ImageDataset(split)
    for batch in tqdm(images.batches(batch_size), desc="encode images", disable=not progress, leave=False):
        if batch.index[0] >= n_img:
            break
        img_chunks.append(backbone.encode_images(batch.images[: n_img - int(batch.index[0])].to(device)))
    captions = CaptionDataset(split, vocab)
    txt_chunks, len_chunks = [], []
    for batch in tqdm(captions.batches(batch_size), desc="encode captions", disable=not progress, leave=False):
        if batch.index[0] >= n_cap:
            break
        keep = n_cap - int(batch.index[0])
        tokens, lengths = batch.tokens[:keep].to(device), batch.lengths[:keep].to(device)
        txt_chunks.append(backbone.encode_texts(tokens, lengths))
        len_chunks.append(lengths)
    return _pad_dim1(img_chunks), _pad_dim1(txt_chunks), torch.cat(len_chunks)


@torch.no_grad()
def evaluate_method(
    backbones: Sequence[Backbone],
    split: PrecompSplit,
    vocab: Vocabulary | Sequence[Vocabulary],
    *,
    protocol: str | None = None,
    settings: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    n_images: int | None = None,
    progress: bool = False,
    combine: Callable[[list[Tensor]], Tensor] | None = None,
) -> dict[str, float]:
    """R@K, ranks and rSum of the combined similarity of ``backbones`` (several: also ``net{k}_*``).

    ``combine`` turns one (n_img, n_txt) block per backbone into one (default: their mean; a
    method's :meth:`~noisycorr.methods.base.Method.eval_similarity`).

    Each similarity block a protocol asks for is computed once per backbone and reused for the
    ensemble, so two-network methods cost two similarity passes, not three. ``vocab`` may be one
    vocabulary per backbone (ensembles of separately trained runs). ``settings`` gives the batch
    size, the similarity block sizes, the default protocol (``protocol`` overrides it) and the mode:
    ``shortlist`` scores the networks with a pairwise head on one shared shortlist per block
    (:mod:`noisycorr.eval.shortlist`) and the others exactly.
    """
    settings = settings or EvalConfig()
    protocol = protocol or settings.protocol
    batch_size, img_chunk, txt_chunk = settings.batch_size, settings.img_chunk, settings.txt_chunk
    vocabs = [vocab] * len(backbones) if isinstance(vocab, Vocabulary) else list(vocab)
    encoded = [
        encode_split(b, split, v, batch_size=batch_size, device=device, n_images=n_images, progress=progress)
        for b, v in zip(backbones, vocabs, strict=True)
    ]
    n_img = encoded[0][0].shape[0]
    caption_image = np.arange(encoded[0][1].shape[0]) // split.captions_per_image
    memo: dict[tuple[int, int, int, int, int], Tensor] = {}
    # Shortlist mode: the networks with a pairwise head share one shortlist per block; the others stay exact.
    shortlisted = [
        k for k, (img, txt, _) in enumerate(encoded) if settings.mode == "shortlist" and has_pairwise_head(img, txt)
    ]

    def net_fn(k: int) -> Callable[[slice, slice], Tensor]:
        img, txt, lens = encoded[k]

        def fn(rows: slice, cols: slice) -> Tensor:
            block = (rows.start or 0, rows.stop or n_img, cols.start or 0, cols.stop or len(caption_image))
            key = (k, *block)
            if key in memo:
                return memo[key]
            if k in shortlisted:
                nets = [encoded[j] for j in shortlisted]
                sims = shortlist_similarities(
                    [backbones[j] for j in shortlisted], [(i[rows], t[cols], n[cols]) for i, t, n in nets],
                    settings.shortlist_k, chunk=max(img_chunk, txt_chunk),
                )
                memo.update({(j, *block): m for j, m in zip(shortlisted, sims, strict=True)})
            else:
                memo[key] = similarity_matrix(
                    backbones[k], img[rows], txt[cols], lens[cols], img_chunk=img_chunk, txt_chunk=txt_chunk
                )
            return memo[key]

        return fn

    fns = [net_fn(k) for k in range(len(backbones))]
    out: dict[str, float] = {}
    if len(backbones) > 1:
        for k, fn in enumerate(fns):
            res = evaluate_protocol(fn, caption_image, protocol, captions_per_image=split.captions_per_image)
            out.update({f"net{k}_{key}": v for key, v in res.items() if isinstance(v, (int, float))})

    merge = combine or average_similarities

    def ensemble(rows: slice, cols: slice) -> Tensor:
        return merge([fn(rows, cols) for fn in fns]) if len(fns) > 1 else fns[0](rows, cols)

    res = evaluate_protocol(ensemble, caption_image, protocol, captions_per_image=split.captions_per_image)
    out.update({k: v for k, v in res.items() if isinstance(v, (int, float))})
    return out
