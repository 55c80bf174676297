"""Our code beside the authors' NCR and IN2R code: the configurations of ../shared/perf/ref_bench.py.

Each configuration of the reference harness (same name, same shapes: 36 x 2048 regions, captions of
8..20 tokens, vocabulary 8,481, embed 1024, sim_dim 256, the authors' batch sizes) is run on our
code, in a fresh child process so that the peak memory is per configuration, with the median of
``--reps`` timed repetitions after a warm-up (a repetition during which other processes used more
than 5 % of the CPUs is repeated). With ``--reference NCR_DIR IN2R_DIR`` the reference harness runs
the same configurations in the same invocation and the table prints the ratios of this one run.

What "the same" means, configuration by configuration (ours / theirs):

- ``ncr_eval_*``: encode the images once and the captions once, then the SGRAF similarity of every
  (image, caption) pair through ``similarity_matrix`` / ``shard_attn_scores``. pairs/s counts the
  similarity only, as theirs; peak RSS is the process high-water mark during the similarity.
- ``ncr_train_*``: one training step on a batch with given soft targets: forward of the batch x batch
  SGRAF similarity, NCR's exponential soft-margin hinge with hardest negatives, backward, gradient
  clipping at 2, Adam (theirs: ``SGRAF.train(mode='train')``). Ours as the preset runs it (SGRAF's
  ``checkpoint_blocks`` auto: sub-blocks recomputed in the backward pass at batch 128) and ``_plain``
  (``checkpoint_blocks=false``: every sub-block's activations kept, as theirs).
- ``ncr_evalloss_*``: the per-sample split statistic of 128 pairs (ours: ``per_sample_loss``; theirs:
  ``train(mode='eval_loss')``) and NCR's ``predict`` (match confidence).
- ``ncr_cotrain_iter_*``: one co-training iteration of the clean subset before the noisy subset
  joins, through our NCR method's ``training_step`` and the engine's ``Stepper``; also ``_plain`` (no
  recomputation) and ``_forward`` (``method.confidence_from=forward``: the confidence p from the
  training forward instead of a separate eval pass).
- ``in2r_*``: IN2R on the VSE backbone: a plain hinge step and the warm-up step; one co-training
  iteration with both memories full (65,536 pairs); the per-sample pass; evaluation of 1,000 images
  x 5,000 captions (ours encodes each image once, theirs five times in ``encode_data``).

Usage (2 threads on a quiet machine; 20-40 min with the reference):

    python benchmarks/bench_vs_reference.py --threads 2 --out ours.json
    python benchmarks/bench_vs_reference.py --reference /tmp/ref/ncr /tmp/ref/in2r --out both.json
    python benchmarks/bench_vs_reference.py --only ncr_eval_sgr_200x1000 ncr_train_sgr_b128
    python benchmarks/bench_vs_reference.py --from-json both.json   # print the table again
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perfutil  # noqa: E402

REF_HARNESS = Path(__file__).resolve().parents[2] / "shared" / "perf" / "ref_bench.py"

# name -> parameters; the names and shapes of ../shared/perf/ref_bench.py
CONFIGS: dict[str, dict[str, Any]] = {
    "ncr_eval_sgr_100x500": dict(kind="ncr_eval", head="sgr", n_img=100, n_cap=500),
    "ncr_eval_sgr_200x1000": dict(kind="ncr_eval", head="sgr", n_img=200, n_cap=1000),
    "ncr_eval_saf_100x500": dict(kind="ncr_eval", head="saf", n_img=100, n_cap=500),
    "ncr_eval_saf_200x1000": dict(kind="ncr_eval", head="saf", n_img=200, n_cap=1000),
    "ncr_train_sgr_b32": dict(kind="ncr_train", head="sgr", batch=32),
    "ncr_train_sgr_b128": dict(kind="ncr_train", head="sgr", batch=128),
    "ncr_evalloss_sgr_b128": dict(kind="ncr_evalloss", head="sgr", batch=128),
    "ncr_cotrain_iter_sgr_b32": dict(kind="ncr_cotrain", head="sgr", batch=32),
    "ncr_cotrain_iter_sgr_b128": dict(kind="ncr_cotrain", head="sgr", batch=128),
    "in2r_train_b128": dict(kind="in2r_train", batch=128),
    "in2r_cotrain_iter_b128": dict(kind="in2r_cotrain", batch=128),
    "in2r_evalloss_b128": dict(kind="in2r_evalloss", batch=128),
    "in2r_eval_1000x5000": dict(kind="in2r_eval", n_img=1000, n_cap=5000),
}

VOCAB = 8481
LEN_MIN, LEN_MAX = 8, 20
REGIONS, IMG_DIM = 36, 2048
# our variants of a configuration: (figure-key suffix, preset overrides); "" = the preset as users get it
# (SGRAF's checkpoint_blocks is auto: recomputed sub-blocks at training batch 128)
VARIANTS: dict[str, list[tuple[str, list[str]]]] = {
    "ncr_train": [("", []), ("_plain", ["model.checkpoint_blocks=false"])],
    "ncr_cotrain": [("", []), ("_forward", ["method.confidence_from=forward"]),
                    ("_plain", ["model.checkpoint_blocks=false"])],
}
# Variants run in one process, in this order; a peak can only be read after a variant that needs less
# memory (the allocator keeps what an earlier one freed), so the unrecomputed _plain ones come last.
EXTRA_OVERRIDES: dict[str, list[str]] = {}  # preset -> overrides appended (tests shrink the models with it)

# (config kind, our figure key, regex on the reference's metric name, unit, "time" | "rate" | "memory")
COMPARE: list[tuple[str, str, str, str, str]] = [
    ("ncr_eval", "pairs_per_s", r"^pairs/s", "pairs/s", "rate"),
    ("ncr_eval", "peak_rss_mib", r"^peak RSS during similarity", "MiB", "memory"),
    ("ncr_eval", "work_rss_mib", r"^peak RSS during similarity", "MiB", "work"),
    ("ncr_train", "step_s", r"^train step", "s/step", "time"),
    ("ncr_train", "peak_rss_mib", r"^peak RSS", "MiB", "memory"),
    ("ncr_train", "step_s_plain", r"^train step", "s/step", "time"),
    ("ncr_train", "peak_rss_mib_plain", r"^peak RSS", "MiB", "memory"),
    ("ncr_evalloss", "pass_s", r"^eval_loss pass", "s/128", "time"),
    ("ncr_evalloss", "predict_s", r"^predict pass", "s/128", "time"),
    ("ncr_cotrain", "iter_s", r"^co-training iteration", "s/iter", "time"),
    ("ncr_cotrain", "peak_rss_mib", r"^peak RSS", "MiB", "memory"),
    ("ncr_cotrain", "iter_s_plain", r"^co-training iteration", "s/iter", "time"),
    ("ncr_cotrain", "peak_rss_mib_plain", r"^peak RSS", "MiB", "memory"),
    ("ncr_cotrain", "iter_s_forward", r"^co-training iteration", "s/iter", "time"),
    ("ncr_cotrain", "peak_rss_mib_forward", r"^peak RSS", "MiB", "memory"),
    ("in2r_train", "step_s", r"^VSE train step", "s/step", "time"),
    ("in2r_train", "warmup_step_s", r"^VSE warm-up step", "s/step", "time"),
    ("in2r_cotrain", "iter_s", r"^IN2R co-training iteration", "s/iter", "time"),
    ("in2r_cotrain", "peak_rss_mib", r"^peak RSS", "MiB", "memory"),
    ("in2r_evalloss", "pass_s", r"^eval_loss pass", "s/128", "time"),
    ("in2r_eval", "encode_images_s", r"^encode \d+ images", "s", "time"),
    ("in2r_eval", "encode_captions_s", r"^encode \d+ captions", "s", "time"),
    ("in2r_eval", "encode_pairs_s", r"^encode_data", "s", "time"),
    ("in2r_eval", "similarity_s", r"^similarity", "s", "time"),
]


# --------------------------------------------------------------------------- inputs and models


def balanced_lengths(n: int, gen: Any) -> Any:
    """(n,) caption lengths spread evenly over 8..20, shuffled."""
    import torch

    span = LEN_MAX - LEN_MIN + 1
    return (torch.arange(n) % span + LEN_MIN)[torch.randperm(n, generator=gen)]


def make_batch(n: int, gen: Any, n_images: int | None = None) -> Any:
    """A PairBatch of n random captions and ``n_images`` (default n) random images with the reference's
    shapes (non-negative region features)."""
    import torch

    from noisycorr.data.dataset import PairBatch

    lengths = balanced_lengths(n, gen)
    tokens = torch.randint(4, VOCAB, (n, int(lengths.max())), generator=gen)
    tokens = tokens * (torch.arange(tokens.shape[1]) < lengths[:, None])
    images = torch.rand(n if n_images is None else n_images, REGIONS, IMG_DIM, generator=gen)
    return PairBatch(images=images, tokens=tokens, lengths=lengths, index=torch.arange(n))


def build(preset: str, overrides: list[str]) -> tuple[Any, Any]:
    """(config, method) of a paper preset at the reference's sizes, random word vectors."""
    from noisycorr.config import load_config
    from noisycorr.data.vocab import Vocabulary
    from noisycorr.engine.setup import build_method

    cfg = load_config(preset, ["model.word_vectors=none", *overrides, *EXTRA_OVERRIDES.get(preset, [])])
    vocab = Vocabulary(f"w{i}" for i in range(VOCAB - 4))
    assert len(vocab) == VOCAB, len(vocab)
    return cfg, build_method(cfg, vocab, (REGIONS, IMG_DIM), pretrained_words=False)


def stepper_for(method: Any, cfg: Any) -> Any:
    import torch

    from noisycorr.engine.optim import Optimizers, Stepper

    return Stepper(Optimizers(method, cfg.train), torch.amp.GradScaler("cuda", enabled=False), cfg.train.grad_clip)


def fake_split(method: Any, n: int, gen: Any) -> None:
    """Give a co-teaching method a fitted split without a per-sample pass: random clean probabilities."""
    import torch

    from noisycorr.selection import Selection

    probs = {name: torch.rand(n, generator=gen, dtype=torch.float64).numpy() for name in ("A", "B")}
    method.selections = {name: Selection(p, p > 0.5) for name, p in probs.items()}
    method._peer_prob = {name: torch.from_numpy(p).float() for name, p in probs.items()}


# --------------------------------------------------------------------------- one configuration


def run_config(name: str, reps: int) -> dict[str, Any]:
    """Time configuration ``name`` on our code; returns its figures (seconds, pairs/s, MiB)."""
    import torch

    from noisycorr.backbones.base import similarity_matrix
    from noisycorr.losses import triplet_loss

    p = CONFIGS[name]
    kind = p["kind"]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    out: dict[str, Any] = {"config": name, "kind": kind}
    cheap = max(reps, 5)

    if kind == "ncr_eval":
        _, method = build("f30k-ncr", [f"model.head={p['head']}"])
        net = method.nets()["A"].eval()
        n_img, n_cap = p["n_img"], p["n_cap"]
        batch = make_batch(n_cap, gen, n_images=n_img)
        images = batch.images
        with torch.no_grad():
            t = time.perf_counter()
            img = torch.cat([net.encode_images(images[i : i + 128]) for i in range(0, n_img, 128)])
            txt_parts = [
                net.encode_texts(batch.tokens[j : j + 128], batch.lengths[j : j + 128]) for j in range(0, n_cap, 128)
            ]
            width = max(x.shape[1] for x in txt_parts)
            txt = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1])) for x in txt_parts])
            out["encode_s"] = time.perf_counter() - t

            def sim() -> None:
                similarity_matrix(net, img, txt, batch.lengths, img_chunk=100, txt_chunk=1000)

            # warm up on a few pairs only, as the reference does: a full-size warm-up would leave its
            # freed blocks in the allocator and hide the similarity's working memory from the peak
            similarity_matrix(net, img[:2], txt[:26], batch.lengths[:26], img_chunk=100, txt_chunk=1000)
            perfutil.reset_peak_rss()
            before = perfutil.rss_mib()
            timing = perfutil.timed(sim, reps=reps, warmup=0)
        out.update(
            timing=timing, pairs_per_s=n_img * n_cap / timing["median_s"], rss_before_mib=before,
            peak_rss_mib=perfutil.peak_rss_mib(), work_rss_mib=perfutil.peak_rss_mib() - before,
        )
        return out

    if kind in ("ncr_train", "ncr_evalloss", "ncr_cotrain"):
        for suffix, overrides in VARIANTS.get(kind, [("", [])]):
            out.update(_run_ncr(kind, p, suffix, overrides, reps, gen))
        return out

    if kind.startswith("in2r"):
        b = p.get("batch", 128)
        cfg, method = build("f30k-in2r", [f"train.batch_size={b}"])
        if kind == "in2r_train":
            net = method.nets()["A"].train()
            stepper = stepper_for(method, cfg)
            batch = make_batch(b, gen)

            def plain_step() -> None:
                img, txt = net.encode_images(batch.images), net.encode_texts(batch.tokens, batch.lengths)
                stepper.update(triplet_loss(img @ txt.t(), 0.2, hardest=True), None)

            def warmup_step() -> None:
                losses, _ = method.training_step(batch, 0, phase="A")
                stepper.update(sum(losses.values()), None)

            perfutil.reset_peak_rss()
            t_plain = perfutil.timed(plain_step, reps=cheap)
            t_warm = perfutil.timed(warmup_step, reps=cheap)
            out.update(timing=t_plain, step_s=t_plain["median_s"], timing_warmup=t_warm,
                       warmup_step_s=t_warm["median_s"], peak_rss_mib=perfutil.peak_rss_mib())
        elif kind == "in2r_cotrain":
            method.train()
            stepper = stepper_for(method, cfg)
            fake_split(method, b, gen)
            method._enqueue_threshold = {"A": 0.5, "B": 0.5}
            dim = cfg.model.embed_size
            for mem in method.memory.values():  # steady state: both memories full (in pieces: no big temporary)
                for start in range(0, mem.capacity, 4096):
                    n = min(4096, mem.capacity - start)
                    piece = torch.nn.functional.normalize(torch.randn(2, n, dim, generator=gen), dim=-1)
                    mem.push(piece[0], piece[1])
            epoch = method.cfg.warmup_epochs
            pairs = [(make_batch(b, gen), make_batch(b, gen)) for _ in range(cheap + 2)]
            it = iter(pairs * 4)

            def one_iter() -> None:
                batch, side = next(it)
                losses, _ = method.training_step(batch, epoch, phase="A", streams={"noisy": side})
                stepper.update(sum(losses.values()), None)

            perfutil.reset_peak_rss()
            timing = perfutil.timed(one_iter, reps=cheap)
            out.update(timing=timing, iter_s=timing["median_s"], peak_rss_mib=perfutil.peak_rss_mib())
        elif kind == "in2r_evalloss":
            net = method.nets()["A"].eval()
            batch = make_batch(b, gen)
            perfutil.reset_peak_rss()
            timing = perfutil.timed(lambda: method.per_sample_loss(net, batch, 0.2), reps=cheap)
            out.update(timing=timing, pass_s=timing["median_s"], peak_rss_mib=perfutil.peak_rss_mib())
        else:
            net = method.nets()["A"].eval()
            n_img, n_cap = p["n_img"], p["n_cap"]
            batch = make_batch(n_cap, gen, n_images=n_img)
            images = batch.images
            enc: dict[str, Any] = {}

            def enc_images() -> None:
                with torch.no_grad():
                    enc["img"] = torch.cat([net.encode_images(images[i : i + 128]) for i in range(0, n_img, 128)])

            def enc_captions() -> None:
                with torch.no_grad():
                    enc["txt"] = torch.cat(
                        [net.encode_texts(batch.tokens[j : j + 128], batch.lengths[j : j + 128])
                         for j in range(0, n_cap, 128)]
                    )

            def sim() -> None:
                with torch.no_grad():
                    similarity_matrix(net, enc["img"], enc["txt"], img_chunk=1000, txt_chunk=1000)

            perfutil.reset_peak_rss()
            ti = perfutil.timed(enc_images, reps=cheap)
            tc = perfutil.timed(enc_captions, reps=reps)
            ts = perfutil.timed(sim, reps=max(reps, 9))
            out.update(
                timing=ts, encode_images_s=ti["median_s"], encode_captions_s=tc["median_s"],
                encode_pairs_s=ti["median_s"] + tc["median_s"], similarity_s=ts["median_s"],
                peak_rss_mib=perfutil.peak_rss_mib(),
            )
        return out
    raise SystemExit(f"unknown kind {kind}")


def _run_ncr(
    kind: str, p: dict[str, Any], suffix: str, overrides: list[str], reps: int, gen: Any
) -> dict[str, Any]:
    """NCR's training step, per-sample pass or co-training iteration (SGRAF at the reference's sizes);
    figure keys end with ``suffix`` (a variant's overrides)."""
    import torch

    from noisycorr.losses import soft_margin, triplet_loss

    b = p["batch"]
    cfg, method = build("f30k-ncr", [f"model.head={p['head']}", f"train.batch_size={b}", *overrides])
    batch = make_batch(b, gen)
    n_reps = max(reps, 5) if b <= 32 else reps
    if kind == "ncr_train":
        net = method.nets()["A"].train()
        stepper = stepper_for(method, cfg)
        margin = soft_margin(torch.rand(b, generator=gen), 0.2, "exponential")

        def step() -> None:
            img, txt = net.encode_images(batch.images), net.encode_texts(batch.tokens, batch.lengths)
            stepper.update(triplet_loss(net.similarity(img, txt, batch.lengths), margin, hardest=True), None)

        perfutil.reset_peak_rss()
        timing = perfutil.timed(step, reps=n_reps)
        return {f"timing{suffix}": timing, f"step_s{suffix}": timing["median_s"],
                f"peak_rss_mib{suffix}": perfutil.peak_rss_mib()}
    if kind == "ncr_evalloss":
        net = method.nets()["A"].eval()
        perfutil.reset_peak_rss()
        t_pass = perfutil.timed(lambda: method.per_sample_loss(net, batch, 0.2), reps=reps)
        t_pred = perfutil.timed(lambda: method.predict(net, batch), reps=reps, warmup=0)
        return {f"timing{suffix}": t_pass, f"pass_s{suffix}": t_pass["median_s"], f"timing_predict{suffix}": t_pred,
                f"predict_s{suffix}": t_pred["median_s"], f"peak_rss_mib{suffix}": perfutil.peak_rss_mib()}
    method.train()
    stepper = stepper_for(method, cfg)
    fake_split(method, b, gen)
    method.noisy_from_epoch = 10**6  # the first half of the co-training epochs: clean subset only
    epoch = method.cfg.warmup_epochs
    it = iter([make_batch(b, gen) for _ in range(n_reps + 2)] * 4)

    def one_iter() -> None:
        for losses, _ in method.training_step(next(it), epoch, phase="A"):
            stepper.update(sum(losses.values()), None)

    perfutil.reset_peak_rss()
    timing = perfutil.timed(one_iter, reps=n_reps)
    return {f"timing{suffix}": timing, f"iter_s{suffix}": timing["median_s"],
            f"peak_rss_mib{suffix}": perfutil.peak_rss_mib()}


# --------------------------------------------------------------------------- reference and table


def reference_figures(result: dict[str, Any]) -> dict[str, float]:
    """{metric name: value} of one reference configuration, plus ``work: MiB`` for the eval ones
    (peak during the similarity minus the RSS before it, parsed from the figure's note)."""
    figs = {f["metric"]: float(f["value"]) for f in result.get("figures", [])}
    for f in result.get("figures", []):
        m = re.search(r"RSS before ([\d.]+) MiB", f.get("note", ""))
        if m and f["metric"].startswith("peak RSS during similarity"):
            figs["work: MiB"] = float(f["value"]) - float(m.group(1))
    return figs


def _ref_value(figs: dict[str, float], pattern: str, how: str) -> float | None:
    if how == "work":
        return figs.get("work: MiB")
    for metric, value in figs.items():
        if re.search(pattern, metric):
            return value
    return None


def table(ours: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compared figure: ours, theirs, and the ratio (>1 = ours better)."""
    rows = []
    for name, res in ours.items():
        kind = CONFIGS[name]["kind"]
        figs = reference_figures(ref.get(name, {}))
        for k, key, pattern, unit, how in COMPARE:
            if k != kind or key not in res:
                continue
            theirs = _ref_value(figs, pattern, how)
            mine = float(res[key])
            if theirs is None:
                ratio = None
            elif how == "rate":
                ratio = mine / theirs
            else:  # time or memory: theirs / ours, so > 1 means ours is faster or smaller
                ratio = theirs / mine if mine > 0 else None
            label = {"work": "working memory (peak - before)"}.get(how, key)
            rows.append(dict(config=name, figure=label if how == "work" else key, unit=unit,
                             ours=round(mine, 4), reference=theirs,
                             ratio=None if ratio is None else round(ratio, 2)))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | figure | unit | ours | reference | ratio (>1: ours better) |", "|---" * 6 + "|"]
    for r in rows:
        ref = "—" if r["reference"] is None else f"{r['reference']:g}"
        ratio = "—" if r["ratio"] is None else f"×{r['ratio']:g}"
        lines.append(f"| {r['config']} | {r['figure']} | {r['unit']} | {r['ours']:g} | {ref} | {ratio} |")
    return "\n".join(lines)


def run_reference(names: list[str], ncr: str, in2r: str, threads: int, workdir: Path) -> dict[str, dict[str, Any]]:
    """Run the reference harness on ``names`` (its own child processes and quiet guard)."""
    out = workdir / "reference.json"
    cmd = [sys.executable, str(REF_HARNESS), "--ncr", ncr, "--in2r", in2r, "--threads", str(threads), "--retries", "4",
           "--out", str(out), "--md-out", str(workdir / "reference.md"), "--logdir", str(workdir / "logs"),
           "--only", *names]
    print("reference:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return {r["config"]: r for r in json.loads(out.read_text())["results"]}


def run_ours(names: list[str], threads: int, reps: int, workdir: Path, wait: bool = True) -> dict[str, dict[str, Any]]:
    results = {}
    for name in names:
        if wait:
            perfutil.wait_quiet()
        dest = workdir / f"ours_{name}.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--child", name, "--child-out", str(dest),
               "--threads", str(threads), "--reps", str(reps), *([] if wait else ["--no-wait"])]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        res = json.loads(dest.read_text())
        res["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"ours {name}: {res['wall_s']} s", file=sys.stderr)
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reference", nargs=2, metavar=("NCR_DIR", "IN2R_DIR"),
                    help="also run the authors' code (exported as ../shared/perf/README.md says) in this run")
    ap.add_argument("--no-wait", action="store_true",
                    help="do not wait for a quiet machine nor repeat contended repetitions (smoke runs)")
    ap.add_argument("--out", type=Path, help="write every figure (ours, theirs, table) as JSON here")
    ap.add_argument("--from-json", type=Path, help="print the table of an earlier --out file and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        if args.no_wait:
            perfutil.NO_WAIT = True
        res = run_config(args.child, args.reps)
        res.update(threads=torch.get_num_threads(), torch=torch.__version__)
        args.child_out.write_text(json.dumps(res, indent=1))
        return
    if args.from_json:
        print(markdown(json.loads(args.from_json.read_text())["table"]))
        return

    names = args.only or list(CONFIGS)
    with tempfile.TemporaryDirectory(prefix="bench_vs_ref_") as tmp:
        work = Path(tmp)
        ours = run_ours(names, args.threads, args.reps, work, wait=not args.no_wait)
        ref = run_reference(names, *args.reference, args.threads, work) if args.reference else {}
    rows = table(ours, ref)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": args.threads, "cpu": _cpu_name(),
        "command": " ".join([sys.executable, *sys.argv]), "ours": ours, "reference": ref, "table": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))
    print(markdown(rows))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
