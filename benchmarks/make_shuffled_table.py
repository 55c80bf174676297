"""Build an image-caption table from the flickr-dev test JPEGs with a share of the captions shuffled.

The table (``table.csv``: ``image,caption``, image paths relative to the table's folder) has one row per
caption: 500 images x 5 captions. A ``--rate`` share of the rows, drawn with ``--seed``, get the caption
of another chosen row whose image is a different one (a permutation among the chosen rows without a
caption landing on its own image). Which rows were shuffled is written to ``shuffled.csv`` (``row,
shuffled, caption_of_row``) beside the table: it is for scoring an audit only, never its input.

    python benchmarks/make_shuffled_table.py --out runs/shuffled-table
    noisycorr audit runs/shuffled-table/table.csv --out runs/shuffled-audit
    python benchmarks/score_audit.py runs/shuffled-audit --truth runs/shuffled-table/shuffled.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from noisycorr.data.paths import atomic_write_bytes, shared_data_dir


def shuffled_pairing(image_of_row: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """(N,) source row of each row's caption: itself, or for the chosen rows another chosen row's
    caption whose image differs."""
    rng = np.random.default_rng(seed)
    n = image_of_row.size
    chosen = np.sort(rng.choice(n, size=int(round(rate * n)), replace=False))
    donor = chosen[rng.permutation(chosen.size)]
    for _ in range(1000):  # swap away the captions that landed on their own image
        bad = np.flatnonzero(image_of_row[donor] == image_of_row[chosen])
        if bad.size == 0:
            break
        other = rng.integers(0, chosen.size, size=bad.size)
        donor[bad], donor[other] = donor[other], donor[bad].copy()
    else:
        raise RuntimeError("could not shuffle without a caption landing on its own image")
    source = np.arange(n)
    source[chosen] = donor
    return source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="the flickr-dev folder (default: the shared data)")
    p.add_argument("--split", default="test", help="the split whose images/ folder holds the JPEGs")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for table.csv and shuffled.csv")
    args = p.parse_args(argv)
    data = args.data or (shared_data_dir() / "flickr-dev" if shared_data_dir() else None)
    if data is None or not (data / "images" / args.split).is_dir():
        print(f"no flickr-dev images under {data}", file=sys.stderr)
        return 2
    ids = (data / f"{args.split}_ids.txt").read_text(encoding="utf-8").split()
    caps = (data / f"{args.split}_caps.txt").read_text(encoding="utf-8").splitlines()
    per_image = len(caps) // len(ids)
    image_of_row = np.arange(len(caps)) // per_image
    source = shuffled_pairing(image_of_row, args.rate, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = os.path.relpath(data / "images" / args.split, args.out)

    def table(header: list[str], rows: list[list]) -> bytes:
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue().encode("utf-8")

    rows = [[f"{folder}/{ids[image_of_row[k]]}", caps[source[k]]] for k in range(len(caps))]
    atomic_write_bytes(args.out / "table.csv", table(["image", "caption"], rows))
    truth = [[k, int(source[k] != k), int(source[k])] for k in range(len(caps))]
    atomic_write_bytes(args.out / "shuffled.csv", table(["row", "shuffled", "caption_of_row"], truth))
    print(json.dumps({"table": str(args.out / "table.csv"), "rows": len(rows), "images": len(ids),
                      "shuffled": int((source != np.arange(len(caps))).sum()), "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
