"""From a :class:`Config` to loaded splits, a vocabulary, the noisy training pairing and a method."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisycorr.config import Config
from noisycorr.data import synthetic
from noisycorr.data.dense import DenseTexts
from noisycorr.data.meta import MetaPairs, meta_from_file, meta_from_val, meta_pairs_wanted, meta_record
from noisycorr.data.noise import (
    NoiseInfo,
    caption_to_image,
    clean_mask,
    load_noise,
    make_per_caption_noise,
    make_per_image_noise,
    noise_info,
    save_noise,
)
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError
from noisycorr.factory import get_backbone_class, get_method_class
from noisycorr.methods.base import Method


@dataclass
class PreparedData:
    """Everything a run reads, loaded and validated before anything is written."""

    root: Path
    train: PrecompSplit
    val: PrecompSplit
    test: PrecompSplit | None
    vocab: Vocabulary
    caption_image: np.ndarray  # (N_cap,) image row paired with each training caption (noisy)
    noise_index: np.ndarray | None  # the protocol's index array (saved with the run)
    noise: NoiseInfo | None
    clean: np.ndarray  # (N_cap,) bool ground truth of the injected noise: diagnostics only
    meta: MetaPairs | None = None  # the pairs the user declares clean (data.meta_source), for the method
    meta_json: dict | None = None  # what meta.json records (sizes, how much validation shrank)
    dense: DenseTexts | None = None  # the run's own stand-in dense texts (data.dense_captions: standin)


def cache_dir() -> Path:
    """Where generated data (the synthetic default set) is kept: $NOISYCORR_CACHE or ~/.cache/noisycorr."""
    return Path(os.environ.get("NOISYCORR_CACHE", Path.home() / ".cache" / "noisycorr"))


def synthetic_root(seed: int = 0) -> Path:
    """Generate the embedded synthetic dataset once (atomically) and return its folder.

    The folder name carries a digest of the generator's source, so a changed generator never
    reuses stale data.
    """
    digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    root = cache_dir() / f"synthetic-{digest}-seed{seed}"
    if not (root / "README.txt").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".tmp-synthetic-"))
        synthetic.write_synthetic(tmp, seed=seed)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def data_root(cfg: Config) -> Path:
    if cfg.data.root == "synthetic":
        return synthetic_root()
    root = Path(cfg.data.root).expanduser()
    if not root.is_dir():
        raise InputError(root, "a precomp data folder (data.root: point it with --set data.root=FOLDER, "
                         "or set $NOISYCORR_SHARED_DATA for the shipped presets)", "no such directory")
    return root


def load_vocab(cfg: Config, root: Path, train: PrecompSplit) -> Vocabulary:
    """The configured vocabulary JSON, else ``vocab.json`` in the data folder, else built from train."""
    if cfg.data.vocab:
        return Vocabulary.from_json(Path(cfg.data.vocab).expanduser())
    if (root / "vocab.json").is_file():
        return Vocabulary.from_json(root / "vocab.json")
    return Vocabulary.build(train.captions, min_count=cfg.data.vocab_min_count)


def make_noise(cfg: Config, train: PrecompSplit) -> tuple[np.ndarray | None, NoiseInfo | None]:
    """Load the configured noise file, or draw one with the noise seed; None when the run is clean."""
    n = cfg.noise
    if n.protocol not in ("per_caption", "per_image"):
        raise InputError("noise.protocol", "per_caption or per_image", repr(n.protocol))
    if not 0.0 <= n.rate <= 1.0:
        raise InputError("noise.rate", "a rate in [0, 1]", repr(n.rate))
    if n.file and Path(n.file).expanduser().is_file():
        return load_noise(Path(n.file).expanduser(), n.protocol, n_images=train.n_images, n_captions=train.n_captions)
    if n.rate == 0.0:
        return None, None
    seed = cfg.train.seed if n.seed is None else n.seed
    if n.protocol == "per_caption":
        index = make_per_caption_noise(train.n_captions, train.captions_per_image, n.rate, seed=seed)
    else:
        index = make_per_image_noise(train.n_images, n.rate, seed=seed)
    if n.file:
        Path(n.file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        save_noise(Path(n.file).expanduser(), index)
    info = noise_info(index, n.protocol, rate=n.rate, n_images=train.n_images, n_captions=train.n_captions,
                      path=n.file)
    return index, info


GLOVE_SOURCE = "GloVe 840B 300d, glove.840B.300d.txt or .zip from https://nlp.stanford.edu/projects/glove/"


def word_vectors_file(model: Any) -> Path | None:
    """``model.word_vectors`` as a path; None when unset, ``null`` or ``none`` (random word embeddings).

    Raises:
        InputError: the named file does not exist (the IN2R paper presets name GloVe 840B).
    """
    value = getattr(model, "word_vectors", None)
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise InputError(
            "model.word_vectors",
            f"the word-vector file {value} ({GLOVE_SOURCE}; point at it with --set model.word_vectors=PATH, "
            "or train from random word embeddings with --set model.word_vectors=none)",
            "no such file",
        )
    return path


def prepare_data(cfg: Config, *, with_test: bool = True) -> PreparedData:
    """Load and validate the splits, vocabulary and noise of ``cfg``; writes nothing but the data cache."""
    root = data_root(cfg)
    word_vectors_file(cfg.model)  # a missing file is refused before the noise file is written
    cpi = cfg.data.captions_per_image
    train = load_precomp(root, cfg.data.train_split, features=cfg.data.features, captions_per_image=cpi)
    val = load_precomp(root, cfg.data.val_split, features=cfg.data.features, captions_per_image=cpi)
    test = (
        load_precomp(root, cfg.data.test_split, features=cfg.data.features, captions_per_image=cpi)
        if with_test
        else None
    )
    need = get_backbone_class(cfg.model.backbone).image_input
    found = train.images.ndim
    if (need == "pooled") != (found == 2):
        want = "(N, D) pooled features" if need == "pooled" else "(N, R, D) region features"
        raise InputError(
            root / f"{cfg.data.train_split}_{cfg.data.features}.npy",
            f"{want} for backbone {cfg.model.backbone!r} (set data.features)",
            f"shape {tuple(train.images.shape)}",
        )
    vocab = load_vocab(cfg, root, train)
    index, info = make_noise(cfg, train)
    if index is None:
        pairing = train.image_of_caption()
    else:
        pairing = caption_to_image(cfg.noise.protocol, index, train.n_images, train.captions_per_image)
    clean = clean_mask(pairing, train.captions_per_image)
    meta, val_kept = make_meta(cfg, train, val, vocab, pairing)
    record = meta_record(meta, val_before=val, val_after=val_kept) if meta is not None else None
    return PreparedData(root, train, val_kept, test, vocab, pairing, index, info, clean, meta, record)


def meta_source(cfg: Config) -> str:
    """``data.meta_source`` with ``auto`` resolved: ``val`` for a method that uses a meta set, else ``none``."""
    source = cfg.data.meta_source
    if source == "auto":
        uses = getattr(get_method_class(str(cfg.method["name"])), "uses_meta_set", False)
        return "val" if uses else "none"
    return source


def make_meta(
    cfg: Config, train: PrecompSplit, val: PrecompSplit, vocab: Vocabulary, pairing: np.ndarray
) -> tuple[MetaPairs | None, PrecompSplit]:
    """The meta set of ``cfg`` and the validation split it leaves (smaller when drawn from it).

    The meta set comes from validation images or from the user's file of training pairs, never from
    the test split; with ``file`` the pairs keep the images they carry in ``pairing``.
    """
    source = meta_source(cfg)
    if source == "none":
        return None, val
    if source == "file":
        if not cfg.data.meta_file:
            raise InputError("data.meta_file", "a file of training pair indices for data.meta_source=file", "none")
        return meta_from_file(train, vocab, pairing, cfg.data.meta_file), val
    n_pairs = meta_pairs_wanted(cfg.data.meta_size, train.n_captions)
    return meta_from_val(val, vocab, n_pairs=n_pairs, seed=cfg.data.meta_seed)


def noise_record(data: PreparedData) -> dict:
    """What is saved as ``noise.json`` in the run folder."""
    if data.noise is None:
        return {"protocol": None, "rate": 0.0, "realised_rate": 0.0, "checksum": None}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(data.noise).items()}


def build_method(
    cfg: Config, vocab: Vocabulary, image_shape: tuple[int, ...], *, pretrained_words: bool = True
) -> Method:
    """Instantiate the configured method over freshly built backbones (word vectors loaded once).

    Args:
        image_shape: the shape of one image's features, (R, D) regions or (D,) pooled.
        pretrained_words: False skips ``model.word_vectors`` (the caller loads trained weights over
            the embeddings anyway, e.g. a finished run).
    """
    m = cfg.model
    word_vectors = None
    path = word_vectors_file(m) if pretrained_words else None
    if path is not None:
        from noisycorr.backbones.text import load_word_vectors

        word_vectors, _ = load_word_vectors(path, vocab.word2idx, m.word_dim)
    backbone_cls = get_backbone_class(m.backbone)
    method_values = dict(cfg.method)
    cls = get_method_class(str(method_values.pop("name")))
    method_cfg = cls.make_config(method_values)
    return cls(
        method_cfg,
        lambda: backbone_cls.from_config(m, vocab_size=len(vocab), image_shape=image_shape, word_vectors=word_vectors),
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device", "a device present on this machine", repr(name))
    return dev
