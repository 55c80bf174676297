"""VSE (GPO) backbone: unit embeddings, cosine similarity, region/word padding, gradients, real features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bb_helpers import assert_all_params_have_grad, random_captions

from noisycorr.backbones.base import similarity_matrix
from noisycorr.factory import create_backbone

VOCAB, IMG_DIM, EMBED, REGIONS = 40, 24, 32, 6


def make(**kw):
    torch.manual_seed(0)
    return create_backbone("vse", vocab_size=VOCAB, img_dim=IMG_DIM, embed_size=EMBED, word_dim=16, **kw)


def data(n_img=5, lengths=(7, 3, 5, 2)):
    images = torch.randn(n_img, REGIONS, IMG_DIM, generator=torch.Generator().manual_seed(1))
    return (images, *random_captions(list(lengths), VOCAB))


@pytest.mark.parametrize("text_mlp", [False, True])
def test_unit_embeddings_and_cosine_similarity(text_mlp):
    model = make(text_mlp=text_mlp).eval()
    images, tokens, lens = data()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        sims = model.similarity(img, txt, lens)
    assert img.shape == (5, EMBED) and txt.shape == (4, EMBED)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(sims, img @ txt.T)
    torch.testing.assert_close(similarity_matrix(model, img, txt, lens, img_chunk=2, txt_chunk=3), sims)
    assert model.image_input == "regions"


@pytest.mark.parametrize("text_mlp", [False, True])
def test_caption_padding_does_not_change_embeddings(text_mlp):
    model = make(text_mlp=text_mlp).eval()
    _, tokens, lens = data()
    padded = torch.cat([tokens, torch.zeros(4, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        batch = model.encode_texts(tokens, lens)
        torch.testing.assert_close(model.encode_texts(padded, lens), batch, atol=1e-6, rtol=0)
        alone = model.encode_texts(tokens[3:4, :2], lens[3:4])
    torch.testing.assert_close(alone[0], batch[3], atol=1e-6, rtol=0)


def test_image_lengths_ignore_padded_regions():
    model = make().eval()
    images, _, _ = data()
    padded = torch.cat([images[:, :4], torch.full((5, 2, IMG_DIM), 50.0)], dim=1)
    with torch.no_grad():
        short = model.encode_images(images[:, :4])
        masked = model.encode_images(padded, torch.full((5,), 4))
        unmasked = model.encode_images(padded)
    torch.testing.assert_close(masked, short, atol=1e-6, rtol=0)
    assert (unmasked - short).abs().max() > 1e-3


@pytest.mark.parametrize("text_mlp", [False, True])
def test_every_parameter_gets_a_gradient(text_mlp):
    model = make(text_mlp=text_mlp, dropout=0.2).train()
    images, tokens, lens = data()
    model.similarity(model.encode_images(images), model.encode_texts(tokens, lens)).sum().backward()
    assert_all_params_have_grad(model)


def test_eval_is_deterministic_and_dropout_acts_in_training():
    model = make(dropout=0.3).eval()
    images, tokens, lens = data()
    with torch.no_grad():
        assert torch.equal(model.encode_images(images), model.encode_images(images))
        assert torch.equal(model.encode_texts(tokens, lens), model.encode_texts(tokens, lens))
        model.train()
        assert not torch.equal(model.encode_images(images), model.encode_images(images))


def test_rejects_pooled_images():
    with pytest.raises(ValueError, match=r"\(B, R, D\)"):
        make().encode_images(torch.randn(3, IMG_DIM))


def test_real_flickr_region_features(shared_data):
    feats = np.load(shared_data / "flickr-dev" / "dev_ims.npy", mmap_mode="r")[:6]  # float16 (6, 16, 1280)
    torch.manual_seed(0)
    model = create_backbone("vse", vocab_size=VOCAB, img_dim=feats.shape[2], embed_size=EMBED).eval()
    with torch.no_grad():
        img = model.encode_images(torch.from_numpy(np.array(feats)))
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(6))
    # Different photos give different embeddings.
    assert (img @ img.T - torch.eye(6)).abs().max() < 1 - 1e-4


def test_training_batch_norm_ignores_padded_words():
    model = make(text_mlp=True).train()  # dropout 0: batch statistics are the only train-mode effect
    _, tokens, lens = data()
    padded = torch.cat([tokens, torch.zeros(4, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(
        model.encode_texts(padded, lens), model.encode_texts(tokens, lens), atol=1e-6, rtol=0
    )
