"""Dense texts (D2S-VSE): the JSON-lines loader and its one-line errors, the stand-in built from the
pairing as given, the batches that carry each pair's dense text, and the ``dense-standin`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noisycorr.cli.main import main
from noisycorr.data.dataset import EncodedCaptions
from noisycorr.data.dense import (
    DensePairBatch,
    DensePairDataset,
    caption_consensus,
    consensus_keep,
    dense_train_set,
    read_dense_texts,
    standin_dense_texts,
    write_dense_jsonl,
)
from noisycorr.data.precomp import PrecompSplit, load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import Vocabulary
from noisycorr.errors import InputError


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("dense") / "d", seed=2, n_train=6, n_dev=4, n_test=4,
                           n_regions=4, feat_dim=8, n_concepts=8)


@pytest.fixture(scope="module")
def split(root: Path) -> PrecompSplit:
    split = load_precomp(root, "train")
    split.ids = [f"img{k}.jpg" for k in range(split.n_images)]
    return split


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_each_key_kind_reads_back_in_row_order(tmp_path: Path, split: PrecompSplit) -> None:
    n = split.n_images
    by_row = read_dense_texts(_write(tmp_path / "a.jsonl", [{"image": k, "text": f"t{k}"} for k in reversed(range(n))]),
                              split)
    assert by_row.keyed == "image" and by_row.texts == [f"t{k}" for k in range(n)]
    by_id = read_dense_texts(_write(tmp_path / "b.jsonl", [{"image_id": f"img{k}.jpg", "text": f"t{k}"}
                                                           for k in range(n)]), split)
    assert by_id.texts == by_row.texts
    caps = [{"caption": k, "text": None if k == 3 else f"c{k}"} for k in range(split.n_captions)]
    by_caption = read_dense_texts(_write(tmp_path / "c.jsonl", caps), split)
    assert by_caption.keyed == "caption" and by_caption.texts[3] is None and by_caption.texts[4] == "c4"
    # an image-keyed text follows the image each pair carries as given
    pairing = np.roll(split.image_of_caption(), 7)
    assert by_row.per_pair(pairing) == [f"t{j}" for j in pairing]
    assert by_caption.per_pair(pairing) == by_caption.texts


BAD = {
    "not json": (['{"image": 0, "text": "a"}', "{oops"], "line 2: expected a JSON object per line"),
    "not an object": (["[1, 2]"], "line 1: expected a JSON object per line, found list"),
    "no text": ([{"image": 0}], "line 1: expected exactly two keys"),
    "unknown key": ([{"row": 0, "text": "a"}], "line 1: expected exactly two keys"),
    "two keys": ([{"image": 0, "caption": 0, "text": "a"}], "line 1: expected exactly two keys"),
    "mixed keys": ([{"image": 0, "text": "a"}, {"caption": 1, "text": "b"}], 'line 2: expected every line keyed'),
    "empty text": ([{"image": 0, "text": "  "}], "line 1: expected a non-empty text"),
    "text not a string": ([{"image": 0, "text": 3}], "line 1: expected a non-empty text"),
    "row out of range": ([{"image": 99, "text": "a"}], "line 1: expected a image row in [0, 6), found 99"),
    "row not an int": ([{"image": True, "text": "a"}], "line 1: expected a image row in [0, 6), found True"),
    "unknown id": ([{"image_id": "nope.jpg", "text": "a"}], "line 1: expected an image id of train_ids.txt"),
    "duplicate": ([{"image": k, "text": "a"} for k in range(6)] + ["", {"image": 4, "text": "b"}],
                  "line 8: expected one line per image, found a second line for image row 4"),
    "missing": ([{"image": k, "text": "a"} for k in (0, 1, 3, 4)],
                "expected a line for every one of the 6 images of split 'train', "
                "found 2 missing, the first image row 2"),
    "missing id": ([{"image_id": f"img{k}.jpg", "text": "a"} for k in (0, 1, 2, 3, 5)],
                   "found 1 missing, the first image id 'img4.jpg'"),
    "empty file": ([""], "expected one line per image (or caption) of the split, found an empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_one_line_errors_naming_file_and_line(tmp_path: Path, split: PrecompSplit, case: str) -> None:
    rows, message = BAD[case]
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError) as err:
        read_dense_texts(path, split)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text


def test_a_missing_file_is_named(tmp_path: Path, split: PrecompSplit) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_dense_texts(tmp_path / "none.jsonl", split)


def test_the_standin_joins_the_other_captions_of_the_image_as_given_never_the_caption_itself() -> None:
    captions = [f"cap{k}" for k in range(8)]
    pairing = np.array([0, 0, 1, 0, 2, 1, 1, 3])  # a noisy pairing: image 0 carries captions 0, 1 and 3
    texts = standin_dense_texts(captions, pairing)
    assert texts[0] == "cap1 cap3" and texts[1] == "cap0 cap3" and texts[3] == "cap0 cap1"
    assert texts[2] == "cap5 cap6" and texts[6] == "cap2 cap5"
    assert texts[4] is None and texts[7] is None  # alone on their image
    for k, t in enumerate(texts):
        assert t is None or captions[k] not in t.split()


def test_consensus_is_the_mean_idf_cosine_with_the_other_captions_of_the_image_as_given() -> None:
    captions = ["red kite flies", "red kite flies", "old man sings", "blue boat sails", "blue boat sails", "cat"]
    pairing = np.array([0, 0, 0, 1, 1, 2])
    score = caption_consensus(captions, pairing)
    # identical captions: cosine 1; no shared word: 0; captions 0 and 1 each see one twin and one stranger
    assert score[0] == pytest.approx(0.5) and score[1] == pytest.approx(0.5) and score[2] == pytest.approx(0.0)
    assert score[3] == pytest.approx(1.0) and score[4] == pytest.approx(1.0)
    assert np.isnan(score[5])  # alone on its image


def test_consensus_keep_drops_the_captions_that_disagree_with_their_image_and_the_standin_leaves_them_out() -> None:
    themes = [["dog", "grass", "ball", "runs", "brown", "park"], ["plane", "sky", "cloud", "jet", "flies", "wing"],
              ["boat", "lake", "oar", "row", "water", "dock"], ["girl", "swing", "laugh", "yard", "pink", "child"]]
    rng = np.random.default_rng(0)
    captions, pairing, strangers = [], [], []
    for image, words in enumerate(themes):
        for j in range(5):
            if j == 4:  # one caption of another theme, paired with this image (a mismatched pair)
                words = themes[(image + 1) % 4]
                strangers.append(len(captions))
            captions.append(" ".join(["a", *rng.choice(words, size=3, replace=False)]))
            pairing.append(image)
    pairing = np.asarray(pairing)
    keep = consensus_keep(captions, pairing)
    assert not keep[strangers].any() and keep[np.setdiff1d(np.arange(len(captions)), strangers)].all()
    texts = standin_dense_texts(captions, pairing, keep=keep)
    for k, text in enumerate(texts):
        others = [captions[j] for j in np.flatnonzero(pairing == pairing[k]) if j != k and keep[j]]
        assert text == " ".join(others)  # a stranger still gets the agreeing captions of the image it carries


def test_a_written_standin_reads_back(tmp_path: Path, split: PrecompSplit) -> None:
    texts = standin_dense_texts(split.captions, split.image_of_caption())
    write_dense_jsonl(tmp_path / "s.jsonl", texts)
    assert read_dense_texts(tmp_path / "s.jsonl", split).texts == texts


def test_batches_carry_the_dense_text_of_the_image_each_pair_carries(tmp_path: Path, split: PrecompSplit) -> None:
    vocab = Vocabulary.build(split.captions, min_count=1)
    path = _write(tmp_path / "d.jsonl", [{"image": k, "text": None if k == 2 else split.captions[5 * k + 1]}
                                         for k in range(split.n_images)])
    pairing = np.roll(split.image_of_caption(), 3)
    ds = dense_train_set(split, vocab, pairing, path)
    idx = np.arange(split.n_captions)
    batch = ds.__getitems__(idx)
    assert isinstance(batch, DensePairBatch)
    caps = EncodedCaptions.from_captions(split.captions, vocab)
    for k in idx:
        tokens = batch.dense_tokens[k, : batch.dense_lengths[k]].tolist()
        if pairing[k] == 2:  # no dense text: the pair's own caption stands in, flagged invalid
            assert not batch.dense_valid[k] and tokens == vocab.encode(split.captions[k])
        else:
            assert batch.dense_valid[k] and tokens == vocab.encode(split.captions[5 * pairing[k] + 1])
        assert batch.tokens[k, : batch.lengths[k]].tolist() == caps.flat[caps.offsets[k] : caps.offsets[k + 1]].tolist()
    assert not any("image" in name for name in vars(batch) if name != "images")
    stage1 = dense_train_set(split, vocab, pairing, path, train_text="dense").__getitems__(idx)
    assert stage1.tokens.tolist() == batch.dense_tokens.tolist()


def test_the_command_writes_the_standin_of_the_noisy_pairing_and_refuses_to_overwrite(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture
) -> None:
    from noisycorr.data.noise import caption_to_image, load_noise

    out, noise = tmp_path / "dense.jsonl", tmp_path / "noise.npy"
    sets = ["--set", f"data.root={root}", "--set", "noise.rate=0.5", "--set", f"noise.file={noise}"]
    assert main(["dense-standin", str(out), *sets]) == 0
    split = load_precomp(root, "train")
    index, _ = load_noise(noise, "per_caption", n_images=split.n_images, n_captions=split.n_captions)
    pairing = caption_to_image("per_caption", index, split.n_images, split.captions_per_image)
    assert read_dense_texts(out, split).texts == standin_dense_texts(split.captions, pairing)
    filtered = tmp_path / "consensus.jsonl"
    assert main(["dense-standin", str(filtered), "--consensus", *sets]) == 0
    keep = consensus_keep(split.captions, pairing)
    assert read_dense_texts(filtered, split).texts == standin_dense_texts(split.captions, pairing, keep=keep)
    before = out.read_bytes()
    assert main(["dense-standin", str(out), *sets]) == 2
    assert "an existing file" in capsys.readouterr().err and out.read_bytes() == before
    # the file records the pairing it was built from: a run with another pairing refuses it
    vocab = Vocabulary.build(split.captions, min_count=1)
    assert isinstance(dense_train_set(split, vocab, pairing, out), DensePairDataset)
    with pytest.raises(InputError, match="texts of another pairing"):
        dense_train_set(split, vocab, split.image_of_caption(), out)
