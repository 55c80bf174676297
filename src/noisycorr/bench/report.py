"""The bench report: per dataset and noise protocol, a table of test rSum (mean ± sd over seeds) with
R@1 of both directions, a detection table (ROC-AUC of each method's clean probability), the cost of
every cell (training seconds per epoch, peak memory), plots (rSum against noise rate; ROC curves),
and, for each ``metrics.csv`` column the spec names under ``curves``, its value epoch by epoch (a
table of seed means and a plot per noise rate).

Cells trained on different noise indices for the same (dataset, protocol, rate) are never put side
by side: the report stops with the two checksums.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.bench.pins import pin_key, read_pins
from noisycorr.bench.runner import ATTEMPTS_FILE, RESULTS_FILE, cell_status
from noisycorr.bench.spec import BenchSpec, Cell
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import load_precomp
from noisycorr.engine.rundir import read_run_config
from noisycorr.engine.setup import data_root
from noisycorr.errors import InputError


@dataclass
class CellRecord:
    """What one cell's folder says about its run."""

    cell: Cell
    status: str
    rsum: float | None = None
    i2t_r1: float | None = None
    t2i_r1: float | None = None
    best_epoch: int | None = None  # 1-based
    epochs: int = 0
    auc: float | None = None
    epoch_seconds: float | None = None  # per-sample passes + training, mean over epochs (no validation)
    peak_rss_mib: float | None = None
    cuda_peak_mib: float | None = None
    noise_checksum: str | None = None
    curves: dict[str, list[float | None]] = field(default_factory=dict)  # column -> value per epoch


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(path, "a JSON file written by noisycorr", f"unreadable ({err})") from None


def _metric_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def read_cell(cell: Cell, curves: Sequence[str] = ()) -> CellRecord:
    """Collect a cell's results, noise checksum, epoch time, peak memory and the per-epoch values of the
    ``curves`` columns (None where unknown)."""
    rec = CellRecord(cell, cell_status(cell))
    rows = _metric_rows(cell.dir / "metrics.csv")
    secs = [float(r.get("select_seconds") or 0) + float(r.get("train_seconds") or 0) for r in rows]
    rec.epochs, rec.epoch_seconds = len(rows), (float(np.mean(secs)) if secs else None)
    rec.curves = {c: [_number(r.get(c)) for r in rows] for c in curves if rows and c in rows[0]}
    if (cell.dir / "noise.json").is_file():
        rec.noise_checksum = _read_json(cell.dir / "noise.json").get("checksum")
    peaks = []
    if (cell.dir / ATTEMPTS_FILE).is_file():
        peaks = [a.get("peak_rss_mib") for a in _read_json(cell.dir / ATTEMPTS_FILE) if a.get("peak_rss_mib")]
    if rec.status == "done":
        res = _read_json(cell.dir / RESULTS_FILE)
        test = res.get("test") or {}
        rec.rsum, rec.i2t_r1, rec.t2i_r1 = test.get("rsum"), test.get("i2t_r1"), test.get("t2i_r1")
        rec.best_epoch = int(res["best"]["epoch"]) + 1 if "best" in res else None
        rec.auc = (res.get("detection") or {}).get("auc")
        resources = res.get("resources") or {}
        if resources.get("peak_rss_mib"):
            peaks.append(resources["peak_rss_mib"])
        rec.cuda_peak_mib = resources.get("cuda_peak_mib")
    rec.peak_rss_mib = max(peaks) if peaks else None
    return rec


def check_noise_files(records: Sequence[CellRecord]) -> None:
    """Refuse cells of one (dataset, protocol, rate) that trained on different noise indices."""
    seen: dict[tuple[str, str, float], CellRecord] = {}
    for rec in records:
        if rec.status != "done" or rec.cell.rate == 0.0:
            continue
        first = seen.setdefault(rec.cell.noise_key, rec)
        if rec.noise_checksum != first.noise_checksum:
            raise InputError(
                rec.cell.dir / "noise.json",
                f"the noise index of {first.cell.key} (sha256 {str(first.noise_checksum)[:12]}…) "
                "to compare the two cells",
                f"sha256 {str(rec.noise_checksum)[:12]}…",
            )


@dataclass
class Stat:
    mean: float
    sd: float  # sample standard deviation over seeds (nan for one seed)
    n: int

    def text(self, digits: int = 1) -> str:
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def aggregate(values: Sequence[float | None]) -> Stat:
    """Mean and sample standard deviation (ddof 1) of the known values."""
    vals = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if vals.size == 0:
        return Stat(math.nan, math.nan, 0)
    return Stat(float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else math.nan, int(vals.size))


def _groups(spec: BenchSpec) -> list[tuple[str, str, list[float], list[str]]]:
    return [(ds.name, g.protocol, list(g.rates), [m.name for m in ds.methods]) for ds, g in spec.noise_grids()]


def _pick(records: Sequence[CellRecord], dataset: str, protocol: str, rate: float, method: str) -> list[CellRecord]:
    return [r for r in records if (r.cell.dataset, r.cell.protocol, r.cell.rate, r.cell.method)
            == (dataset, protocol, rate, method)]


def _pct(rate: float) -> str:
    return f"{rate * 100:g} %"


def summary_rows(spec: BenchSpec, records: Sequence[CellRecord]) -> list[dict[str, Any]]:
    """One row per (dataset, protocol, rate, method): seeds aggregated."""
    rows = []
    for dataset, protocol, rates, methods in _groups(spec):
        for method in methods:
            for rate in rates:
                recs = [r for r in _pick(records, dataset, protocol, rate, method) if r.status == "done"]
                row: dict[str, Any] = {"dataset": dataset, "protocol": protocol, "rate": rate, "method": method,
                                       "seeds_done": len(recs), "seeds": len(spec.seeds)}
                for name in ("rsum", "i2t_r1", "t2i_r1", "auc"):
                    s = aggregate([getattr(r, name) for r in recs])
                    row[f"{name}_mean"], row[f"{name}_sd"] = s.mean, s.sd
                row["epoch_seconds_mean"] = aggregate([r.epoch_seconds for r in recs]).mean
                row["peak_rss_mib_max"] = max([r.peak_rss_mib for r in recs if r.peak_rss_mib] or [math.nan])
                rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else
                                 ("" if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def rsum_table(spec: BenchSpec, records: Sequence[CellRecord], dataset: str, protocol: str, rates: list[float],
               methods: list[str]) -> str:
    """Markdown table: rows methods, columns rates, cells test rSum (mean ± sd) and both R@1; the best
    mean of each column in bold."""
    cells: dict[tuple[str, float], tuple[Stat, str]] = {}
    for method in methods:
        for rate in rates:
            recs = [r for r in _pick(records, dataset, protocol, rate, method) if r.status == "done"]
            rs = aggregate([r.rsum for r in recs])
            if rs.n:
                r1 = f"{aggregate([r.i2t_r1 for r in recs]).mean:.1f} / {aggregate([r.t2i_r1 for r in recs]).mean:.1f}"
                missing = f", {rs.n} of {len(spec.seeds)} seeds" if rs.n < len(spec.seeds) else ""
                cells[method, rate] = rs, f"({r1}{missing})"
    best = {rate: max((rs.mean for (_, r), (rs, _) in cells.items() if r == rate), default=None) for rate in rates}
    body = []
    for method in methods:
        row = [method]
        for rate in rates:
            if (method, rate) not in cells:
                row.append("—")
                continue
            rs, detail = cells[method, rate]
            row.append(f"**{rs.text()}** {detail}" if rs.mean == best[rate] else f"{rs.text()} {detail}")
        body.append(row)
    return _md_table(["method", *[_pct(r) for r in rates]], body)


def curve_means(records: Sequence[CellRecord], dataset: str, protocol: str, rate: float, method: str,
                column: str) -> list[float | None]:
    """One (rate, method)'s ``column`` per epoch: the mean over its finished seeds that logged it."""
    series = [r.curves[column] for r in _pick(records, dataset, protocol, rate, method)
              if r.status == "done" and column in r.curves]
    means: list[float | None] = []
    for e in range(max((len(s) for s in series), default=0)):
        vals = [s[e] for s in series if e < len(s) and s[e] is not None]
        means.append(float(np.mean(vals)) if vals else None)
    return means


def _curve_rows(records: Sequence[CellRecord], dataset: str, protocol: str, rates: list[float],
                methods: list[str], column: str) -> list[tuple[str, float, list[float | None]]]:
    rows = []
    for method in methods:
        for rate in rates:
            means = curve_means(records, dataset, protocol, rate, method, column)
            if any(v is not None for v in means):
                rows.append((method, rate, means))
    return rows


def _short(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def curve_table(records: Sequence[CellRecord], dataset: str, protocol: str, rates: list[float],
                methods: list[str], column: str) -> str | None:
    """Markdown: a row per (method, rate) with ``column`` at each epoch (seed means); None without data."""
    rows = _curve_rows(records, dataset, protocol, rates, methods, column)
    if not rows:
        return None
    n = max(len(means) for _, _, means in rows)
    body = [[method, _pct(rate), *[_short(means[e]) if e < len(means) else "" for e in range(n)]]
            for method, rate, means in rows]
    return _md_table(["method", "noise", *[str(e + 1) for e in range(n)]], body)


def summary_text(spec: BenchSpec) -> str:
    """The rSum tables of every dataset and protocol, for the terminal."""
    records = [read_cell(c) for c in spec.cells()]
    return "\n\n".join(f"{dataset}, {protocol} noise: test rSum (R@1 i2t / t2i)\n"
                        + rsum_table(spec, records, dataset, protocol, rates, methods)
                        for dataset, protocol, rates, methods in _groups(spec))


def markdown_report(spec: BenchSpec, records: Sequence[CellRecord], plots: dict[str, list[str]]) -> str:
    """The report as Markdown: result, detection and cost tables per dataset and protocol."""
    pins = read_pins(spec)
    out = [f"# Bench report: {spec.source}", ""]
    if spec.description:
        out += [spec.description, ""]
    n_done = sum(r.status == "done" for r in records)
    out += [f"{n_done} of {len(records)} cells finished; seeds {list(spec.seeds)}. Cells: test split of the "
            "best-validation epoch, mean ± sample sd over the finished seeds (one value: one seed).", ""]
    for dataset, protocol, rates, methods in _groups(spec):
        out += [f"## {dataset}, {protocol} noise", ""]
        out += ["Test rSum (R@1 image→text / text→image):", "",
                rsum_table(spec, records, dataset, protocol, rates, methods), ""]
        pinned = [(rate, pins.get(pin_key(dataset, protocol, rate))) for rate in rates if rate > 0]
        if pinned:
            described = [
                f"{_pct(rate)}: `{pin.file}` sha256 `{pin.checksum[:16]}…`, realised rate {pin.realised_rate:.4f}"
                if pin else f"{_pct(rate)}: not pinned yet"
                for rate, pin in pinned
            ]
            out += ["Noise indices (every cell of a column trained on this file): " + "; ".join(described), ""]
        noisy = [r for r in rates if r > 0]
        if noisy:
            det = []
            for method in methods:
                det.append([method] + [aggregate([r.auc for r in _pick(records, dataset, protocol, rate, method)
                                                  if r.status == "done"]).text(3) for rate in noisy])
            out += ["Detection: ROC-AUC of the clean probability of every training pair (`pair_scores.npy`) "
                    "against the injected noise:", "", _md_table(["method", *[_pct(r) for r in noisy]], det), ""]
        cost = []
        for method in methods:
            for rate in rates:
                for r in _pick(records, dataset, protocol, rate, method):
                    cost.append([method, _pct(rate), str(r.cell.seed), r.status, f"{r.epochs}",
                                 "—" if r.best_epoch is None else str(r.best_epoch),
                                 "—" if r.epoch_seconds is None else f"{r.epoch_seconds:.0f}",
                                 "—" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.0f}",
                                 "—" if r.cuda_peak_mib is None else f"{r.cuda_peak_mib:.0f}"])
        out += ["Cost per cell (seconds per epoch: per-sample passes and training, without validation):", "",
                _md_table(["method", "noise", "seed", "status", "epochs", "best epoch", "s / epoch",
                           "peak RSS MiB", "peak GPU MiB"], cost), ""]
        for column in spec.curves:
            table = curve_table(records, dataset, protocol, rates, methods, column)
            if table is not None:
                out += [f"`{column}` per epoch (1 = the first), mean over the finished seeds:", "", table, ""]
        for png in plots.get(f"{dataset}/{protocol}", []):
            out += [f"![{png}]({png})", ""]
    return "\n".join(out)


def _rsum_stat(records: Sequence[CellRecord], dataset: str, protocol: str, rate: float, method: str) -> Stat:
    """Test rSum over the finished seeds of one (dataset, protocol, rate, method)."""
    return aggregate([r.rsum for r in _pick(records, dataset, protocol, rate, method) if r.status == "done"])


def _rsum_bars(plt, records: Sequence[CellRecord], dataset: str, protocol: str, rate: float,
               methods: list[str]):
    """One noise rate: a horizontal bar per method (mean test rSum, sd whisker, seeds counted in the label)."""
    names, means, sds = [], [], []
    for method in methods:
        s = _rsum_stat(records, dataset, protocol, rate, method)
        if s.n:
            names.append(f"{method} (n={s.n})")
            means.append(s.mean)
            sds.append(0.0 if math.isnan(s.sd) else s.sd)
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.35 * max(len(names), 1)))
    ys = list(range(len(names)))[::-1]
    ax.barh(ys, means, xerr=sds, capsize=3, color=[f"C{i % 10}" for i in range(len(names))])
    for y, m, e in zip(ys, means, sds):
        ax.text(m + e, y, f" {m:.1f}", va="center", fontsize=8)
    ax.set(yticks=ys, yticklabels=names, xlabel="test rSum",
           title=f"{dataset}: rSum at {rate * 100:g} % {protocol} noise")
    if means:
        ax.set_xlim(0, max(m + e for m, e in zip(means, sds)) * 1.12)
    return fig, ax


def _plot_group(spec: BenchSpec, records: Sequence[CellRecord], dataset: str, protocol: str, rates: list[float],
                methods: list[str], out: Path) -> list[str]:
    """rSum against noise rate per method; ROC curves per noisy rate (first finished seed per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisycorr.eval.detection import roc_points

    written = []
    if len(rates) == 1:
        fig, ax = _rsum_bars(plt, records, dataset, protocol, rates[0], methods)
    else:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for method in methods:
            xs, ys, es = [], [], []
            for rate in rates:
                s = _rsum_stat(records, dataset, protocol, rate, method)
                if s.n:
                    xs.append(rate * 100)
                    ys.append(s.mean)
                    es.append(0.0 if math.isnan(s.sd) else s.sd)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method, color=f"C{methods.index(method)}")
        # x in percent, as the label says, with a tick at every rate of the grid
        ax.set(xlabel=f"{protocol} noise rate (%)", ylabel="test rSum", title=f"{dataset}: rSum vs. noise",
               xticks=[rate * 100 for rate in rates])
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = f"rsum_{dataset}_{protocol}.png"
    _save(fig, out / name)
    plt.close(fig)
    written.append(name)

    noisy = [r for r in rates if r > 0]
    if noisy:
        fig, axes = plt.subplots(1, len(noisy), figsize=(4 * len(noisy), 4), squeeze=False)
        for ax, rate in zip(axes[0], noisy, strict=True):
            for method in methods:
                recs = [r for r in _pick(records, dataset, protocol, rate, method)
                        if r.status == "done" and (r.cell.dir / "pair_scores.npy").is_file()
                        and (r.cell.dir / "noise_index.npy").is_file()]
                if not recs:
                    continue
                rec = recs[0]
                scores = np.load(rec.cell.dir / "pair_scores.npy")
                truth = _true_clean(rec, protocol, np.load(rec.cell.dir / "noise_index.npy"), scores.shape[0])
                fpr, tpr = roc_points(scores, truth)
                ax.plot(fpr, tpr, color=f"C{methods.index(method)}",
                        label=f"{method} (AUC {rec.auc:.3f}, seed {rec.cell.seed})")
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
            ax.set(xlabel="false positive rate", ylabel="true positive rate (clean)", title=f"{_pct(rate)} noise")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
        written.append(_finish(fig, f"{dataset}: detection of mismatched pairs", out / f"roc_{dataset}_{protocol}.png"))
    return written


def _plot_curves(spec: BenchSpec, records: Sequence[CellRecord], dataset: str, protocol: str, rates: list[float],
                 methods: list[str], out: Path) -> list[str]:
    """One figure per ``curves`` column with data: a panel per noise rate, a line per method (seed means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for column in spec.curves:
        rows = _curve_rows(records, dataset, protocol, rates, methods, column)
        panels = [rate for rate in rates if any(r == rate for _, r, _ in rows)]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False, sharey=True)
        for ax, rate in zip(axes[0], panels, strict=True):
            for method, r, means in rows:
                if r != rate:
                    continue
                xs = [e + 1 for e, v in enumerate(means) if v is not None]
                ax.plot(xs, [v for v in means if v is not None], marker=".", label=method,
                        color=f"C{methods.index(method)}")
            ax.set(xlabel="epoch", title=f"{_pct(rate)} noise")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(column)
        axes[0][0].legend(fontsize=8)
        written.append(_finish(fig, f"{dataset}: {column} per epoch", out / f"curve_{column}_{dataset}_{protocol}.png"))
    return written


def _true_clean(rec: CellRecord, protocol: str, index: np.ndarray, n_captions: int) -> np.ndarray:
    """(N_cap,) ground truth of a cell's injected noise, for its ROC curve."""
    from noisycorr.data.noise import caption_to_image, clean_mask

    if protocol == "per_image":
        n_images = index.shape[0]
    else:
        cfg = read_run_config(rec.cell.dir)
        n_images = load_precomp(data_root(cfg), cfg.data.train_split, features=cfg.data.features,
                                captions_per_image=cfg.data.captions_per_image).n_images
    cpi = n_captions // n_images
    return clean_mask(caption_to_image(protocol, index, n_images, cpi), cpi)


def _finish(fig: Any, title: str, path: Path) -> str:
    """Title, lay out, save and close a figure; returns its file name."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path.name


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _write(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_report(spec: BenchSpec, *, plots: bool = True) -> Path:
    """Read every cell, check the noise rule, write ``report.md``, ``summary.csv``, ``cells.csv`` and
    the PNG plots into ``{out}/report``; returns the Markdown file."""
    from noisycorr.engine.plots import have_matplotlib

    records = [read_cell(c, spec.curves) for c in spec.cells()]
    check_noise_files(records)
    out = spec.report_dir
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, list[str]] = {}
    if plots and have_matplotlib():
        for dataset, protocol, rates, methods in _groups(spec):
            pngs[f"{dataset}/{protocol}"] = (_plot_group(spec, records, dataset, protocol, rates, methods, out)
                                             + _plot_curves(spec, records, dataset, protocol, rates, methods, out))
    _write(out / "summary.csv", _csv_text(summary_rows(spec, records)))
    cells = [{"cell": r.cell.key, "dataset": r.cell.dataset, "protocol": r.cell.protocol, "rate": r.cell.rate,
              "method": r.cell.method, "seed": r.cell.seed, "status": r.status, "rsum": r.rsum,
              "i2t_r1": r.i2t_r1, "t2i_r1": r.t2i_r1, "auc": r.auc, "best_epoch": r.best_epoch,
              "epochs": r.epochs, "epoch_seconds": r.epoch_seconds, "peak_rss_mib": r.peak_rss_mib,
              "cuda_peak_mib": r.cuda_peak_mib, "noise_sha256": r.noise_checksum, "dir": str(r.cell.dir)}
             for r in records]
    _write(out / "cells.csv", _csv_text([{k: (math.nan if v is None else v) for k, v in c.items()} for c in cells]))
    path = out / "report.md"
    _write(path, markdown_report(spec, records, pngs))
    return path
