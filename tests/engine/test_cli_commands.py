import json

import numpy as np
import pytest

from noisycorr.cli.main import main
from noisycorr.data.noise import checksum
from noisycorr.data.paths import shared_data_dir
from noisycorr.data.precomp import load_precomp


def test_noise_make_then_info_roundtrip(tmp_path, capsys):
    out = tmp_path / "f.npy"
    argv = ["noise", "make", "--protocol", "per_caption", "--n-images", "200", "--rate", "0.4", "--seed", "3"]
    assert main([*argv, "-o", str(out)]) == 0
    made = json.loads(capsys.readouterr().out)
    index = np.load(out)
    assert index.dtype == np.int64 and index.shape == (1000,)
    assert made["checksum"] == checksum(index)
    assert 0.35 < made["realised_rate"] <= 0.4
    assert main(["noise", "info", str(out), "--protocol", "per_caption", "--n-images", "200"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["realised_rate"] == made["realised_rate"] and info["checksum"] == made["checksum"]
    assert main([*argv, "-o", str(out)]) == 2  # refuses to overwrite without --force
    assert "--force" in capsys.readouterr().err


def test_noise_info_on_the_shipped_rcl_file(capsys):
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not available")
    path = root / "noise-index" / "f30k_precomp" / "noise_inx_0.2.npy"
    assert main(["noise", "info", str(path), "--protocol", "per_image", "--n-images", "29000"]) == 0
    info = json.loads(capsys.readouterr().out)
    moved = float(np.mean(np.load(path) != np.arange(29000)))
    assert info["image_rate"] == pytest.approx(moved) and abs(moved - 0.2) < 1e-3


def test_synth_writes_a_loadable_precomp_folder(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synth", str(out), "--n-train", "50"]) == 0
    split = load_precomp(out, "train")
    assert split.n_images == 50 and split.n_captions == 250
    assert main(["synth", str(out)]) == 2  # the folder is not empty
    assert "syn" in capsys.readouterr().err


def test_methods_and_presets_listings(capsys):
    assert main(["methods"]) == 0
    assert "vanilla" in capsys.readouterr().out
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "f30k-sgraf" in listing and "demo" in listing
