"""Cost of MSCN's bi-level step against its plain step, per ``meta_interval``, on random inputs.

One MSCN training step of one network (VSE or SGRAF at the given sizes) is timed three ways: the
plain real step (no virtual step, ``meta_interval`` larger than the run), the bi-level step
(virtual step + meta update + real step, ``meta_interval`` 1), and the mean over k batches at
``meta_interval`` k. Prints one JSON object (seconds per step, ratio to the plain step).

    python benchmarks/bench_mscn_step.py --backbone vse --batch 128 --regions 16 --img-dim 1280 --embed 256
    python benchmarks/bench_mscn_step.py --score backbone   # method.score backbone: the cosine takes the hinge
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from noisycorr.config import TrainConfig
from noisycorr.data.dataset import EncodedCaptions, PairBatch
from noisycorr.data.meta import MetaPairs
from noisycorr.engine.optim import Optimizers, Stepper
from noisycorr.factory import create_backbone
from noisycorr.methods.mscn import MSCN
from noisycorr.selection import Selection


def random_batch(args: argparse.Namespace, g: torch.Generator) -> PairBatch:
    lengths = torch.randint(args.words // 2, args.words + 1, (args.batch,), generator=g)
    tokens = torch.randint(4, args.vocab, (args.batch, args.words), generator=g)
    tokens = tokens * (torch.arange(args.words) < lengths[:, None])
    images = torch.randn((args.batch, args.regions, args.img_dim), generator=g)
    return PairBatch(images, tokens, lengths, torch.arange(args.batch))


def random_meta(args: argparse.Namespace, rng: np.random.Generator) -> MetaPairs:
    n_img = args.meta_pairs // 5
    ids = [list(rng.integers(4, args.vocab, rng.integers(args.words // 2, args.words + 1))) for _ in range(n_img * 5)]
    return MetaPairs(
        images=rng.standard_normal((n_img, args.regions, args.img_dim)).astype(np.float32),
        encoded=EncodedCaptions(ids),
        pair_image=np.arange(n_img * 5) // 5,
        source="val",
        held_out=np.zeros(0, dtype=np.int64),
        rows=np.arange(n_img),
    )


class _Ctx:
    seed, epochs, device, progress, n_samples = 0, 1, torch.device("cpu"), False, 0


def build(args: argparse.Namespace, interval: int) -> tuple[MSCN, Stepper]:
    kwargs = dict(vocab_size=args.vocab, img_dim=args.img_dim, embed_size=args.embed, word_dim=args.word_dim)
    if args.backbone == "sgraf":
        kwargs.update(head=args.head, num_regions=args.regions)
    torch.manual_seed(0)
    cfg = MSCN.Config(warmup_epochs=0, meta_interval=interval, score=args.score)
    method = MSCN(cfg, lambda: create_backbone(args.backbone, **kwargs))
    train = TrainConfig(optimizer="adam", lr=2e-4, grad_clip=2.0)
    optimizers = Optimizers(method, train)
    stepper = Stepper(optimizers, torch.amp.GradScaler("cuda", enabled=False), train.grad_clip)
    ctx = _Ctx()
    ctx.n_samples = args.batch
    method.plan_meta(random_meta(args, np.random.default_rng(0)), ctx, 0)  # type: ignore[arg-type]
    ones = np.ones(args.batch, dtype=bool)
    method.selections = {"A": Selection(ones.astype(float), ones), "B": Selection(ones.astype(float), ones)}
    method.train()
    return method, stepper


def seconds_per_step(args: argparse.Namespace, interval: int, steps: int) -> float:
    method, stepper = build(args, interval)
    batch = random_batch(args, torch.Generator().manual_seed(0))
    method.training_step(batch, 1, phase="A", control=stepper)  # warm-up (also fills Adam's moments)
    method._batches = {}
    t0 = time.perf_counter()
    for _ in range(steps):
        method.training_step(batch, 1, phase="A", control=stepper)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vse", choices=["vse", "sgraf"])
    p.add_argument("--head", default="saf")
    p.add_argument("--score", default="meta", choices=["meta", "backbone"], help="method.score")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--regions", type=int, default=16)
    p.add_argument("--img-dim", type=int, default=1280)
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--word-dim", type=int, default=300)
    p.add_argument("--vocab", type=int, default=3000)
    p.add_argument("--words", type=int, default=14)
    p.add_argument("--meta-pairs", type=int, default=280)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--intervals", default="2,5")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    plain = seconds_per_step(args, 10**9, args.steps)
    meta = seconds_per_step(args, 1, args.steps)
    out = {
        "backbone": args.backbone, "score": args.score, "batch": args.batch, "threads": args.threads,
        "plain_seconds_per_step": round(plain, 4),
        "bilevel_seconds_per_step": round(meta, 4),
        "bilevel_over_plain": round(meta / plain, 2),
    }
    for k in (int(x) for x in args.intervals.split(",") if x):
        sec = seconds_per_step(args, k, k * max(1, args.steps // k))
        out[f"interval_{k}_seconds_per_step"] = round(sec, 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
