"""benchmarks/make_synthetic_precomp.py: a loadable precomp folder, written block by block, deterministic."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from noisycorr.data.precomp import load_precomp

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_synthetic_precomp.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_synthetic_precomp", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _make(script, out: Path, *extra: str) -> Path:
    # 9,000 pairs: more than one block of rows (8,192), so the block boundary is crossed.
    assert script.main(["--out", str(out), "--n-pairs", "9000", "--dim", "6", "--val-pairs", "50", *extra]) == 0
    return out


def test_folder_loads_with_the_planted_mismatches_beside_it(script, tmp_path, capsys):
    root = _make(script, tmp_path / "a", "--noise", "0.3")
    split = load_precomp(root, "train", features="pooled", captions_per_image=1)
    assert split.images.shape == (9000, 6) and split.images.dtype == np.float16
    truth = np.load(root / "train_mismatched.npy")
    assert truth.shape == (9000,) and abs(truth.mean() - 0.3) < 0.01
    assert load_precomp(root, "auditval", features="pooled", captions_per_image=1).n_captions == 50
    assert not np.load(root / "auditval_mismatched.npy").any()
    assert json.loads(capsys.readouterr().out)["mismatched"] == int(truth.sum())


def test_captions_name_the_class_of_their_image_unless_mismatched(script, tmp_path):
    root = _make(script, tmp_path / "a", "--classes", "4", "--sigma", "0.1")
    split = load_precomp(root, "train", features="pooled", captions_per_image=1)
    truth = np.load(root / "train_mismatched.npy")
    feats = np.asarray(split.images, dtype=np.float32)
    # With little feature noise, images of one class word (the word after the attribute) cluster tightly.
    word = np.array([c.split()[2] for c in split.captions])
    for w in np.unique(word):
        rows = feats[(word == w) & ~truth]
        assert np.abs(rows - rows.mean(axis=0)).max() < 2.5, w
    clean_spread = np.mean([feats[(word == w) & ~truth].std(axis=0).mean() for w in np.unique(word)])
    noisy_spread = np.mean([feats[(word == w) & truth].std(axis=0).mean() for w in np.unique(word)])
    assert noisy_spread > 1.5 * clean_spread  # the attribute (std 0.5) spreads a class too


def test_same_arguments_give_the_same_bytes_another_seed_or_stream_other_images(script, tmp_path):
    a, b = _make(script, tmp_path / "a"), _make(script, tmp_path / "b")
    for name in ("train_pooled.npy", "train_caps.txt", "train_mismatched.npy", "auditval_pooled.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = _make(script, tmp_path / "c", "--stream", "1")
    assert (a / "train_pooled.npy").read_bytes() != (c / "train_pooled.npy").read_bytes()
    assert (a / "auditval_pooled.npy").read_bytes() != (a / "train_pooled.npy").read_bytes()[: 50 * 6 * 2]


def test_block_writer_writes_the_file_np_save_writes(script, tmp_path):
    x = np.random.default_rng(0).standard_normal((23, 5)).astype(np.float32)
    script.write_npy_blocks(tmp_path / "x.npy", (23, 5), np.dtype(np.float32), (x[i : i + 7] for i in range(0, 23, 7)))
    np.save(tmp_path / "y.npy", x)
    assert (tmp_path / "x.npy").read_bytes() == (tmp_path / "y.npy").read_bytes()
    with pytest.raises(ValueError):
        script.write_npy_blocks(tmp_path / "z.npy", (24, 5), np.dtype(np.float32), iter([x]))
    assert not (tmp_path / "z.npy").exists() and not (tmp_path / "z.npy.tmp").exists()
