"""Pair audit: turn per-pair quality scores into decisions, reports and a cleaned dataset copy.

A score is the model's estimated probability that a training pair (caption k with image row
``caption_image[k]``) is a true match: 1 = surely clean, 0 = surely mismatched, as cleanlab's label
quality scores. This module does not compute scores; it

- flags suspected mismatches (``find_mismatched_pairs``) and ranks every pair (``rank_pairs``),
- writes a human-readable audit (``write_audit``): ``pairs.csv``, ``scores.png``, ``report.md``,
  ``report.html``, ``summary.json``,
- writes a copy of a precomp dataset without the suspicious pairs (``write_clean_copy``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import _NCR_DEV_REPEAT, PrecompSplit
from noisycorr.engine.plots import have_matplotlib
from noisycorr.errors import InputError

_CHUNK_BYTES = 64 << 20  # bound on the feature rows held in memory at once by write_clean_copy
_TOP_FRACTIONS = (0.01, 0.05, 0.10)
_N_OTHER_CAPTIONS = 2
_PLOT_FILE = "scores.png"


class _DefaultThreshold(float):
    """The default threshold 0.5, told apart from an explicit 0.5 so that ``fraction`` alone works."""

    __slots__ = ()


_DEFAULT_THRESHOLD = _DefaultThreshold(0.5)


# --------------------------------------------------------------------------------------------- checks


def _check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, "a 1-D array of numbers in [0, 1]", f"{type(scores).__name__}") from None
    if arr.ndim != 1:
        raise InputError(name, "a 1-D array (N,)", f"shape {arr.shape}")
    if arr.size == 0:
        raise InputError(name, "at least one pair", "an empty array")
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(name, "finite values in [0, 1]", repr(float(arr[k])), where=f"index {k}")
    return arr


def _check_mask(mask: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != (n,):
        raise InputError(name, f"shape ({n},), one entry per pair", f"shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
        raise InputError(name, "booleans or 0/1 integers", f"dtype {arr.dtype} with other values")
    return arr.astype(bool)


def _check_pairing(caption_image: Any, n: int, n_images: int | None, name: str = "caption_image") -> np.ndarray:
    arr = np.asarray(caption_image)
    if arr.shape != (n,):
        raise InputError(name, f"shape ({n},), one image row per caption", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(name, "integer image rows", f"dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    limit = n_images if n_images is not None else np.iinfo(np.int64).max
    bad = (arr < 0) | (arr >= limit)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(name, f"image rows in [0, {limit})", str(int(arr[k])), where=f"caption {k}")
    return arr


def _check_strings(values: Any, n: int | None, name: str, what: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InputError(name, f"a sequence of strings ({what})", type(values).__name__)
    out = list(values)
    if n is not None and len(out) != n:
        raise InputError(name, f"{n} entries ({what})", f"{len(out)}")
    for k, v in enumerate(out):
        if not isinstance(v, str):
            raise InputError(name, "strings", type(v).__name__, where=f"index {k}")
    return out


# ------------------------------------------------------------------------------------- flag and rank


def _severity_order(scores: np.ndarray) -> np.ndarray:
    """Pair indices, lowest score first, ties by lower index."""
    return np.argsort(scores, kind="stable")


def find_mismatched_pairs(
    scores: np.ndarray,
    *,
    threshold: float | None = _DEFAULT_THRESHOLD,
    fraction: float | None = None,
    return_indices: bool = False,
) -> np.ndarray:
    """Flag the pairs that are suspected mismatches.

    A score is the model's posterior probability that the pair is a true match, so the default
    ``threshold=0.5`` flags exactly the pairs that are more likely mismatched than not
    (``score < 0.5``). A lower threshold flags fewer, surer mismatches; a higher one catches more at
    the cost of flagging clean pairs.

    Exactly one rule is used: with ``fraction``, the ``round(fraction * N)`` lowest-scoring pairs are
    flagged (Python rounding, halves to even; ties at the cut go to the lower index), whatever their
    scores; otherwise pairs with ``score < threshold`` are flagged. Passing ``fraction`` replaces the
    default threshold; passing both explicitly, or ``threshold=None`` without a fraction, is an error.

    Args:
        scores: (N,) quality scores in [0, 1], 1 = surely a true match.
        threshold: flag ``score < threshold``; in [0, 1].
        fraction: flag this share of the pairs, in [0, 1].
        return_indices: return the flagged indices instead of a mask.

    Returns:
        (N,) bool mask, True = suspected mismatch; or with ``return_indices`` the (n_flagged,) int64
        flagged indices ranked by severity: lowest score first, ties by lower index.

    Raises:
        ValueError: neither or both of ``threshold`` / ``fraction``, or one out of [0, 1].
        InputError: scores that are not a non-empty 1-D array of finite values in [0, 1].
    """
    explicit_threshold = threshold is not None and threshold is not _DEFAULT_THRESHOLD
    if fraction is not None and explicit_threshold:
        raise ValueError("pass either threshold or fraction, not both")
    if fraction is None and threshold is None:
        raise ValueError("pass threshold or fraction (both are None)")
    s = _check_scores(scores)
    order = _severity_order(s)
    if fraction is not None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        flagged = order[: int(round(float(fraction) * s.size))]
    else:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        flagged = order[s[order] < float(threshold)]
    if return_indices:
        return flagged.astype(np.int64)
    mask = np.zeros(s.size, dtype=bool)
    mask[flagged] = True
    return mask


def rank_pairs(scores: np.ndarray) -> np.ndarray:
    """Suspicion rank of every pair: 1 = most suspicious (lowest score), ties by lower index.

    Args:
        scores: (N,) quality scores in [0, 1].

    Returns:
        (N,) int64 ranks, a permutation of 1..N.
    """
    s = _check_scores(scores)
    ranks = np.empty(s.size, dtype=np.int64)
    ranks[_severity_order(s)] = np.arange(1, s.size + 1, dtype=np.int64)
    return ranks


# -------------------------------------------------------------------------------------------- metrics


def _detection_figures(scores: np.ndarray, mismatched: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Ground-truth figures from ``noisycorr.eval.detection``; undefined values (one class only) become None."""
    from noisycorr.eval.detection import detection_metrics, precision_at_top

    n = scores.size
    det = detection_metrics(scores, ~flagged, ~mismatched)
    top = {}
    for frac in _TOP_FRACTIONS:
        # -score ranks exactly like rank_pairs (1 - score could merge nearly equal scores into ties).
        top[f"{frac:.0%}"] = {
            "n": max(1, int(n * frac)),  # the count precision_at_top inspects
            "precision": precision_at_top(-scores, ~mismatched, fraction=frac),
        }
    n_bad = int(mismatched.sum())
    return {
        "n_truly_mismatched": n_bad,
        "roc_auc": None if np.isnan(det["auc"]) else det["auc"],
        "precision_at_top": top,
        "flagged_precision": det["precision"] if flagged.any() else None,
        "flagged_recall": det["recall"] if n_bad else None,
        "flagged_f1": det["f1"] if flagged.any() and n_bad else None,
    }


def _quantiles(scores: np.ndarray) -> dict[str, float]:
    qs = np.quantile(scores, [0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    names = ("min", "q01", "q05", "q25", "median", "q75", "q95", "max")
    out = {k: round(float(v), 6) for k, v in zip(names, qs)}
    out["mean"] = round(float(scores.mean()), 6)
    return out


# ------------------------------------------------------------------------------------------- writers


def _other_captions(caption_image: np.ndarray, scores: np.ndarray, pairs: np.ndarray, limit: int) -> list[list[int]]:
    """For each pair k in ``pairs``: up to ``limit`` other captions of image ``caption_image[k]``.

    The highest-scoring ones come first (the likeliest true descriptions of the image), ties by index.
    """
    n = scores.size
    by_image = np.lexsort((np.arange(n), -scores, caption_image))
    sorted_rows = caption_image[by_image]
    out = []
    for k in pairs:
        lo = int(np.searchsorted(sorted_rows, caption_image[k], side="left"))
        hi = int(np.searchsorted(sorted_rows, caption_image[k], side="right"))
        cands = [int(j) for j in by_image[lo : min(hi, lo + limit + 1)] if j != k]
        out.append(cands[:limit])
    return out


def _csv_bytes(
    order: np.ndarray,
    scores: np.ndarray,
    flagged: np.ndarray,
    captions: list[str],
    caption_image: np.ndarray,
    image_ids: list[str] | None,
    mismatched: np.ndarray | None,
) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["rank", "pair", "image", "image_id", "score", "flagged", "caption"]
    if mismatched is not None:
        header.append("truly_mismatched")
    writer.writerow(header)
    for rank, k in enumerate(order.tolist(), start=1):
        row = int(caption_image[k])
        line = [
            rank,
            k,
            row,
            image_ids[row] if image_ids is not None else row,
            f"{scores[k]:.6f}",
            int(flagged[k]),
            captions[k],
        ]
        if mismatched is not None:
            line.append(int(mismatched[k]))
        writer.writerow(line)
    return buf.getvalue().encode("utf-8")


def _plot_bytes(scores: np.ndarray, mismatched: np.ndarray | None, threshold: float, title: str) -> bytes:
    # The object-oriented API without pyplot: no global backend switch, no figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0.0, 1.0, 51)
    if mismatched is None:
        ax.hist(scores, bins=bins, color="tab:blue", label=f"all pairs ({scores.size})")
    else:
        ax.hist(
            scores[~mismatched], bins=bins, color="tab:blue", alpha=0.6, label=f"true matches ({(~mismatched).sum()})"
        )
        ax.hist(
            scores[mismatched], bins=bins, color="tab:red", alpha=0.6, label=f"true mismatches ({mismatched.sum()})"
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel="score (estimated probability of a true match)", ylabel="pairs", xlim=(0.0, 1.0))
    ax.set_title(title.replace("$", r"\$"))  # a literal title, not matplotlib math text
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _md_text(text: str) -> str:
    """Plain text for a Markdown table cell: one line, Markdown and HTML punctuation escaped."""
    text = " ".join(str(text).split())
    return "".join("\\" + c if c in "\\`*_[]<>|&~" else c for c in text)


def _figure_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("pairs", str(summary["n_pairs"])),
        (f"flagged (score < {summary['threshold']:g})", f"{summary['n_flagged']} ({summary['fraction_flagged']:.2%})"),
    ]
    gt = summary.get("ground_truth")
    if gt:
        rows += [
            ("truly mismatched", str(gt["n_truly_mismatched"])),
            ("ROC-AUC (1 - score vs. true mismatch)", _fmt(gt["roc_auc"])),
        ]
        for key, v in gt["precision_at_top"].items():
            rows.append((f"precision of the top {key} most suspicious ({v['n']} pairs)", _fmt(v["precision"])))
        rows += [
            ("precision of the flagged pairs", _fmt(gt["flagged_precision"])),
            ("recall of the true mismatches by the flags", _fmt(gt["flagged_recall"])),
            ("F1 of the flags", _fmt(gt["flagged_f1"])),
        ]
    return rows


def _top_rows(
    top_pairs: np.ndarray,
    others: list[list[int]],
    ranks: np.ndarray,
    scores: np.ndarray,
    captions: list[str],
    caption_image: np.ndarray,
    image_ids: list[str] | None,
    mismatched: np.ndarray | None,
) -> list[dict[str, Any]]:
    rows = []
    for k, other in zip(top_pairs.tolist(), others):
        row = int(caption_image[k])
        rows.append(
            {
                "rank": int(ranks[k]),
                "score": f"{scores[k]:.4f}",
                "pair": k,
                "image_id": image_ids[row] if image_ids is not None else str(row),
                "caption": captions[k],
                "others": [captions[j] for j in other],
                "truth": None if mismatched is None else ("mismatch" if mismatched[k] else "match"),
            }
        )
    return rows


def _report_md(summary: dict[str, Any], top_rows: list[dict[str, Any]]) -> str:
    lines = [f"# {_md_text(summary['title'])}", ""]
    if summary["source"]:
        lines += [f"Source: {_md_text(summary['source'])}", ""]
    lines += [
        "A score is the estimated probability that a pair is a true match (1 = surely clean); "
        f"pairs scoring below {summary['threshold']:g} are flagged as suspected mismatches.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {a} | {b} |" for a, b in _figure_lines(summary)]  # our own labels: plain Markdown
    lines += ["", "## Score distribution", "", "| " + " | ".join(summary["score_quantiles"]) + " |"]
    lines += ["|" + "---|" * len(summary["score_quantiles"])]
    lines += ["| " + " | ".join(f"{v:.4f}" for v in summary["score_quantiles"].values()) + " |", ""]
    if summary["plot"]:
        lines += [f"![score histogram]({summary['plot']})", ""]
    else:
        lines += [f"(No plot: {_md_text(summary['plot_skipped'])}.)", ""]
    truth = summary.get("ground_truth") is not None
    lines += [
        f"## The {len(top_rows)} most suspicious pairs",
        "",
        "Other captions: up to two further captions paired with the same image, highest-scoring first, "
        "to show what the image holds.",
        "",
        "| rank | score | pair | image | caption | other captions of the image |" + (" truth |" if truth else ""),
        "|---|---|---|---|---|---|" + ("---|" if truth else ""),
    ]
    for r in top_rows:
        others = "<br>".join(_md_text(c) for c in r["others"]) or "(none in the set)"
        cells = [str(r["rank"]), r["score"], str(r["pair"]), _md_text(r["image_id"]), _md_text(r["caption"]), others]
        if truth:
            cells.append(r["truth"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "All pairs, ranked: `pairs.csv`. Figures: `summary.json`.", ""]
    return "\n".join(lines)


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
    "vertical-align:top;text-align:left}th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}"
    "ul{margin:0;padding-left:1.2em}img{max-width:100%}.muted{color:#777}"
)


def _report_html(summary: dict[str, Any], top_rows: list[dict[str, Any]]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(summary['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(summary['title'])}</h1>",
    ]
    if summary["source"]:
        parts.append(f"<p>Source: <code>{e(summary['source'])}</code></p>")
    parts.append(
        "<p>A score is the estimated probability that a pair is a true match (1 = surely clean); pairs "
        f"scoring below {summary['threshold']:g} are flagged as suspected mismatches.</p>"
    )
    parts.append("<table>")
    parts += [f'<tr><th>{e(a)}</th><td class="num">{e(b)}</td></tr>' for a, b in _figure_lines(summary)]
    parts.append("</table><h2>Score distribution</h2><table><tr>")
    parts += [f"<th>{e(k)}</th>" for k in summary["score_quantiles"]]
    parts.append("</tr><tr>")
    parts += [f'<td class="num">{v:.4f}</td>' for v in summary["score_quantiles"].values()]
    parts.append("</tr></table>")
    if summary["plot"]:
        parts.append(f'<p><img src="{e(summary["plot"])}" alt="histogram of the pair scores"></p>')
    else:
        parts.append(f'<p class="muted">No plot: {e(summary["plot_skipped"])}.</p>')
    truth = summary.get("ground_truth") is not None
    parts += [
        f"<h2>The {len(top_rows)} most suspicious pairs</h2>",
        "<p>Other captions: up to two further captions paired with the same image, highest-scoring "
        "first, to show what the image holds.</p>",
        "<table><tr><th>rank</th><th>score</th><th>pair</th><th>image</th><th>caption</th>"
        "<th>other captions of the image</th>" + ("<th>truth</th>" if truth else "") + "</tr>",
    ]
    for r in top_rows:
        others = (
            "<ul>" + "".join(f"<li>{e(c)}</li>" for c in r["others"]) + "</ul>"
            if r["others"]
            else '<span class="muted">(none in the set)</span>'
        )
        parts.append(
            f'<tr><td class="num">{r["rank"]}</td><td class="num">{r["score"]}</td><td class="num">{r["pair"]}</td>'
            f"<td>{e(r['image_id'])}</td><td>{e(r['caption'])}</td><td>{others}</td>"
            + (f"<td>{r['truth']}</td>" if truth else "")
            + "</tr>"
        )
    parts.append("</table><p>All pairs, ranked: <code>pairs.csv</code>. Figures: <code>summary.json</code>.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_audit(
    out_dir: str | Path,
    *,
    scores: np.ndarray,
    captions: Sequence[str],
    caption_image: np.ndarray,
    image_ids: Sequence[str] | None = None,
    true_clean: np.ndarray | None = None,
    threshold: float = 0.5,
    top: int = 50,
    title: str = "noisycorr pair audit",
    source: str = "",
) -> dict:
    """Write a pair audit: ranked CSV, histogram, Markdown and HTML reports, JSON figures.

    Files in ``out_dir`` (created), each written through a temp file and ``os.replace``:

    - ``pairs.csv``: one row per pair, most suspicious first: ``rank, pair, image, image_id, score,
      flagged, caption`` (+ ``truly_mismatched`` with ``true_clean``). ``pair`` is the caption index
      k, ``image`` its image row; ``flagged`` is ``score < threshold``.
    - ``scores.png``: score histogram (true matches / mismatches overlaid with ``true_clean``) and
      the threshold; skipped, and said so in the summary, when matplotlib is not installed.
    - ``report.md``, ``report.html`` (self-contained; the plot by relative link): the figures, score
      quantiles, and the ``top`` most suspicious pairs with up to two other captions of the same
      image (highest-scoring first) so that a reader sees what the image shows.
    - ``summary.json``: the returned figures.

    With ``true_clean`` the summary adds, computed by ``noisycorr.eval.detection``: ROC-AUC of the
    score for the true-match label (= of ``1 - score`` for finding mismatches; None when only one
    class is present), the precision of the top 1%/5%/10% most suspicious pairs
    (``max(1, int(N * share))`` pairs each, in ``rank`` order) as truly mismatched, and the
    precision / recall / F1 of the flags (None when undefined).

    Args:
        out_dir: output folder.
        scores: (N,) quality scores in [0, 1], 1 = surely a true match.
        captions: N caption strings, caption k of pair k.
        caption_image: (N,) int image row of each pair.
        image_ids: one id per image row (the row number is used when None).
        true_clean: (N,) bool ground truth, True = the pair is a true match (synthetic noise only).
        threshold: flag ``score < threshold``, in [0, 1].
        top: pairs listed in the reports (all pairs are in the CSV).
        title: report title.
        source: free text shown under the title (e.g. the run folder the scores came from).

    Returns:
        The summary dict written to ``summary.json``.

    Raises:
        InputError: inputs of the wrong length, type or range; checked before anything is written.
        ValueError: ``threshold`` out of [0, 1] or a negative ``top``.
    """
    s = _check_scores(scores)
    n = s.size
    caps = _check_strings(captions, n, "captions", "one caption per pair")
    ids = None if image_ids is None else _check_strings(image_ids, None, "image_ids", "one id per image row")
    pairing = _check_pairing(caption_image, n, None if ids is None else len(ids))
    mismatched = None if true_clean is None else ~_check_mask(true_clean, n, "true_clean")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if int(top) < 0:
        raise ValueError(f"top must be >= 0, got {top!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "a folder for the audit", "an existing file")

    threshold = float(threshold)
    flagged = s < threshold
    order = _severity_order(s)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    summary: dict[str, Any] = {
        "title": title,
        "source": source,
        "n_pairs": n,
        "threshold": threshold,
        "n_flagged": int(flagged.sum()),
        "fraction_flagged": float(flagged.mean()),
        "score_quantiles": _quantiles(s),
        "ground_truth": None if mismatched is None else _detection_figures(s, mismatched, flagged),
        "plot": None,
        "plot_skipped": None,
        "top": min(int(top), n),
    }
    files: dict[str, bytes] = {}
    if have_matplotlib():
        files[_PLOT_FILE] = _plot_bytes(s, mismatched, threshold, title)
        summary["plot"] = _PLOT_FILE
    else:
        summary["plot_skipped"] = "matplotlib is not installed (pip install 'noisycorr[plot]')"
    top_pairs = order[: summary["top"]]
    others = _other_captions(pairing, s, top_pairs, _N_OTHER_CAPTIONS)
    rows = _top_rows(top_pairs, others, ranks, s, caps, pairing, ids, mismatched)
    summary["files"] = ["pairs.csv", *files, "report.md", "report.html", "summary.json"]
    files["pairs.csv"] = _csv_bytes(order, s, flagged, caps, pairing, ids, mismatched)
    files["report.md"] = _report_md(summary, rows).encode("utf-8")
    files["report.html"] = _report_html(summary, rows).encode("utf-8")
    files["summary.json"] = (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode("utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    return summary


# -------------------------------------------------------------------------------------- clean copy


def _copy_rows(src: np.ndarray, rows: np.ndarray, dst_path: Path) -> int:
    """Write ``src[rows]`` to a new .npy file in chunks of at most ~``_CHUNK_BYTES``; returns its size."""
    out = np.lib.format.open_memmap(dst_path, mode="w+", dtype=src.dtype, shape=(rows.size, *src.shape[1:]))
    row_bytes = max(1, int(np.prod(src.shape[1:])) * src.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, rows.size, step):
        out[start : start + step] = src[rows[start : start + step]]
    out.flush()
    del out
    return dst_path.stat().st_size


def _feature_sources(
    src_root: Path, split: PrecompSplit, split_name: str, features: Sequence[str]
) -> tuple[dict[str, tuple[np.ndarray, int]], list[str]]:
    """Open each existing ``{split_name}_{name}.npy``; returns name -> (memmap, row stride) and the missing names."""
    found: dict[str, tuple[np.ndarray, int]] = {}
    missing = []
    for name in features:
        if not isinstance(name, str) or not name or "/" in name or os.sep in name:
            raise InputError("features", "feature file stems such as 'ims' or 'pooled'", repr(name))
        path = src_root / f"{split_name}_{name}.npy"
        if not path.is_file():
            missing.append(name)
            continue
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise InputError(path, "a .npy array file", f"unreadable data ({err})") from None
        if arr.ndim not in (2, 3):
            raise InputError(path, "2 dims (N, D) or 3 dims (N, R, D)", f"shape {arr.shape}")
        if arr.shape[0] == split.n_images:
            found[name] = (arr, 1)
        elif split.repeated_rows and arr.shape[0] == split.n_images * _NCR_DEV_REPEAT:
            found[name] = (arr, _NCR_DEV_REPEAT)  # NCR dev layout: one stored row per caption
        else:
            raise InputError(path, f"{split.n_images} image rows, as in the loaded split", f"{arr.shape[0]} rows")
    if not found:
        raise InputError(
            src_root, "a features file " + " or ".join(f"{split_name}_{f}.npy" for f in features), "none exists"
        )
    return found, missing


def _files_to_link(src_root: Path, split_name: str) -> list[str]:
    """Regular files of the other splits and shared files (vocab JSONs); not this split's, not READMEs."""
    names = []
    for p in sorted(src_root.iterdir()):
        if p.name.startswith((".", f"{split_name}_", "README")) or not p.is_file():
            continue
        names.append(p.name)
    return names


def write_clean_copy(
    dst: str | Path,
    *,
    split: PrecompSplit,
    caption_image: np.ndarray,
    keep: np.ndarray,
    src_root: str | Path,
    split_name: str = "train",
    features: Sequence[str] = ("ims",),
    link_other_splits: bool = True,
) -> dict:
    """Write a copy of a precomp dataset without the dropped pairs.

    The precomp layout pairs caption k with image ``k // captions_per_image``, so the copy uses one
    caption per image: output caption j is the j-th kept caption (original order) and output image
    row j a copy of its image row ``caption_image[k]``. With ``captions_per_image == 1`` and the
    identity pairing (web data such as CC152K) this just keeps rows; with 5 captions per image an
    image kept with m captions is stored m times (the returned ``bytes_written`` says how large the
    copy is). Load it with ``load_precomp(dst, split_name, captions_per_image=1)``: the explicit 1
    stops the NCR dev-layout detection from mistaking images kept with all five captions for that
    layout.

    Files in ``dst``:

    - ``{split_name}_{name}.npy`` for each name in ``features`` whose source file exists (region
      (N, R, D) or pooled (N, D)), same dtype, copied in chunks through a memory map;
    - ``{split_name}_caps.txt`` (also when the source had a CC152K ``.tsv``), ``{split_name}_ids.txt``
      when the split has ids (``{split}_ids.txt`` or the TSV id column), one per output row;
    - ``{split_name}_source_pairs.npy``: (n_kept, 2) int64, per output row the source caption index
      and source image row (the dropped pairs are the caption indices missing from column 0);
    - ``README.txt``: what was dropped and how;
    - with ``link_other_splits``: absolute symbolic links to every other regular file of
      ``src_root`` (other splits' captions / features / ids, vocab JSONs), except this split's
      files and README files. Absolute links keep working when ``dst`` is moved, not when the
      source is.

    Everything is written into a temp folder next to ``dst`` that is renamed to ``dst`` at the end,
    so a failure leaves nothing behind.

    Args:
        dst: new folder; must not exist, or be empty.
        split: the loaded split (captions, captions per image, ids, image count).
        caption_image: (N_cap,) int training pairing, caption k with image row ``caption_image[k]``.
        keep: (N_cap,) bool, True = keep the pair.
        src_root: the folder the split was loaded from (feature files and other splits).
        split_name: the split's file prefix.
        features: feature file stems to copy; missing ones are skipped (at least one must exist).
        link_other_splits: link the other files of ``src_root`` into the copy.

    Returns:
        Figures: pairs in / kept / dropped, output rows, features written (shape, dtype, bytes),
        total ``bytes_written``, linked files.

    Raises:
        InputError: ``dst`` exists and is not empty; arrays of the wrong shape or type; no kept pair;
            no features file; a features file whose row count does not fit the split.
    """
    dst = Path(dst)
    src_root = Path(src_root)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(dst, "a new or empty folder for the clean copy", "an existing non-empty path")
    if not isinstance(split, PrecompSplit):
        raise InputError("split", "a PrecompSplit from load_precomp", type(split).__name__)
    if not src_root.is_dir():
        raise InputError(src_root, "the precomp data folder", "no such directory")
    n_cap = split.n_captions
    pairing = _check_pairing(caption_image, n_cap, split.n_images)
    kept = np.flatnonzero(_check_mask(keep, n_cap, "keep"))
    if kept.size == 0:
        raise InputError("keep", "at least one kept pair", "all pairs dropped")
    sources, missing = _feature_sources(src_root, split, split_name, features)
    rows = pairing[kept]
    ids = None if split.ids is None else [split.ids[r] for r in rows.tolist()]
    linked = _files_to_link(src_root, split_name) if link_other_splits else []

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        written: dict[str, dict[str, Any]] = {}
        for name, (arr, stride) in sources.items():
            size = _copy_rows(arr, rows * stride, tmp / f"{split_name}_{name}.npy")
            written[name] = {
                "shape": [int(rows.size), *map(int, arr.shape[1:])],
                "dtype": str(arr.dtype),
                "bytes": size,
            }
        caps_text = "".join(split.captions[k] + "\n" for k in kept.tolist())
        (tmp / f"{split_name}_caps.txt").write_bytes(caps_text.encode("utf-8"))
        if ids is not None:
            (tmp / f"{split_name}_ids.txt").write_bytes("".join(i + "\n" for i in ids).encode("utf-8"))
        np.save(tmp / f"{split_name}_source_pairs.npy", np.stack([kept, rows], axis=1).astype(np.int64))
        for name in linked:
            os.symlink((src_root / name).resolve(), tmp / name)
        info: dict[str, Any] = {
            "dst": str(dst),
            "src_root": str(src_root),
            "split": split_name,
            "captions_per_image_in": split.captions_per_image,
            "captions_per_image_out": 1,
            "n_pairs_in": n_cap,
            "n_pairs_kept": int(kept.size),
            "n_pairs_dropped": int(n_cap - kept.size),
            "n_images_in": split.n_images,
            "n_image_rows_out": int(rows.size),
            "n_distinct_images_out": int(np.unique(rows).size),
            "features": written,
            "features_missing": missing,
            "bytes_written": int(sum(f["bytes"] for f in written.values())),
            "linked": linked,
        }
        (tmp / "README.txt").write_bytes(_clean_readme(info).encode("utf-8"))
        if dst.exists():
            dst.rmdir()  # empty, checked above
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _clean_readme(info: dict[str, Any]) -> str:
    sp = info["split"]
    feats = "\n".join(
        f"  {sp}_{name}.npy  shape {tuple(f['shape'])}  {f['dtype']}  {f['bytes']} bytes"
        for name, f in info["features"].items()
    )
    lines = [
        f"noisycorr clean copy of {info['src_root']} (split {sp!r}), written by noisycorr.audit.write_clean_copy.",
        "",
        f"Source pairs:  {info['n_pairs_in']} (caption k with image row caption_image[k]; "
        f"{info['n_images_in']} images, {info['captions_per_image_in']} captions per image)",
        f"Kept pairs:    {info['n_pairs_kept']}",
        f"Dropped pairs: {info['n_pairs_dropped']} (flagged as suspected mismatches)",
        "",
        "Layout: one caption per image. Output caption j is the j-th kept caption in source order and",
        "output image row j a copy of its source image row, so an image kept with several captions is",
        f"stored once per caption ({info['n_image_rows_out']} rows, {info['n_distinct_images_out']} distinct images).",
        f"Load with load_precomp(<this folder>, {sp!r}, captions_per_image=1).",
        "",
        f"{sp}_source_pairs.npy: (n_kept, 2) int64, per output row [source caption index, source image row];",
        "the dropped pairs are the source caption indices missing from column 0.",
        "",
        "Features:",
        feats,
    ]
    if info["features_missing"]:
        lines.append("Not in the source (skipped): " + ", ".join(info["features_missing"]))
    if info["linked"]:
        lines += ["", "Absolute symbolic links to the source folder (other splits, vocabularies):"]
        lines += [f"  {name}" for name in info["linked"]]
    return "\n".join(lines) + "\n"
