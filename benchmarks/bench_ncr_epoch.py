"""Where the time of one NCR co-training epoch goes: per-sample passes, mixture fits, training.

Runs on a preset's real data (default: the flickr-dev set with the VSE backbone) and prints one
JSON object with seconds per part (both networks), measured in the same process.

    python benchmarks/bench_ncr_epoch.py -c flickr-dev-ncr --noise 0.4 --threads 2
    python benchmarks/bench_ncr_epoch.py -c demo-ncr --max-steps 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from noisycorr.config import load_config
from noisycorr.engine.optim import Optimizers, Stepper
from noisycorr.engine.pairs import PairTask
from noisycorr.engine.setup import pick_device, prepare_data
from noisycorr.selection import clean_probability, split_clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default="flickr-dev-ncr")
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--estimator", default="gmm", choices=["gmm", "bmm"])
    ap.add_argument("--max-steps", type=int, default=0, help="stop each phase after this many batches (0: whole)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fixed = [f"noise.rate={args.noise}", "method.warmup_epochs=0", "run.progress=false"]
    cfg = load_config(args.config, [*fixed, *args.overrides])
    data = prepare_data(cfg, with_test=False)
    device = pick_device(cfg.train.device)
    task = PairTask()
    train_set = task.build_train_set(cfg, data)
    method = task.build_method(cfg, data).to(device)
    stepper = Stepper(Optimizers(method, cfg.train), torch.amp.GradScaler("cuda", enabled=False), cfg.train.grad_clip)
    ctx = task.context(cfg, method, data, train_set, device)
    epoch = int(cfg.train.epochs * method.cfg.noisy_start)  # a late epoch: clean and noisy subsets trained

    out: dict[str, float | int | str] = {"config": args.config, "noise": args.noise, "threads": args.threads,
                                         "pairs": len(train_set), "batch": cfg.train.batch_size}
    t = time.perf_counter()
    losses = {name: ctx.per_sample(lambda b, n=net: method.per_sample_loss(n, b)).numpy()
              for name, net in method.nets().items()}
    out["per_sample_pass_s"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = {name: clean_probability(x, estimator=args.estimator, seed=0) for name, x in losses.items()}
    out[f"mixture_fit_{args.estimator}_s"] = time.perf_counter() - t
    from noisycorr.selection import Selection

    method.selections = {k: Selection(p, split_clean(p)) for k, p in probs.items()}
    method._peer_prob = {k: torch.from_numpy(p).float() for k, p in probs.items()}
    method.noisy_from_epoch = 0
    method.train()
    t, steps = time.perf_counter(), 0
    for k, phase in enumerate(method.epoch_phases(epoch)):
        for i, (batch, streams) in enumerate(task.phase_batches(cfg, train_set, phase, epoch, k)):
            if args.max_steps and i >= args.max_steps:
                break
            streams = {name: b.to(device) for name, b in streams.items()}
            for step_losses, _ in method.training_step(batch.to(device), epoch, phase=phase.name, streams=streams):
                stepper.update(sum(step_losses.values()), None)
            steps += 1
    out["training_s"] = time.perf_counter() - t
    out["training_batches"] = steps
    out["clean_fraction"] = float(np.mean([s.clean.mean() for s in method.selections.values()]))
    total = out["per_sample_pass_s"] + out[f"mixture_fit_{args.estimator}_s"] + out["training_s"]
    out["share_per_sample_pass"] = out["per_sample_pass_s"] / total
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
