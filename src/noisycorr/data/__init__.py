"""Data layer: precomp reader, tokenizer and vocabulary, noise protocols, synthetic data, datasets."""

from noisycorr.data.dataset import (
    CaptionBatch,
    CaptionDataset,
    EncodedCaptions,
    EpochBatchSampler,
    ImageBatch,
    ImageDataset,
    PairBatch,
    PairDataset,
    collate_pairs,
    make_loader,
    pad_token_ids,
    set_epoch,
)
from noisycorr.data.noise import (
    PROTOCOLS,
    NoiseInfo,
    caption_to_image,
    clean_mask,
    load_noise,
    make_per_caption_noise,
    make_per_image_noise,
    noise_info,
    save_noise,
)
from noisycorr.data.paths import shared_data_dir
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import END, MASK, PAD, START, UNK, Vocabulary, tokenize

__all__ = [
    "END",
    "MASK",
    "PAD",
    "PROTOCOLS",
    "START",
    "UNK",
    "CaptionBatch",
    "CaptionDataset",
    "EncodedCaptions",
    "EpochBatchSampler",
    "ImageBatch",
    "ImageDataset",
    "NoiseInfo",
    "PairBatch",
    "PairDataset",
    "PrecompSplit",
    "Vocabulary",
    "caption_to_image",
    "clean_mask",
    "collate_pairs",
    "load_noise",
    "load_precomp",
    "make_loader",
    "make_per_caption_noise",
    "make_per_image_noise",
    "noise_info",
    "pad_token_ids",
    "save_noise",
    "set_epoch",
    "shared_data_dir",
    "tokenize",
    "write_synthetic",
]
