"""The pair task (noisy correspondence): what the training loop needs that is specific to
image-caption pairs. Data preparation and method construction are in :mod:`noisycorr.engine.setup`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from noisycorr import distributed as dist
from noisycorr.config import Config
from noisycorr.data.dataset import PairBatch, PairDataset, make_loader
from noisycorr.data.dense import (
    STANDIN_CONSENSUS,
    STANDIN_FILE,
    STANDINS,
    DensePairDataset,
    dense_train_set,
    run_standin,
    write_dense_jsonl,
)
from noisycorr.data.noise import save_noise
from noisycorr.engine.checkpoint import load_weights
from noisycorr.engine.context import TrainContext, pair_context
from noisycorr.engine.inference import evaluate_method
from noisycorr.engine.rundir import RunPaths, read_json, write_json, write_npy
from noisycorr.engine.seeding import epoch_seed
from noisycorr.engine.setup import PreparedData, build_method, noise_record, prepare_data
from noisycorr.methods.base import Method, Phase

SCORES_FILE = "pair_scores.npy"


def weights_metadata(cfg: Config, image_shape: tuple[int, ...] | None = None) -> dict[str, str]:
    """What identifies compatible weights; the image feature shape lets a run be rebuilt from its folder."""
    meta = {"backbone": cfg.model.backbone, "method": str(cfg.method["name"]), "format": "noisycorr-1"}
    if image_shape is not None:
        meta["image_shape"] = ",".join(str(int(d)) for d in image_shape)
    return meta


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, the peak allocated GPU memory (MiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mib": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


class PhaseBatches:
    """Batches of a phase's main stream, each with one batch of every named stream alongside.

    The main stream drops its last incomplete batch (every step sees a full batch of negatives), so
    a main stream of ``samples`` < one batch gives no step at all (the loop warns).
    A side stream is reshuffled and restarted when exhausted.

    With several ranks (``world_size``) every batch is this rank's slice of the one-process batch.
    """

    def __init__(self, dataset: PairDataset, phase: Phase, batch_size: int, seed: int, num_workers: int, stream: int,
                 *, rank: int = 0, world_size: int = 1):
        self.dataset, self.phase, self.batch_size, self.seed = dataset, phase, batch_size, seed
        self.num_workers, self.stream = num_workers, stream
        self.rank, self.world_size = rank, world_size
        self.main = make_loader(
            dataset, batch_size, shuffle=True, seed=seed, num_workers=num_workers, drop_last=True,
            epoch=2 * stream, indices=phase.indices, rank=rank, world_size=world_size,
        )
        n_main = len(dataset) if phase.indices is None else len(phase.indices)
        self.samples = n_main
        # Streams that give some rank fewer than 2 samples (no in-batch negative) are not drawn.
        self.streams = {
            name: idx for name, idx in phase.streams.items() if idx is not None and len(idx) >= 2 * world_size
        }

    def __len__(self) -> int:
        return len(self.main)

    def _stream_loader(self, j: int, indices: np.ndarray, cycle: int) -> Any:
        return make_loader(
            self.dataset, self.batch_size, shuffle=True, seed=self.seed + 1000 * cycle, num_workers=self.num_workers,
            drop_last=len(indices) >= self.batch_size, epoch=2 * self.stream + 1 + 1000 * j, indices=indices,
            rank=self.rank, world_size=self.world_size,
        )

    def __iter__(self) -> Iterator[tuple[PairBatch, dict[str, PairBatch]]]:
        cycles = dict.fromkeys(self.streams, 0)
        iters = {name: iter(self._stream_loader(j, idx, 0)) for j, (name, idx) in enumerate(self.streams.items())}
        for batch in self.main:
            extra = {}
            for j, (name, idx) in enumerate(self.streams.items()):
                try:
                    extra[name] = next(iters[name])
                except StopIteration:
                    cycles[name] += 1
                    iters[name] = iter(self._stream_loader(j, idx, cycles[name]))
                    extra[name] = next(iters[name])
            yield batch, extra


class PairTask:
    """Image-caption pairs: precomp data, a noise index, retrieval validation (rSum), pair scores."""

    name = "pairs"
    metric = "rsum"
    metric_format = ".1f"
    metric_label = "validation rSum"

    def prepare(self, cfg: Config, paths: RunPaths, *, resuming: bool) -> PreparedData:
        """The run's data; with ``data.dense_captions: standin``, its stand-in dense texts too (built from
        the noisy training pairing, or read back from the run folder when resuming)."""
        data = prepare_data(cfg)
        if cfg.data.dense_captions in STANDINS:
            data.dense = run_standin(paths.root, data.train, data.caption_image, resuming=resuming,
                                     consensus=cfg.data.dense_captions == STANDIN_CONSENSUS)
        return data

    def build_method(self, cfg: Config, data: PreparedData) -> Method:
        return build_method(cfg, data.vocab, self.image_shape(data))

    def build_train_set(self, cfg: Config, data: PreparedData) -> PairDataset:
        """The augmented training pairs; with ``data.dense_captions`` they also carry each pair's dense
        text, keyed by the image the pair carries (or replace the captions: ``data.train_text=dense``)."""
        options = {"train": True, "region_drop": cfg.data.region_drop, "token_aug": cfg.data.token_aug,
                   "seed": cfg.train.seed}
        if cfg.data.dense_captions:
            source = data.dense if cfg.data.dense_captions in STANDINS else cfg.data.dense_captions
            return dense_train_set(data.train, data.vocab, data.caption_image, source,
                                   train_text=cfg.data.train_text, **options)
        return PairDataset(data.train, data.vocab, data.caption_image, **options)

    @staticmethod
    def image_shape(data: PreparedData) -> tuple[int, ...]:
        return tuple(data.train.images.shape[1:])

    def weights_metadata(self, cfg: Config, data: PreparedData) -> dict[str, str]:
        return weights_metadata(cfg, self.image_shape(data))

    def write_run_files(self, cfg: Config, data: PreparedData, paths: RunPaths) -> None:
        data.vocab.to_json(paths.root / "vocab.json")
        write_json(paths.noise_json, noise_record(data))
        if data.noise_index is not None:
            save_noise(paths.root / "noise_index.npy", data.noise_index)
        if data.meta is not None:  # the meta set: which pairs, and by how much validation shrank
            write_json(paths.root / "meta.json", data.meta_json or {})
            index = data.meta.rows if data.meta.source == "val" else data.meta.held_out
            write_npy(paths.root / "meta_index.npy", index.astype(np.int64))
        if data.dense is not None:  # the stand-in, as `noisycorr dense-standin` writes it
            write_dense_jsonl(paths.root / STANDIN_FILE, data.dense.texts, key="caption", pair_image=data.caption_image)

    def context(self, cfg: Config, method: Method, data: PreparedData, train_set: PairDataset,
                device: torch.device) -> TrainContext:
        """Per-sample passes see the (noisy) training pairs without augmentation (and their dense texts)."""
        plain = PairDataset(data.train, data.vocab, data.caption_image, train=False, encoded=train_set.encoded)
        if isinstance(train_set, DensePairDataset):
            plain = DensePairDataset(data.train, data.vocab, data.caption_image, train=False, encoded=train_set.encoded,
                                     dense=train_set.dense, dense_valid=train_set.dense_valid)
        return pair_context(method, plain, batch_size=cfg.train.batch_size, device=device, seed=cfg.train.seed,
                            epochs=cfg.train.epochs, progress=cfg.run.progress, meta=data.meta)

    def truth(self, data: PreparedData) -> np.ndarray | None:
        """(N,) bool: which training pairs are truly matched, when the noise is synthetic (diagnostics only)."""
        return data.clean if data.noise is not None else None

    def pairing(self, data: PreparedData) -> tuple[np.ndarray, np.ndarray] | None:
        """(N,) image row each training pair carries and (N,) image row each caption truly belongs to,
        when the noise is synthetic: the replacement precision of the diagnostics only."""
        return (data.caption_image, data.train.image_of_caption()) if data.noise is not None else None

    def set_epoch(self, train_set: PairDataset, epoch: int) -> None:
        train_set.set_epoch(epoch)

    def phase_batches(self, cfg: Config, train_set: PairDataset, phase: Phase, epoch: int, k: int) -> PhaseBatches:
        """The shuffled batches of phase ``k`` of ``epoch``; the order depends only on (seed, epoch, k)."""
        return PhaseBatches(
            train_set, phase, cfg.train.batch_size, epoch_seed(cfg.train.seed, epoch), cfg.train.num_workers, k,
            rank=dist.rank(), world_size=dist.world_size(),
        )

    def validate(self, cfg: Config, method: Method, data: PreparedData, device: torch.device) -> dict[str, float]:
        return evaluate_method(
            method.eval_backbones(), data.val, data.vocab, protocol="single", settings=cfg.eval, device=device,
            n_images=cfg.data.val_max_images, combine=method.eval_similarity,
        )

    @staticmethod
    def summary(val: dict[str, float]) -> str:
        return f"val rsum {val['rsum']:.1f}"

    def finish(self, cfg: Config, method: Method, data: PreparedData, device: torch.device, ctx: TrainContext,
               paths: RunPaths, *, train_seconds: float) -> dict[str, Any]:
        """Reload the best weights, evaluate on the test split, score the training pairs, write ``results.json``.

        ``pair_scores.npy`` holds the best model's clean probability of every training pair (see
        :meth:`Method.score_pairs`, with the method's own settings); with synthetic noise,
        ``results.json`` also scores it as a detector.
        """
        load_weights(method, paths.best, expect=weights_metadata(cfg))
        scores = method.score_pairs(ctx, seed=cfg.train.seed)  # every rank: the pass is split among them
        if not dist.is_main():
            return {}
        results: dict[str, Any] = {"best": read_json(paths.best_json)}
        if data.test is not None:
            results["test"] = evaluate_method(
                method.eval_backbones(), data.test, data.vocab, settings=cfg.eval, device=device,
                combine=method.eval_similarity,
            )
        results["noise"] = noise_record(data)
        write_npy(paths.root / SCORES_FILE, scores.astype(np.float32))
        if data.noise is not None:
            from noisycorr.eval.detection import detection_metrics, precision_at_top

            clean_pred = scores > 0.5
            results["detection"] = {
                **{k: float(v) for k, v in detection_metrics(scores, clean_pred, data.clean).items()},
                "precision_top10": precision_at_top(1.0 - scores, data.clean, 0.1),
            }
        results["resources"] = peak_memory()
        results["train_seconds"] = round(train_seconds, 1)
        write_json(paths.results, results)
        return results
