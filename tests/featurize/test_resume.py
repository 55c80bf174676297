"""A killed featurize run continues after its last finished chunk and ends with the same files."""

from __future__ import annotations

import csv

import pytest
from featurize_helpers import write_images

from noisycorr.errors import InputError
from noisycorr.featurize import featurize, writer

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'noisycorr[featurize]')")

N_IMAGES, CHUNK = 8, 3  # 3 chunks: 3 + 3 + 2 images


@pytest.fixture
def table(tmp_path):
    names = write_images(tmp_path / "imgs", N_IMAGES)
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        for k in range(12):  # 12 rows, 8 images: some images have two captions
            w.writerow([f"imgs/{names[k % N_IMAGES]}", f"caption {k} of image {k % N_IMAGES}"])
    return path


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _run(table, out, encoder, **kw):
    return featurize(table, out, encoder=encoder, chunk_size=CHUNK, batch_size=2, progress=False, log=None, **kw)


def test_a_killed_run_resumes_after_its_last_chunk_to_identical_files(table, tmp_path, tiny_encoder, monkeypatch):
    whole = _run(table, tmp_path / "whole", tiny_encoder)
    assert whole.images_encoded == N_IMAGES

    real_save, saved = writer._save_chunk, []

    def save_then_die(path, data):
        real_save(path, data)
        saved.append(path.name)
        if len(saved) == 2:
            raise KeyboardInterrupt  # killed right after the second chunk is on disk

    monkeypatch.setattr(writer, "_save_chunk", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(table, tmp_path / "killed", tiny_encoder)
    assert not (tmp_path / "killed" / "train_featurize.json").exists()  # not finished: no manifest
    assert sorted(p.name for p in (tmp_path / "killed" / ".featurize-train").glob("chunk-*")) == saved
    monkeypatch.setattr(writer, "_save_chunk", real_save)

    resumed = _run(table, tmp_path / "killed", tiny_encoder)
    assert resumed.images_encoded == N_IMAGES - 2 * CHUNK  # only the last chunk was encoded again
    assert _files(tmp_path / "killed") == _files(tmp_path / "whole")
    assert not (tmp_path / "killed" / ".featurize-train").exists()


def test_a_finished_folder_is_reused_and_other_inputs_are_refused(table, tmp_path, tiny_encoder):
    out = tmp_path / "out"
    _run(table, out, tiny_encoder)
    calls = tiny_encoder.calls
    again = _run(table, out, tiny_encoder)
    assert again.reused and tiny_encoder.calls == calls
    with open(table, "a") as fh:
        fh.write("imgs/img0.jpg,one more row\n")
    with pytest.raises(InputError, match="use another --out, or --overwrite"):
        _run(table, out, tiny_encoder)
    redone = _run(table, out, tiny_encoder, overwrite=True)
    assert not redone.reused and redone.manifest["counts"]["pairs"] == 13


def test_an_unfinished_run_of_other_inputs_is_not_taken_over(table, tmp_path, tiny_encoder, monkeypatch):
    def die(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_save_chunk", die)
    with pytest.raises(KeyboardInterrupt):
        _run(table, tmp_path / "out", tiny_encoder)
    monkeypatch.undo()
    with pytest.raises(InputError, match="an unfinished featurization"):
        featurize(table, tmp_path / "out", encoder=tiny_encoder, chunk_size=CHUNK + 1, progress=False, log=None)
