"""Exact against shortlist evaluation of a trained SGRAF run on its test split: seconds and R@K.

Evaluates the whole test split once exactly (the head scores every image-caption pair) and once per
shortlist size K (:mod:`noisycorr.eval.shortlist`), with the same weights and threads, through
:func:`noisycorr.engine.inference.evaluate_method` (what validation, test and ``noisycorr eval`` run),
and prints one JSON object.

    python benchmarks/bench_shortlist.py --run runs/flickr-dev-sgraf --k 20 50 100 --threads 1 --repeat 3
    python benchmarks/bench_shortlist.py -c flickr-dev-sgraf --checkpoint runs/x/best.safetensors --k 50
    python benchmarks/bench_shortlist.py -c flickr-dev-sgraf --set model.embed_size=1024 \\
        --set model.sim_dim=256 --random-weights --k 50     # timing only: random weights
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

from noisycorr.config import Config, config_from_dict, load_config, parse_overrides
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.inference import encode_split, evaluate_method
from noisycorr.errors import InputError
from noisycorr.eval.shortlist import cheap_scores, has_pairwise_head, shortlist_mask
from noisycorr.methods.base import Method

_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder (its config, vocabulary and weights)")
    src.add_argument("-c", "--config", help="a preset or YAML file, with --checkpoint or --random-weights")
    p.add_argument("--checkpoint", help="best.safetensors of a run trained with --config")
    p.add_argument("--random-weights", action="store_true", help="untrained weights: timing only")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    p.add_argument("--weights", choices=["best", "last"], default="best", help="with --run")
    p.add_argument("--k", type=int, nargs="+", default=[50], help="shortlist sizes to time")
    p.add_argument("--split", default=None, help="default: the config's test split")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each; the fastest is reported")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.config and not (args.checkpoint or args.random_weights):
        p.error("--config needs --checkpoint or --random-weights")
    if any(k < 1 for k in args.k):
        p.error("--k: positive integers")
    if args.repeat < 1:
        p.error("--repeat: a positive integer")
    return args


def load(args: argparse.Namespace) -> tuple[Config, Method, Vocabulary, PrecompSplit]:
    """The config, the method in eval mode, its vocabulary and the split to evaluate."""
    from noisycorr.engine.setup import build_method, data_root, prepare_data

    if args.run:
        from noisycorr.engine.runs import load_run

        cfg, method, vocab = load_run(args.run, device=args.device, weights=args.weights)
        if args.set:
            cfg = _with_overrides(cfg, args.set)
    else:
        cfg = load_config(args.config, args.set)
        if not isinstance(cfg, Config):
            raise InputError(args.config, "a preset of the pair task", "a labelled-task preset")
        data = prepare_data(cfg, with_test=False)
        vocab = data.vocab
        method = build_method(cfg, vocab, tuple(data.train.images.shape[1:]), pretrained_words=False)
        if args.checkpoint:
            from noisycorr.engine.checkpoint import load_weights

            load_weights(method, args.checkpoint)
        method = method.to(args.device).eval()
    split_name = args.split or cfg.data.test_split
    split = load_precomp(data_root(cfg), split_name, features=cfg.data.features,
                         captions_per_image=cfg.data.captions_per_image)
    return cfg, method, vocab, split


def _with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``--set eval.KEY=VALUE`` on a trained run's config (its weights fix every other section)."""
    extra = parse_overrides(overrides)
    if set(extra) != {"eval"}:
        raise InputError("--set", "eval.KEY=VALUE with --run", ", ".join(overrides))
    raw = cfg.to_dict()
    raw["eval"].update(extra["eval"])
    out = config_from_dict(raw, "--set")
    assert isinstance(out, Config)
    return out


def timed_eval(method: Method, split: PrecompSplit, vocab: Vocabulary, cfg: Config, device: str,
               **mode: Any) -> tuple[float, dict[str, float]]:
    """Seconds and metrics of one whole evaluation (encoding included) under ``cfg.eval`` with ``mode``."""
    settings = dataclasses.replace(cfg.eval, **mode)
    start = time.perf_counter()
    res = evaluate_method(method.eval_backbones(), split, vocab, settings=settings, device=device,
                          combine=method.eval_similarity)
    return time.perf_counter() - start, {k: round(res[k], 2) for k in _KEYS}


def fastest(repeat: int, run: Any) -> tuple[float, dict[str, float]]:
    """The fastest of ``repeat`` calls of ``run() -> (seconds, metrics)`` (the metrics do not change)."""
    results = [run() for _ in range(repeat)]
    return min(r[0] for r in results), results[0][1]


@torch.no_grad()
def shortlisted_share(method: Method, split: PrecompSplit, vocab: Vocabulary, k: int, device: str) -> float:
    """Share of the (n_img, n_txt) pairs the head scores at shortlist size ``k`` (the networks' shared shortlist)."""
    backbones = method.eval_backbones()
    encoded = [encode_split(b, split, vocab, device=device) for b in backbones]
    if not has_pairwise_head(*encoded[0][:2]):
        return 1.0
    return float(shortlist_mask(cheap_scores(backbones, encoded), k).float().mean())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cfg, method, vocab, split = load(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    timed_eval(method, dataclasses.replace(split, images=np.asarray(split.images[:8]),
                                           captions=split.captions[: 8 * split.captions_per_image], ids=None),
               vocab, cfg, args.device)  # warm-up
    exact_s, exact = fastest(args.repeat, lambda: timed_eval(method, split, vocab, cfg, args.device, mode="exact"))
    rows = []
    for k in args.k:
        short_s, short = fastest(args.repeat, lambda k=k: timed_eval(
            method, split, vocab, cfg, args.device, mode="shortlist", shortlist_k=k))
        rows.append({
            "k": k,
            "shortlist_seconds": round(short_s, 2),
            "speedup": round(exact_s / short_s, 2),
            "pairs_scored": round(shortlisted_share(method, split, vocab, k, args.device), 4),
            "rsum_delta": round(short["rsum"] - exact["rsum"], 2),
            "shortlist": short,
        })
    out = {
        "source": args.run or args.checkpoint or "random weights",
        "split": f"{split.n_images} images x {len(split.captions)} captions",
        "backbone": {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "word_vectors"},
        "threads": args.threads,
        "repeat": args.repeat,
        "device": args.device,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "exact_seconds": round(exact_s, 2),
        "exact": exact,
        "shortlist": rows,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
