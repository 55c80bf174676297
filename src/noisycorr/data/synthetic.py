"""The embedded default dataset: synthetic images and captions driven by shared latent concepts.

Every image shows a scene and a few objects ("concepts"), each with an attribute. Each region
feature is a noisy, non-linearly mixed view of one object (concept prototype + attribute
prototype + scene context) or of the background. Each caption names a random subset of the
objects, with one of several synonyms per concept, sometimes the attribute and the scene, wrapped
in filler words in varying order. Concepts are shared between images (scenes favour some
concepts, and concept frequencies are skewed), so retrieval is not trivial, while the task is
learnable in minutes on a CPU. Pooled features are the region mean, which loses which attribute
belongs to which object: region models can do better than pooled ones.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError

# fmt: off
_ATTRIBUTES = (
    "red", "blue", "green", "yellow", "black", "white", "small", "large", "striped", "wooden",
    "shiny", "old", "round", "tall", "dark", "bright", "spotted", "tiny", "heavy", "soft",
)
_SCENES = ("park", "kitchen", "street", "beach", "field", "room", "forest", "market", "garden", "harbor",
           "office", "desert")
# fmt: on
_DETERMINERS = ("a", "the", "one")
_CONNECTORS = ("near", "with", "beside", "and", "next to", "behind", "by")
_PREFIXES = ("there is", "a photo of", "we see", "this shows", "here is")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SPLITS = ("train", "dev", "test")


def _pseudo_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct pronounceable words of 2-3 consonant-vowel syllables, none in ``taken``."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        n_syl = int(rng.integers(2, 4))
        word = "".join(
            _CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(n_syl)
        )
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


class _World:
    """Prototypes and word lists shared by all splits."""

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        n_concepts: int,
        n_attributes: int,
        n_scenes: int,
        synonyms: int,
        feat_dim: int,
    ):
        self.n_concepts, self.n_attributes, self.n_scenes = n_concepts, n_attributes, n_scenes
        fixed = (
            set(_ATTRIBUTES) | set(_SCENES) | set(_DETERMINERS) | {w for c in _CONNECTORS for w in c.split()}
        )
        fixed |= {w for p in _PREFIXES for w in p.split()} | {"in"}
        words = _pseudo_words(rng, n_concepts * synonyms, fixed)
        self.nouns = np.array(words, dtype=object).reshape(n_concepts, synonyms)
        extra = max(0, n_attributes - len(_ATTRIBUTES))
        self.attributes = (list(_ATTRIBUTES) + _pseudo_words(rng, extra, fixed | set(words)))[:n_attributes]
        self.scenes = (list(_SCENES) * (n_scenes // len(_SCENES) + 1))[:n_scenes]

        def unit(n: int) -> np.ndarray:
            v = rng.standard_normal((n, feat_dim))
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        self.concept_proto, self.attr_proto, self.scene_proto = (
            unit(n_concepts),
            unit(n_attributes),
            unit(n_scenes),
        )
        # Fixed random mixing followed by a ReLU: non-negative, CNN-like features.
        self.mix = rng.standard_normal((feat_dim, feat_dim)) / np.sqrt(feat_dim)
        self.bias = 0.1 * rng.standard_normal(feat_dim)
        # Skewed concept popularity, and a preferred concept group per scene.
        popularity = 1.0 / (np.arange(n_concepts) + 3.0) ** 0.8
        self.popularity = popularity[rng.permutation(n_concepts)]
        self.scene_affinity = np.ones((n_scenes, n_concepts))
        groups = np.array_split(rng.permutation(n_concepts), n_scenes)
        for s, g in enumerate(groups):
            self.scene_affinity[s, g] = 6.0


def _make_images(
    world: _World,
    rng: np.random.Generator,
    n: int,
    *,
    k_range: tuple[int, int],
    n_regions: int,
    noise: float,
    p_background: float,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Region features (n, R, D) float32 and each image's latent content (scene, objects)."""
    lo, hi = k_range
    d, r_idx = world.concept_proto.shape[1], np.arange(n_regions)
    scene = rng.integers(world.n_scenes, size=n)
    k = rng.integers(lo, hi + 1, size=n)
    # k distinct concepts per image drawn with probability ~ popularity x scene affinity (Gumbel top-k).
    logp = np.log(world.popularity * world.scene_affinity[scene])
    concepts = np.argsort(-(logp + rng.gumbel(size=logp.shape)), axis=1)[:, :hi]
    attrs = rng.integers(world.n_attributes, size=(n, hi))
    # Every object gets one region; a spare region shows a random object again, or background (-1).
    spare = rng.integers(0, k[:, None], size=(n, n_regions))
    owner = np.where(r_idx < k[:, None], r_idx, spare)
    owner[(r_idx >= k[:, None]) & (rng.random((n, n_regions)) < p_background)] = -1
    owner = np.take_along_axis(owner, np.argsort(rng.random((n, n_regions)), axis=1), axis=1)
    own = np.maximum(owner, 0)
    obj = (
        world.concept_proto[np.take_along_axis(concepts, own, axis=1)]
        + 0.6 * world.attr_proto[np.take_along_axis(attrs, own, axis=1)]
    )
    obj[owner < 0] = 0.0
    latents = obj + 0.5 * world.scene_proto[scene][:, None] + noise * rng.standard_normal((n, n_regions, d))
    feats = np.maximum(latents @ world.mix + world.bias, 0.0)
    return feats.astype(np.float32), {"scene": scene, "k": k, "concepts": concepts, "attributes": attrs}


def _captions(world: _World, rng: np.random.Generator, content: dict[str, np.ndarray], cpi: int) -> list[str]:
    """``cpi`` captions per image, image after image (string assembly is per caption)."""
    out = []
    for i in range(len(content["k"])):
        k = int(content["k"][i])
        concepts, attrs = content["concepts"][i, :k], content["attributes"][i, :k]
        for _ in range(cpi):
            m = int(rng.choice(np.arange(1, k + 1), p=_mention_probs(k)))
            phrases = []
            for j in rng.permutation(k)[:m]:
                noun = world.nouns[concepts[j], rng.integers(world.nouns.shape[1])]
                det = _DETERMINERS[rng.integers(len(_DETERMINERS))]
                attr = f"{world.attributes[attrs[j]]} " if rng.random() < 0.5 else ""
                phrases.append(f"{det} {attr}{noun}")
            text = phrases[0]
            for ph in phrases[1:]:
                text += f" {_CONNECTORS[rng.integers(len(_CONNECTORS))]} {ph}"
            if rng.random() < 0.4:
                text = f"{_PREFIXES[rng.integers(len(_PREFIXES))]} {text}"
            if rng.random() < 0.3:
                text += f" in the {world.scenes[content['scene'][i]]}"
            out.append(text + " .")
    return out


def _mention_probs(k: int) -> np.ndarray:
    """How many of an image's k objects a caption names: P(m) grows with m, one object is rare.

    Calibrated so that captions are about as specific as real ones: a caption's word overlap with
    the other captions of its paired image tells clean from mismatched pairs with ROC-AUC 0.93 at 40 %
    per-caption noise (Flickr8k captions of ../shared/data/flickr-dev: 0.94;
    ``benchmarks/bench_caption_ambiguity.py``). Before, with mostly one or two objects named, 0.81.
    """
    w = np.array([0.25 if m == 1 else float(m) for m in range(1, k + 1)])
    return w / w.sum()


def write_synthetic(
    root: str | Path,
    *,
    seed: int = 0,
    n_train: int = 3000,
    n_dev: int = 100,
    n_test: int = 200,
    captions_per_image: int = 5,
    n_regions: int = 8,
    feat_dim: int = 64,
    n_concepts: int = 80,
    n_attributes: int = 8,
    n_scenes: int = 6,
    synonyms: int = 2,
    concepts_per_image: tuple[int, int] = (2, 4),
    region_noise: float = 0.35,
    p_background: float = 0.3,
) -> Path:
    """Write a synthetic precomp dataset to ``root`` and return it.

    Files: ``{split}_ims.npy`` (N, R, D) float32, ``{split}_pooled.npy`` (N, D) float32 (region
    mean), ``{split}_caps.txt`` (``captions_per_image`` lines per image), ``{split}_ids.txt``,
    ``vocab.json`` (NCR format, built from the train captions with min_count 1) and
    ``README.txt`` with the parameters. The same arguments give the same bytes.

    Args:
        root: output folder (created if missing).
        seed: generator seed.
        n_train, n_dev, n_test: images per split. 3,000 training images (15,000 pairs, about
            Flickr8k's size): at 1,000 a network memorises 40 % mismatched pairs within the
            warm-up and NCR's clean/noisy split degrades (ROC-AUC 0.86 -> 0.67); at 3,000 it
            improves during co-training (0.89 -> 0.94).
        captions_per_image: captions per image.
        n_regions: R, regions per image (>= the largest concept count).
        feat_dim: D.
        n_concepts: objects in the world (each named by ``synonyms`` pseudo-words).
        n_attributes: attribute adjectives.
        n_scenes: scenes (each favours a group of concepts).
        synonyms: words per concept.
        concepts_per_image: inclusive range of objects per image.
        region_noise: std of the Gaussian noise on each region's latent vector.
        p_background: chance that a spare region shows background instead of an object.
    """
    lo, hi = concepts_per_image
    if not 1 <= lo <= hi <= min(n_regions, n_concepts):
        raise InputError(
            "concepts_per_image", f"lo <= hi within 1..{min(n_regions, n_concepts)}", repr(concepts_per_image)
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _World(
        rng,
        n_concepts=n_concepts,
        n_attributes=n_attributes,
        n_scenes=n_scenes,
        synonyms=synonyms,
        feat_dim=feat_dim,
    )
    train_caps: list[str] = []
    for split, n in zip(_SPLITS, (n_train, n_dev, n_test)):
        feats, content = _make_images(
            world,
            rng,
            n,
            k_range=(lo, hi),
            n_regions=n_regions,
            noise=region_noise,
            p_background=p_background,
        )
        caps = _captions(world, rng, content, captions_per_image)
        if split == "train":
            train_caps = caps
        atomic_write_bytes(root / f"{split}_ims.npy", _npy_bytes(feats))
        atomic_write_bytes(root / f"{split}_pooled.npy", _npy_bytes(feats.mean(axis=1, dtype=np.float32)))
        atomic_write_bytes(root / f"{split}_caps.txt", ("\n".join(caps) + "\n").encode("utf-8"))
        ids = "".join(f"synthetic-{split}-{i:06d}\n" for i in range(n))
        atomic_write_bytes(root / f"{split}_ids.txt", ids.encode("utf-8"))
    Vocabulary.build(train_caps, min_count=1).to_json(root / "vocab.json")
    params = {
        "seed": seed,
        "n_train": n_train,
        "n_dev": n_dev,
        "n_test": n_test,
        "captions_per_image": captions_per_image,
        "n_regions": n_regions,
        "feat_dim": feat_dim,
        "n_concepts": n_concepts,
        "n_attributes": n_attributes,
        "n_scenes": n_scenes,
        "synonyms": synonyms,
        "concepts_per_image": list(concepts_per_image),
        "region_noise": region_noise,
        "p_background": p_background,
    }
    readme = (
        "noisycorr synthetic dataset (precomp layout), written by noisycorr.data.synthetic.write_synthetic.\n\n"
        "Each image has a scene and a few objects (concepts) with attributes. Each region feature is\n"
        "relu(W (concept + 0.6 attribute + 0.5 scene + noise) + b) for one object, or background\n"
        "(scene + noise). Captions name a random subset of the objects by one of several synonyms,\n"
        "sometimes with their attribute and the scene. Caption k belongs to image k // captions_per_image.\n\n"
        "Files: {split}_ims.npy (N, R, D) float32, {split}_pooled.npy (N, D) float32 = region mean,\n"
        "{split}_caps.txt, {split}_ids.txt for split in train/dev/test; vocab.json (NCR format, train\n"
        "captions, min_count 1).\n\nParameters:\n" + json.dumps(params, indent=2) + "\n"
    )
    atomic_write_bytes(root / "README.txt", readme.encode("utf-8"))
    return root
