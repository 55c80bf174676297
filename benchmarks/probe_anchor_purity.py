"""Does diagonal dominance tell the noisy anchors from the clean ones? One BiCro/BiCro++ run, real data.

Loads the last checkpoint of a BiCro or BiCro++ run and replays its anchor choice the way network A's
co-training step sees it: network B splits the training pairs (its per-sample hinge, the run's
estimator), random batches of the run's batch size are drawn from B's clean subset, and in each batch
B's most confident ``floor(B * anchor_fraction) + 1`` pairs are the anchor candidates. For each
candidate it records its diagonal dominance in B's score matrix (what BiCro++ purifies with) and in
A's (the network being trained: a second view, which has memorised other noisy pairs), and whether it
is truly clean (from the run's injected noise, which only scores the anchors here; nothing trains).
Per view and tolerance it prints one JSON line: anchors kept per batch, the share of kept anchors that
are truly clean, and the share of the removed candidates that are truly clean (purification helps only
where that share is low). A first line gives the candidates' precision and, per view, the ROC-AUC of
dominance for telling clean from noisy candidates (0.5: no better than chance).

    python benchmarks/probe_anchor_purity.py runs/bench/flickr-dev/flickr-dev/per_caption-0.6/bicropp/seed0 \
        --tol -0.05 0 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch
from probeutil import load_run

from noisycorr.eval.detection import detection_metrics
from noisycorr.losses import match_confidence
from noisycorr.methods.consistency import diagonal_dominance, peer_view
from noisycorr.selection import clean_probability


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a BiCro / BiCro++ run folder with checkpoint.pt")
    ap.add_argument("--tol", type=float, nargs="+", default=[-0.05, 0.0, 0.05, 0.1, 0.2])
    ap.add_argument("--batches", type=int, default=100, help="random clean-subset batches to replay")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    cfg, data, method, epoch, ctx = run.cfg, run.data, run.method, run.epoch, run.ctx
    mc = method.cfg
    net, other = method.nets()["B"], method.nets()["A"]
    losses = ctx.per_sample(lambda b: method.per_sample_loss(net, b, mc.margin), desc="per-sample pass B").numpy()
    prob = clean_probability(losses, estimator=mc.estimator, seed=0, monotone=mc.monotone)
    clean_subset = np.flatnonzero(prob > 0.5)
    truth = np.asarray(data.clean, dtype=bool)
    rng = np.random.default_rng(args.seed)
    size = min(int(cfg.train.batch_size), clean_subset.size)
    k = int(size * mc.anchor_fraction) + 1
    views: dict[str, list[np.ndarray]] = {"B": [], "A": []}
    clean_all = []
    for _ in range(args.batches):
        idx = np.sort(rng.choice(clean_subset, size=size, replace=False))
        batch = ctx.fetch(idx)
        scores, _, _ = peer_view(net, batch)
        cand = match_confidence(scores, mc.margin, normalise=False).topk(k).indices
        views["B"].append(diagonal_dominance(scores)[cand].numpy())
        views["A"].append(diagonal_dominance(peer_view(other, batch)[0])[cand].numpy())
        clean_all.append(truth[idx[cand.numpy()]])
    doms = {v: np.stack(d) for v, d in views.items()}  # (batches, k) each
    is_clean = np.stack(clean_all)
    print(json.dumps({
        "run": args.run, "checkpoint_epoch": epoch, "clean_subset": int(clean_subset.size),
        "clean_subset_truly_clean": round(float(truth[clean_subset].mean()), 3),
        "candidates_per_batch": k, "candidate_precision": round(float(is_clean.mean()), 3),
        **{f"dominance_auc_{v}": round(detection_metrics(d.ravel(), d.ravel() > 0, is_clean.ravel())["auc"], 3)
           for v, d in doms.items()},
        **{f"dominance_quartiles_{v}": np.round(np.quantile(d, [0.25, 0.5, 0.75]), 3).tolist()
           for v, d in doms.items()},
    }))
    for (view, dom), tol in itertools.product(doms.items(), args.tol):
        kept = dom > tol
        empty = ~kept.any(axis=1)  # the method keeps the most dominant candidate of such a batch
        kept[empty, dom[empty].argmax(axis=1)] = True
        removed = ~kept
        print(json.dumps({
            "view": view, "tol": tol, "anchors_per_batch": round(float(kept.sum(1).mean()), 2),
            "kept_truly_clean": round(float(is_clean[kept].mean()), 3),
            "removed_share": round(float(removed.mean()), 3),
            "removed_truly_clean": round(float(is_clean[removed].mean()), 3) if removed.any() else None,
        }))


if __name__ == "__main__":
    main()
