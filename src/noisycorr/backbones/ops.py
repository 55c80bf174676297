"""Small tensor helpers shared by the backbones: norms, length masks, masked batch norm, the residual MLP."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-8


def l2norm(x: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """Divide ``x`` by its L2 norm along ``dim`` (plus ``eps``, so zero vectors stay zero)."""
    return x / (x.norm(p=2, dim=dim, keepdim=True) + eps)


def l1norm(x: Tensor, dim: int = -1, eps: float = EPS) -> Tensor:
    """Divide ``x`` by its L1 norm along ``dim`` (plus ``eps``)."""
    return x / (x.abs().sum(dim=dim, keepdim=True) + eps)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on the first ``lengths[b]`` positions."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, N, d) ``x`` over the positions where the (B, N) ``mask`` is True -> (B, d)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_batch_norm(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor | None, *, update_stats: bool = True) -> Tensor:
    """Apply ``bn`` (over the last dim of ``x``) to the rows where ``mask`` is True; other rows become 0.

    Padded rows must not enter the training-mode batch statistics, so only valid rows are normalised.

    Args:
        bn: batch norm with ``num_features == x.shape[-1]``.
        x: (..., C) features.
        mask: bool tensor of shape ``x.shape[:-1]``, or None for all rows.
        update_stats: False normalises exactly as ``bn`` does but leaves its running statistics
            untouched (a forward pass recomputed for the backward pass must not count twice).
    """
    norm = bn if update_stats or not bn.training else partial(_batch_norm_no_update, bn)
    if mask is None:
        return norm(x.reshape(-1, x.shape[-1])).view_as(x)
    out = x.new_zeros(x.shape)
    out[mask] = norm(x[mask]).to(out.dtype)
    return out


def _batch_norm_no_update(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """Training-mode ``bn(x)`` on batch statistics, without updating the running ones. (n, C) -> (n, C).

    Copies of the running statistics take the update, so autograd saves the same tensors as ``bn(x)``
    (``torch.utils.checkpoint`` checks that a recomputation saves as many tensors as the forward).
    """
    stats = [None if t is None else t.clone() for t in (bn.running_mean, bn.running_var)]
    return F.batch_norm(x, *stats, bn.weight, bn.bias, True, bn.momentum or 0.0, bn.eps)


class ResidualMLP(nn.Module):
    """``fc(x) + MLP(x)``: a linear map plus a 2-layer MLP (Linear -> BN -> ReLU -> Linear), VSE-infinity style.

    Args:
        in_dim: input feature size.
        out_dim: output feature size.
        hidden_dim: MLP hidden size (default ``out_dim // 2``).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or max(1, out_dim // 2)
        self.fc = nn.Linear(in_dim, out_dim)
        self.hidden = nn.Linear(in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.out = nn.Linear(hidden_dim, out_dim)
        xavier_linear_(self.fc)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(..., in_dim) -> (..., out_dim); ``mask`` (shape ``x.shape[:-1]``) excludes padded rows from BN."""
        h = F.relu(masked_batch_norm(self.bn, self.hidden(x), mask))
        return self.fc(x) + self.out(h)


def xavier_linear_(layer: nn.Linear) -> nn.Linear:
    """Fan-based uniform init U(-r, r), r = sqrt(6 / (fan_in + fan_out)), and zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer
