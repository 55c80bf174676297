"""Memory and time of the SGRAF backbone: the SGR training step at batch 128, plain against
checkpointed sub-blocks, and the exact evaluation similarity.

Full NCR shapes: 36 regions x 2048, embed 1024, sim_dim 256, 3 SGR steps, captions of 8..20 tokens,
vocabulary 8481; random inputs and weights. The training step is forward of the full (B x B)
similarity, the hinge loss with hardest negatives (``noisycorr.losses.triplet_loss``), backward,
gradient clipping at 2 and an Adam step. Every variant runs in a fresh child process, so each peak
RSS (``VmHWM`` after resetting it) is that variant's own. The children also dump the first step's
scores and gradients, and the parent reports the max abs difference between the two variants.

    python benchmarks/bench_sgraf_memory.py --threads 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfutil import peak_rss_mib, reset_peak_rss, rss_mib  # noqa: E402

from noisycorr.backbones.sgraf import SGRAF  # noqa: E402
from noisycorr.losses import triplet_loss

VOCAB, IMG_DIM, REGIONS, EMBED, SIM_DIM, STEPS = 8481, 2048, 36, 1024, 256, 3
LEN_MIN, LEN_MAX = 8, 20


def caption_lengths(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) lengths uniform over 8..20 (exactly balanced when n % 13 == 0), shuffled."""
    base = torch.arange(n) % (LEN_MAX - LEN_MIN + 1) + LEN_MIN
    return base[torch.randperm(n, generator=gen)]


def build_model(head: str = "sgr", checkpoint_blocks: bool | None = None) -> SGRAF:
    """SGRAF with NCR's sizes and seeded random weights."""
    torch.manual_seed(0)
    return SGRAF(
        vocab_size=VOCAB,
        img_dim=IMG_DIM,
        embed_size=EMBED,
        sim_dim=SIM_DIM,
        sgr_steps=STEPS,
        num_regions=REGIONS,
        head=head,
        dropout=0.4,
        checkpoint_blocks=checkpoint_blocks,
    )


def train_child(checkpoint: bool, batch: int, reps: int, dump: str | None) -> dict[str, Any]:
    """Time ``reps`` training steps after one warm-up step; peak RSS over all of them."""
    gen = torch.Generator().manual_seed(0)
    model = build_model("sgr", checkpoint).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    images = torch.rand(batch, REGIONS, IMG_DIM, generator=gen)
    lengths = caption_lengths(batch, gen)
    tokens = torch.zeros(batch, int(lengths.max()), dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        tokens[row, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
    gc.collect()
    rss0 = rss_mib()
    reset_peak_rss()

    def step(save: bool = False) -> None:
        opt.zero_grad(set_to_none=True)
        scores = model.similarity(model.encode_images(images), model.encode_texts(tokens, lengths), lengths)
        triplet_loss(scores, 0.2, hardest=True).backward()
        if save and dump:
            grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
            torch.save({"scores": scores.detach(), "grads": grads}, dump)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()

    step(save=True)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "checkpoint_blocks": checkpoint,
        "s_per_step": round(min(times), 3),
        "s_per_step_all": [round(t, 3) for t in times],
        "rss_before_mib": round(rss0, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def eval_child(head: str, n_img: int, n_txt: int, reps: int) -> dict[str, Any]:
    """Exact ``similarity`` under no_grad in eval mode on random unit region / word vectors."""
    gen = torch.Generator().manual_seed(0)
    model = build_model(head).eval()
    img = torch.nn.functional.normalize(torch.rand(n_img, REGIONS, EMBED, generator=gen), dim=-1)
    lengths = caption_lengths(n_txt, gen)
    words = torch.nn.functional.normalize(torch.randn(n_txt, LEN_MAX, EMBED, generator=gen), dim=-1)
    words *= (torch.arange(LEN_MAX) < lengths.unsqueeze(1)).unsqueeze(-1)
    with torch.no_grad():
        model.similarity(img[:8], words[:40], lengths[:40])  # warm-up
        gc.collect()
        rss0 = rss_mib()
        reset_peak_rss()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.similarity(img, words, lengths)
            times.append(time.perf_counter() - t0)
        peak = peak_rss_mib()
    best = min(times)
    return {
        "head": head,
        "shape": [n_img, n_txt],
        "pairs_per_s": round(n_img * n_txt / best, 1),
        "s": round(best, 3),
        "rss_before_mib": round(rss0, 1),
        "peak_rss_mib": round(peak, 1),
        "working_mib": round(peak - rss0, 1),
    }


def _child(args: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_sgraf_memory(
    threads: int = 2,
    batch: int = 128,
    n_img: int = 200,
    n_txt: int = 1000,
    reps: int = 2,
    head: str = "sgr",
    parts: tuple[str, ...] = ("train", "eval"),
) -> dict[str, Any]:
    """Run each variant in its own child process and gather the figures into one dict."""
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
    }
    if "train" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            dumps = {name: str(Path(tmp) / f"{name}.pt") for name in ("plain", "checkpointed")}
            train = {}
            for name, flag in (("plain", "0"), ("checkpointed", "1")):
                common = ["--batch", str(batch), "--reps", str(reps), "--dump", dumps[name]]
                train[name] = _child(["--child-train", flag, *common], threads)
            plain = torch.load(dumps["plain"], weights_only=True)
            ckpt = torch.load(dumps["checkpointed"], weights_only=True)
        train["scores_max_abs_diff"] = float((plain["scores"] - ckpt["scores"]).abs().max())
        train["grad_max_abs_diff"] = max(
            float((plain["grads"][k] - ckpt["grads"][k]).abs().max()) for k in plain["grads"]
        )
        train["same_grad_keys"] = sorted(plain["grads"]) == sorted(ckpt["grads"])
        train["batch"] = batch
        train["time_cost_pct"] = round(
            100 * (train["checkpointed"]["s_per_step"] / train["plain"]["s_per_step"] - 1), 1
        )
        result["train_sgr"] = train
    if "eval" in parts:
        args = ["--child-eval", head, "--n-img", str(n_img), "--n-txt", str(n_txt), "--reps", str(reps)]
        result["eval"] = _child(args, threads)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads in every child")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n-img", type=int, default=200)
    p.add_argument("--n-txt", type=int, default=1000)
    p.add_argument("--reps", type=int, default=2, help="timed repetitions; the fastest is reported")
    p.add_argument("--head", choices=["sgr", "saf"], default="sgr", help="head of the eval measurement")
    p.add_argument("--parts", nargs="+", choices=["train", "eval"], default=["train", "eval"])
    p.add_argument("--child-train", choices=["0", "1"], help=argparse.SUPPRESS)
    p.add_argument("--child-eval", choices=["sgr", "saf"], help=argparse.SUPPRESS)
    p.add_argument("--dump", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child_train is not None:
        out = train_child(args.child_train == "1", args.batch, args.reps, args.dump)
    elif args.child_eval is not None:
        out = eval_child(args.child_eval, args.n_img, args.n_txt, args.reps)
    else:
        out = run_sgraf_memory(
            args.threads, args.batch, args.n_img, args.n_txt, args.reps, args.head, tuple(args.parts)
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
