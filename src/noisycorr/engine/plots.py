"""Training curves as a PNG (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from noisycorr.data.paths import atomic_write_bytes


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_history(
    history: list[dict[str, Any]], path: Path, *, metric: str = "val_rsum", label: str = "validation rSum"
) -> None:
    """Two panels per epoch: the training losses, and the validation ``metric`` with the best epoch marked."""
    if not have_matplotlib():
        raise SystemExit("plots need the extra: pip install 'noisycorr[plot]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in sorted({k for r in history for k in r if k.startswith("loss_")}):
        ax_loss.plot(epochs, [r.get(key, float("nan")) for r in history], marker=".", label=key[5:])
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean per batch)")
    ax_loss.legend(fontsize=8)
    rsum = [r.get(metric, float("nan")) for r in history]
    ax_val.plot(epochs, rsum, marker=".", color="tab:green")
    best = max(range(len(rsum)), key=lambda i: rsum[i])
    ax_val.axvline(epochs[best], color="grey", linestyle=":", label=f"best: epoch {epochs[best]}")
    ax_val.set(xlabel="epoch", ylabel=label)
    ax_val.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
