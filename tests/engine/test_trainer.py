import csv
import json

import numpy as np
import pytest
import torch
from engine_helpers import tiny_overrides

from noisycorr.config import load_config
from noisycorr.engine.checkpoint import load_state, read_metadata
from noisycorr.engine.plots import have_matplotlib
from noisycorr.engine.runs import evaluate_run
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError


@pytest.mark.parametrize("preset", ["demo", "flickr-dev-sgraf", "flickr-dev-global"])
def test_each_backbone_trains_end_to_end_and_writes_its_run_folder(tiny_root, tmp_path, preset):
    extra = {"data.features": "pooled"} if preset.endswith("global") else {}
    cfg = load_config(preset, tiny_overrides(tiny_root, tmp_path / "run", **{"train.epochs": 2, **extra}))
    results = train(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "vocab.json", "noise.json", "metrics.csv", "checkpoint.pt", "best.safetensors",
                 "best.json", "results.json"):
        assert (run / name).is_file(), name
    if have_matplotlib():
        assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_rsum" in rows[0]
    test = results["test"]
    assert 0 <= test["rsum"] <= 600 and set(test) >= {"i2t_r1", "t2i_r10", "i2t_medr", "t2i_meanr"}
    assert read_metadata(run / "best.safetensors")["backbone"] == cfg.model.backbone
    state = load_state(run / "checkpoint.pt")  # weights_only=True
    assert state["epoch"] == 1
    again = evaluate_run(run)
    assert again["rsum"] == pytest.approx(test["rsum"])


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tiny_root, tmp_path, killed_after_epoch):
    overrides = {"noise.rate": 0.4, "data.region_drop": 0.2, "data.token_aug": 0.2}
    straight = train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "a", **overrides)))

    cfg_b = load_config("demo", tiny_overrides(tiny_root, tmp_path / "b", **overrides))
    with killed_after_epoch(1):
        train(cfg_b)
    with pytest.raises(InputError, match="resume"):
        train(cfg_b)
    resumed = train(cfg_b, resume=True)
    assert resumed["test"] == straight["test"]
    assert _rows_without_time(tmp_path / "a") == _rows_without_time(tmp_path / "b")


def _rows_without_time(run):
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in csv.DictReader(fh)]


def test_noise_is_recorded_with_realised_rate_and_checksum(tiny_root, tmp_path):
    cfg = load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **{"noise.rate": 0.5, "train.epochs": 1}))
    train(cfg)
    rec = json.loads((tmp_path / "r" / "noise.json").read_text())
    index = np.load(tmp_path / "r" / "noise_index.npy")
    n_cap = index.shape[0]
    realised = float(np.mean(index != np.arange(n_cap) // 5))
    assert rec["protocol"] == "per_caption" and rec["realised_rate"] == pytest.approx(realised)
    assert 0.4 < realised <= 0.5 and len(rec["checksum"]) == 64


def test_resume_refuses_a_changed_config(tiny_root, tmp_path):
    train(load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **{"train.epochs": 1})))
    changed = load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **{"train.epochs": 1, "train.lr": 0.1}))
    with pytest.raises(InputError, match="lr"):
        train(changed, resume=True)
    moved = load_config("demo", tiny_overrides(tiny_root, tmp_path / "r", **{"train.epochs": 1, "train.threads": 2}))
    assert "test" in train(moved, resume=True)  # another machine: threads may differ


def test_step_lr_schedule():
    from noisycorr.engine.optim import schedule_factor

    cfg = load_config("f30k-sgraf")
    lrs = [cfg.train.lr * schedule_factor(cfg.train, cfg.train.schedule, e) for e in (0, 29, 30, 39)]
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5])


def test_eval_last_weights_reads_the_training_checkpoint(tiny_root, tmp_path, capsys):
    from noisycorr.cli.main import main

    runs = [tmp_path / "s0", tmp_path / "s1"]
    for seed, out in enumerate(runs):
        train(load_config("demo", tiny_overrides(tiny_root, out, **{"train.epochs": 1, "train.seed": seed})))
    # after one epoch the last weights are the best ones
    assert evaluate_run(runs[0], weights="last") == pytest.approx(evaluate_run(runs[0]))
    # last weights come from checkpoint.pt alone: give s0 the training state of s1
    (runs[0] / "checkpoint.pt").write_bytes((runs[1] / "checkpoint.pt").read_bytes())
    last = evaluate_run(runs[0], weights="last")
    assert last == pytest.approx(evaluate_run(runs[1]))
    assert last != pytest.approx(evaluate_run(runs[0]))
    capsys.readouterr()
    assert main(["eval", str(runs[0]), "--weights", "last", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(last)
    with pytest.raises(InputError, match="best or last"):
        evaluate_run(runs[0], weights="middle")


def test_eval_of_several_runs_averages_their_similarity_matrices(tiny_root, tmp_path):
    from noisycorr.backbones.base import similarity_matrix
    from noisycorr.data.precomp import load_precomp
    from noisycorr.engine.inference import encode_split
    from noisycorr.engine.runs import load_run
    from noisycorr.eval.retrieval import retrieval_metrics

    runs = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        train(load_config("demo", tiny_overrides(tiny_root, out, **{"train.epochs": 1, "train.seed": seed})))
        runs.append(out)
    both = evaluate_run(runs)
    singles = [evaluate_run(r) for r in runs]
    assert both["net0_rsum"] == pytest.approx(singles[0]["rsum"])
    assert both["net1_rsum"] == pytest.approx(singles[1]["rsum"])

    split = load_precomp(tiny_root, "test")
    sims = []
    for run in runs:
        _, method, vocab = load_run(run)
        img, txt, lens = encode_split(method.backbones[0], split, vocab)
        sims.append(similarity_matrix(method.backbones[0], img, txt, lens))
    expected = retrieval_metrics((sims[0] + sims[1]) / 2, np.arange(split.n_captions) // 5)
    assert both["rsum"] == pytest.approx(expected["rsum"])


def test_word_vectors_from_the_config_initialise_the_embedding(tiny_root, tmp_path):
    from noisycorr.engine.setup import build_method, prepare_data

    cfg = load_config("demo", tiny_overrides(tiny_root, tmp_path / "r"))
    data = prepare_data(cfg, with_test=False)
    words = [w for w in data.vocab.word2idx if not w.startswith("<")][:3]
    vectors = {w: np.arange(16, dtype=np.float32) * (i + 1) / 100 for i, w in enumerate(words)}
    glove = tmp_path / "vectors.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in v)}\n" for w, v in vectors.items()))
    cfg.model.word_vectors = str(glove)
    method = build_method(cfg, data.vocab, tuple(data.train.images.shape[1:]))
    emb = next(m for m in method.modules() if isinstance(m, torch.nn.Embedding))
    for w, v in vectors.items():
        torch.testing.assert_close(emb.weight[data.vocab(w)].detach(), torch.from_numpy(v), atol=1e-4, rtol=0)

    cfg.model.word_dim = 300
    with pytest.raises(InputError, match="vectors.txt"):
        build_method(cfg, data.vocab, tuple(data.train.images.shape[1:]))
