"""Training curves as a PNG (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from noisycorr.data.paths import atomic_write_bytes


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# A row column that flips when the warm-up ends, and its value during the warm-up: NCR / IN2R / BiCro
# log ``warmup`` (1 then 0), the baseline logs ``hardest`` (0 during its mean-negative warm-up, then 1).
WARMUP_FLAGS = (("warmup", 1.0), ("hardest", 0.0))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _has_warmup_loss(row: dict[str, Any]) -> bool:
    return any(k.startswith("loss_warmup") and math.isfinite(_number(v)) for k, v in row.items())


def warmup_epochs_of(history: list[dict[str, Any]]) -> int:
    """The number of warm-up epochs the rows show (0: none seen), from a column that flips when the
    warm-up ends (:data:`WARMUP_FLAGS`) or from ``loss_warmup*`` columns that stop being logged."""
    for prev, row in zip(history, history[1:]):
        for key, during in WARMUP_FLAGS:
            if key in prev and key in row and _number(prev[key]) == during and _number(row[key]) != during:
                return int(row["epoch"])
        if _has_warmup_loss(prev) and not _has_warmup_loss(row):
            return int(row["epoch"])
    return 0


def plot_history(
    history: list[dict[str, Any]],
    path: Path,
    *,
    metric: str = "val_rsum",
    label: str = "validation rSum",
    warmup_epochs: int | None = None,
) -> None:
    """Two panels per epoch (numbered from 1, integer ticks): the training losses, and the validation
    ``metric`` with the best epoch marked; a dashed line marks where the warm-up ends, since the loss
    changes there by design.

    Args:
        history: one row per finished epoch (``epoch`` 0-based, as in ``metrics.csv``).
        path: the PNG to write (atomic).
        warmup_epochs: epochs of warm-up; None infers them from the rows (:func:`warmup_epochs_of`).
    """
    if not have_matplotlib():
        raise SystemExit("plots need the extra: pip install 'noisycorr[plot]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    warm = warmup_epochs_of(history) if warmup_epochs is None else warmup_epochs
    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in sorted({k for r in history for k in r if k.startswith("loss_")}):
        ax_loss.plot(epochs, [r.get(key, float("nan")) for r in history], marker=".", label=key[5:])
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean per batch)")
    rsum = [r.get(metric, float("nan")) for r in history]
    ax_val.plot(epochs, rsum, marker=".", color="tab:green")
    best = max(range(len(rsum)), key=lambda i: rsum[i])
    ax_val.axvline(epochs[best], color="grey", linestyle=":", label=f"best: epoch {epochs[best]}")
    ax_val.set(xlabel="epoch", ylabel=label)
    if 0 < warm < max(epochs):
        for ax in (ax_loss, ax_val):
            ax.axvline(warm + 0.5, color="tab:red", linestyle="--", linewidth=1,
                       label=f"warm-up ends (after epoch {warm})")
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
