"""Write a large synthetic precomp folder of pooled features with planted mismatches (for scale benchmarks).

Each image has a latent class (``--classes``) and attribute (``--attributes``); its pooled feature is the
class centre plus the attribute vector plus Gaussian noise, and its caption names the class and the
attribute with words drawn from their own small pools, among shared filler words. A ``--noise`` share
of the caption slots is then shuffled among themselves: such a pair's caption describes another image.

Files (one caption per image, the ``audit-global`` layout)::

    {split}_pooled.npy        (N, D) float16 or float32
    {split}_caps.txt          N captions, caption k belongs to image k
    {split}_mismatched.npy    (N,) bool truth: True = caption k was moved from another image
    auditval_*                the same for ``--val-pairs`` clean pairs (the preset's validation split)

Memory is bounded by one block of rows: features and captions are generated and appended block by
block (plain file writes, no memory map). The output depends only on the arguments (block size
included), never on the machine.

    python benchmarks/make_synthetic_precomp.py --out /work/scale_tmp/p100k --n-pairs 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 8192  # rows per generated block; fixes the random streams
_FILLERS = (
    "a an the of with in on at near by some two three small large old new bright dark photo picture view "
    "scene image shot close up standing sitting lying next to front behind under over"
).split()


def _word(prefix: str, k: int) -> str:
    """A letters-only token, e.g. ``cat`` + base-26 digits of ``k`` (the tokenizer keeps it whole)."""
    letters = ""
    k += 26
    while k:
        k, r = divmod(k, 26)
        letters = chr(ord("a") + r) + letters
    return prefix + letters


def write_npy_blocks(path: Path, shape: tuple[int, int], dtype: np.dtype, blocks) -> None:
    """Write an .npy file from an iterator of (b, D) row blocks, never holding more than one block.

    The file appears atomically (written under a temporary name, then renamed).
    """
    tmp = path.with_name(path.name + ".tmp")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    rows = 0
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.ndim != 2 or block.shape[1] != shape[1]:
                raise ValueError(f"block of shape {block.shape}, expected (b, {shape[1]})")
            f.write(block.tobytes())
            rows += block.shape[0]
    if rows != shape[0]:
        tmp.unlink()
        raise ValueError(f"{rows} rows written, expected {shape[0]}")
    os.replace(tmp, path)


def _write_lines(path: Path, chunks) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for lines in chunks:
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def write_split(
    root: Path,
    split: str,
    *,
    n: int,
    dim: int,
    classes: int,
    attributes: int,
    noise: float,
    sigma: float,
    seed: int,
    stream: int,
    dtype: str,
) -> dict:
    """One split: features, captions and the mismatch truth; returns its counts.

    The class centres and words depend on ``seed`` only; the images of the split on (seed, ``stream``).
    """
    shared = np.random.default_rng([seed, 0])
    centres = shared.standard_normal((classes, dim), dtype=np.float32)
    attr_vecs = 0.5 * shared.standard_normal((attributes, dim), dtype=np.float32)
    rng = np.random.default_rng([seed, 1, stream])
    cls = rng.integers(0, classes, n)  # (N,) latent class of each image
    attr = rng.integers(0, attributes, n)
    # The caption slots to shuffle, and the image each slot's caption describes.
    source = np.arange(n, dtype=np.int64)
    noisy = rng.choice(n, size=int(round(noise * n)), replace=False)
    source[noisy] = noisy[rng.permutation(noisy.size)]
    mismatched = source != np.arange(n)
    class_words = [[_word("cl", c * 6 + j) for j in range(6)] for c in range(classes)]
    attr_words = [[_word("at", a * 3 + j) for j in range(3)] for a in range(attributes)]
    fillers = np.array(_FILLERS)

    def feature_blocks():
        for b, start in enumerate(range(0, n, BLOCK)):
            stop = min(start + BLOCK, n)
            g = np.random.default_rng([seed, 2, stream, b])
            x = g.standard_normal((stop - start, dim), dtype=np.float32)
            x *= sigma
            x += centres[cls[start:stop]]
            x += attr_vecs[attr[start:stop]]
            yield x

    def caption_blocks():
        for b, start in enumerate(range(0, n, BLOCK)):
            stop = min(start + BLOCK, n)
            g = np.random.default_rng([seed, 3, stream, b])
            src = source[start:stop]
            pick_c = g.integers(0, 6, (stop - start, 2))
            pick_a = g.integers(0, 3, stop - start)
            n_fill = g.integers(3, 9, stop - start)
            fill = g.integers(0, len(fillers), (stop - start, 8))
            lines = []
            for i in range(stop - start):
                c, a = cls[src[i]], attr[src[i]]
                words = list(fillers[fill[i, : n_fill[i]]])
                words[1:1] = [attr_words[a][pick_a[i]], class_words[c][pick_c[i, 0]]]
                words += ["with", class_words[c][pick_c[i, 1]]]
                lines.append(" ".join(words))
            yield lines

    write_npy_blocks(root / f"{split}_pooled.npy", (n, dim), np.dtype(dtype), feature_blocks())
    _write_lines(root / f"{split}_caps.txt", caption_blocks())
    np.save(root / f"{split}_mismatched.npy", mismatched)
    return {"pairs": n, "mismatched": int(mismatched.sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--n-pairs", type=int, default=100_000)
    p.add_argument("--val-pairs", type=int, default=1000, help="clean pairs of the auditval split (0: none)")
    p.add_argument("--split", default="train")
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--attributes", type=int, default=16)
    p.add_argument("--noise", type=float, default=0.2, help="share of caption slots shuffled")
    p.add_argument("--sigma", type=float, default=1.5, help="feature noise around the class centre")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--seed", type=int, default=0, help="fixes the classes, words and images")
    p.add_argument("--stream", type=int, default=0,
                   help="another value: other images of the same classes and words (e.g. a scorer's training set)")
    args = p.parse_args(argv)
    if args.n_pairs < 1 or not 0.0 <= args.noise <= 1.0:
        p.error("--n-pairs must be >= 1 and --noise in [0, 1]")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(dim=args.dim, classes=args.classes, attributes=args.attributes, sigma=args.sigma,
                  dtype=args.dtype)
    info = {"train": write_split(args.out, args.split, n=args.n_pairs, noise=args.noise, seed=args.seed,
                                stream=2 * args.stream, **common)}
    if args.val_pairs:
        # The same classes (the centres depend on the seed only), other images, no noise.
        info["auditval"] = write_split(args.out, "auditval", n=args.val_pairs, noise=0.0, seed=args.seed,
                                       stream=2 * args.stream + 1, **common)
    info.update(vars(args), out=str(args.out), seconds=round(time.perf_counter() - t0, 1))
    (args.out / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    json.dump({"out": str(args.out), "seconds": info["seconds"], **info["train"]}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
