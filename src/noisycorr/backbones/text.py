"""Caption encoders: word embedding + bidirectional GRU, and loading pretrained word vectors (GloVe / .npy)."""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from noisycorr.backbones.ops import l2norm
from noisycorr.errors import InputError

__all__ = ["BiGRUTextEncoder", "check_word_vectors", "load_word_vectors"]


class BiGRUTextEncoder(nn.Module):
    """Embedding -> dropout -> packed bidirectional GRU; the two directions are averaged.

    Args:
        vocab_size: number of token ids.
        word_dim: word embedding size.
        embed_size: GRU hidden size = output feature size.
        num_layers: GRU layers.
        dropout: dropout on the word embeddings.
        word_vectors: optional (vocab_size, word_dim) initial embedding; otherwise U(-0.1, 0.1).
        per_word: L2-normalise every word feature (SGRAF); False leaves them raw (pooled later).
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        embed_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        word_vectors: Tensor | None = None,
        per_word: bool = False,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        if word_vectors is None:
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        else:
            check_word_vectors(word_vectors, vocab_size, word_dim)
            with torch.no_grad():
                self.embed.weight.copy_(word_vectors)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=True)
        self.embed_size = embed_size
        self.per_word = per_word
        self._table: tuple[tuple[tuple[int, int], ...], Tensor] | None = None

    # Inference on the CPU skips the GRU's input projection: every word's projection, one (2, V, 3H)
    # table per weight version, is looked up instead of recomputed per token (about 54 % of the GRU's
    # FLOPs at word_dim 300, embed_size 256; 23 % at 1024). Equal to the packed GRU to float rounding.
    # Built only where that share is at least a third (embed_size <= 2 * word_dim): at embed 1024 it
    # measured x1.04 for 208 MiB (vocabulary 8,481), against x1.3-1.65 at embed 256 for 52 MiB.
    TABLE_MAX_BYTES = 256 * 2**20

    def _use_table(self, tokens: Tensor) -> bool:
        """Whether the table path applies: no gradient, no active dropout, CPU, one layer, a table that saves
        at least a third of the work and is small enough."""
        rnn = self.rnn
        return (
            self.embed_size <= 2 * rnn.input_size
            and not torch.is_grad_enabled()
            and not (self.training and self.dropout.p > 0)
            and tokens.device.type == "cpu"
            and rnn.num_layers == 1
            and rnn.weight_ih_l0.dtype == torch.float32
            and self.embed.num_embeddings * 6 * self.embed_size * 4 <= self.TABLE_MAX_BYTES
        )

    def _input_table(self) -> Tensor:
        """(2, V, 3H) input-gate pre-activations of every word, forward and backward direction (cached)."""
        rnn = self.rnn
        params = (self.embed.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_ih_l0_reverse, rnn.bias_ih_l0_reverse)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._table is None or self._table[0] != key:
            words = self.embed.weight
            table = torch.stack(
                [
                    torch.addmm(rnn.bias_ih_l0, words, rnn.weight_ih_l0.t()),
                    torch.addmm(rnn.bias_ih_l0_reverse, words, rnn.weight_ih_l0_reverse.t()),
                ]
            )
            self._table = (key, table)
        return self._table[1]

    def _forward_table(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The bidirectional GRU of :meth:`forward` from the word table, without packing.

        Captions are sorted by length and each direction reads its caption left-aligned (the backward
        direction reversed within its length), so step ``t`` updates the first ``active[t]`` rows of both
        directions with one batched matmul.

        Returns:
            (B, L, H) direction-averaged word features, zeros on padding.
        """
        rnn, h_size = self.rnn, self.embed_size
        batch, max_len = tokens.shape
        table = self._input_table()
        w_hh = torch.stack([rnn.weight_hh_l0.t(), rnn.weight_hh_l0_reverse.t()])  # (2, H, 3H)
        b_hh = torch.stack([rnn.bias_hh_l0, rnn.bias_hh_l0_reverse])[:, None]  # (2, 1, 3H)
        lengths = lengths.to(torch.long).cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        lens, toks = lengths[order], tokens[order]
        steps = torch.arange(max_len)
        valid = steps < lens[:, None]  # (B, L)
        rev = torch.where(valid, lens[:, None] - 1 - steps, steps)  # within-length reversal, identity on padding
        gates_in = torch.stack([table[0][toks], table[1][toks.gather(1, rev)]])  # (2, B, L, 3H)
        active = valid.sum(0).tolist()
        hidden = tokens.new_zeros((2, batch, h_size), dtype=table.dtype)
        out = tokens.new_zeros((2, batch, max_len, h_size), dtype=table.dtype)
        for t in range(max_len):
            n = active[t]
            if n == 0:
                break
            h = hidden[:, :n]
            gh = torch.baddbmm(b_hh, h, w_hh)  # (2, n, 3H)
            gi = gates_in[:, :n, t]
            rz = torch.sigmoid(gi[..., : 2 * h_size] + gh[..., : 2 * h_size])
            cand = torch.tanh(gi[..., 2 * h_size :] + rz[..., :h_size] * gh[..., 2 * h_size :])
            h = cand + rz[..., h_size:] * (h - cand)
            hidden[:, :n] = h
            out[:, :n, t] = h
        backward = out[1].gather(1, rev[..., None].expand(-1, -1, h_size)) * valid[..., None]
        merged = (out[0] + backward) / 2
        result = torch.empty_like(merged)
        result[order] = merged
        return result

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode padded captions.

        Args:
            tokens: (B, L) int64 ids padded with 0.
            lengths: (B,) number of valid tokens per caption (1 <= length <= L).

        Returns:
            (B, L, embed_size) word features (zeros on padding) and the (B,) lengths.
        """
        check_lengths(lengths, tokens.shape[0], tokens.shape[1])
        if self._use_table(tokens):
            out = self._forward_table(tokens, lengths)
            return (l2norm(out, dim=-1) if self.per_word else out), lengths
        x = self.dropout(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        out = (out[..., : self.embed_size] + out[..., self.embed_size :]) / 2
        if self.per_word:
            out = l2norm(out, dim=-1)
        return out, lengths


def check_lengths(lengths: Tensor, batch: int, max_len: int) -> None:
    """Raise ValueError unless ``lengths`` is (batch,) with values in [1, max_len]."""
    if lengths.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},), found {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(
            f"lengths: expected values in [1, {max_len}], found min {int(lengths.min())} max {int(lengths.max())}"
        )


def check_word_vectors(vectors: Tensor, vocab_size: int, word_dim: int) -> None:
    """Raise InputError unless ``vectors`` is a (vocab_size, word_dim) tensor."""
    shape = tuple(getattr(vectors, "shape", ()))
    if shape != (vocab_size, word_dim):
        raise InputError(
            "word_vectors", f"a ({vocab_size}, {word_dim}) matrix (vocab_size, word_dim)", str(shape)
        )


def load_word_vectors(
    path: str | os.PathLike, word2idx: dict[str, int], dim: int | None = None
) -> tuple[Tensor, int]:
    """Build an embedding matrix for a vocabulary from pretrained vectors.

    Formats:
        - text (GloVe, optionally ``.gz``, or ``.zip`` holding one text file as the GloVe downloads
          do): ``word v1 ... vD`` per line; a word2vec text-format header line ``count dim`` is
          skipped. Rows with more than D+1 fields are multi-word tokens (GloVe 840B has a few); they
          can only match a vocabulary word that contains spaces.
        - ``.npy``: an (N, D) matrix next to a word list ``<stem>.txt`` or ``<stem>.vocab`` (one word a line).

    Words of the vocabulary that the file lacks get U(-0.1, 0.1) rows (torch's default generator).

    Args:
        path: the vectors file.
        word2idx: vocabulary, word -> row index.
        dim: expected vector size; None takes it from the file.

    Returns:
        (V, D) float32 matrix with V = max index + 1, and the number of vocabulary words found.

    Raises:
        InputError: missing file, a row of the wrong size, a non-numeric value, a word list whose length
            differs from the matrix.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "an existing word-vector file", "no such file")
    if path.suffix == ".npy":
        found, dim = _read_npy(path, word2idx, dim)
    else:
        found, dim = _read_text(path, word2idx, dim)
    n_rows = max(word2idx.values(), default=-1) + 1
    matrix = torch.empty(n_rows, dim).uniform_(-0.1, 0.1)
    if found:
        rows = torch.tensor([word2idx[w] for w in found], dtype=torch.long)
        matrix[rows] = torch.from_numpy(np.stack(list(found.values())).astype(np.float32, copy=False))
    return matrix, len(found)


def _read_npy(path: Path, word2idx: dict[str, int], dim: int | None) -> tuple[dict[str, np.ndarray], int]:
    words_file = next(
        (p for p in (path.with_suffix(".txt"), path.with_suffix(".vocab")) if p.is_file()), None
    )
    if words_file is None:
        raise InputError(path, f"a word list {path.stem}.txt or {path.stem}.vocab next to it", "none")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise InputError(path, "a numeric .npy matrix", f"unreadable file ({err})") from None
    if array.ndim != 2:
        raise InputError(path, "a 2-D (words, dim) matrix", f"shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise InputError(path, f"vectors of size {dim}", f"size {array.shape[1]}")
    with open(words_file, encoding="utf-8") as fh:
        words = fh.read().splitlines()
    if len(words) != array.shape[0]:
        raise InputError(words_file, f"{array.shape[0]} words (rows of {path.name})", f"{len(words)} lines")
    keep: dict[str, int] = {}
    for i, w in enumerate(words):
        if w in word2idx and w not in keep:
            keep[w] = i
    rows = np.asarray(array[np.fromiter(keep.values(), dtype=np.int64, count=len(keep))], dtype=np.float32)
    return dict(zip(keep, rows)), int(array.shape[1])


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if path.suffix == ".zip":  # as distributed, e.g. glove.840B.300d.zip: one text file inside
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if not n.endswith("/")]
                if len(members) != 1:
                    raise InputError(path, "a zip archive holding one word-vector text file", f"{len(members)} files")
                return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8", errors="replace")
        except zipfile.BadZipFile:
            raise InputError(path, "a zip archive", "an unreadable file") from None
    return open(path, encoding="utf-8", errors="replace")


def _read_text(path: Path, word2idx: dict[str, int], dim: int | None) -> tuple[dict[str, np.ndarray], int]:
    words: list[str] = []
    values: list[str] = []
    line_numbers: list[int] = []
    seen: set[str] = set()
    file_dim: int | None = None
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip()
            if not line:
                continue
            n_fields = line.count(" ") + 1
            if file_dim is None:
                fields = line.split(" ")
                if number == 1 and len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                    file_dim = int(fields[1])  # word2vec header "count dim"
                    where = "line 1 (header)"
                    if dim is not None and file_dim != dim:
                        raise InputError(path, f"vectors of size {dim}", f"size {file_dim}", where=where)
                    continue
                file_dim = n_fields - 1
                if file_dim < 1:
                    raise InputError(
                        path, "a word followed by its vector values", repr(line[:40]), where=f"line {number}"
                    )
                if dim is not None and file_dim != dim:
                    raise InputError(
                        path, f"{dim} values after the word", f"{file_dim}", where=f"line {number}"
                    )
            if n_fields <= file_dim:
                raise InputError(
                    path, f"{file_dim} values after the word", f"{n_fields - 1}", where=f"line {number}"
                )
            if n_fields == file_dim + 1:
                word, rest = line.split(" ", 1)
            else:
                parts = line.rsplit(" ", file_dim)
                word, rest = parts[0], " ".join(parts[1:])
            if word in word2idx and word not in seen:
                seen.add(word)
                words.append(word)
                values.append(rest)
                line_numbers.append(number)
    if file_dim is None:
        raise InputError(path, "word vectors, one per line", "an empty file")
    if not words:
        return {}, file_dim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # older numpy warns, newer raises, on bad text
            flat = np.fromstring(" ".join(values), dtype=np.float32, sep=" ")
    except ValueError:
        flat = np.empty(0, dtype=np.float32)
    if flat.size != len(words) * file_dim:
        for word_line, rest in zip(line_numbers, values):
            try:
                [float(v) for v in rest.split(" ")]
            except ValueError:
                raise InputError(
                    path, "numeric vector values", repr(rest[:40]), where=f"line {word_line}"
                ) from None
        raise InputError(path, "numeric vector values", "text numpy could not parse")
    return dict(zip(words, flat.reshape(len(words), file_dim))), file_dim
