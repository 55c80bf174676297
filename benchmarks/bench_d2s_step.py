"""Seconds per D2S stage-2 training step: the teacher run on the dense texts at every step, against the
teacher's vectors looked up by pair index (what the method does since it keeps them), on random inputs.

    python benchmarks/bench_d2s_step.py --batch 128 --words 14 --dense-words 60 --embed 256 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from noisycorr.backbones.distill import DistilledText
from noisycorr.factory import create_backbone
from noisycorr.losses import triplet_loss


def tokens(batch: int, words: int, vocab: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(words // 2, words + 1, (batch,), generator=g)
    ids = torch.randint(4, vocab, (batch, words), generator=g) * (torch.arange(words) < lengths[:, None])
    return ids, lengths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--words", type=int, default=14)
    p.add_argument("--dense-words", type=int, default=60)
    p.add_argument("--regions", type=int, default=16)
    p.add_argument("--img-dim", type=int, default=1280)
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--vocab", type=int, default=3000)
    p.add_argument("--head", default="prompt")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    base = create_backbone("vse", vocab_size=args.vocab, img_dim=args.img_dim, embed_size=args.embed, word_dim=300)
    net = DistilledText(base, head=args.head)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=5e-4)
    images = torch.randn(args.batch, args.regions, args.img_dim, generator=g)
    caps, cap_len = tokens(args.batch, args.words, args.vocab, g)
    dense, dense_len = tokens(args.batch, args.dense_words, args.vocab, g)
    index = torch.arange(args.batch)
    net.keep_taught(net.teach(dense, dense_len))

    def step(kept: bool) -> None:
        img = net.encode_images(images)
        txt = net.encode_texts(caps, cap_len)
        teacher = net.taught(index) if kept else net.teach(dense, dense_len)
        loss = triplet_loss(net.similarity(img, txt, cap_len), 0.2) + (1 - F.cosine_similarity(txt, teacher)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {}
    for name, kept in (("teacher_each_step", False), ("kept_vectors", True)):
        step(kept)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(kept)
        out[name] = round((time.perf_counter() - t0) / args.steps, 4)
    out["speedup"] = round(out["teacher_each_step"] / out["kept_vectors"], 2)
    print(json.dumps({"seconds_per_step": out, "args": vars(args)}))


if __name__ == "__main__":
    main()
