"""The human-readable pair audit: ranked CSV, score histogram, Markdown and HTML reports, JSON figures.

:func:`write_audit` takes scores already computed (see :mod:`noisycorr.audit.scores`) with the captions
and the pairing, and writes every file through :func:`noisycorr.data.paths.atomic_write_bytes`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisycorr.audit.scores import check_scores, check_unit, severity_order
from noisycorr.data.cleancopy import check_mask, check_pairing
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.engine.plots import have_matplotlib
from noisycorr.errors import InputError

__all__ = ["write_audit"]

_TOP_FRACTIONS = (0.01, 0.05, 0.10)
_N_OTHER_CAPTIONS = 2
_PLOT_FILE = "scores.png"


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
    extra: dict[str, list[Any]],
) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["rank", "pair", "image", "image_id", "score", "flagged", "caption"]
    if mismatched is not None:
        header.append("truly_mismatched")
    header += list(extra)
    writer.writerow(header)
    # Column by column from Python lists (no per-row NumPy scalar access), then one writerows.
    pairs = order.tolist()
    rows = caption_image[order].tolist()
    columns = [
        range(1, len(pairs) + 1),
        pairs,
        rows,
        rows if image_ids is None else [image_ids[r] for r in rows],
        [f"{x:.6g}" for x in scores[order].tolist()],  # significant digits: the surest mismatches score far below 1e-6
        flagged[order].astype(np.int64).tolist(),
        [captions[k] for k in pairs],
    ]
    if mismatched is not None:
        columns.append(mismatched[order].astype(np.int64).tolist())
    columns += [[values[k] for k in pairs] for values in extra.values()]
    writer.writerows(zip(*columns))
    # surrogateescape: text read from a source with bytes that were not UTF-8 goes back out unchanged.
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


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


def _fmt_score(x: float) -> str:
    """Four decimals; tiny scores (the surest mismatches) in scientific notation rather than as 0.0000."""
    return f"{x:.4f}" if x >= 1e-3 or x == 0.0 else f"{x:.1e}"


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
    thumbnails: Callable[[int], str | None] | None = None,
    best_captions: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    thumbs: dict[int, str | None] = {}
    for k, other in zip(top_pairs.tolist(), others):
        row = int(caption_image[k])
        if thumbnails is not None and row not in thumbs:
            thumbs[row] = thumbnails(row)
        best = None if best_captions is None else best_captions.get(row)
        rows.append(
            {
                "rank": int(ranks[k]),
                "score": _fmt_score(float(scores[k])),
                "pair": k,
                "image_id": image_ids[row] if image_ids is not None else str(row),
                "caption": captions[k],
                "others": [captions[j] for j in other],
                "truth": None if mismatched is None else ("mismatch" if mismatched[k] else "match"),
                "thumb": thumbs.get(row),
                # the caption of the data the model matches best with this image, when it is another one
                "best": None if best is None or int(best) == k else (int(best), captions[int(best)]),
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
    best = summary.get("best_captions", False)
    lines += [
        f"## The {len(top_rows)} most suspicious pairs",
        "",
        "Other captions: up to two further captions paired with the same image, highest-scoring first, "
        "to show what the image holds." + (_BEST_NOTE if best else ""),
        "",
        "| rank | score | pair | image | caption | other captions of the image |"
        + (" best-matching caption |" if best else "") + (" truth |" if truth else ""),
        "|---|---|---|---|---|---|" + ("---|" if best else "") + ("---|" if truth else ""),
    ]
    for r in top_rows:
        others = "<br>".join(_md_text(c) for c in r["others"]) or "(none in the set)"
        cells = [str(r["rank"]), r["score"], str(r["pair"]), _md_text(r["image_id"]), _md_text(r["caption"]), others]
        if best:
            cells.append(f"{_md_text(r['best'][1])} (pair {r['best'][0]})" if r["best"] else "(its own)")
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
    "img.thumb{display:block;width:160px;max-width:none;margin-bottom:.3em;border:1px solid #ccc}"
    "td.img{width:164px;font-size:.8em;word-break:break-all}"
)
_BEST_NOTE = (
    " Best-matching caption: the caption of the whole data set that the trained model matches best with "
    "the pair's image, when it is not the pair's own."
)


def _plot_src(summary: dict[str, Any], png: bytes | None) -> str:
    if png is not None:
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return summary["plot"]


def _report_html(summary: dict[str, Any], top_rows: list[dict[str, Any]], plot_png: bytes | None = None) -> str:
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
        parts.append(f'<p><img src="{e(_plot_src(summary, plot_png))}" alt="histogram of the pair scores"></p>')
    else:
        parts.append(f'<p class="muted">No plot: {e(summary["plot_skipped"])}.</p>')
    truth = summary.get("ground_truth") is not None
    best = summary.get("best_captions", False)
    parts += [
        f"<h2>The {len(top_rows)} most suspicious pairs</h2>",
        "<p>Other captions: up to two further captions paired with the same image, highest-scoring "
        "first, to show what the image holds." + (e(_BEST_NOTE) if best else "") + "</p>",
        "<table><tr><th>rank</th><th>score</th><th>pair</th><th>image</th><th>caption</th>"
        "<th>other captions of the image</th>" + ("<th>best-matching caption</th>" if best else "")
        + ("<th>truth</th>" if truth else "") + "</tr>",
    ]
    for r in top_rows:
        others = (
            "<ul>" + "".join(f"<li>{e(c)}</li>" for c in r["others"]) + "</ul>"
            if r["others"]
            else '<span class="muted">(none in the set)</span>'
        )
        thumb = f'<img class="thumb" src="{e(r["thumb"])}" alt="">' if r.get("thumb") else ""
        image_cell = f'<td class="img">{thumb}{e(r["image_id"])}</td>' if thumb else f"<td>{e(r['image_id'])}</td>"
        best_cell = ""
        if best:
            best_cell = (f'<td>{e(r["best"][1])} <span class="muted">(pair {r["best"][0]})</span></td>' if r["best"]
                         else '<td><span class="muted">(its own)</span></td>')
        parts.append(
            f'<tr><td class="num">{r["rank"]}</td><td class="num">{r["score"]}</td><td class="num">{r["pair"]}</td>'
            f"{image_cell}<td>{e(r['caption'])}</td><td>{others}</td>{best_cell}"
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
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    thumbnails: Callable[[int], str | None] | None = None,
    best_captions: Mapping[int, int] | None = None,
    embed_plot: bool = False,
) -> dict:
    """Write a pair audit: ranked CSV, histogram, Markdown and HTML reports, JSON figures.

    Files in ``out_dir`` (created), each written atomically (``atomic_write_bytes``):

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
        extra_columns: more per-pair columns for ``pairs.csv`` (name -> N values), after the others.
        thumbnails: image row -> an ``<img src>`` value (a ``data:`` URI keeps the page self-contained)
            or None; called for the images of the listed pairs only, shown beside their captions.
        best_captions: image row -> the caption index the model matches best with that image; the
            reports show it beside a listed pair when it is not the pair's own caption.
        embed_plot: put the histogram into ``report.html`` as a ``data:`` URI (``scores.png`` is
            written too), so that the page is one self-contained file.

    Returns:
        The summary dict written to ``summary.json``.

    Raises:
        InputError: inputs of the wrong length, type or range, ``threshold`` out of [0, 1] or a
            ``top`` that is not a non-negative integer; all checked before anything is written.
    """
    s = check_scores(scores)
    n = s.size
    caps = _check_strings(captions, n, "captions", "one caption per pair")
    ids = None if image_ids is None else _check_strings(image_ids, None, "image_ids", "one id per image row")
    pairing = check_pairing(caption_image, n, None if ids is None else len(ids))
    mismatched = None if true_clean is None else ~check_mask(true_clean, n, "true_clean")
    threshold = check_unit(threshold, "threshold")
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 0:
        raise InputError("top", "a non-negative integer", repr(top))
    extra: dict[str, list[Any]] = {}
    for name, values in (extra_columns or {}).items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) or len(values) != n:
            raise InputError("extra_columns", f"{n} values (one per pair)", f"{name!r} of another length or type")
        extra[str(name)] = list(values)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "a folder for the audit", "an existing file")

    flagged = s < threshold
    order = severity_order(s)
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
    if best_captions is not None:
        summary["best_captions"] = True
    files: dict[str, bytes] = {}
    if have_matplotlib():
        files[_PLOT_FILE] = _plot_bytes(s, mismatched, threshold, title)
        summary["plot"] = _PLOT_FILE
    else:
        summary["plot_skipped"] = "matplotlib is not installed (pip install 'noisycorr[plot]')"
    top_pairs = order[: summary["top"]]
    others = _other_captions(pairing, s, top_pairs, _N_OTHER_CAPTIONS)
    rows = _top_rows(top_pairs, others, ranks, s, caps, pairing, ids, mismatched, thumbnails, best_captions)
    summary["files"] = ["pairs.csv", *files, "report.md", "report.html", "summary.json"]
    files["pairs.csv"] = _csv_bytes(order, s, flagged, caps, pairing, ids, mismatched, extra)
    files["report.md"] = _report_md(summary, rows).encode("utf-8", errors="surrogateescape")
    plot_png = files.get(_PLOT_FILE) if embed_plot else None
    files["report.html"] = _report_html(summary, rows, plot_png).encode("utf-8", errors="surrogateescape")
    files["summary.json"] = (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode("utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    return summary
