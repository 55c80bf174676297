"""GlobalMLP backbone on pooled features: unit embeddings, cosine, text pooling options, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bb_helpers import assert_all_params_have_grad, random_captions

from noisycorr.errors import InputError
from noisycorr.factory import create_backbone, get_backbone_class

VOCAB, IMG_DIM, EMBED = 40, 24, 32


def make(**kw):
    torch.manual_seed(0)
    return create_backbone("global", vocab_size=VOCAB, img_dim=IMG_DIM, embed_size=EMBED, word_dim=16, **kw)


def data():
    images = torch.randn(5, IMG_DIM, generator=torch.Generator().manual_seed(1))
    return (images, *random_captions([7, 3, 5, 2], VOCAB))


@pytest.mark.parametrize("text_pool", ["mean", "gpo"])
def test_unit_embeddings_cosine_and_padding(text_pool):
    model = make(text_pool=text_pool).eval()
    images, tokens, lens = data()
    padded = torch.cat([tokens, torch.zeros(4, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        torch.testing.assert_close(model.encode_texts(padded, lens), txt, atol=1e-6, rtol=0)
        sims = model.similarity(img, txt)
    assert get_backbone_class("global").image_input == "pooled"
    assert img.shape == (5, EMBED) and txt.shape == (4, EMBED)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(sims, img @ txt.T)


def test_mean_pool_is_the_mean_of_valid_words():
    model = make().eval()
    _, tokens, lens = data()
    with torch.no_grad():
        words, _ = model.text(tokens, lens)
        expected = model.txt_proj(torch.stack([words[i, :n].mean(0) for i, n in enumerate(lens.tolist())]))
        got = model.encode_texts(tokens, lens)
    torch.testing.assert_close(got, expected / expected.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("text_pool", ["mean", "gpo"])
def test_every_parameter_gets_a_gradient(text_pool):
    model = make(text_pool=text_pool, dropout=0.1).train()
    images, tokens, lens = data()
    model.similarity(model.encode_images(images), model.encode_texts(tokens, lens)).sum().backward()
    assert_all_params_have_grad(model)


def test_eval_determinism_and_bad_options():
    model = make(dropout=0.5).eval()
    images, _tokens, _lens = data()
    with torch.no_grad():
        assert torch.equal(model.encode_images(images), model.encode_images(images))
    with pytest.raises(InputError, match="text_pool"):
        make(text_pool="max")
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        model.encode_images(torch.randn(2, 3, IMG_DIM))


def test_real_flickr_pooled_features(shared_data):
    feats = np.load(shared_data / "flickr-dev" / "dev_pooled.npy", mmap_mode="r")[:8]
    torch.manual_seed(0)
    model = create_backbone("global", vocab_size=VOCAB, img_dim=feats.shape[1], embed_size=EMBED).eval()
    with torch.no_grad():
        img = model.encode_images(torch.from_numpy(np.array(feats)))
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(8))
    assert (img @ img.T - torch.eye(8)).abs().max() < 1 - 1e-4
