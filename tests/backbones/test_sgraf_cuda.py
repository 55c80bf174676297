"""SGRAF on CUDA (``gpu`` marker: deselected by default, skipped without a device): the GPU scores and
the recomputed training path agree with the CPU, in float32 and under autocast."""

from __future__ import annotations

import copy

import pytest
import torch
from bb_helpers import random_captions

from noisycorr.backbones.sgraf import SGRAF
from noisycorr.losses import triplet_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

LENGTHS = [12, 3, 7, 5, 9, 4, 11, 6]


def _model(head: str, checkpoint_blocks: bool | None) -> SGRAF:
    torch.manual_seed(0)
    return SGRAF(
        vocab_size=50, img_dim=48, embed_size=64, sim_dim=32, num_regions=9, head=head,
        checkpoint_blocks=checkpoint_blocks, chunk_elems=4096,
    )


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.rand(len(LENGTHS), 9, 48, generator=torch.Generator().manual_seed(1))
    tokens, lengths = random_captions(LENGTHS, 50)
    return images, tokens, lengths


def _scores(model: SGRAF, images, tokens, lengths) -> torch.Tensor:
    img, txt = model.encode_images(images), model.encode_texts(tokens, lengths)
    return model.similarity(img, txt, lengths)


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_cuda_evaluation_matches_cpu(head):
    cpu = _model(head, None).eval()
    gpu = copy.deepcopy(cpu).cuda()
    images, tokens, lengths = _inputs()
    with torch.no_grad():
        expected = _scores(cpu, images, tokens, lengths)
        got = _scores(gpu, images.cuda(), tokens.cuda(), lengths.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.float16):
            half = _scores(gpu, images.cuda(), tokens.cuda(), lengths.cuda()).float().cpu()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(half, expected, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_cuda_recomputed_training_gradients_match_plain(head):
    images, tokens, lengths = (x.cuda() for x in _inputs())
    grads = []
    for checkpoint_blocks in (False, True):
        model = _model(head, checkpoint_blocks).cuda().train()
        loss = triplet_loss(_scores(model, images, tokens, lengths), 0.2, hardest=True)
        loss.backward()
        grads.append({n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)
