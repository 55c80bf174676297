"""Parts several methods share: a first-in first-out memory of embedding pairs and a chunked
nearest-neighbour search over it (IN2R's cross-model memory; the neighbour search of any method
that looks up intra-modal neighbours)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from noisycorr.errors import InputError

__all__ = ["KNN_BACKENDS", "PairMemory", "SizedByCheckpoint", "import_faiss", "nearest_neighbours"]

KNN_BACKENDS = ("torch", "faiss")


class SizedByCheckpoint(nn.Module):
    """A module whose buffers take their shape from the state dict they load.

    For state whose size is known only once training has run (BiCro++'s codebooks, PCSR's (N, W)
    pseudo-label histories): registered empty, loaded at the saved shape on ``--resume``.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in list(self._buffers):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != self._buffers[name].shape:
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PairMemory(nn.Module):
    """A fixed-capacity first-in first-out ring of (image, caption) embedding pairs.

    Everything is a buffer, so the memory follows ``.to(device)`` and is in ``state_dict()``.
    Once full, each new pair overwrites the oldest one.

    Args:
        capacity: number of pairs kept.
        dim: embedding size.
    """

    def __init__(self, capacity: int, dim: int):
        super().__init__()
        self.capacity = int(capacity)
        self.register_buffer("images", torch.zeros(self.capacity, dim))
        self.register_buffer("captions", torch.zeros(self.capacity, dim))
        self.register_buffer("next_slot", torch.zeros((), dtype=torch.long))
        self.register_buffer("size", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.size)

    @torch.no_grad()
    def push(self, images: Tensor, captions: Tensor) -> None:
        """Store (n, dim) image and caption embeddings (detached) in arrival order."""
        n = images.shape[0]
        if n == 0:
            return
        start = int(self.next_slot)
        if n > self.capacity:  # only the newest `capacity` survive a sequential write
            start = (start + n - self.capacity) % self.capacity
            images, captions = images[-self.capacity :], captions[-self.capacity :]
        slots = (start + torch.arange(images.shape[0], device=self.images.device)) % self.capacity
        self.images[slots] = images.detach().to(self.images.dtype)
        self.captions[slots] = captions.detach().to(self.captions.dtype)
        self.next_slot.fill_((int(self.next_slot) + n) % self.capacity)
        self.size.fill_(min(int(self.size) + n, self.capacity))

    def contents(self) -> tuple[Tensor, Tensor]:
        """The stored (size, dim) images and captions (slot order, not arrival order)."""
        n = len(self)
        return self.images[:n], self.captions[:n]


@torch.no_grad()
def nearest_neighbours(
    queries: Tensor, keys: Tensor, k: int, *, chunk: int = 16384, backend: str = "torch"
) -> Tensor:
    """(B, k) indices of the ``k`` keys with the largest inner product with each query, best first.

    For unit vectors this is the cosine. The torch backend scans the keys in blocks of ``chunk`` rows
    and keeps a running top-k, so memory is bounded by (B, chunk + k) scores.

    Args:
        queries: (B, D).
        keys: (N, D), N >= k.
        k: neighbours per query.
        chunk: keys per block (torch backend).
        backend: ``"torch"`` (matrix products on the queries' device) or ``"faiss"`` (exact
            inner-product index on the CPU; needs ``noisycorr[faiss]``).
    """
    if backend == "faiss":
        faiss = import_faiss()
        index = faiss.IndexFlatIP(keys.shape[1])
        index.add(np.ascontiguousarray(keys.detach().float().cpu().numpy()))
        _, found = index.search(np.ascontiguousarray(queries.detach().float().cpu().numpy()), k)
        return torch.from_numpy(found).long().to(queries.device)
    if backend != "torch":
        raise InputError("method.knn_backend", f"one of {list(KNN_BACKENDS)}", repr(backend))
    q = queries.detach().float()
    best_val = q.new_empty(q.shape[0], 0)
    best_idx = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
    for start in range(0, keys.shape[0], chunk):
        block = q @ keys[start : start + chunk].float().t()  # (B, c)
        val, idx = block.topk(min(k, block.shape[1]), dim=1)
        best_val = torch.cat([best_val, val], dim=1)
        best_idx = torch.cat([best_idx, idx + start], dim=1)
        keep = best_val.topk(min(k, best_val.shape[1]), dim=1).indices
        best_val, best_idx = best_val.gather(1, keep), best_idx.gather(1, keep)
    return best_idx


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise InputError(
            "method.knn_backend", "faiss installed (pip install 'noisycorr[faiss]')", "no faiss module"
        ) from None
    return faiss
