"""The labelled-task engine and CLI: a short training run per method, run folders, resume, eval, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from labeled_helpers import tiny_overrides

from noisycorr.cli.labeled import eval_labeled_cli, is_labeled_config, is_labeled_run, train_labeled_cli
from noisycorr.config import config_from_dict as labeled_config_from_dict
from noisycorr.config import load_config as load_labeled_config
from noisycorr.data.labeled import label_checksum
from noisycorr.engine.labels import evaluate_labeled_run
from noisycorr.engine.trainer import train as train_labeled
from noisycorr.errors import InputError
from noisycorr.factory import get_method_class


@pytest.mark.parametrize("method", ["ce", "mrl", "nirnl"])
def test_short_training_run_per_method(tiny_npz: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    cfg = load_labeled_config(f"wiki-{method}", tiny_overrides(tiny_npz, out, **{"noise.rate": 0.4}))
    results = train_labeled(cfg)
    files = {p.name for p in out.iterdir()}
    assert {
        "config.yaml",
        "noise.json",
        "noisy_labels.npy",
        "split.json",
        "metrics.csv",
        "checkpoint.pt",
        "best.safetensors",
        "best.json",
        "results.json",
    } <= files
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + cfg.train.epochs
    test = results["test"]
    assert 0.0 <= test["avg_map"] <= 1.0
    # well-separated clusters: even three short epochs rank far above chance (about 0.25 for 4 classes)
    assert test["avg_map"] > 0.5
    noise = json.loads((out / "noise.json").read_text())
    assert noise["checksum"] == label_checksum(np.load(out / "noisy_labels.npy"))
    assert 0.2 < noise["realised_rate_image"] < 0.4  # per pair (nirnl) or per modality (mrl, ce): one draw each
    assert results == json.loads((out / "results.json").read_text())


def test_nirnl_logs_its_partition_and_diagnostics(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = load_labeled_config("wiki-nirnl", tiny_overrides(tiny_npz, tmp_path / "r", **{"noise.rate": 0.4}))
    train_labeled(cfg)
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("share_pure", "share_hard", "share_noisy", "diag_pure_clean", "loss_cmp", "val_clean_avg_map"):
        assert key in header


def test_resume_replays_an_uninterrupted_run(tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import noisycorr.engine.labels as engine

    def cfg(out: str, **extra: object):
        return load_labeled_config(
            "wiki-nirnl", tiny_overrides(tiny_npz, tmp_path / out, **{"noise.rate": 0.4, **extra})
        )

    want = train_labeled(cfg("full"))
    real_validate, calls = engine.validate, []

    def killed_in_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(engine, "validate", killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_labeled(cfg("half"))
    monkeypatch.setattr(engine, "validate", real_validate)
    with pytest.raises(InputError, match="--resume"):
        train_labeled(cfg("half"))
    with pytest.raises(InputError, match="changed keys"):
        train_labeled(cfg("half", **{"noise.rate": 0.2}), resume=True)
    got = train_labeled(cfg("half", **{"train.threads": 2}), resume=True)
    assert got["test"] == pytest.approx(want["test"], abs=1e-6)
    assert got["best"]["epoch"] == want["best"]["epoch"]
    rows = (tmp_path / "half" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4


def test_same_seed_same_result_and_saved_noise_is_reused(tiny_npz: Path, tmp_path: Path) -> None:
    noise_file = tmp_path / "shared_noise.npy"
    a = train_labeled(
        load_labeled_config(
            "wiki-mrl", tiny_overrides(tiny_npz, tmp_path / "a", **{"noise.rate": 0.6, "noise.file": noise_file})
        )
    )
    assert noise_file.is_file()
    b = train_labeled(
        load_labeled_config(
            "wiki-mrl",
            tiny_overrides(tiny_npz, tmp_path / "b", **{"noise.rate": 0.6, "noise.file": noise_file, "noise.seed": 9}),
        )
    )
    assert a["noise"]["checksum"] == b["noise"]["checksum"]  # the file wins over the seed
    assert a["test"] == pytest.approx(b["test"], abs=1e-6)


def test_eval_cli_and_averaging_two_runs(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed in (0, 1):
        train_labeled_cli("wiki-ce", tiny_overrides(tiny_npz, tmp_path / f"s{seed}", **{"train.seed": seed}))
    assert is_labeled_run(tmp_path / "s0") and not is_labeled_run(tmp_path)
    one = evaluate_labeled_run(tmp_path / "s0")
    saved = json.loads((tmp_path / "s0" / "results.json").read_text())["test"]
    assert one == pytest.approx(saved, abs=1e-9)
    both = evaluate_labeled_run([tmp_path / "s0", tmp_path / "s1"])
    assert 0 < both["avg_map"] <= 1
    val = evaluate_labeled_run(tmp_path / "s0", split="val")
    assert "clean_avg_map" in val
    capsys.readouterr()
    assert eval_labeled_cli([tmp_path / "s0", tmp_path / "s1"], "test") == 0
    assert "mAP i2t" in capsys.readouterr().out
    # last weights come from checkpoint.pt: with s1's training state, s0 scores as s1's last epoch
    (tmp_path / "s0" / "checkpoint.pt").write_bytes((tmp_path / "s1" / "checkpoint.pt").read_bytes())
    assert evaluate_labeled_run(tmp_path / "s0", weights="last") == pytest.approx(
        evaluate_labeled_run(tmp_path / "s1", weights="last"), abs=1e-9
    )


def test_config_checks(tiny_npz: Path, tmp_path: Path) -> None:
    assert is_labeled_config("wiki-nirnl") and is_labeled_config("wiki-ce")
    assert not is_labeled_config("flickr-dev-vse") and not is_labeled_config("no-such-preset")
    with pytest.raises(InputError, match="a key of \\[train\\]"):
        load_labeled_config("wiki-mrl", ["train.lr_updat=3"])
    assert load_labeled_config("wiki-mrl", ["train.schedule=step", "train.lr_update=3"]).train.lr_update == 3
    with pytest.raises(InputError, match="task: one of pairs, labels"):
        labeled_config_from_dict({"task": "label"})
    with pytest.raises(InputError, match="a key of \\[method\\] for mrl"):
        train_labeled(load_labeled_config("wiki-mrl", tiny_overrides(tiny_npz, tmp_path / "x", **{"method.top_k": 3})))
    with pytest.raises(InputError, match="labelled task"):
        train_labeled(
            load_labeled_config("wiki-mrl", tiny_overrides(tiny_npz, tmp_path / "y", **{"method.name": "vanilla"}))
        )
    assert not (tmp_path / "y").exists()  # nothing half-written
    for key, value in (
        ("train.schedule", "linear"),
        ("eval.val_labels", "oracle"),
        ("noise.scope", "per_caption"),
        ("data.normalize", "minmax"),
        ("train.batch_size", 0),
    ):
        with pytest.raises(InputError, match=key):
            train_labeled(load_labeled_config("wiki-mrl", tiny_overrides(tiny_npz, tmp_path / "w", **{key: value})))
        assert not (tmp_path / "w").exists()
    with pytest.raises(InputError, match="data.root"):
        train_labeled(labeled_config_from_dict({"task": "labels", "run": {"out_dir": str(tmp_path / "z")}}))


def test_method_switch_gets_that_methods_defaults(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = load_labeled_config("wiki-nirnl", ["method.name=mrl"])
    assert cfg.method == {"name": "mrl"}
    for name in ("ce", "mrl", "nirnl"):
        cls = get_method_class(name)
        assert cls.task == "labels" and cls.citation and cls.describe()


def test_wikipedia_preset_prepares_the_real_benchmark(wiki_mat: Path, tmp_path: Path) -> None:
    from noisycorr.engine.labels import prepare_labeled

    cfg = load_labeled_config("wiki-nirnl", [f"data.root={wiki_mat}", "noise.rate=0.6"])
    prep = prepare_labeled(cfg)
    assert (len(prep.train), len(prep.val), len(prep.test)) == (2173 - 231, 231, 693)
    assert prep.val_noisy is not None and prep.val_noisy.shape == (2, 231, 10)
    val_changed = (prep.val_noisy[0] != prep.val.labels).any(1).mean()
    assert abs(val_changed - prep.noise_record["realised_rate_pair"]) < 0.1  # validation is noisy like train
    assert abs(prep.noise_record["realised_rate_pair"] - 0.6 * 0.9) < 0.03
    assert abs(float(prep.train.images.mean())) < 1e-4  # z-scored with the training statistics


# mutant killed: wiki-mrl's noise.scope back to per_pair
# mutant killed: make_label_noise's second modality a copy of the first under per_modality
def test_mrl_preset_corrupts_the_two_modalities_independently(wiki_mat: Path) -> None:
    """MRL (penghu-cs/MRL src/noisydataset.py:160-176) draws each view's noisy labels on its own:
    on the real Wikipedia file at 0.6, image and text are each changed at about 0.6 * 0.9, and
    both at once only by chance (about 0.54 ** 2), so a pair has some noisy label at about 0.79;
    NIRNL's preset keeps one draw per pair."""
    from noisycorr.engine.labels import prepare_labeled

    prep = prepare_labeled(load_labeled_config("wiki-mrl", [f"data.root={wiki_mat}", "noise.rate=0.6"]))
    assert prep.noise_record["scope"] == "per_modality"
    clean = prep.data.train.labels
    changed = (prep.noisy != clean[None]).any(-1)  # (2, N): image, text
    rate_img, rate_txt = changed.mean(1)
    assert abs(rate_img - 0.54) < 0.03 and abs(rate_txt - 0.54) < 0.03
    assert abs((changed[0] & changed[1]).mean() - rate_img * rate_txt) < 0.03
    assert (changed[0] != changed[1]).mean() > 0.4
    assert abs(prep.noise_record["realised_rate_pair"] - (1 - (1 - rate_img) * (1 - rate_txt))) < 0.03
    nirnl = prepare_labeled(load_labeled_config("wiki-nirnl", [f"data.root={wiki_mat}", "noise.rate=0.6"]))
    np.testing.assert_array_equal(nirnl.noisy[0], nirnl.noisy[1])


# mutant killed: test_head carves the validation items out of the training split
# mutant killed: test_head validation keeps its items in the test split too
# mutant killed: validation under test_head scored with noisy labels (val_noisy not None for test_head)
@pytest.mark.parametrize("preset", ["wiki-mrl", "wiki-nirnl"])
def test_authors_validation_is_the_first_231_clean_test_items(wiki_mat: Path, preset: str) -> None:
    """``data.val=test_head`` (the MRL / NIRNL authors' protocol): validation is the first 231 test
    items with the file's clean labels, the test split the other 462, and training keeps all 2173
    items (with their noisy labels); selection scores validation with the clean labels."""
    import torch

    from noisycorr.engine.labels import build_labeled_method, prepare_labeled, validate

    cfg = load_labeled_config(preset, [f"data.root={wiki_mat}", "noise.rate=0.6", "data.val=test_head"])
    prep = prepare_labeled(cfg)
    assert prep.plan.source == "test_head"
    assert (len(prep.train), len(prep.val), len(prep.test)) == (2173, 231, 693 - 231)
    np.testing.assert_array_equal(prep.plan.train_index, np.arange(2173))
    np.testing.assert_array_equal(prep.val.labels, prep.data.test.labels[:231])
    np.testing.assert_array_equal(prep.test.labels, prep.data.test.labels[231:])
    assert prep.val_noisy is None and prep.train_noisy.shape == (2, 2173, 10)
    torch.manual_seed(0)
    method = build_labeled_method(cfg, prep.train.images.shape[1], prep.train.texts.shape[1], 10)
    val = validate(cfg, method, prep, torch.device("cpu"))
    assert cfg.eval.val_labels == "noisy"  # the preset's setting: there are no noisy labels to use here
    assert val["avg_map"] == val["clean_avg_map"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ce", "mrl", "nirnl"])
def test_wikipedia_short_run(wiki_mat: Path, tmp_path: Path, method: str) -> None:
    cfg = load_labeled_config(
        f"wiki-{method}",
        [
            f"data.root={wiki_mat}",
            "noise.rate=0.4",
            "train.epochs=5",
            "run.progress=false",
            f"run.out_dir={tmp_path / method}",
        ],
    )
    results = train_labeled(cfg)
    assert results["test"]["avg_map"] > 0.15  # chance on 10 unbalanced classes is about 0.11


def test_main_cli_dispatches_the_labelled_task(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from noisycorr.cli.main import main

    sets = [a for kv in tiny_overrides(tiny_npz, tmp_path / "run") for a in ("--set", kv)]
    assert main(["train", "-c", "wiki-nirnl", *sets]) == 0
    assert "mAP i2t" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert "mAP i2t" in capsys.readouterr().out


def test_labelled_training_is_bit_identical_whatever_the_clean_labels(tiny_npz: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's (clean) training labels only reach the diagnostics: swap them for random ones and
    the weights, losses, selection and test mAP must not change, while the diag_* columns do."""
    import dataclasses

    import torch

    import noisycorr.engine.labels as labels_mod
    from noisycorr.data.labeled import LabeledSplit
    from noisycorr.engine.checkpoint import load_state

    def cfg(out: str):
        return load_labeled_config("wiki-nirnl", tiny_overrides(tiny_npz, tmp_path / out, **{"noise.rate": 0.4}))

    train_labeled(cfg("true"))
    real_prepare = labels_mod.prepare_labeled

    def prepare_with_other_truth(*args, **kwargs):
        prep = real_prepare(*args, **kwargs)
        rng = np.random.default_rng(1)
        fake = np.eye(prep.train.labels.shape[1], dtype=bool)[rng.integers(0, prep.train.labels.shape[1],
                                                                             len(prep.train))]
        return dataclasses.replace(prep, train=LabeledSplit(prep.train.images, prep.train.texts, fake))

    monkeypatch.setattr(labels_mod, "prepare_labeled", prepare_with_other_truth)
    train_labeled(cfg("fake"))
    a, b = (load_state(tmp_path / run / "checkpoint.pt") for run in ("true", "fake"))
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("true", "fake")]
    header = rows[0][0].split(",")
    assert "diag_pure_clean" in header
    diag = [i for i, k in enumerate(header) if k.startswith("diag_") or k.endswith("_seconds")]
    for ra, rb in zip(rows[0][1:], rows[1][1:], strict=True):
        va, vb = ra.split(","), rb.split(",")
        assert [v for i, v in enumerate(va) if i not in diag] == [v for i, v in enumerate(vb) if i not in diag]
    assert any(ra.split(",")[header.index("diag_clean_share")] != rb.split(",")[header.index("diag_clean_share")]
               for ra, rb in zip(rows[0][1:], rows[1][1:], strict=True))
    res = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("true", "fake")]
    assert res[0]["test"] == res[1]["test"]
