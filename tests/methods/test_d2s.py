"""D2S-VSE: one command trains stage 1 then stage 2, a finished stage 1 is reused, a run cut in either
stage resumes to the uninterrupted result, the teacher never changes, and the distillation composes
with NCR through the method contract (weighted by the peer's clean probability)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from noisycorr.backbones.distill import DistilledText
from noisycorr.backbones.vse import VSE
from noisycorr.config import load_config
from noisycorr.data.dense import DensePairBatch, standin_dense_texts, write_dense_jsonl
from noisycorr.data.noise import caption_to_image, make_per_caption_noise
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.engine import trainer as trainer_mod
from noisycorr.engine.checkpoint import load_state
from noisycorr.engine.optim import Optimizers
from noisycorr.engine.trainer import train
from noisycorr.errors import InputError
from noisycorr.methods.d2s import D2S, D2SNCR

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import assert_same_training  # noqa: E402
from method_helpers import FakeEpochContext, random_batch  # noqa: E402

NOISE = 0.4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny folder and the stand-in dense texts of its 40 %-noisy pairing (noise seed 0)."""
    root = write_synthetic(tmp_path_factory.mktemp("d2s") / "d", seed=3, n_train=24, n_dev=8, n_test=8,
                           n_regions=4, feat_dim=16, n_concepts=8)
    split = load_precomp(root, "train")
    index = make_per_caption_noise(split.n_captions, split.captions_per_image, NOISE, seed=0)
    pairing = caption_to_image("per_caption", index, split.n_images, split.captions_per_image)
    dense = root.parent / "dense.jsonl"
    write_dense_jsonl(dense, standin_dense_texts(split.captions, pairing))
    return root, dense


def _cfg(data: tuple[Path, Path], out: Path, **extra: object):
    root, dense = data
    values = {
        "data.root": root, "data.vocab_min_count": 1, "data.dense_captions": dense, "noise.rate": NOISE,
        "noise.seed": 0, "model.embed_size": 16, "model.word_dim": 8, "train.epochs": 2, "train.batch_size": 16,
        "train.threads": 1, "run.progress": False, "run.out_dir": out, "method.name": "d2s",
        "method.stage1_epochs": 1, "method.prompt_tokens": 2, "method.prompt_heads": 2, **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainer_mod, "have_matplotlib", lambda: False)


@pytest.fixture(scope="module")
def reference(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-stage run (its stage 1 in <out>/stage1)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "have_matplotlib", lambda: False)
        train(_cfg(data, out))
    return out


def test_one_command_trains_stage_one_on_the_dense_texts_then_stage_two_from_it(reference: Path) -> None:
    stage1 = reference / "stage1"
    assert (stage1 / "results.json").is_file() and (reference / "results.json").is_file()
    saved1 = load_config(str(stage1 / "config.yaml"))
    assert saved1.method["name"] == "vanilla" and saved1.data.train_text == "dense" and saved1.train.epochs == 1
    saved2 = load_config(str(reference / "config.yaml"))
    assert saved2.method["stage1_weights"] == str(stage1 / "best.safetensors")
    first = (reference / "metrics.csv").read_text().splitlines()
    header, row0 = first[0].split(","), first[1].split(",")
    assert row0[header.index("stage1_loaded")] == "1.0" and "loss_distill" in header


def test_the_teacher_is_the_stage_one_network_and_never_changes(reference: Path) -> None:
    stage1 = load_file(str(reference / "stage1" / "best.safetensors"))
    final = load_state(reference / "checkpoint.pt")["method"]
    teacher = {k[len("net.teacher."):]: v for k, v in final.items() if k.startswith("net.teacher.")}
    assert teacher and teacher.keys() == {k[len("net."):] for k in stage1}
    for key, value in teacher.items():
        assert torch.equal(value, stage1[f"net.{key}"]), key
    # the student did train away from the stage-1 weights
    assert any(not torch.equal(final[f"net.base.{k}"], v) for k, v in teacher.items())
    assert not any(k.startswith("net.teacher.") for k in load_file(str(reference / "best.safetensors")))


def test_no_optimiser_holds_a_teacher_parameter(data: tuple[Path, Path]) -> None:
    cfg = _cfg(data, Path("unused"))
    method = D2S(D2S.Config(prompt_tokens=2, prompt_heads=2),
                 lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))
    teacher = {id(p) for p in method.net.teacher.parameters()}
    held = {id(p) for opt in Optimizers(method, cfg.train).torch.values() for g in opt.param_groups
            for p in g["params"]}
    assert teacher and not teacher & held and not any(p.requires_grad for p in method.net.teacher.parameters())
    assert held == {id(p) for p in method.parameters() if p.requires_grad}


def test_a_finished_stage_one_is_reused_by_another_student(
    data: tuple[Path, Path], reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = os.stat(reference / "stage1" / "checkpoint.pt").st_mtime_ns
    calls = []
    real = trainer_mod.train
    monkeypatch.setattr(trainer_mod, "train", lambda cfg, **kw: calls.append(cfg.run.out_dir) or real(cfg, **kw))
    cfg = _cfg(data, tmp_path / "plain", **{"method.student_head": "plain", "method.stage1_dir": reference / "stage1",
                                            "train.epochs": 1})
    trainer_mod.train(cfg)
    assert calls == [str(tmp_path / "plain")]  # stage 1 was not trained again
    assert os.stat(reference / "stage1" / "checkpoint.pt").st_mtime_ns == before
    other = _cfg(data, tmp_path / "other", **{"method.stage1_dir": reference / "stage1", "method.stage1_epochs": 3})
    with pytest.raises(InputError, match="to reuse it as the earlier stage"):
        trainer_mod.train(other)


@pytest.mark.parametrize("stage, epoch", [(1, 0), (2, 0)])  # (1, 0): cut at the end of stage 1
def test_a_run_cut_in_either_stage_resumes_to_the_uninterrupted_result(
    data: tuple[Path, Path], reference: Path, tmp_path: Path, killed_after_epoch, stage: int, epoch: int
) -> None:
    out = tmp_path / "run"
    cfg = _cfg(data, out)
    with killed_after_epoch(epoch) if stage == 1 else _cut_stage_two(epoch):
        train(cfg)
    assert not (out / "results.json").exists()
    train(_cfg(data, out), resume=True)
    assert_same_training(reference / "stage1", out / "stage1")
    assert_same_training(reference, out)


def _cut_stage_two(epoch: int):
    """Kill the run right after stage 2 writes the checkpoint of ``epoch`` (stage 1 runs through)."""
    mp = pytest.MonkeyPatch()
    real_save = trainer_mod.atomic_torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if obj["epoch"] == epoch and Path(path).parent.name == "run":
            raise KeyboardInterrupt

    mp.setattr(trainer_mod, "atomic_torch_save", save_then_die)

    class Cut:
        def __enter__(self):
            return self

        def __exit__(self, kind, value, tb):
            mp.undo()
            assert kind is KeyboardInterrupt
            return True

    return Cut()


def test_a_missing_dense_file_is_refused_before_anything_is_written(data, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data.dense_captions"):
        train(_cfg(data, tmp_path / "a", **{"data.dense_captions": "null"}))
    with pytest.raises(InputError, match="no such file"):
        train(_cfg(data, tmp_path / "b", **{"data.dense_captions": tmp_path / "none.jsonl"}))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- under NCR, without the engine


def _dense(batch, valid: torch.Tensor) -> DensePairBatch:
    g = torch.Generator().manual_seed(int(batch.index[0]) + 7)
    dense = torch.randint(4, 30, (len(batch), 9), generator=g)
    return DensePairBatch(batch.images, batch.tokens, batch.lengths, batch.index, dense_tokens=dense,
                          dense_lengths=torch.full((len(batch),), 9), dense_valid=valid)


def test_under_ncr_each_network_distils_from_its_own_teacher_weighted_by_its_peer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = D2SNCR.Config(warmup_epochs=1, prompt_tokens=2, prompt_heads=2, student_head="prompt", distill_weight=0.5)
    method = D2SNCR(cfg, lambda: VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8))
    # stage-1 weights: two different networks
    stage1 = {f"{n}.{k}": v + 0.01 if n == "net_b" and v.is_floating_point() else v.clone()
              for n in ("net_a", "net_b") for k, v in getattr(method, n).base.state_dict().items()}
    from safetensors.torch import save_file

    save_file(stage1, str(tmp_path / "s1.safetensors"))
    method.cfg.stage1_weights = str(tmp_path / "s1.safetensors")
    ctx = FakeEpochContext(epochs=3, n_samples=40)
    assert method.on_epoch_start(1, ctx)["stage1_loaded"] == 1.0
    for n in ("net_a", "net_b"):
        for k, v in getattr(method, n).teacher.state_dict().items():
            assert torch.equal(v, stage1[f"{n}.{k}"])
    # distinct clean probabilities per network, so that using the wrong one shows
    method._peer_prob = {"A": torch.rand(40, generator=torch.Generator().manual_seed(1)),
                         "B": torch.rand(40, generator=torch.Generator().manual_seed(2))}
    valid = torch.tensor([True] * 15 + [False])
    batch = _dense(random_batch(16, offset=8), valid)
    side = _dense(random_batch(16, offset=24), torch.ones(16, dtype=torch.bool))
    for net in (method.net_a, method.net_b):  # each network's teacher vectors of these pairs, by pair index
        kept = torch.zeros(40, 16)
        for b in (batch, side):
            kept[b.index] = net.teach(b.dense_tokens, b.dense_lengths)
        net.keep_taught(kept)
    updates = list(method.training_step(batch, 2, phase="A", streams={"noisy": side}))  # 2: the noisy subset joins
    first = updates[0]
    assert len(updates) == 2 and "distill" in first[0] and "distill" not in updates[1][0]
    net = method.net_a
    w = method._peer_prob["B"][batch.index] * valid.float()
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(net.encode_texts(batch.tokens, batch.lengths),
                                                    net.teacher.encode_texts(batch.dense_tokens, batch.dense_lengths))
    expected = 0.5 * (w * (1 - cos)).sum() / 16
    assert torch.allclose(first[0]["distill"].detach(), expected, atol=1e-6)
    # in the warm-up every valid pair counts alike
    warm = list(method.training_step(batch, 0, phase="B"))[0][0]["distill"].detach()
    with torch.no_grad():
        cos_b = torch.nn.functional.cosine_similarity(
            method.net_b.encode_texts(batch.tokens, batch.lengths),
            method.net_b.teacher.encode_texts(batch.dense_tokens, batch.dense_lengths))
    assert torch.allclose(warm, 0.5 * ((1 - cos_b) * valid.float()).sum() / 16, atol=1e-6)


def test_the_prompt_student_starts_as_the_stage_one_caption_embedding() -> None:
    torch.manual_seed(0)
    base = VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8)
    net = DistilledText(base, head="prompt", n_prompts=3, heads=2)
    batch = random_batch(6)
    assert torch.allclose(net.encode_texts(batch.tokens, batch.lengths), base.encode_texts(batch.tokens, batch.lengths),
                          atol=1e-6)
    assert net.head is not None and sum(p.numel() for p in net.head.parameters()) > 0
    with pytest.raises(InputError, match="student_head"):
        DistilledText(base, head="nope")
    np.testing.assert_equal(DistilledText(base, head="plain").head, None)


def test_kept_teacher_vectors_are_looked_up_by_pair_until_the_teacher_changes() -> None:
    torch.manual_seed(0)
    net = DistilledText(VSE(vocab_size=30, img_dim=8, embed_size=16, word_dim=8), head="plain")
    batch = random_batch(6)
    assert not net.has_taught and net.taught(torch.tensor([0])) is None
    vectors = net.teach(batch.tokens, batch.lengths)
    net.keep_taught(vectors)
    order = torch.tensor([4, 0, 5, 0])
    torch.testing.assert_close(net.taught(order), vectors[order])
    with torch.no_grad():
        net.teacher.text.embed.weight.add_(0.5)  # new teacher weights: the kept vectors are stale
    assert not net.has_taught and net.taught(order) is None


def test_stage_two_teaches_every_pair_once_and_distils_from_the_kept_vectors(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = DistilledText.teach

    def counted(self: DistilledText, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        calls.append(len(tokens))
        return real(self, tokens, lengths)

    monkeypatch.setattr(DistilledText, "teach", counted)
    train(_cfg(data, tmp_path / "run", **{"train.epochs": 3}))
    n_pairs = load_precomp(data[0], "train").n_captions
    # one pass over the training pairs (its last batch topped up to the batch size) in three stage-2 epochs
    assert n_pairs <= sum(calls) < n_pairs + 16


def test_runs_sharing_an_earlier_stage_take_turns_on_it(tmp_path: Path) -> None:
    import threading
    import time

    order: list[str] = []

    def second(root: Path, name: str) -> None:
        with trainer_mod._stage_lock(root):
            order.append(name)

    with trainer_mod._stage_lock(tmp_path / "stage1"):
        same = threading.Thread(target=second, args=(tmp_path / "x" / ".." / "stage1", "same stage"))
        other = threading.Thread(target=second, args=(tmp_path / "other", "other stage"))
        same.start(), other.start()
        other.join(timeout=10)
        time.sleep(0.3)
        order.append("holder done")
    same.join(timeout=10)
    assert order == ["other stage", "holder done", "same stage"]
    assert not (tmp_path / "stage1").exists()  # the lock writes nothing into the run folders
