"""A tiny bench spec over the tiny synthetic folder."""

from pathlib import Path

TINY = {
    "data.vocab_min_count": 1,
    "model.embed_size": 32,
    "model.word_dim": 16,
    "train.epochs": 2,
    "train.batch_size": 32,
    "train.lr_update": 2,
    "train.threads": 1,
    "run.progress": False,
    "method.warmup_epochs": 1,
}


def tiny_spec(root: Path, out: Path, *, rates=(0.0, 0.5), seeds=(0, 1), methods=None) -> dict:
    """A spec dict over the tiny folder: NCR (and vanilla) at the given rates and seeds."""
    return {
        "out": str(out),
        "seeds": list(seeds),
        "set": {"data.root": str(root), **{k: v for k, v in TINY.items() if not k.startswith("method.")}},
        "datasets": {
            "tiny": {
                "noise": {"protocol": "per_caption", "rates": list(rates), "seed": 0},
                "methods": methods or {
                    "vanilla": "demo",
                    "ncr": {"preset": "demo-ncr", "set": {"method.warmup_epochs": 1}},
                },
            }
        },
    }
