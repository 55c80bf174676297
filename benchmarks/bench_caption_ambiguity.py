"""How much a caption alone says about which image it belongs to: a data property, not a model's.

For every training pair the score is the share of the caption's words that also occur in the other
captions of its paired image; the ROC-AUC of that score for telling clean from mismatched pairs
(per-caption noise) is a model-free gauge of how ambiguous the captions are. The synthetic generator
is calibrated against the real Flickr8k captions with it.

    python benchmarks/bench_caption_ambiguity.py
    python benchmarks/bench_caption_ambiguity.py --data ../shared/data/flickr-dev synthetic --rate 0.6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.metrics import roc_auc_score

from noisycorr.data.noise import caption_to_image, make_per_caption_noise
from noisycorr.engine.setup import synthetic_root

DEFAULT_DATA = ["synthetic", str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr-dev")]


def overlap_auc(captions: list[str], cpi: int, rate: float, seed: int) -> float:
    """ROC-AUC of the word-overlap score for clean vs. mismatched pairs (captions in precomp order)."""
    n = len(captions)
    index = make_per_caption_noise(n, cpi, rate, seed=seed)
    image = caption_to_image("per_caption", index, n // cpi, cpi)
    clean = image == np.arange(n) // cpi
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for k, caption in enumerate(captions):
        ids = {vocab.setdefault(w, len(vocab)) for w in caption.lower().split()}
        rows += [k] * len(ids)
        cols += sorted(ids)
    words = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(vocab)))  # (N_cap, V) 0/1
    per_image = sparse.csr_matrix(
        (np.ones(n), (np.arange(n) // cpi, np.arange(n))), shape=(n // cpi, n)
    ) @ words  # (N_img, V) word counts over an image's captions
    others = per_image[image] - sparse.diags(clean.astype(float)) @ words  # without the caption itself
    shared = np.asarray((others > 0).multiply(words).sum(1)).ravel()
    scores = shared / np.maximum(np.asarray(words.sum(1)).ravel(), 1)
    return float(roc_auc_score(clean, scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=DEFAULT_DATA, help="precomp folders, or 'synthetic'")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--cpi", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = {}
    for name in args.data:
        root = synthetic_root() if name == "synthetic" else Path(name)
        captions = (root / "train_caps.txt").read_text(encoding="utf-8").splitlines()
        out[name] = round(overlap_auc(captions, args.cpi, args.rate, args.seed), 4)
    print(json.dumps({"rate": args.rate, "overlap_auc": out}))


if __name__ == "__main__":
    main()
