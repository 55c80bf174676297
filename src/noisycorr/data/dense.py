"""Dense descriptions of the training images (D2S-VSE's long texts), read from a JSON-lines file.

D2S-VSE (:mod:`noisycorr.methods.d2s`) aligns images with long, dense descriptions before it
distils them into the ordinary captions. Any captioner can write them; the file has one JSON object
per line, all keyed the same way:

- ``{"image": 12, "text": "..."}``: row 12 of ``{split}_{features}.npy`` (the usual case: one
  generated description per image);
- ``{"image_id": "1002674143_1b742ab4b8.jpg", "text": "..."}``: an id of ``{split}_ids.txt``;
- ``{"caption": 60, "text": "..."}``: the dense text for training pair (caption row) 60; the
  stand-in below is written this way, so that a caption's text never contains the caption itself.

Every image (or caption) row needs exactly one line. ``"text": null`` declares that a row has no
dense text: its pairs train stage 1 on their own caption and take no distillation loss. An empty
text, a duplicate or missing row, an unknown id or a malformed line is a one-line :class:`InputError`.

The stand-in (:func:`standin_dense_texts`, ``noisycorr dense-standin``) builds the dense text of
training pair k from the training pairing *as given* (noisy or not): the other captions that the
pairing attaches to k's image, joined into one text. Under noise it holds mismatched captions too,
so no ground truth enters it, and caption k itself is never in its own text.

A captioner describes the image itself, so its text holds no caption of another image; the
stand-in under noise does. ``standin-consensus`` (``noisycorr dense-standin --consensus``) leaves
out the captions that share few rare words with the other captions of their image
(:func:`consensus_keep`: text only, from the pairing as given). Measured on flickr-dev's pinned
40 % per-caption noise (diagnostics only): it keeps 46 % of the captions, 97 % of them truly
belong to their image (60 % in the plain stand-in).

``data.dense_captions: standin`` (:data:`STANDIN`) asks the run itself for the stand-in: it is built
from the run's own training pairing (:func:`run_standin`), written into the run folder as
:data:`STANDIN_FILE` with its pairing sidecar (the same bytes ``noisycorr dense-standin`` writes for
the config), and read back from there, after the pairing check, when the run resumes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from noisycorr.data.dataset import EncodedCaptions, PairBatch, PairDataset
from noisycorr.data.paths import atomic_write_bytes
from noisycorr.data.precomp import PrecompSplit
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError

KEYS = ("image", "image_id", "caption")
STANDIN = "standin"  # the reserved value of data.dense_captions: the run writes its own stand-in
STANDIN_CONSENSUS = "standin-consensus"  # the same, without the captions that disagree with their image's others
STANDINS = (STANDIN, STANDIN_CONSENSUS)
STANDIN_FILE = "dense_standin.jsonl"  # where, in the run folder


@dataclass
class DenseTexts:
    """The validated dense texts of one split.

    Attributes:
        keyed: ``image`` (one text per image row) or ``caption`` (one text per caption row).
        texts: one text (or None: no dense text) per image row / caption row.
        source: the file they were read from.
    """

    keyed: str
    texts: list[str | None]
    source: str = "dense texts"

    def per_pair(self, pair_image: np.ndarray) -> list[str | None]:
        """The dense text of each training pair: that of the image the pair carries (``pair_image``,
        the pairing as given, (N_cap,) int64), or the pair's own line for a caption-keyed file."""
        if self.keyed == "caption":
            return list(self.texts)
        texts = np.asarray(self.texts, dtype=object)
        return list(texts[np.asarray(pair_image, dtype=np.int64)])


def read_dense_texts(path: str | Path, split: PrecompSplit) -> DenseTexts:
    """Read and validate a dense-text JSON-lines file against a split.

    Raises:
        InputError: unreadable file, a line that is not a JSON object with one key of ``image`` /
            ``image_id`` / ``caption`` and a ``text``, mixed keys, an empty text, a row out of
            range or an unknown id, a duplicate, or a row without a line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(path, "a JSON-lines file of dense texts (data.dense_captions)", "no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, "a UTF-8 JSON-lines file", f"an unreadable file ({type(err).__name__})") from None
    keyed: str | None = None
    ids = {name: k for k, name in enumerate(split.ids)} if split.ids is not None else None
    n = {"image": split.n_images, "image_id": split.n_images, "caption": split.n_captions}
    rows: list[int] = []
    texts: list[str | None] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(path, "a JSON object per line", repr(line[:40]), where=where) from None
        if not isinstance(obj, dict):
            raise InputError(path, "a JSON object per line", type(obj).__name__, where=where)
        present = [k for k in KEYS if k in obj]
        if len(present) != 1 or "text" not in obj or len(obj) != 2:
            expected = 'exactly two keys: one of "image", "image_id", "caption", and "text"'
            raise InputError(path, expected, f"keys {sorted(obj)}", where=where)
        key = present[0]
        if keyed is None:
            keyed = key
        elif key != keyed:
            raise InputError(path, f'every line keyed by "{keyed}" (as line 1)', f'"{key}"', where=where)
        text = obj["text"]
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InputError(path, "a non-empty text (or null: no dense text)", repr(text), where=where)
        value = obj[key]
        if key == "image_id":
            if ids is None:
                raise InputError(path, f'"image" rows (the split {split.split!r} has no ids file)', '"image_id"',
                                 where=where)
            if not isinstance(value, str) or value not in ids:
                raise InputError(path, f"an image id of {split.split}_ids.txt", repr(value), where=where)
            row = ids[value]
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n[key]:
                raise InputError(path, f"a {key} row in [0, {n[key]})", repr(value), where=where)
            row = value
        rows.append(row)
        texts.append(text.strip() if text is not None else None)
    if keyed is None:
        raise InputError(path, "one line per image (or caption) of the split", "an empty file")
    total = n[keyed]
    order = np.asarray(rows, dtype=np.int64)
    counts = np.bincount(order, minlength=total)
    if (counts > 1).any():
        row = int(np.flatnonzero(counts > 1)[0])
        line_no = _line_of(lines, int(np.flatnonzero(order == row)[1]))
        raise InputError(path, f"one line per {_noun(keyed)}", f"a second line for {_label(keyed, row, split)}",
                         where=f"line {line_no}")
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise InputError(path, f"a line for every one of the {total} {_noun(keyed)}s of split {split.split!r}",
                         f"{len(missing)} missing, the first {_label(keyed, int(missing[0]), split)}")
    out: list[str | None] = [None] * total
    for row, text in zip(rows, texts, strict=True):
        out[row] = text
    return DenseTexts("caption" if keyed == "caption" else "image", out, str(path))


def _noun(keyed: str) -> str:
    return "caption" if keyed == "caption" else "image"


def _label(keyed: str, row: int, split: PrecompSplit) -> str:
    if keyed == "image_id" and split.ids is not None:
        return f"image id {split.ids[row]!r}"
    return f"{_noun(keyed)} row {row}"


def _line_of(lines: Sequence[str], k: int) -> int:
    """The 1-based line number of the k-th non-blank line."""
    seen = -1
    for no, line in enumerate(lines, start=1):
        if line.strip():
            seen += 1
            if seen == k:
                return no
    return len(lines)


# --------------------------------------------------------------------------- the stand-in


def standin_dense_texts(
    captions: Sequence[str], pair_image: np.ndarray, *, sep: str = " ", keep: np.ndarray | None = None
) -> list[str | None]:
    """The stand-in dense text of every training pair: the other captions its image carries, joined.

    Args:
        captions: the N training captions.
        pair_image: (N,) int64, the image row each caption is paired with *as given* (noisy or not).
        sep: what joins the captions.
        keep: (N,) bool, the captions that may enter a text (default: all; see :func:`consensus_keep`).

    Returns:
        N texts; pair k's text joins, in caption order, every caption j != k with
        ``pair_image[j] == pair_image[k]`` (and ``keep[j]``); None when there is no such caption.
    """
    pair_image = np.asarray(pair_image, dtype=np.int64)
    keep = np.ones(len(captions), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    order = np.argsort(pair_image, kind="stable")  # captions grouped by image, in caption order
    bounds = np.flatnonzero(np.diff(pair_image[order])) + 1
    out: list[str | None] = [None] * len(captions)
    for group in np.split(order, bounds):
        for k in group:
            others = [captions[j] for j in group if j != k and keep[j]]
            out[int(k)] = sep.join(others) if others else None
    return out


def caption_consensus(captions: Sequence[str], pair_image: np.ndarray) -> np.ndarray:
    """How much each caption agrees with the other captions its image carries (text only).

    Captions are bags of words weighted by inverse document frequency over the N captions and
    L2-normalised; a caption's consensus is its mean cosine with the others of its image.

    Args:
        captions: the N training captions.
        pair_image: (N,) int64, the pairing as given.

    Returns:
        (N,) float64 in [0, 1]; NaN for a caption whose image carries no other.
    """
    import scipy.sparse as sp

    from noisycorr.data.vocab import tokenize

    pair_image = np.asarray(pair_image, dtype=np.int64)
    n = len(captions)
    words: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for k, caption in enumerate(captions):
        for w in set(tokenize(caption)):
            cols.append(words.setdefault(w, len(words)))
            rows.append(k)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(words)))
    idf = np.log(n / np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0))
    x = x @ sp.diags(idf)
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x
    images, group = np.unique(pair_image, return_inverse=True)
    member = sp.csr_matrix((np.ones(n), (np.arange(n), group)), shape=(n, len(images)))
    sums = member.T @ x  # (n_images, V): each image's captions summed
    size = np.bincount(group)[group].astype(np.float64)
    self_dot = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    dot = np.asarray(x.multiply(sums[group]).sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (dot - self_dot) / (size - 1.0)
    out[size < 2] = np.nan
    return out


def consensus_keep(captions: Sequence[str], pair_image: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N,) bool: the captions a two-component GMM on the square root of :func:`caption_consensus`
    puts in the agreeing component (posterior > 0.5); a caption alone with its image is kept.

    Text only: the pairing as given, no model, no ground truth. The square root spreads the mass of
    near-zero scores (a caption that shares no rare word with the others) so that the mixture
    separates it from the broad agreeing component (on the raw score the near-zero component
    swallows most agreeing captions too)."""
    from noisycorr.selection.mixtures import gmm_clean_probability

    score = caption_consensus(captions, pair_image)
    keep = np.ones(len(score), dtype=bool)
    known = np.isfinite(score)
    if known.sum() >= 2:
        keep[known] = gmm_clean_probability(-np.sqrt(score[known]), seed=seed, max_iter=100) > 0.5
    return keep


def write_dense_jsonl(
    path: str | Path, texts: Sequence[str | None], *, key: str = "caption", pair_image: np.ndarray | None = None
) -> None:
    """Write one ``{key: row, "text": text}`` line per row, atomically.

    With ``pair_image`` (the pairing the texts were built from), a sidecar ``<path>.pairing.json``
    records its digest, and a run whose training pairing differs refuses the file
    (:func:`check_pairing`): a stand-in built from the clean pairing would leak it into a noisy run.
    """
    if key not in KEYS:
        raise InputError("key", f"one of {list(KEYS)}", repr(key))
    path = Path(path).expanduser()
    body = "".join(json.dumps({key: k, "text": t}, ensure_ascii=False) + "\n" for k, t in enumerate(texts))
    if pair_image is not None:
        record = {"pairing_sha256": pairing_digest(pair_image), "pairs": int(len(pair_image))}
        atomic_write_bytes(_sidecar(path), json.dumps(record).encode("utf-8"))
    atomic_write_bytes(path, body.encode("utf-8"))


def pairing_digest(pair_image: np.ndarray) -> str:
    """SHA-256 of a (N,) pairing as int64 bytes."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(pair_image, dtype=np.int64).tobytes()).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".pairing.json")


def check_pairing(path: str | Path, pair_image: np.ndarray, *, required: bool = False,
                  expected: str | None = None) -> None:
    """Refuse a dense-text file whose sidecar records another training pairing than ``pair_image``.

    Args:
        required: a missing sidecar is an error too (else the file is taken as it is).
        expected: what the error says was expected (default: the advice to rebuild the file).
    """
    sidecar = _sidecar(Path(path).expanduser())
    if not sidecar.is_file():
        if required:
            raise InputError(sidecar, f"the pairing record written with {Path(path).name}", "no such file")
        return
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))["pairing_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(sidecar, 'a JSON object with "pairing_sha256"', "an unreadable file") from None
    if recorded != pairing_digest(pair_image):
        raise InputError(path, expected or "dense texts built from this run's training pairing (rebuild them with "
                         "noisycorr dense-standin and the run's noise settings)", "texts of another pairing")


def run_standin(run_dir: str | Path, split: PrecompSplit, pair_image: np.ndarray, *, resuming: bool,
                consensus: bool = False) -> DenseTexts:
    """The dense texts of a run with ``data.dense_captions: standin`` (or ``standin-consensus``).

    A new run gets :func:`standin_dense_texts` of its training pairing as given (``pair_image``;
    with ``consensus``, only the captions :func:`consensus_keep` keeps enter the texts; the trainer
    writes them into ``run_dir`` as :data:`STANDIN_FILE`); a resumed run reads that file back,
    refused when its recorded pairing is not ``pair_image``.
    """
    path = Path(run_dir) / STANDIN_FILE
    if not resuming:
        keep = consensus_keep(split.captions, pair_image) if consensus else None
        return DenseTexts("caption", standin_dense_texts(split.captions, pair_image, keep=keep), str(path))
    texts = read_dense_texts(path, split)
    check_pairing(path, pair_image, required=True,
                  expected="the training pairing the run started with (its noise file or data changed)")
    return texts


# --------------------------------------------------------------------------- batches and datasets


@dataclass
class DensePairBatch(PairBatch):
    """A :class:`PairBatch` with the dense text of every pair (no augmentation).

    Attributes:
        dense_tokens: (B, Ld) int64 padded with 0.
        dense_lengths: (B,) int64.
        dense_valid: (B,) bool, False where the pair has no dense text (its own caption stands in).
    """

    dense_tokens: Tensor
    dense_lengths: Tensor
    dense_valid: Tensor

    def plain(self) -> PairBatch:
        """The batch without its dense texts."""
        return PairBatch(self.images, self.tokens, self.lengths, self.index)


def encode_dense(
    dense: DenseTexts, pair_image: np.ndarray, vocab: Vocabulary, captions: EncodedCaptions
) -> tuple[EncodedCaptions, np.ndarray]:
    """Token ids of each training pair's dense text, and (N,) bool which pairs have one.

    A pair without a dense text gets its own caption's ids (taken from ``captions``).
    """
    texts = dense.per_pair(pair_image)
    valid = np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))
    if len(texts) != len(captions):
        raise InputError(dense.source, f"{len(captions)} dense texts", str(len(texts)))
    encoded = vocab.encode_many(t for t in texts if t is not None)
    it = iter(encoded)
    ids = [next(it) if v else captions.flat[captions.offsets[k] : captions.offsets[k + 1]].tolist()
           for k, v in enumerate(valid)]
    return EncodedCaptions(ids), valid


class DensePairDataset(PairDataset):
    """:class:`PairDataset` whose batches also carry each pair's dense text (:class:`DensePairBatch`).

    Args:
        dense: the pairs' dense token ids (:func:`encode_dense`).
        dense_valid: (N,) bool, which pairs have a dense text.
        Other arguments: as :class:`PairDataset`.
    """

    def __init__(self, *args, dense: EncodedCaptions, dense_valid: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        if len(dense) != len(self) or dense_valid.shape != (len(self),):
            raise InputError("dense texts", f"{len(self)} rows", f"{len(dense)} texts, {dense_valid.shape} flags")
        self.dense, self.dense_valid = dense, dense_valid

    def __getitems__(self, indices: Sequence[int]) -> DensePairBatch:
        batch = super().__getitems__(indices)
        idx = batch.index.numpy()
        tokens, lengths = self.dense.padded(idx)
        return DensePairBatch(
            batch.images, batch.tokens, batch.lengths, batch.index,
            dense_tokens=torch.from_numpy(tokens), dense_lengths=torch.from_numpy(lengths.astype(np.int64)),
            dense_valid=torch.from_numpy(self.dense_valid[idx]),
        )


def dense_train_set(
    split: PrecompSplit, vocab: Vocabulary, pair_image: np.ndarray, source: str | Path | DenseTexts, *,
    train_text: str = "captions", **kwargs,
) -> PairDataset:
    """The training set of a run with dense texts (``data.dense_captions``), validated before anything is written.

    Args:
        pair_image: (N_cap,) the image row each training pair carries (the pairing as given).
        source: a dense-text file (read and checked against ``pair_image``), or texts already read.
        train_text: ``captions``: the pairs keep their captions and carry their dense text besides
            (:class:`DensePairDataset`); ``dense``: the dense text *is* the pair's text (D2S stage 1).
        kwargs: :class:`PairDataset` options (``train``, ``region_drop``, ``token_aug``, ``seed``).
    """
    if isinstance(source, DenseTexts):
        texts = source
    else:
        texts = read_dense_texts(source, split)
        check_pairing(source, pair_image)
    captions = EncodedCaptions.from_captions(split.captions, vocab)
    dense, valid = encode_dense(texts, pair_image, vocab, captions)
    if train_text == "dense":
        return PairDataset(split, vocab, pair_image, encoded=dense, **kwargs)
    return DensePairDataset(split, vocab, pair_image, encoded=captions, dense=dense, dense_valid=valid, **kwargs)
