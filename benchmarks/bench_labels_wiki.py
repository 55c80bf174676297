"""Noisy-label quality benchmark: CE, MRL and NIRNL on the Wikipedia presets over noise rates and seeds.

Runs every (method, rate, seed) one after the other in this process (each run is what
``noisycorr train -c wiki-METHOD --set noise.rate=R --set train.seed=S --out OUT/METHOD-rR-sS`` does),
skips finished runs, resumes interrupted ones, and prints a JSON table of the test mAP (mean and
spread over the seeds). Example:

    OMP_NUM_THREADS=1 python benchmarks/bench_labels_wiki.py --out runs/wiki-labels \
        --methods ce mrl nirnl --rates 0.0 0.2 0.4 0.6 0.8 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from noisycorr.config import load_config
from noisycorr.engine.trainer import train


def run_dir(out: Path, method: str, rate: float, seed: int) -> Path:
    return out / f"{method}-r{rate:g}-s{seed}"


def summarise(out: Path, methods: list[str], rates: list[float], seeds: list[int]) -> list[dict]:
    """One row per (method, rate): test mAP per direction, mean over seeds and half the max-min spread."""
    rows = []
    for method in methods:
        for rate in rates:
            found = [run_dir(out, method, rate, s) / "results.json" for s in seeds]
            res = [json.loads(p.read_text()) for p in found if p.is_file()]
            if not res:
                continue
            row: dict = {"method": method, "rate": rate, "seeds": len(res)}
            for key in ("i2t_map", "t2i_map", "avg_map"):
                vals = np.array([r["test"][key] for r in res])
                row[key] = round(float(vals.mean()), 4)
                row[f"{key}_spread"] = round(float(vals.max() - vals.min()) / 2, 4)
            row["best_epochs"] = [r["best"]["epoch"] + 1 for r in res]
            row["train_seconds"] = round(float(np.mean([r["train_seconds"] for r in res])), 1)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/wiki-labels")
    p.add_argument("--methods", nargs="+", default=["ce", "mrl", "nirnl"])
    p.add_argument("--rates", nargs="+", type=float, default=[0.2, 0.4, 0.6, 0.8])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra section.key=value")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.summary_only:
        for seed in args.seeds:
            for rate in args.rates:
                for method in args.methods:
                    target = run_dir(out, method, rate, seed)
                    if (target / "results.json").is_file():
                        continue
                    overrides = [
                        f"noise.rate={rate}",
                        f"train.seed={seed}",
                        f"run.out_dir={target}",
                        "run.progress=false",
                        *args.overrides,
                    ]
                    cfg = load_config(f"wiki-{method}", overrides)
                    res = train(cfg, resume=(target / "checkpoint.pt").is_file())
                    print(f"{method} rate {rate:g} seed {seed}: test {res['test']}", file=sys.stderr, flush=True)
    print(json.dumps(summarise(out, args.methods, args.rates, args.seeds), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
