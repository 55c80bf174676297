"""SGRAF ``checkpoint_blocks``: recomputed sub-blocks give the plain scores and gradients, and the option
is reachable from the config."""

from __future__ import annotations

import copy

import pytest
import torch
from bb_helpers import assert_all_params_have_grad, random_captions

from noisycorr.backbones import sgraf as sgraf_module
from noisycorr.backbones.sgraf import SGRAF
from noisycorr.config import load_config
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.setup import build_method
from noisycorr.errors import InputError
from noisycorr.losses import triplet_loss

VOCAB, IMG_DIM, EMBED, SIM, REGIONS = 40, 24, 32, 16, 6
LENGTHS = [9, 3, 5, 2, 7, 4, 6]
TINY_CHUNK = 700  # one image and one or two captions per sub-block


def make(head: str, checkpoint_blocks: bool | None, chunk_elems: int | None = TINY_CHUNK) -> SGRAF:
    torch.manual_seed(0)
    return SGRAF(
        vocab_size=VOCAB,
        img_dim=IMG_DIM,
        embed_size=EMBED,
        sim_dim=SIM,
        num_regions=REGIONS,
        head=head,
        dropout=0.3,
        chunk_elems=chunk_elems,
        checkpoint_blocks=checkpoint_blocks,
    ).train()


def step(model: SGRAF, pad_to: int = 11) -> tuple[torch.Tensor, int, int]:
    """One training forward + backward on padded captions of different lengths.

    Returns the scores, the number of ``_block`` runs and of checkpointed sub-blocks.
    """
    images = torch.randn(len(LENGTHS), REGIONS, IMG_DIM, generator=torch.Generator().manual_seed(1))
    tokens, lens = random_captions(LENGTHS, VOCAB, pad_to=pad_to)
    weights = torch.rand(len(LENGTHS), len(LENGTHS), generator=torch.Generator().manual_seed(2))
    counts = {"block": 0, "checkpoint": 0}
    block, ckpt = model._block, sgraf_module.checkpoint

    def counted_block(*args, **kwargs):
        counts["block"] += 1
        return block(*args, **kwargs)

    def counted_checkpoint(*args, **kwargs):
        counts["checkpoint"] += 1
        return ckpt(*args, **kwargs)

    model._block = counted_block
    sgraf_module.checkpoint = counted_checkpoint
    try:
        torch.manual_seed(5)  # the same dropout masks for both variants
        scores = model.similarity(model.encode_images(images), model.encode_texts(tokens, lens), lens)
        # every score gets a gradient, the hardest negatives a larger one
        (triplet_loss(scores, 0.2, hardest=True) + (weights * scores).sum()).backward()
    finally:
        del model._block
        sgraf_module.checkpoint = ckpt
    return scores.detach(), counts["block"], counts["checkpoint"]


# mutants: _recomputed_block calls self._block directly (no checkpoint); run() detaches img_glo before
# _block; _block's SGR loop skips the key mask when update_stats is False (the recomputation's mask)
@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_checkpointed_training_step_matches_the_plain_one(head):
    plain = make(head, checkpoint_blocks=False)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_blocks = True
    want, plain_runs, plain_ckpts = step(plain)
    got, ckpt_runs, ckpt_ckpts = step(ckpt)

    assert plain_ckpts == 0 and plain_runs > 4, "the tiny chunk must force several sub-blocks"
    assert ckpt_ckpts == plain_runs and ckpt_runs == 2 * plain_runs, "each sub-block runs again in backward"
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float(want.std()) > 1e-4
    # SGR's key biases cannot matter (the edge softmax removes them), so they get no gradient
    no_grad = {n for n, p in plain.named_parameters() if p.grad is None}
    assert no_grad == {n for n, _ in plain.named_parameters() if n.endswith(".key.bias")}
    for name in no_grad:
        plain.get_parameter(name).grad = torch.zeros_like(plain.get_parameter(name))
        assert ckpt.get_parameter(name).grad is None, name
        ckpt.get_parameter(name).grad = torch.zeros_like(ckpt.get_parameter(name))
    assert_all_params_have_grad(ckpt)
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        assert float((p.grad - grads[name].grad).abs().max()) <= 1e-5, name


# mutant: _recomputed_block passes update_stats=True on every run (running statistics updated twice)
def test_recomputation_leaves_saf_running_statistics_as_one_forward_does():
    plain = make("saf", checkpoint_blocks=False)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_blocks = True
    step(plain)
    step(ckpt)
    for name, buf in plain.named_buffers():
        torch.testing.assert_close(dict(ckpt.named_buffers())[name], buf, atol=1e-7, rtol=0, msg=name)
    assert int(ckpt.saf.bn.num_batches_tracked) > 1, "one update per sub-block, as without recomputation"


# mutant: _recompute ignores torch.is_grad_enabled(); and: auto (None) always checkpoints
def test_auto_checkpoints_large_requests_with_gradients_only(monkeypatch):
    model = make("sgr", checkpoint_blocks=None)
    volume = len(LENGTHS) ** 2 * max(LENGTHS) * EMBED
    assert not model._recompute(volume)
    monkeypatch.setattr(sgraf_module, "_AUTO_CHECKPOINT_ELEMS", volume - 1)
    assert model._recompute(volume)
    with torch.no_grad():
        assert not model._recompute(volume)
    model.checkpoint_blocks = True
    with torch.no_grad():
        _, runs, ckpts = step_no_grad(model)
    assert ckpts == 0 and runs > 4
    model.checkpoint_blocks = False
    assert not model._recompute(volume)


def step_no_grad(model: SGRAF) -> tuple[torch.Tensor, int, int]:
    calls = {"checkpoint": 0}
    ckpt = sgraf_module.checkpoint

    def counted(*args, **kwargs):
        calls["checkpoint"] += 1
        return ckpt(*args, **kwargs)

    images = torch.randn(len(LENGTHS), REGIONS, IMG_DIM, generator=torch.Generator().manual_seed(1))
    tokens, lens = random_captions(LENGTHS, VOCAB)
    runs = 0
    block = model._block

    def counted_block(*args, **kwargs):
        nonlocal runs
        runs += 1
        return block(*args, **kwargs)

    model._block = counted_block
    sgraf_module.checkpoint = counted
    try:
        scores = model.similarity(model.encode_images(images), model.encode_texts(tokens, lens), lens)
    finally:
        del model._block
        sgraf_module.checkpoint = ckpt
    return scores, runs, calls["checkpoint"]


# mutant: the global self-attention chunked in training mode too (VisualSA's batch statistics per chunk)
def test_training_scores_do_not_depend_on_the_chunk_size():
    # 800: self-attention passes of 4 and 3 images, had it been chunked (1 would stop training-mode BN)
    small, large = make("sgr", False, chunk_elems=800), make("sgr", False, chunk_elems=2**25)
    torch.manual_seed(5)
    want, _, _ = step_no_grad(large)
    torch.manual_seed(5)
    got, _, _ = step_no_grad(small)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


VOCAB_SMALL = Vocabulary.build(["a cat sat on the mat", "a dog ran"], min_count=1)
SMALL = ["model.backbone=sgraf", "model.embed_size=16", "model.word_dim=8", "model.sim_dim=8"]


def built(preset: str | None, *extra: str) -> SGRAF:
    cfg = load_config(preset, [*SMALL, *extra])
    return build_method(cfg, VOCAB_SMALL, (4, 6)).backbones[0]


# mutant: SGRAF.Config without checkpoint_blocks; and: __init__ does not store it
@pytest.mark.parametrize(
    "yaml_value, override, expected",
    [(None, None, None), ("true", None, True), ("false", None, False), ("true", "null", None), ("false", "true", True)],
)
def test_checkpoint_blocks_from_yaml_and_overrides(tmp_path, yaml_value, override, expected):
    preset = None
    if yaml_value is not None:
        preset = tmp_path / "sgraf.yaml"
        preset.write_text(f"model:\n  backbone: sgraf\n  checkpoint_blocks: {yaml_value}\n")
    extra = [] if override is None else [f"model.checkpoint_blocks={override}"]
    assert built(None if preset is None else str(preset), *extra).checkpoint_blocks is expected


def test_checkpoint_blocks_rejects_a_non_boolean():
    with pytest.raises(InputError, match="checkpoint_blocks"):
        load_config(None, [*SMALL, "model.checkpoint_blocks=sometimes"])
