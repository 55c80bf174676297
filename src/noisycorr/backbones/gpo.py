"""Generalized Pooling Operator (GPO) of VSE-infinity (Chen et al., CVPR 2021).

GPO pools a variable-length set of feature vectors into one vector. Each feature dimension is sorted in
descending order, and the sorted values are averaged with weights that depend only on the position in
the sorted list and on the set size: positional encodings of positions 0..n-1 go through a small BiGRU
and a linear layer, and a softmax with temperature 0.1 turns the scores into weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from noisycorr.backbones.ops import length_mask

__all__ = ["GPO", "positional_encoding"]


def positional_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal encoding of positions 0..length-1 -> (length, dim); sin on even, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return pe


class GPO(nn.Module):
    """Learned pooling over sorted features.

    Args:
        pe_dim: size of the positional encoding (32 in VSE-infinity).
        hidden: BiGRU hidden size (32).
        temperature: softmax temperature over positions (0.1).
    """

    def __init__(self, pe_dim: int = 32, hidden: int = 32, temperature: float = 0.1):
        super().__init__()
        self.pe_dim = pe_dim
        self.hidden = hidden
        self.temperature = temperature
        self.gru = nn.GRU(pe_dim, hidden, 1, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(hidden, 1, bias=False)

    def pool_weights(self, lengths: Tensor, max_len: int) -> Tensor:
        """(B,) set sizes -> (B, max_len) weights summing to 1 over the first ``lengths[b]`` positions.

        The weights depend only on the length, so the GRU runs once per distinct length.
        """
        uniq, inverse = torch.unique(lengths, return_inverse=True)
        n_pos = int(uniq.max())
        mask = length_mask(uniq, n_pos)
        pe = positional_encoding(n_pos, self.pe_dim, lengths.device).expand(len(uniq), -1, -1)
        packed = pack_padded_sequence(pe, uniq.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=n_pos)
        out = (out[..., : self.hidden] + out[..., self.hidden :]) / 2
        scores = self.linear(out).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores / self.temperature, dim=1)
        if max_len > n_pos:
            weights = torch.cat([weights, weights.new_zeros(len(uniq), max_len - n_pos)], dim=1)
        return weights[:, :max_len][inverse]

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pool a padded batch of sets.

        Args:
            features: (B, N, d); positions at or beyond ``lengths[b]`` are ignored.
            lengths: (B,) set sizes in [1, N]; None means all N positions are valid.

        Returns:
            (B, d) pooled features.
        """
        batch, n, _ = features.shape
        if lengths is None:
            lengths = torch.full((batch,), n, dtype=torch.long, device=features.device)
        weights = self.pool_weights(lengths, n).to(features.dtype)
        mask = length_mask(lengths, n).unsqueeze(-1)
        ranked = features.masked_fill(~mask, float("-inf")).sort(dim=1, descending=True).values
        ranked = ranked.masked_fill(~mask, 0.0)
        return (ranked * weights.unsqueeze(-1)).sum(1)
