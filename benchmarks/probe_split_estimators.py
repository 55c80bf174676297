"""Which clean/noisy split would each estimator make from a run's current state? One run folder, real data.

Loads the last checkpoint of a two-network run (NCR, BiCro, BiCro++, IN2R, ...), computes network A's
per-sample mean-negative hinge on every training pair (the statistic the split is fitted on) and fits
each estimator to it: the Gaussian mixture (NCR) and the Beta mixture (BiCro), each with its raw and
with its monotone posterior. Per estimator it prints one JSON line: the share of pairs called clean,
the share of truly clean pairs in the clean and in the noisy subset, and the ROC-AUC of the clean
probability. The truth comes from the run's injected noise and only scores the splits; nothing trains.
The Beta mixture's fitted components are printed too (a component that covers both tails shows as the
low-mean one with a large variance).

    python benchmarks/probe_split_estimators.py runs/bench/flickr-dev/flickr-dev/per_caption-0.6/bicro/seed0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from probeutil import load_run

from noisycorr.eval.detection import detection_metrics
from noisycorr.selection import clean_probability
from noisycorr.selection.mixtures import BetaMixture1D, minmax_normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder with checkpoint.pt (a two-network method)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    data, method, epoch, ctx = run.data, run.method, run.epoch, run.ctx
    net = method.nets()["A"]
    losses = ctx.per_sample(lambda b: method.per_sample_loss(net, b, method.cfg.margin), desc="per-sample pass A")
    losses = losses.numpy()
    truth = data.clean
    print(json.dumps({"run": args.run, "checkpoint_epoch": epoch, "pairs": int(losses.size),
                      "truly_clean": round(float(truth.mean()), 3)}))
    for estimator in ("gmm", "bmm"):
        for monotone in (False, True):
            prob = clean_probability(losses, estimator=estimator, seed=0, monotone=monotone)
            clean = prob > 0.5
            print(json.dumps({
                "estimator": estimator, "monotone": monotone, "clean_share": round(float(clean.mean()), 3),
                "clean_subset_truly_clean": round(float(truth[clean].mean()), 3) if clean.any() else None,
                "noisy_subset_truly_clean": round(float(truth[~clean].mean()), 3) if (~clean).any() else None,
                "auc": round(detection_metrics(prob, clean, truth)["auc"], 3),
            }))
    bmm = BetaMixture1D().fit(minmax_normalise(losses))
    print(json.dumps({"bmm_alphas": np.round(bmm.alphas, 2).tolist(), "bmm_betas": np.round(bmm.betas, 2).tolist(),
                      "bmm_weights": np.round(bmm.weights, 3).tolist(), "bmm_means": np.round(bmm.means, 3).tolist()}))


if __name__ == "__main__":
    main()
