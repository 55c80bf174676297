"""The noisycorr command line: train, eval, featurize, audit, bench, noise, dense-standin, synth, demo, methods,
presets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from noisycorr.data.paths import check_writable_dir
from noisycorr.errors import InputError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="preset name (see `noisycorr presets`) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable")
    p.add_argument("--method", help="shortcut for --set method.name=NAME")
    p.add_argument("--out", help="shortcut for --set run.out_dir=DIR")


def _config(args: argparse.Namespace):
    from noisycorr.config import load_config

    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"method.name={args.method}")
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    return load_config(args.config, overrides)


def _print_metrics(title: str, m: dict) -> None:
    print(
        f"{title}: i2t R@1/5/10 {m['i2t_r1']:.1f} / {m['i2t_r5']:.1f} / {m['i2t_r10']:.1f}   "
        f"t2i R@1/5/10 {m['t2i_r1']:.1f} / {m['t2i_r5']:.1f} / {m['t2i_r10']:.1f}   rSum {m['rsum']:.1f}"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from noisycorr.cli.labeled import is_labeled_config, train_labeled_cli
    from noisycorr.engine.trainer import train

    if is_labeled_config(args.config):  # `task: labels`: the noisy-label setting
        return train_labeled_cli(args.config, args.overrides, method=args.method, out=args.out, resume=args.resume)
    cfg = _config(args)
    results = train(cfg, resume=args.resume)
    if not results:  # a rank other than 0 of a multi-process run: rank 0 reports
        return 0
    best = results["best"]
    _print_metrics(f"best validation (epoch {best['epoch'] + 1})", best["val"])
    if "test" in results:
        _print_metrics("test", results["test"])
    print(f"run folder: {cfg.run.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from noisycorr.cli.labeled import eval_labeled_cli, is_labeled_run
    from noisycorr.engine.rundir import check_same_data
    from noisycorr.engine.runs import evaluate_run

    check_same_data(args.run)
    if is_labeled_run(args.run[0]):
        return eval_labeled_cli(args.run, split=args.split, weights=args.weights)
    metrics = evaluate_run(
        args.run, split=args.split, protocol=args.protocol, data=args.data, device=args.device, weights=args.weights
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(f"{' + '.join(args.run)} [{args.split or 'test'}, {args.weights} weights]", metrics)
    return 0


def _source_options(p: argparse.ArgumentParser) -> None:
    """How to read a table or webdataset source and encode its images (featurize and audit SOURCE)."""
    p.add_argument("--format", choices=["csv", "tsv", "jsonl", "parquet", "webdataset"],
                   help="the source format (default: by the suffix; a folder is webdataset shards)")
    p.add_argument("--image-col", help="table column of the image path (default: image, image_path, path, file, ...)")
    p.add_argument("--caption-col", help="table column of the caption (default: caption, text, alt, ...)")
    p.add_argument("--image-root", help="folder that relative image paths start from (default: the table's folder)")
    p.add_argument("--encoder", default="efficientnet-lite0",
                   help="efficientnet-lite0 (default, offline), timm:MODEL or open_clip:ARCH")
    p.add_argument("--encoder-weights", help="a weights file (or an open_clip pretrained tag; 'random': untrained)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="threads decoding images (0: none)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def cmd_featurize(args: argparse.Namespace) -> int:
    from noisycorr.featurize import featurize

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = featurize(
        args.source, args.out, split=args.split, fmt=args.format, image_col=args.image_col,
        caption_col=args.caption_col, image_root=args.image_root, encoder=args.encoder,
        encoder_weights=args.encoder_weights, grid=False if args.no_grid else None, batch_size=args.batch_size,
        chunk_size=args.chunk_size, workers=args.workers, device=args.device, vocab_min_count=args.vocab_min_count,
        overwrite=args.overwrite,
    )
    c = res.manifest["counts"]
    reasons = ", ".join(f"{n} {k}" for k, n in res.manifest["skipped_by_reason"].items())
    print(f"{c['pairs']} pairs of {c['images']} images from {c['records']} records written to {args.out}"
          f" [{args.split}]; {c['skipped']} skipped{f' ({reasons})' if reasons else ''}"
          f" -> {args.split}_skipped.csv; {res.seconds:.1f} s")
    return 0


def _is_source(arg: str | None) -> bool:
    """An audit argument that names a table or shards rather than a run folder."""
    if not arg:
        return False
    path = Path(arg)
    if path.is_file():
        return True
    return path.is_dir() and not (path / "config.yaml").is_file() and any(path.glob("*.tar"))


def cmd_audit_source(args: argparse.Namespace) -> int:
    from noisycorr.audit.pipeline import audit_source

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.report or args.recompute or args.estimator or args.data or args.data_root or args.split:
        raise InputError("noisycorr audit SOURCE",
                         "no --report/--recompute/--estimator/--data/--data-root/--split (run-folder options)",
                         "one of them")
    overrides = list(args.overrides) + ([f"method.name={args.method}"] if args.method else [])
    out = Path(args.out or Path("runs") / f"audit-{Path(args.run).stem}")
    check_writable_dir(out, what="the audit folder (--out)")
    if args.clean_copy:
        check_writable_dir(args.clean_copy, what="a place for the cleaned copy (--clean-copy)")
    summary = audit_source(
        args.run, out, preset=args.config, overrides=overrides, fmt=args.format, image_col=args.image_col,
        caption_col=args.caption_col, image_root=args.image_root, encoder=args.encoder,
        encoder_weights=args.encoder_weights, batch_size=args.batch_size, workers=args.workers,
        val_size=args.val_size, threshold=args.threshold, top=args.top, clean_copy=args.clean_copy,
        device=args.device,
    )
    sec = summary["seconds"]
    print(f"{summary['n_pairs']} pairs scored, {summary['n_flagged']} flagged below {args.threshold:g}; "
          f"report: {out / 'report.html'}, ranked pairs: {out / 'pairs.csv'} "
          f"(featurize {sec['featurize']:.0f} s, train {sec['train']:.0f} s, report {sec['report']:.0f} s)")
    return 0


def _check_audit_options(args: argparse.Namespace) -> None:
    """``--threshold`` in [0, 1] and ``--top`` >= 0, checked before anything is featurized, trained or scored."""
    from noisycorr.audit.scores import check_unit

    check_unit(args.threshold, "--threshold")
    if args.top < 0:
        raise InputError("--top", "a non-negative integer", repr(args.top))


def cmd_audit(args: argparse.Namespace) -> int:
    from noisycorr.api import get_pair_quality_scores, load_run_data
    from noisycorr.audit import write_audit, write_clean_copy

    _check_audit_options(args)
    if _is_source(args.run):
        return cmd_audit_source(args)
    run = args.run
    clean_copy = Path(args.clean_copy) if args.clean_copy else None
    if clean_copy is not None:
        check_writable_dir(clean_copy, what="a folder for the cleaned copy (--clean-copy)")
    if args.config:
        from noisycorr.engine.trainer import train

        cfg = _config(args)
        if run and Path(run) != Path(cfg.run.out_dir):
            raise InputError("noisycorr audit", "either RUN or -c/--set (training into run.out_dir)", "both")
        run = cfg.run.out_dir
        check_writable_dir(args.report or run, what="the audit folder (--report)")
        print(f"== training {cfg.method['name']} into {run} (resumes a finished or interrupted run)")
        train(cfg, resume=True)
    if not run:
        raise InputError("noisycorr audit", "a run folder, or -c PRESET to train one first", "neither")
    if args.data_root:
        return _audit_data_root(args, run, clean_copy)
    if args.split:
        raise InputError("--split", "--data-root as well (the split of another data folder)", "--split alone")
    out = Path(args.report or Path(run) / "audit")
    check_writable_dir(out, what="the audit folder (--report; default RUN/audit)")
    if clean_copy is not None and clean_copy.exists() and any(clean_copy.iterdir()):
        raise InputError(clean_copy, "a new or empty folder for the cleaned copy", "a folder with files")
    data = load_run_data(run, data=args.data)
    scores = get_pair_quality_scores(run, data=args.data, recompute=args.recompute, estimator=args.estimator,
                                     device=args.device, progress=True)
    summary = write_audit(
        out,
        scores=scores,
        captions=data.train.captions,
        caption_image=data.caption_image,
        image_ids=data.train.ids,
        true_clean=data.clean if data.noise is not None else None,
        threshold=args.threshold,
        top=args.top,
        source=f"run {run}; data {data.root} [{data.train.split}]",
    )
    n_flag = int((scores < args.threshold).sum())
    print(f"{len(scores)} pairs scored, {n_flag} flagged below {args.threshold:g}; report: {out / 'report.html'}")
    det = summary.get("detection") or {}
    if det:
        print("against the injected noise: " + ", ".join(
            f"{k} {v:.3f}" for k, v in det.items() if isinstance(v, float)))
    if clean_copy is not None:
        keep = scores >= args.threshold
        info = write_clean_copy(clean_copy, split=data.train, caption_image=data.caption_image, keep=keep,
                                src_root=data.root, split_name="train",
                                features=tuple(dict.fromkeys(("ims", "pooled"))))
        print(f"cleaned copy ({int(keep.sum())} pairs kept) written to {clean_copy} "
              f"({info.get('bytes_written', 0) / 2**20:.0f} MiB)")
    return 0


def _audit_data_root(args: argparse.Namespace, run: str, clean_copy: Path | None) -> int:
    """``audit RUN --data-root DIR``: the run's networks score the pairs of another folder."""
    import numpy as np

    from noisycorr.api import score_data_folder
    from noisycorr.audit import write_audit, write_clean_copy
    from noisycorr.engine.rundir import write_npy

    if args.data or args.recompute:
        raise InputError("--data-root", "no --data / --recompute (the run's own data)", "one of them")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    split = args.split or "train"
    out = Path(args.report or Path(run) / f"audit-{Path(args.data_root).resolve().name}-{split}")
    check_writable_dir(out, what="the audit folder (--report)")
    if clean_copy is not None and clean_copy.exists() and any(clean_copy.iterdir()):
        raise InputError(clean_copy, "a new or empty folder for the cleaned copy", "a folder with files")
    scores, data = score_data_folder(run, args.data_root, split=split, estimator=args.estimator,
                                     device=args.device, progress=True)
    pairing = data.image_of_caption()
    write_audit(out, scores=scores, captions=data.captions, caption_image=pairing, image_ids=data.ids,
                threshold=args.threshold, top=args.top, source=f"run {run}; data {data.root} [{split}]")
    write_npy(out / "pair_scores.npy", scores.astype(np.float32))
    n_flag = int((scores < args.threshold).sum())
    print(f"{len(scores)} pairs of {data.root} [{split}] scored, {n_flag} flagged below {args.threshold:g}; "
          f"report: {out / 'report.html'}, scores: {out / 'pair_scores.npy'}")
    if clean_copy is not None:
        keep = scores >= args.threshold
        write_clean_copy(clean_copy, split=data, caption_image=pairing, keep=keep, src_root=data.root,
                         split_name=split, features=(data.features,))
        print(f"cleaned copy ({int(keep.sum())} pairs kept) written to {clean_copy}")
    return 0


def _new_output_file(path: str, what: str, *, force: bool) -> Path:
    """``path`` checked as a file to write: not a folder, new unless ``force``, in a writable folder."""
    out = Path(path)
    if out.is_dir():
        raise InputError(out, f"a file name for {what}", "a folder")
    if out.exists() and not force:
        raise InputError(out, "a new file (or --force)", "an existing file")
    check_writable_dir(out.parent, what=f"a folder for {what}")
    return out


def cmd_noise(args: argparse.Namespace) -> int:
    from noisycorr.data import noise as nz

    for option, value in (("--n-images", args.n_images), ("--captions-per-image", args.captions_per_image)):
        if value < 1:
            raise InputError(option, "an integer >= 1", repr(value))
    if args.rate is not None and not 0.0 <= args.rate <= 1.0:
        raise InputError("--rate", "a number in [0, 1]", repr(args.rate))
    if args.action == "make":
        out = _new_output_file(args.output, "the noise index (--output)", force=args.force)
        n_cap = args.n_images * args.captions_per_image
        if args.protocol == "per_caption":
            index = nz.make_per_caption_noise(n_cap, args.captions_per_image, args.rate, seed=args.seed)
        else:
            index = nz.make_per_image_noise(args.n_images, args.rate, seed=args.seed)
        nz.save_noise(out, index)
        path, arr = out, index
    else:
        path = Path(args.file)
        arr, _ = nz.load_noise(path, args.protocol, n_images=args.n_images,
                               n_captions=args.n_images * args.captions_per_image)
    info = nz.noise_info(arr, args.protocol, rate=args.rate, n_images=args.n_images,
                         n_captions=args.n_images * args.captions_per_image, path=str(path))
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in info.__dict__.items()}
    print(json.dumps(record, indent=2))
    return 0


def cmd_dense_standin(args: argparse.Namespace) -> int:
    """Write the stand-in dense texts of a config's training pairs (the pairing as the run gets it)."""
    from noisycorr.data.dense import consensus_keep, standin_dense_texts, write_dense_jsonl
    from noisycorr.engine.setup import prepare_data

    out = _new_output_file(args.output, "the dense texts (OUTPUT)", force=args.force)
    cfg = _config(args)
    data = prepare_data(cfg, with_test=False)
    keep = consensus_keep(data.train.captions, data.caption_image) if args.consensus else None
    texts = standin_dense_texts(data.train.captions, data.caption_image, keep=keep)
    write_dense_jsonl(out, texts, key="caption", pair_image=data.caption_image)
    missing = sum(t is None for t in texts)
    print(json.dumps({"output": str(out), "pairs": len(texts), "without_text": missing,
                      "captions_kept": None if keep is None else int(keep.sum()),
                      "noise_rate": cfg.noise.rate, "noise_protocol": cfg.noise.protocol}, indent=2))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from noisycorr.data.synthetic import write_synthetic

    if args.n_train < 1:
        raise InputError("--n-train", "an integer >= 1", repr(args.n_train))
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "an empty or new folder", "an existing file")
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "an empty or new folder", "a folder with files")
    check_writable_dir(out, what="an empty or new folder")
    write_synthetic(out, seed=args.seed, n_train=args.n_train)
    print(f"synthetic precomp data written to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from noisycorr.config import load_config
    from noisycorr.engine.rundir import RunPaths, check_same_settings
    from noisycorr.engine.trainer import train

    if args.epochs is not None and args.epochs < 1:  # 0 must not mean "the preset's 12"
        raise InputError("--epochs", "an integer >= 1", repr(args.epochs))
    if not 0.0 <= args.rate <= 1.0:
        raise InputError("--rate", "a number in [0, 1]", repr(args.rate))
    check_writable_dir(args.out, what="the demo folder (--out)")
    configs = []
    for rate in (0.0, args.rate):  # both runs are checked before the first trains
        out = Path(args.out) / f"noise-{rate:g}"
        overrides = [f"run.out_dir={out}", f"noise.rate={rate}", *args.overrides]
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        cfg = load_config("demo", overrides)
        paths = RunPaths(out)
        if paths.config.is_file():
            afresh = f"to resume it (to start afresh: remove {args.out} or pass --out NEW_FOLDER)"
            check_same_settings(paths.config, cfg, purpose=afresh)
        configs.append((rate, out, cfg))
    rows = []
    for rate, out, cfg in configs:
        print(f"== vanilla on synthetic data, {rate:.0%} per-caption noise -> {out}")
        results = train(cfg, resume=True)
        rows.append((rate, results["test"]))
    print("\nsynthetic test split (vanilla VSE backbone):")
    for rate, m in rows:
        _print_metrics(f"  noise {rate:>4.0%}", m)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from noisycorr.bench import load_spec, run_bench, write_report
    from noisycorr.bench.report import summary_text
    from noisycorr.bench.runner import BAD_INPUT_EXIT, cell_filter, cell_status, check_cell, train_command
    from noisycorr.bench.spec import cell_config
    from noisycorr.engine.setup import data_root

    spec = load_spec(args.spec, out=args.out, extra=args.overrides)
    only = cell_filter(args.only) if args.only else None
    if args.dry_run:
        changed: dict[str, InputError] = {}
        for cell in spec.cells():  # as the real run does: every cell, listed or not
            try:
                check_cell(cell)
            except InputError as err:
                changed[cell.key] = err
        cells = [c for c in spec.cells() if only is None or only(c)]
        print(f"{len(cells)} cells of {spec.source} -> {spec.out}")
        for cell in cells:
            cmd = train_command(cell, threads=args.threads or 1, resume=cell_status(cell) == "interrupted")
            print(f"{'changed' if cell.key in changed else cell_status(cell):12s} {cell.key}")
            if args.verbose:
                print("             " + " ".join(cmd[1:]))
        if changed:  # the real run would refuse to start
            raise next(iter(changed.values()))
        return 0
    failed = []
    if not args.report_only:
        check_writable_dir(spec.out, what="the bench folder (out: or --out)")
        for cell in spec.cells():  # a missing data folder fails here, not in every cell's train.log
            if only is None or only(cell):
                data_root(cell_config(cell))
        attempts = run_bench(spec, jobs=args.jobs, threads=args.threads, only=only)
        failed = [a for a in attempts if a.returncode != 0]
    if any(cell_status(c) == "done" for c in spec.cells()):
        report = write_report(spec, plots=not args.no_plots)
        print(f"\n{summary_text(spec)}\n\nreport: {report}")
    else:
        print("\nno cell has finished: no report written")
    if not failed:
        return 0
    if all(a.returncode == BAD_INPUT_EXIT for a in failed):  # the same input fails the same way again
        cause = failed[0].cause or f"cell {failed[0].cell} refused its input"
        detail = cause.removeprefix("noisycorr: error: ")
        print(f"noisycorr: error: {detail}" + (f" (and {len(failed) - 1} more cell(s))" if len(failed) > 1 else ""),
              file=sys.stderr)
        return 2
    print(f"noisycorr: {len(failed)} cell(s) failed (first: {failed[0].cell}: {failed[0].cause or 'no output'}); "
          "once the cause is fixed, the same command resumes them", file=sys.stderr)
    return 1


def cmd_methods(args: argparse.Namespace) -> int:
    from noisycorr.factory import get_method_class, list_methods

    for name in list_methods():
        cls = get_method_class(name)
        print(f"{name:12s} {cls.describe()}\n{'':12s} {cls.citation}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from noisycorr.config import preset_dir

    for path in sorted(preset_dir().glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        print(f"{path.stem:24s} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noisycorr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a method (YAML preset + --set overrides)")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in run.out_dir after its last epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's best or last weights (several runs: their averaged similarity)")
    p.add_argument("run", nargs="+", help="run folder(s)")
    p.add_argument("--split", help="split name (default: the run's test split)")
    p.add_argument("--protocol", help="single | 1k | coco5fold1k | coco5k | cc152k (default: the run's)")
    p.add_argument("--data", help="another precomp folder than the run's data.root")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", choices=["best", "last"], default="best",
                   help="best: the epoch chosen on validation (best.safetensors); last: the last finished epoch")
    p.add_argument("--json", action="store_true", help="print all metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("featurize", help="encode the images of a table or webdataset shards into precomp features")
    p.add_argument("source", help="a CSV / TSV / JSON-lines / parquet table, a .tar shard or a folder of shards")
    p.add_argument("--out", required=True, help="output folder (a killed run resumes in it)")
    p.add_argument("--split", default="train", help="file prefix of the split (train, dev, test, ...)")
    _source_options(p)
    p.add_argument("--chunk-size", type=int, default=512, help="images per saved chunk (the resume granularity)")
    p.add_argument("--no-grid", action="store_true", help="pooled features only (no {split}_ims.npy grid)")
    p.add_argument("--vocab-min-count", type=int, default=4, help="words seen fewer times are <unk> in vocab.json")
    p.add_argument("--overwrite", action="store_true", help="replace features of other inputs in --out")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_featurize)

    p = sub.add_parser("audit", help="rank pairs by how likely they are mismatched: of a run, or of a table / shards")
    p.add_argument("run", nargs="?", help="a run folder (or train one first with -c/--set), or a table / webdataset "
                   "source: then it is featurized, a robust model is trained (preset audit-global) and reported")
    _add_config_args(p)
    _source_options(p)
    p.add_argument("--val-size", type=int, default=1000, help="SOURCE: validation pairs (of distinct images)")
    p.add_argument("--report", help="output folder of the audit (default: RUN/audit)")
    p.add_argument("--threshold", type=float, default=0.5, help="flag pairs whose clean probability is below this")
    p.add_argument("--top", type=int, default=50, help="suspicious pairs listed in the report")
    p.add_argument("--clean-copy", help="also write the data without the flagged pairs here: a run's precomp "
                   "layout, or for SOURCE the table / shards again in their own format (skipped rows left out too)")
    p.add_argument("--recompute", action="store_true", help="score again instead of reading pair_scores.npy")
    p.add_argument("--estimator", choices=["gmm", "bmm"], default=None,
                   help="mixture over the per-sample losses (default: the run's method's own; implies --recompute)")
    p.add_argument("--data", help="the run's data folder, if it moved")
    p.add_argument("--data-root", help="score the pairs of this other precomp folder with the run's networks "
                   "(no training; report by default into RUN/audit-FOLDER-SPLIT, scores in pair_scores.npy)")
    p.add_argument("--split", help="with --data-root: the split to score (default: train)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("bench", help="run a grid of methods x noise rates x seeds and write one report")
    p.add_argument("spec", help="a bench spec YAML, or a shipped one: quick, flickr-dev, paper-f30k, ...")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their status; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="with --dry-run: print each cell's command")
    p.add_argument("--jobs", type=int, default=1, help="cells trained at once, each in its own process")
    p.add_argument("--threads", type=int, default=None, help="torch threads per cell (default: CPUs / jobs)")
    p.add_argument("--out", help="another output folder than the spec's `out`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value in every cell; repeatable")
    p.add_argument("--only", action="append", default=[], metavar="FIELD=VALUE[,VALUE]",
                   help="train only matching cells (dataset, protocol, rate, method, seed); repeatable")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished cells")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("noise", help="create or inspect a noise-index file")
    p.add_argument("action", choices=["make", "info"])
    p.add_argument("file", nargs="?", help="the file to inspect (info)")
    p.add_argument("--protocol", choices=["per_caption", "per_image"], required=True)
    p.add_argument("--n-images", type=int, required=True, help="training images (F30K 29000, COCO 113287)")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="where to write the file (make)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_noise)

    p = sub.add_parser("dense-standin", help="write D2S's stand-in dense texts: each training pair's "
                       "other captions on its image, under the config's (noisy) pairing")
    p.add_argument("output", help="the JSON-lines file to write (data.dense_captions of the D2S run)")
    _add_config_args(p)
    p.add_argument("--consensus", action="store_true", help="leave out the captions that share few rare words "
                   "with the other captions of their image (as data.dense_captions: standin-consensus)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    p.set_defaults(func=cmd_dense_standin)

    p = sub.add_parser("synth", help="write the synthetic dataset in the precomp layout")
    p.add_argument("output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=3000)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("demo", help="train the baseline on the embedded synthetic data, clean and noisy")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--rate", type=float, default=0.6)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=cmd_demo)

    sub.add_parser("methods", help="list the training methods and their papers").set_defaults(func=cmd_methods)
    sub.add_parser("presets", help="list the shipped config presets").set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "noise":
        if args.action == "make" and (args.rate is None or not args.output):
            parser.error("noise make needs --rate and --output")
        if args.action == "info" and not args.file:
            parser.error("noise info needs a FILE")
    try:
        return args.func(args)
    except InputError as err:
        print(f"noisycorr: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noisycorr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output was piped into a reader that stopped (`| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
