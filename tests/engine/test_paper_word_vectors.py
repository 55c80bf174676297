"""Issue 16: the IN2R paper presets start from the authors' GloVe 840B vectors and refuse to train
without the file (one line, exit 2, nothing written) unless ``model.word_vectors=none``; the NCR /
SGRAF presets start from random word embeddings, as NCR's authors do."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import tiny_overrides

from noisycorr.cli.main import main
from noisycorr.config import load_config
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.setup import build_method, word_vectors_file

PAPER_IN2R = ["f30k-in2r", "coco-in2r", "cc152k-in2r"]
NCR_AUTHORS_RANDOM = ["f30k-sgraf", "coco-sgraf", "cc152k-sgraf", "flickr-dev-ncr"]


@pytest.mark.parametrize("preset", PAPER_IN2R)
def test_in2r_paper_presets_name_glove_840b(preset):
    cfg = load_config(preset)
    assert cfg.model.word_vectors == "data/glove/glove.840B.300d.txt" and cfg.model.word_dim == 300


@pytest.mark.parametrize("preset", NCR_AUTHORS_RANDOM)
def test_ncr_and_sgraf_presets_use_random_word_embeddings_like_ncrs_authors(preset):
    assert load_config(preset).model.word_vectors is None


@pytest.mark.parametrize("preset", PAPER_IN2R)
def test_missing_glove_is_one_line_naming_the_key_and_file_before_anything_is_written(
    preset, capsys, tiny_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # data/glove/... is resolved here, where it does not exist
    noise_file = tmp_path / "noise" / "index.npy"
    argv = ["train", "-c", preset]
    for item in tiny_overrides(tiny_root, tmp_path / "run", **{"noise.rate": 0.2, "noise.file": noise_file}):
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("noisycorr: error: model.word_vectors: expected the word-vector file "
                          "data/glove/glove.840B.300d.txt"), err
    assert "nlp.stanford.edu/projects/glove" in err and "model.word_vectors=none" in err
    assert err.endswith("found no such file"), err
    assert not (tmp_path / "run").exists() and not noise_file.exists()


def _tiny_in2r(tmp_path, word_vectors):
    cfg = load_config("f30k-in2r", tiny_overrides(tmp_path, tmp_path / "run", **{
        "model.word_vectors": word_vectors, "model.word_dim": 3, "method.queue_size": 16}))
    vocab = Vocabulary.build(["a dog runs on grass"], min_count=1)
    return cfg, vocab


@pytest.mark.parametrize("value", ["none", "None", "null"])
def test_word_vectors_none_trains_from_random_embeddings(tmp_path, value):
    cfg, vocab = _tiny_in2r(tmp_path, value)
    assert word_vectors_file(cfg.model) is None
    method = build_method(cfg, vocab, (4, 16))
    emb = method.net_a.text.embed.weight
    assert emb.abs().max() <= 0.1  # U(-0.1, 0.1)


def test_a_glove_file_given_on_the_command_line_fills_both_networks(tmp_path):
    glove = tmp_path / "small.txt"
    glove.write_text("dog 0.5 -1.25 3.0\ngrass 1.0 2.0 3.0\n", encoding="utf-8")
    cfg, vocab = _tiny_in2r(tmp_path, str(glove))
    method = build_method(cfg, vocab, (4, 16))
    for net in (method.net_a, method.net_b):
        emb = net.text.embed.weight.detach()
        torch.testing.assert_close(emb[vocab.word2idx["dog"]], torch.tensor([0.5, -1.25, 3.0]))
        torch.testing.assert_close(emb[vocab.word2idx["grass"]], torch.tensor([1.0, 2.0, 3.0]))


def test_a_finished_run_is_evaluated_without_its_word_vector_file(tiny_root, tmp_path):
    from noisycorr.engine.runs import evaluate_run
    from noisycorr.engine.trainer import train

    glove = tmp_path / "small.txt"
    glove.write_text("dog " + " ".join(["0.5"] * 16) + "\n", encoding="utf-8")
    cfg = load_config("demo", tiny_overrides(tiny_root, tmp_path / "run", **{
        "train.epochs": 1, "model.word_vectors": str(glove)}))
    result = train(cfg)
    glove.unlink()  # the trained embeddings are in the run's weights
    assert evaluate_run(tmp_path / "run")["rsum"] == pytest.approx(result["test"]["rsum"])
