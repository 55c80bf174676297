"""How well does the consensus filter of D2S's stand-in dense texts keep the captions that belong to their image?

For each noise file given (NCR's per-caption layout: the image row each training caption is paired with),
builds the stand-in from that pairing as given, scores every caption's consensus with the other captions
of its image (``caption_consensus``) and applies the filter (``consensus_keep``). Prints one JSON line per
file: the share of captions that truly belong to their image, the share kept and how many of those truly
belong, the ROC-AUC of the consensus for that flag, the share of pairs left without a dense text, and the
mean words per dense text with and without the filter. The truth only scores the filter; it is not an input.

    python benchmarks/probe_dense_consensus.py ../shared/data/flickr-dev runs/bench/flickr-dev/noise/flickr-dev/*.npy
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from noisycorr.data.dense import caption_consensus, consensus_keep, standin_dense_texts
from noisycorr.data.noise import caption_to_image, load_noise
from noisycorr.data.precomp import load_precomp
from noisycorr.eval.detection import detection_metrics


def _words(texts: list[str | None]) -> float:
    return float(np.mean([len(t.split()) if t else 0 for t in texts]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a precomp data folder (its train split)")
    ap.add_argument("noise", nargs="+", help="per-caption noise files (.npy, (N_captions,) image rows)")
    args = ap.parse_args()
    split = load_precomp(args.root, "train")
    truth_image = split.image_of_caption()
    for path in args.noise:
        index, _ = load_noise(path, "per_caption", n_images=split.n_images, n_captions=split.n_captions)
        pairing = caption_to_image("per_caption", index, split.n_images, split.captions_per_image)
        truth = pairing == truth_image
        score = caption_consensus(split.captions, pairing)
        keep = consensus_keep(split.captions, pairing)
        plain = standin_dense_texts(split.captions, pairing)
        kept = standin_dense_texts(split.captions, pairing, keep=keep)
        prob = np.nan_to_num(score, nan=1.0)
        print(json.dumps({
            "noise": path, "truly_matched": round(float(truth.mean()), 3), "kept": round(float(keep.mean()), 3),
            "kept_truly_matched": round(float(truth[keep].mean()), 3),
            "auc": round(detection_metrics(prob, keep, truth)["auc"], 3),
            "pairs_without_text": round(float(np.mean([t is None for t in kept])), 3),
            "words_per_text": round(_words(plain), 1), "words_per_text_kept": round(_words(kept), 1),
        }))


if __name__ == "__main__":
    main()
