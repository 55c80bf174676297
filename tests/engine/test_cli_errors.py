"""Every kind of bad input ends as one line on stderr, exit code 2, and no run folder."""

import json
import shutil

import numpy as np
import pytest
from engine_helpers import tiny_overrides

from noisycorr.cli.main import main


def _run(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def _train_argv(root, out, *extra):
    argv = ["train", "-c", "demo"]
    for item in tiny_overrides(root, out, **{"train.epochs": 1}) + list(extra):
        argv += ["--set", item]
    return argv


@pytest.fixture
def broken(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


def _expect_error(capsys, argv, out, *fragments):
    rc, err = _run(capsys, argv)
    assert rc == 2, err
    assert err.startswith("noisycorr: error: ") and "\n" not in err and "Traceback" not in err
    for frag in fragments:
        assert frag in err, err
    assert not out.exists(), "nothing may be written for bad input"


def test_missing_feature_file(capsys, broken, tmp_path):
    (broken / "train_ims.npy").unlink()
    _expect_error(capsys, _train_argv(broken, tmp_path / "o"), tmp_path / "o", "train_ims.npy")


def test_missing_data_folder(capsys, tmp_path):
    _expect_error(capsys, _train_argv(tmp_path / "nowhere", tmp_path / "o"), tmp_path / "o", "nowhere")


def test_feature_caption_count_mismatch(capsys, broken, tmp_path):
    lines = (broken / "train_caps.txt").read_text().splitlines()
    (broken / "train_caps.txt").write_text("\n".join(lines[:-3]) + "\n")
    _expect_error(capsys, _train_argv(broken, tmp_path / "o"), tmp_path / "o", "train_caps.txt")


def test_wrong_array_rank(capsys, broken, tmp_path):
    np.save(broken / "train_ims.npy", np.zeros((4, 3, 2, 2), dtype=np.float32))
    _expect_error(capsys, _train_argv(broken, tmp_path / "o"), tmp_path / "o", "train_ims.npy")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_features(capsys, broken, tmp_path, bad):
    arr = np.load(broken / "dev_ims.npy")
    arr[7, 1, 3] = bad
    np.save(broken / "dev_ims.npy", arr)
    _expect_error(capsys, _train_argv(broken, tmp_path / "o"), tmp_path / "o", "dev_ims.npy", "7")


def test_empty_caption_line(capsys, broken, tmp_path):
    lines = (broken / "test_caps.txt").read_text().splitlines()
    lines[4] = "   "
    (broken / "test_caps.txt").write_text("\n".join(lines) + "\n")
    _expect_error(capsys, _train_argv(broken, tmp_path / "o"), tmp_path / "o", "test_caps.txt", "5")


def test_noise_file_of_wrong_length(capsys, tiny_root, tmp_path):
    bad = tmp_path / "noise.npy"
    np.save(bad, np.arange(10, dtype=np.int64))
    argv = _train_argv(tiny_root, tmp_path / "o", f"noise.file={bad}", "noise.rate=0.2")
    _expect_error(capsys, argv, tmp_path / "o", "noise.npy")


def test_noise_file_with_out_of_range_index(capsys, tiny_root, tmp_path):
    n_cap = len((tiny_root / "train_caps.txt").read_text().splitlines())
    index = np.arange(n_cap, dtype=np.int64) // 5
    index[11] = 10_000
    bad = tmp_path / "noise.npy"
    np.save(bad, index)
    argv = _train_argv(tiny_root, tmp_path / "o", f"noise.file={bad}")
    _expect_error(capsys, argv, tmp_path / "o", "noise.npy", "11")


def test_unknown_config_key(capsys, tiny_root, tmp_path):
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", "train.learning_rate=1"), tmp_path / "o",
                  "learning_rate")


def test_vocab_json_missing_its_keys(capsys, tiny_root, tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps({"word2idx": {"<pad>": 0}}))
    _expect_error(capsys, _train_argv(tiny_root, tmp_path / "o", f"data.vocab={bad}"), tmp_path / "o",
                  "vocab.json", "idx2word")


def test_checkpoint_from_another_backbone(capsys, tiny_root, tmp_path):
    assert main(_train_argv(tiny_root, tmp_path / "vse")) == 0
    argv = ["train", "-c", "flickr-dev-global"]
    for item in tiny_overrides(tiny_root, tmp_path / "glob", **{"train.epochs": 1, "data.features": "pooled"}):
        argv += ["--set", item]
    assert main(argv) == 0
    capsys.readouterr()
    shutil.copy(tmp_path / "glob" / "checkpoint.pt", tmp_path / "vse" / "checkpoint.pt")
    rc, err = _run(capsys, ["eval", str(tmp_path / "vse"), "--weights", "last"])
    assert rc == 2 and "checkpoint.pt" in err and "another model" in err and "\n" not in err
    shutil.copy(tmp_path / "glob" / "best.safetensors", tmp_path / "vse" / "best.safetensors")
    rc, err = _run(capsys, ["eval", str(tmp_path / "vse")])
    assert rc == 2 and "best.safetensors" in err and "global" in err and "\n" not in err


def test_backbone_and_features_disagree(capsys, tiny_root, tmp_path):
    argv = _train_argv(tiny_root, tmp_path / "o", "model.backbone=global")
    _expect_error(capsys, argv, tmp_path / "o", "pooled")
