"""``data.dense_captions: standin``: a D2S run builds its stand-in dense texts from its own noisy pairing,
writes exactly what ``noisycorr dense-standin`` writes into its run folder (and stage 1's), trains on
them, and on resume reads them back from there, refusing them when the training pairing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from noisycorr.cli.main import main
from noisycorr.config import load_config
from noisycorr.data.dense import (
    STANDIN_FILE,
    DenseTexts,
    consensus_keep,
    read_dense_texts,
    standin_dense_texts,
)
from noisycorr.data.noise import caption_to_image, load_noise, make_per_caption_noise, save_noise
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.engine import pairs as pairs_mod
from noisycorr.engine import trainer as trainer_mod
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError

NOISE = 0.4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("standin") / "d", seed=3, n_train=24, n_dev=8, n_test=8,
                           n_regions=4, feat_dim=16, n_concepts=8)


@pytest.fixture(scope="module")
def split(root: Path) -> PrecompSplit:
    return load_precomp(root, "train")


def _sets(root: Path, out: Path, noise: Path, **extra: object) -> list[str]:
    values = {
        "data.root": root, "data.vocab_min_count": 1, "data.dense_captions": "standin", "noise.rate": NOISE,
        "noise.seed": 0, "noise.file": noise, "model.embed_size": 16, "model.word_dim": 8, "train.epochs": 1,
        "train.batch_size": 16, "train.threads": 1, "run.progress": False, "run.out_dir": out,
        "method.name": "d2s", "method.stage1_epochs": 1, "method.prompt_tokens": 2, "method.prompt_heads": 2,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


class SpySources:
    """Records the dense-text source each training set is built from (the run's out_dir -> source)."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.seen: list[object] = []
        real = pairs_mod.dense_train_set

        def spy(split, vocab, pair_image, source, **kwargs):
            self.seen.append(source)
            return real(split, vocab, pair_image, source, **kwargs)

        mp.setattr(pairs_mod, "dense_train_set", spy)
        mp.setattr(trainer_mod, "have_matplotlib", lambda: False)


@pytest.fixture(scope="module")
def run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[object]]:
    """A finished two-stage run with the stand-in (1 + 1 epochs); its overrides and the sources its sets read."""
    tmp = tmp_path_factory.mktemp("run")
    sets = _sets(root, tmp / "run", tmp / "noise.npy")
    with pytest.MonkeyPatch.context() as mp:
        spy = SpySources(mp)
        train(load_config(None, sets))
    return tmp / "run", sets, spy.seen


def _noisy_pairing(noise: Path, split: PrecompSplit) -> np.ndarray:
    index, _ = load_noise(noise, "per_caption", n_images=split.n_images, n_captions=split.n_captions)
    return caption_to_image("per_caption", index, split.n_images, split.captions_per_image)


def test_the_run_writes_what_the_command_writes_for_its_config_and_trains_on_it(
    run: tuple[Path, list[str], list[object]], split: PrecompSplit, tmp_path: Path
) -> None:
    out, sets, seen = run
    cmd = tmp_path / "cmd.jsonl"
    assert main(["dense-standin", str(cmd), *[a for s in sets for a in ("--set", s)]]) == 0
    for folder in (out, out / "stage1"):  # stage 1 builds its own from the same pairing
        built = folder / STANDIN_FILE
        assert built.read_bytes() == cmd.read_bytes()
        assert Path(f"{built}.pairing.json").read_bytes() == Path(f"{cmd}.pairing.json").read_bytes()
    # both stages trained on those texts (stage 1 first), not on texts of their own making
    assert len(seen) == 2 and all(isinstance(s, DenseTexts) for s in seen)
    assert [s.texts for s in seen] == [read_dense_texts(cmd, split).texts] * 2


def test_the_standin_follows_the_noisy_pairing_and_never_holds_the_pairs_own_caption(
    run: tuple[Path, list[str], list[object]], split: PrecompSplit
) -> None:
    out, _, _ = run
    pairing = _noisy_pairing(out.parent / "noise.npy", split)
    truth = split.image_of_caption()
    texts = read_dense_texts(out / STANDIN_FILE, split).texts
    captions = split.captions
    unique = {c for c in captions if captions.count(c) == 1}
    for k, text in enumerate(texts):
        others = [captions[j] for j in np.flatnonzero(pairing == pairing[k]) if j != k]
        assert text == (" ".join(others) if others else None)
        assert text is None or captions[k] not in unique or captions[k] not in text
    # a mismatched pair's text holds the captions the noisy pairing attaches to its image, not its true image's
    mismatched = [k for k in np.flatnonzero(pairing != truth) if texts[k] is not None]
    assert mismatched
    k = int(mismatched[0])
    for j in np.flatnonzero(pairing == pairing[k]):
        if j != k:
            assert captions[j] in texts[k]
    assert texts != standin_dense_texts(captions, truth)


def test_a_resumed_run_reads_its_standin_back_and_refuses_it_for_another_pairing(
    root: Path, split: PrecompSplit, run: tuple[Path, list[str], list[object]], tmp_path: Path,
    killed_after_epoch, monkeypatch: pytest.MonkeyPatch,
) -> None:
    noise = tmp_path / "noise.npy"
    shutil.copy(run[0].parent / "noise.npy", noise)
    out = tmp_path / "run"
    sets = _sets(root, out, noise, **{"train.epochs": 2})
    spy = SpySources(monkeypatch)
    with killed_after_epoch(0):  # stage 1 (one epoch) dies after its checkpoint; stage 2 never starts
        train(load_config(None, sets))
    stage1 = out / "stage1"
    assert not (stage1 / "results.json").exists() and (stage1 / STANDIN_FILE).is_file()
    # another pairing (the noise file redrawn) is refused, naming the file
    good = noise.read_bytes()
    save_noise(noise, make_per_caption_noise(split.n_captions, split.captions_per_image, NOISE, seed=9))
    with pytest.raises(InputError, match=f"{STANDIN_FILE}.*texts of another pairing"):
        train(load_config(None, sets), resume=True)
    # the pairing back: the resumed stage 1 reads the file (an edited text shows), then stage 2 builds its own
    noise.write_bytes(good)
    lines = (stage1 / STANDIN_FILE).read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if '"text": null' not in line)
    lines[k] = f'{{"caption": {k}, "text": "edited text"}}'
    (stage1 / STANDIN_FILE).write_text("\n".join(lines) + "\n")
    spy.seen.clear()
    train(load_config(None, sets), resume=True)
    assert (out / "results.json").is_file()
    assert [s.texts[k] for s in spy.seen] == ["edited text", read_dense_texts(out / STANDIN_FILE, split).texts[k]]
    assert spy.seen[1].texts[k] != "edited text"


def test_a_resumed_standin_without_its_pairing_record_is_refused(
    run: tuple[Path, list[str], list[object]], split: PrecompSplit, tmp_path: Path
) -> None:
    from noisycorr.data.dense import run_standin

    pairing = _noisy_pairing(run[0].parent / "noise.npy", split)
    shutil.copy(run[0] / STANDIN_FILE, tmp_path / STANDIN_FILE)
    with pytest.raises(InputError, match="pairing record"):
        run_standin(tmp_path, split, pairing, resuming=True)
    shutil.copy(f"{run[0] / STANDIN_FILE}.pairing.json", tmp_path)
    assert run_standin(tmp_path, split, pairing, resuming=True).texts == standin_dense_texts(split.captions, pairing)


def test_a_consensus_standin_run_filters_the_noisy_pairing_as_given_and_writes_what_the_command_writes(
    root: Path, split: PrecompSplit, tmp_path: Path
) -> None:
    sets = _sets(root, tmp_path / "run", tmp_path / "noise.npy", **{"data.dense_captions": "standin-consensus"})
    with pytest.MonkeyPatch.context() as mp:
        spy = SpySources(mp)
        calls: list[np.ndarray] = []
        real = consensus_keep

        def keep_spy(captions, pair_image, **kwargs):
            calls.append(np.asarray(pair_image).copy())
            return real(captions, pair_image, **kwargs)

        mp.setattr("noisycorr.data.dense.consensus_keep", keep_spy)
        train(load_config(None, sets))
    pairing = _noisy_pairing(tmp_path / "noise.npy", split)
    assert calls and all(np.array_equal(c, pairing) for c in calls)  # the noisy pairing, never the true one
    keep = real(split.captions, pairing)
    assert not keep.all()
    expected = standin_dense_texts(split.captions, pairing, keep=keep)
    assert [s.texts for s in spy.seen] == [expected] * 2
    cmd = tmp_path / "cmd.jsonl"
    assert main(["dense-standin", str(cmd), "--consensus", *[a for s in sets for a in ("--set", s)]]) == 0
    for folder in (tmp_path / "run", tmp_path / "run" / "stage1"):
        assert (folder / STANDIN_FILE).read_bytes() == cmd.read_bytes()
