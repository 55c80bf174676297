"""load_word_vectors: GloVe text (plain, header, gzip, multi-word rows), .npy + word list, bad inputs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from noisycorr.backbones.text import load_word_vectors
from noisycorr.errors import InputError

VOCAB = {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "a": 4, "dog": 5, "runs": 6, "on": 7, "grass": 8}
VECTORS = {
    "dog": [0.5, -1.25, 3.0],
    "grass": [1e-3, 2.5e2, -7.0],
    "cat": [9.0, 9.0, 9.0],  # not in the vocabulary
    "a": [0.0, 1.0, -1.0],
}


def write_glove(path, rows, header=None, opener=open):
    with opener(path, "wt", encoding="utf-8") as fh:
        if header:
            fh.write(header + "\n")
        for word, vec in rows:
            fh.write(word + " " + " ".join(repr(float(v)) for v in vec) + "\n")


def check_matrix(matrix, n_found):
    assert matrix.shape == (9, 3) and matrix.dtype == torch.float32
    assert n_found == 3
    for word in ("dog", "grass", "a"):
        torch.testing.assert_close(matrix[VOCAB[word]], torch.tensor(VECTORS[word]))
    missing = matrix[[VOCAB[w] for w in ("<pad>", "runs", "on")]]
    assert missing.abs().max() <= 0.1 and missing.std() > 0


@pytest.mark.parametrize("header", [None, "4 3"])
def test_glove_text(tmp_path, header):
    path = tmp_path / "glove.txt"
    write_glove(path, VECTORS.items(), header=header)
    check_matrix(*load_word_vectors(path, VOCAB))
    check_matrix(*load_word_vectors(path, VOCAB, dim=3))


def test_glove_gzip_and_multi_word_tokens(tmp_path):
    path = tmp_path / "glove.txt.gz"
    rows = list(VECTORS.items()) + [(". . .", [1.0, 2.0, 3.0]), ("dog", [7.0, 7.0, 7.0])]
    write_glove(path, rows, opener=gzip.open)
    matrix, n_found = load_word_vectors(path, VOCAB)
    check_matrix(matrix, n_found)  # the repeated "dog" row is ignored: first occurrence wins
    vocab = {**VOCAB, ". . .": 9}
    matrix, n_found = load_word_vectors(path, vocab)
    assert n_found == 4 and matrix[9].tolist() == [1.0, 2.0, 3.0]


def test_missing_rows_follow_the_torch_seed(tmp_path):
    path = tmp_path / "glove.txt"
    write_glove(path, VECTORS.items())
    torch.manual_seed(5)
    first, _ = load_word_vectors(path, VOCAB)
    torch.manual_seed(5)
    second, _ = load_word_vectors(path, VOCAB)
    assert torch.equal(first, second)


def test_real_vocabulary_file(tmp_path, shared_data):
    word2idx = json.loads((shared_data / "vocab" / "f30k_precomp_vocab.json").read_text())["word2idx"]
    picked = ["dog", "man", "<unk>", "bicycle"]
    assert all(w in word2idx for w in picked)
    gen = np.random.default_rng(0)
    rows = [(w, gen.normal(size=5)) for w in picked + ["zzznotaword"]]
    path = tmp_path / "vectors.txt"
    write_glove(path, rows)
    matrix, n_found = load_word_vectors(path, word2idx)
    assert n_found == 4 and matrix.shape == (max(word2idx.values()) + 1, 5)
    for word, vec in rows[:4]:
        torch.testing.assert_close(matrix[word2idx[word]], torch.tensor(vec, dtype=torch.float32))


@pytest.mark.parametrize("suffix", [".txt", ".vocab"])
def test_npy_with_word_list(tmp_path, suffix):
    words = list(VECTORS)
    np.save(tmp_path / "emb.npy", np.array([VECTORS[w] for w in words], dtype=np.float64))
    (tmp_path / f"emb{suffix}").write_text("\n".join(words) + "\n", encoding="utf-8")
    check_matrix(*load_word_vectors(tmp_path / "emb.npy", VOCAB))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_word_vectors(tmp_path / "nope.txt", VOCAB)


def test_short_row_names_its_line(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("a 1 2 3\ndog 1 2 3\ngrass 1 2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"glove.txt: line 3: expected 3 values after the word, found 2"):
        load_word_vectors(path, VOCAB)


def test_dim_mismatch_and_non_numeric_values(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("a 1 2 3\ndog 1 x 3\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1: expected 4 values"):
        load_word_vectors(path, VOCAB, dim=4)
    with pytest.raises(InputError, match="line 2: expected numeric vector values"):
        load_word_vectors(path, VOCAB)
    header = tmp_path / "w2v.txt"
    header.write_text("2 3\na 1 2 3\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1 \\(header\\)"):
        load_word_vectors(header, VOCAB, dim=300)


def test_npy_word_list_problems(tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="word list"):
        load_word_vectors(tmp_path / "emb.npy", VOCAB)
    (tmp_path / "emb.txt").write_text("a\ndog\ngrass\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"emb.txt: expected 4 words .* found 3 lines"):
        load_word_vectors(tmp_path / "emb.npy", VOCAB)
    (tmp_path / "emb.txt").write_text("a\ndog\ngrass\ncat\n", encoding="utf-8")
    with pytest.raises(InputError, match="vectors of size 5"):
        load_word_vectors(tmp_path / "emb.npy", VOCAB, dim=5)


def test_glove_zip_as_downloaded_and_word2vec_text_inside_gzip(tmp_path):
    import zipfile

    text = tmp_path / "glove.840B.300d.txt"
    write_glove(text, VECTORS.items())
    archive = tmp_path / "glove.840B.300d.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(text, arcname="glove.840B.300d.txt")
    text.unlink()
    check_matrix(*load_word_vectors(archive, VOCAB, dim=3))
    w2v = tmp_path / "vectors.w2v.txt.gz"  # word2vec text format: a "count dim" header line
    write_glove(w2v, VECTORS.items(), header="4 3", opener=gzip.open)
    check_matrix(*load_word_vectors(w2v, VOCAB, dim=3))


def test_zip_with_several_files_or_damaged_is_a_one_line_error(tmp_path):
    import zipfile

    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "a 1 2 3\n")
        zf.writestr("b.txt", "dog 1 2 3\n")
    with pytest.raises(InputError, match=r"two.zip: expected a zip archive holding one word-vector text file, found 2"):
        load_word_vectors(archive, VOCAB)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="broken.zip: expected a zip archive"):
        load_word_vectors(broken, VOCAB)
