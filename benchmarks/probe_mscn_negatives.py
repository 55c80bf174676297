"""Does MSCN's co-training hinge hold after the warm-up? Hardest against mean negatives, on real data.

Network A of an MSCN preset is warmed up on every training pair (the method's own warm-up step), its
clean split is drawn by the method's purification (Beta mixture started from the meta set's scores),
and from that one state it trains ``--steps`` bi-level steps on its own split once per
``method.negatives`` choice. Every ``--every`` steps it prints one JSON line: validation rSum of
network A, the mean meta-net score of the meta positives and negatives, and the mean score and ROC-AUC
(against the injected noise, a diagnostic only: nothing trains on it) of 2,000 training pairs.
A collapse shows as every score near 1 (or 0) and the meta BCE far above ln 2.

    python benchmarks/probe_mscn_negatives.py --preset flickr-dev-mscn --rate 0.5 \
        --noise-file runs/bench/flickr-dev/noise/flickr-dev/per_caption-0.5.npy --steps 60 --every 20

Network B and the co-teaching swap are left out (A trains on its own split), so this probes the step,
not the whole method.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from noisycorr.config import load_config
from noisycorr.data.dataset import PairDataset
from noisycorr.engine.context import TrainContext, pair_context
from noisycorr.engine.inference import evaluate_method
from noisycorr.engine.optim import Optimizers, Stepper
from noisycorr.engine.setup import PreparedData, build_method, prepare_data
from noisycorr.eval.detection import detection_metrics
from noisycorr.methods.mscn import MSCN
from noisycorr.selection import Selection


def probe(method: MSCN, ds: PairDataset, data: PreparedData, ctx: TrainContext, sample: np.ndarray) -> dict:
    """Validation rSum and score statistics of network A now."""
    net = method.net_a
    pos, neg = method.meta_scores(net, ctx.device, 256)
    net.eval()
    with torch.no_grad():
        p = np.concatenate([net.pair_scores(ds.__getitems__(list(sample[i : i + 250]))).numpy()
                            for i in range(0, len(sample), 250)])
    net.train()
    clean = data.clean[sample]
    bce = -(np.log(np.clip(pos, 1e-7, 1)).mean() + np.log(np.clip(1 - neg, 1e-7, 1)).mean()) / 2
    rsum = evaluate_method([net], data.val, data.vocab)["rsum"]
    return {
        "val_rsum": round(float(rsum), 1), "meta_bce": round(float(bce), 3),
        "meta_pos": round(float(pos.mean()), 3), "meta_neg": round(float(neg.mean()), 3),
        "train_p": round(float(p.mean()), 3),
        "train_auc": round(detection_metrics(p, p > 0.5, clean)["auc"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="flickr-dev-mscn")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--noise-file", default=None, help="a pinned noise index file (else drawn with the seed)")
    ap.add_argument("--negatives", default="hardest,mean")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = [f"noise.rate={args.rate}", f"train.seed={args.seed}", *args.set]
    if args.noise_file:
        sets.append(f"noise.file={args.noise_file}")
    cfg = load_config(args.preset, sets)
    data = prepare_data(cfg, with_test=False)
    ds = PairDataset(data.train, data.vocab, data.caption_image)
    torch.manual_seed(args.seed)
    method = build_method(cfg, data.vocab, tuple(data.train.images.shape[1:]))
    assert isinstance(method, MSCN), "an MSCN preset"
    optimizers = Optimizers(method, cfg.train)
    stepper = Stepper(optimizers, torch.amp.GradScaler("cuda", enabled=False), cfg.train.grad_clip)
    ctx = pair_context(method, ds, batch_size=cfg.train.batch_size, device=torch.device("cpu"),
                       seed=args.seed, epochs=cfg.train.epochs)
    ctx.meta = data.meta
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(ds), min(2000, len(ds)), replace=False)
    keep = np.setdiff1d(np.arange(len(ds)), np.asarray(data.meta.held_out))
    bs, warm = cfg.train.batch_size, method.cfg.warmup_epochs
    t0 = time.time()
    method.train()
    for epoch in range(warm):
        method.plan_meta(data.meta, ctx, epoch)
        order = rng.permutation(keep)
        for i in range(0, len(order) - bs + 1, bs):
            method.training_step(ds.__getitems__(list(order[i : i + bs])), epoch, phase="A", control=stepper)
    method.plan_meta(data.meta, ctx, warm)
    prob, _ = method.clean_probability(method.net_a, ctx, "meta scores A")
    split = np.intersect1d(np.flatnonzero(prob > method.cfg.p_threshold), keep)
    chosen = np.zeros(len(ds), dtype=bool)
    chosen[split] = True
    method.selections = {x: Selection(prob, chosen, 1.0 - prob) for x in ("A", "B")}
    start = probe(method, ds, data, ctx, sample)
    print(json.dumps({"after_warmup_steps": warm * (len(keep) // bs), "kept": round(len(split) / len(ds), 3),
                      "kept_truly_clean": round(float(data.clean[split].mean()), 3), **start,
                      "seconds": round(time.time() - t0)}), flush=True)
    state = copy.deepcopy(method.state_dict())
    opt_state = {n: copy.deepcopy(o.state_dict()) for n, o in optimizers.torch.items()}
    for negatives in args.negatives.split(","):
        method.load_state_dict(state)
        for n, o in optimizers.torch.items():
            o.load_state_dict(opt_state[n])
        method.cfg.negatives = negatives
        method.plan_meta(data.meta, ctx, warm)
        method._batches = {}
        order = np.random.default_rng(args.seed + 1).permutation(split)
        for step in range(1, args.steps + 1):
            idx = order[(step - 1) * bs % max(1, len(order) - bs + 1):][:bs]
            _, logs = method.training_step(ds.__getitems__(list(idx)), warm, phase="A", control=stepper)
            if step % args.every == 0:
                print(json.dumps({"negatives": negatives, "step": step, **probe(method, ds, data, ctx, sample),
                                  "batch_p": round(logs["p_train"], 3), "seconds": round(time.time() - t0)}),
                      flush=True)


if __name__ == "__main__":
    main()
