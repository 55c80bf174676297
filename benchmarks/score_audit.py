"""Score an audit of a table made by make_shuffled_table.py against the rows that were shuffled.

Reads ``AUDIT/pairs.csv`` (its ``row`` column is the table row of each pair) and the ``shuffled.csv``
written beside the table, and prints JSON: ROC-AUC of (1 - score) for "shuffled", the precision of
the 1 / 5 / 10 % most suspicious pairs, and the precision and recall of the flagged pairs. Rows that
featurize skipped are not in pairs.csv and are left out of every figure (their count is printed).

    python benchmarks/score_audit.py runs/shuffled-audit --truth runs/shuffled-table/shuffled.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from noisycorr.eval.detection import detection_metrics, precision_at_top


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("audit", type=Path, help="the audit folder (holds pairs.csv)")
    p.add_argument("--truth", type=Path, required=True, help="shuffled.csv of make_shuffled_table.py")
    args = p.parse_args(argv)
    with open(args.truth, newline="", encoding="utf-8") as fh:
        shuffled = {int(r["row"]): r["shuffled"] == "1" for r in csv.DictReader(fh)}
    with open(args.audit / "pairs.csv", newline="", encoding="utf-8") as fh:
        pairs = list(csv.DictReader(fh))
    scores = np.array([float(r["score"]) for r in pairs])
    true_clean = np.array([not shuffled[int(r["row"])] for r in pairs])
    flagged = np.array([r["flagged"] == "1" for r in pairs])
    det = detection_metrics(scores, ~flagged, true_clean)
    out = {
        "pairs": len(pairs),
        "rows_not_scored": len(shuffled) - len(pairs),
        "shuffled_share": round(float((~true_clean).mean()), 4),
        "roc_auc": round(det["auc"], 4),
        **{f"precision_top{int(f * 100)}pc": round(precision_at_top(1.0 - scores, true_clean, f), 4)
           for f in (0.01, 0.05, 0.10)},
        "flagged": int(flagged.sum()),
        "flagged_precision": round(det["precision"], 4),
        "flagged_recall": round(det["recall"], 4),
    }
    summary = args.audit / "summary.json"
    if summary.is_file():
        out["seconds"] = json.loads(summary.read_text(encoding="utf-8")).get("seconds")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
