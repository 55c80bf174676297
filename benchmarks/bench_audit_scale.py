"""Audit of large synthetic precomp folders with a trained global-backbone run: time per stage and peak RSS.

What is measured is the user's path ``noisycorr audit RUN --data-root DATA --report OUT`` (the run only
scores; it is not trained on DATA), run in a fresh child process per size so that each peak is its own:

- ``load``: the run's weights and vocabulary, the split (features memory-mapped and scanned for NaN/Inf,
  captions read and tokenized);
- ``pass``: the per-sample passes (every pair's mean hinge over its in-batch negatives, per network);
- ``mixture``: the two-component mixture fits giving each pair's clean probability;
- ``write``: ranking and the audit files (``pairs.csv``, reports, ``summary.json``, ``pair_scores.npy``).

Peak RSS is the child's ``VmHWM`` (from ``/proc/self/status``), reset at each stage boundary by writing 5
to ``/proc/self/clear_refs``. ROC-AUC is of ``1 - score`` against the planted mismatches. Folders are made
by ``make_synthetic_precomp.py`` (kept and reused when their ``synthetic.json`` matches, see ``--keep``);
without ``--run`` a scorer is trained first on 4,000 other pairs of the same classes (``audit-global``,
4 epochs). One JSON object on stdout.

    python benchmarks/bench_audit_scale.py --work /work/scale_tmp --threads 2
    python benchmarks/bench_audit_scale.py --work /work/scale_tmp --sizes 100000 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from perfutil import peak_rss_mib, reset_peak_rss  # noqa: E402

# ------------------------------------------------------------------------------------------ memory


class Stages:
    """Wall time and peak RSS of consecutive stages; ``switch(name)`` closes the current one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.current: str | None = None
        self.t = time.perf_counter()

    def switch(self, name: str | None) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self.t
            self.peak[self.current] = max(self.peak.get(self.current, 0.0), peak_rss_mib())
        reset_peak_rss()
        self.current, self.t = name, time.perf_counter()


# ------------------------------------------------------------------------------------------- child


def child(run: str, data: str, out: str, threads: int) -> dict:
    """Run the audit CLI on ``data`` with stage hooks; returns the figures."""
    import numpy as np

    import noisycorr.api as api
    import noisycorr.audit as audit
    import noisycorr.selection as selection
    from noisycorr.cli.main import main
    from noisycorr.eval.detection import detection_metrics

    st = Stages()
    prev = st.current

    real_ctx, real_mix, real_write = api.pair_context, selection.clean_probability, audit.write_audit

    def pair_context(*a, **k):  # the split is loaded and tokenized: the passes start
        st.switch("pass")
        return real_ctx(*a, **k)

    def clean_probability(*a, **k):
        nonlocal prev
        prev = st.current
        st.switch("mixture")
        try:
            return real_mix(*a, **k)
        finally:
            st.switch(prev)

    def write_audit(*a, **k):
        st.switch("write")
        return real_write(*a, **k)

    api.pair_context, selection.clean_probability, audit.write_audit = pair_context, clean_probability, write_audit
    t0 = time.perf_counter()
    st.switch("load")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        rc = main(["audit", run, "--data-root", data, "--report", out, "--threads", str(threads), "--top", "50"])
    st.switch(None)
    total = time.perf_counter() - t0
    scores = np.load(Path(out) / "pair_scores.npy").astype(np.float64)
    truth = np.load(Path(data) / "train_mismatched.npy")
    det = detection_metrics(scores, scores >= 0.5, ~truth)
    return {
        "rc": rc,
        "pairs": int(scores.size),
        "seconds": {k: round(v, 1) for k, v in st.seconds.items()} | {"total": round(total, 1)},
        "peak_rss_mib": {k: round(v) for k, v in st.peak.items()} | {"max": round(max(st.peak.values()))},
        "roc_auc": round(float(det["auc"]), 4),
        "flagged_precision": round(float(det["precision"]), 4),
        "flagged_recall": round(float(det["recall"]), 4),
        "audit_mib": round(sum(f.stat().st_size for f in Path(out).iterdir()) / 2**20, 1),
    }


# ------------------------------------------------------------------------------------------ parent


def _run(cmd: list[str], threads: int, log: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "a") as err:
        res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if res.returncode:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}; see {log}")
    return res.stdout


def make_folder(root: Path, n: int, seed: int, stream: int, val: int, threads: int, log: Path) -> None:
    meta = root / "synthetic.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        if (m.get("n_pairs"), m.get("seed"), m.get("stream"), m.get("val_pairs")) == (n, seed, stream, val):
            return
    _run([sys.executable, str(HERE / "make_synthetic_precomp.py"), "--out", str(root), "--n-pairs", str(n),
          "--seed", str(seed), "--stream", str(stream), "--val-pairs", str(val)], threads, log)


def train_scorer(work: Path, seed: int, threads: int, log: Path) -> Path:
    """A small audit-global run on other images of the same classes (the scorer), trained once."""
    run = work / f"scorer-seed{seed}"
    if (run / "results.json").is_file():
        return run
    data = work / f"scorer-data-seed{seed}"
    make_folder(data, 4000, seed, 1, 500, threads, log)
    _run([sys.executable, "-m", "noisycorr", "train", "-c", "audit-global", "--set", f"data.root={data}",
          "--set", "train.epochs=4", "--set", f"train.threads={threads}", "--set", f"run.out_dir={run}",
          "--set", "run.progress=false"], threads, log)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the data, the scorer and the audits")
    p.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated pair counts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--run", help="a trained run to score with (default: train one into WORK)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the data folders (default: delete each after use)")
    p.add_argument("--child", nargs=3, metavar=("RUN", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, threads=args.threads)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench_audit_scale.log"
    run = Path(args.run) if args.run else train_scorer(args.work, args.seed, args.threads, log)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        data, out = args.work / f"pairs-{n}", args.work / f"audit-{n}"
        t = time.perf_counter()
        make_folder(data, n, args.seed, 0, 0, args.threads, log)
        made = time.perf_counter() - t
        row = json.loads(_run([sys.executable, __file__, "--threads", str(args.threads), "--work", str(args.work),
                               "--child", str(run), str(data), str(out)], args.threads, log))
        row["make_data_seconds"] = round(made, 1)
        row["data_gib"] = round(sum(f.stat().st_size for f in data.iterdir()) / 2**30, 2)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        if not args.keep:
            for f in data.iterdir():
                f.unlink()
            data.rmdir()
    peaks = [r["peak_rss_mib"]["max"] for r in rows]
    growth = None
    if len(rows) > 1:
        growth = round((peaks[-1] - peaks[0]) / ((rows[-1]["pairs"] - rows[0]["pairs"]) / 1e5), 1)
    print(json.dumps({"threads": args.threads, "run": str(run), "sizes": rows,
                      "peak_rss_growth_mib_per_100k_pairs": growth}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
