"""Noisy-label quality benchmark: CE, MRL and NIRNL on the Wikipedia presets over noise rates and seeds.

Runs every (method, rate, seed) one after the other in this process (each run is what
``noisycorr train -c wiki-METHOD --set noise.rate=R --set train.seed=S --out OUT/METHOD-rR-sS`` does),
skips finished runs, resumes interrupted ones, and prints a JSON table of the test mAP (mean and
spread over the seeds). Each row names its protocol, for the presets differ: ``wiki-mrl`` draws the
label noise per modality as MRL does (so does ``wiki-ce``, its CE ablation), ``wiki-nirnl`` per pair
as NIRNL does; all validate on 231 held-out training items with noisy labels. To compare every
method under one protocol, add ``--set noise.scope=per_pair`` (or ``per_modality``), and ``--set data.val=test_head``
for the authors' validation (the first 231 test items, clean labels). Example:

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


def protocol(results: list[dict]) -> dict[str, str]:
    """The protocol of a cell, from its runs' ``results.json``: how the label noise was drawn
    (``per_pair`` for NIRNL, ``per_modality`` for MRL) and where validation came from (``train``:
    held-out training items with noisy labels; ``test_head``: the authors' first test items, clean).
    A cell whose seeds disagree says ``mixed``: its figures are not one protocol's."""
    out = {}
    for key, values in (
        ("noise_scope", {r["noise"].get("scope", "?") for r in results}),
        ("val", {r["split"].get("val", "?") for r in results}),
    ):
        out[key] = values.pop() if len(values) == 1 else "mixed"
    return out


def summarise(out: Path, methods: list[str], rates: list[float], seeds: list[int]) -> list[dict]:
    """One row per (method, rate): its protocol (noise scope, validation source), test mAP per
    direction, mean over seeds and half the max-min spread. MRL's preset draws its noise per
    modality and NIRNL's per pair: compare them across rows only with the protocol in view, or run
    both under one (``--set noise.scope=per_pair``)."""
    rows = []
    for method in methods:
        for rate in rates:
            found = [run_dir(out, method, rate, s) / "results.json" for s in seeds]
            res = [json.loads(p.read_text()) for p in found if p.is_file()]
            if not res:
                continue
            row: dict = {"method": method, "rate": rate, "seeds": len(res), **protocol(res)}
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
