"""Per-epoch metrics: ``metrics.csv`` always, TensorBoard when installed and asked for."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from noisycorr.data.paths import atomic_write_bytes


class MetricsLogger:
    """Keeps the history of epoch rows and rewrites ``metrics.csv`` atomically after each epoch."""

    def __init__(self, run_dir: Path, history: list[dict[str, Any]] | None = None, *, tensorboard: bool = False):
        self.path = run_dir / "metrics.csv"
        self.history: list[dict[str, Any]] = list(history or [])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise SystemExit("TensorBoard logging needs the extra: pip install 'noisycorr[tensorboard]'") from None
            self.writer = SummaryWriter(str(run_dir / "tb"))

    def log_epoch(self, row: dict[str, Any]) -> None:
        row = {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
        self.history.append(row)
        columns: list[str] = []
        for r in self.history:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))
        if self.writer is not None:
            step = int(row.get("epoch", len(self.history)))
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
