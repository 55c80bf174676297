"""Training-step throughput of each backbone under the vanilla hinge loss, on random inputs.

Prints one JSON object: per backbone, seconds per step and training pairs per second.

    python benchmarks/bench_train_step.py --batch 128 --regions 16 --img-dim 1280 --embed 256 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch

from noisycorr.factory import create_backbone
from noisycorr.losses import triplet_loss


def make_batch(args: argparse.Namespace, pooled: bool, g: torch.Generator) -> SimpleNamespace:
    shape = (args.batch, args.img_dim) if pooled else (args.batch, args.regions, args.img_dim)
    lengths = torch.randint(args.words // 2, args.words + 1, (args.batch,), generator=g)
    tokens = torch.randint(4, args.vocab, (args.batch, args.words), generator=g)
    tokens = tokens * (torch.arange(args.words) < lengths[:, None])
    return SimpleNamespace(images=torch.randn(shape, generator=g), tokens=tokens, lengths=lengths)


def time_backbone(name: str, args: argparse.Namespace) -> dict[str, float]:
    kwargs = dict(vocab_size=args.vocab, img_dim=args.img_dim, embed_size=args.embed, word_dim=args.word_dim)
    if name == "sgraf":
        kwargs.update(sim_dim=args.sim_dim, head=args.head, num_regions=args.regions)
    net = create_backbone(name, **kwargs)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    g = torch.Generator().manual_seed(0)
    batch = make_batch(args, net.image_input == "pooled", g)

    def step() -> None:
        img = net.encode_images(batch.images)
        txt = net.encode_texts(batch.tokens, batch.lengths)
        loss = triplet_loss(net.similarity(img, txt, batch.lengths), 0.2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sec = (time.perf_counter() - t0) / args.steps
    return {"seconds_per_step": round(sec, 4), "pairs_per_second": round(args.batch / sec, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="vse,global,sgraf")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--regions", type=int, default=16)
    p.add_argument("--img-dim", type=int, default=1280)
    p.add_argument("--words", type=int, default=14)
    p.add_argument("--vocab", type=int, default=3000)
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--word-dim", type=int, default=300)
    p.add_argument("--sim-dim", type=int, default=128)
    p.add_argument("--head", default="sgr")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {
        "benchmark": "train_step",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sizes": {k: getattr(args, k) for k in ("batch", "regions", "img_dim", "words", "embed", "sim_dim")},
        "results": {name: time_backbone(name, args) for name in args.backbones.split(",")},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
