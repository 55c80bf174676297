"""SGRAF: the batched (images x captions) similarity against a per-caption oracle, masking, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bb_helpers import assert_all_params_have_grad, random_captions

from noisycorr.backbones.base import similarity_matrix
from noisycorr.backbones.sgraf import SGRAF
from noisycorr.errors import InputError
from noisycorr.factory import create_backbone

VOCAB, IMG_DIM, EMBED, SIM, REGIONS = 40, 24, 32, 16, 6
LENGTHS = [9, 3, 5, 2, 7, 4, 6]


def _norm(x, dim=-1):
    return x / (x.norm(dim=dim, keepdim=True) + 1e-8)


def oracle(model: SGRAF, img: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The research code's way: one caption at a time, trimmed to its length, against all images."""
    img_glo = model.img_attn(img)
    n_img = img.shape[0]
    columns = []
    for j in range(words.shape[0]):
        cap = words[j, : int(lengths[j])].unsqueeze(0).expand(n_img, -1, -1)  # (n, l, d)
        cap_glo = model.txt_attn(cap[:1])
        attn = F.leaky_relu(torch.bmm(img, cap.transpose(1, 2)), 0.1)  # (n, R, l)
        attn = torch.softmax(_norm(attn, dim=2).transpose(1, 2) * model.lambda_softmax, dim=2)  # (n, l, R)
        context = _norm(torch.bmm(attn, img))
        local = _norm(model.local_proj((context - cap) ** 2))
        glob = _norm(model.global_proj((img_glo - cap_glo) ** 2))
        nodes = torch.cat([glob.unsqueeze(1), local], 1)
        if model.head == "sgr":
            for step in model.sgr:
                edges = torch.softmax(step.query(nodes) @ step.key(nodes).transpose(1, 2), dim=-1)
                nodes = torch.relu(step.update(edges @ nodes))
            vec = nodes[:, 0]
        else:
            a = torch.sigmoid(model.saf.bn(model.saf.attn(nodes).transpose(1, 2)))  # (n, 1, N)
            a = a / (a.abs().sum(-1, keepdim=True) + 1e-8)
            vec = _norm((a @ nodes).squeeze(1))
        columns.append(torch.sigmoid(model.score(vec)))
    return torch.cat(columns, 1)


def make(head: str = "sgr", **kw) -> SGRAF:
    torch.manual_seed(0)
    return create_backbone(
        "sgraf",
        vocab_size=VOCAB,
        img_dim=IMG_DIM,
        embed_size=EMBED,
        sim_dim=SIM,
        num_regions=REGIONS,
        head=head,
        **kw,
    )


def inputs(n_img: int = 5, lengths=LENGTHS, pad_to=None):
    images = torch.randn(n_img, REGIONS, IMG_DIM, generator=torch.Generator().manual_seed(1))
    tokens, lens = random_captions(lengths, VOCAB, pad_to=pad_to)
    return images, tokens, lens


def _randomise_bn(model: torch.nn.Module) -> None:
    # Non-trivial running statistics, so eval-mode batch norm is not the identity.
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize("head", ["sgr", "saf"])
@pytest.mark.parametrize("chunk_elems", [2**25, 700])
def test_batched_equals_per_caption_oracle(head, chunk_elems):
    model = make(head, dropout=0.3, chunk_elems=chunk_elems).eval()
    _randomise_bn(model)
    images, tokens, lens = inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        got = model.similarity(img, txt, lens)
        want = oracle(model, img, txt, lens)
    assert got.shape == (5, len(LENGTHS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert ((got > 0) & (got < 1)).all()
    # The scores vary over pairs (a constant output would make the comparison vacuous).
    assert float(got.std()) > 1e-4


def test_sgr_training_mode_matches_oracle_and_backprops():
    model = make("sgr").train()  # dropout 0: the only train-mode effect is VisualSA's batch norm
    images, tokens, lens = inputs(n_img=4)
    img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
    got = model.similarity(img, txt, lens)
    torch.testing.assert_close(got, oracle(model, img, txt, lens), atol=1e-5, rtol=0)
    got.sum().backward()
    # b_k cannot matter: it adds a per-query constant to the edge logits, which the softmax removes.
    key_biases = {f"sgr.{k}.key.bias" for k in range(len(model.sgr))}
    assert all(p.grad is None for n, p in model.named_parameters() if n in key_biases)
    for name in key_biases:
        model.get_parameter(name).grad = torch.zeros(SIM)
    assert_all_params_have_grad(model)
    assert not hasattr(model, "saf")


def test_sgr_key_bias_has_no_effect():
    model = make("sgr").eval()
    images, tokens, lens = inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        before = model.similarity(img, txt, lens)
        for step in model.sgr:
            step.key.bias.add_(torch.randn_like(step.key.bias))
        after = model.similarity(img, txt, lens)
        want = oracle(model, img, txt, lens)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(after, want, atol=1e-5, rtol=0)


def test_saf_backprops_to_every_parameter():
    model = make("saf", dropout=0.2).train()
    images, tokens, lens = inputs(n_img=4)
    scores = model.similarity(model.encode_images(images), model.encode_texts(tokens, lens), lens)
    scores.sum().backward()
    assert_all_params_have_grad(model)
    assert not hasattr(model, "sgr")


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_padding_length_of_the_batch_does_not_change_scores(head):
    model = make(head).eval()
    _randomise_bn(model)
    images, tokens, lens = inputs()
    _, padded, _ = inputs(pad_to=15)
    with torch.no_grad():
        img = model.encode_images(images)
        txt = model.encode_texts(tokens, lens)
        short = model.similarity(img, txt, lens)
        long = model.similarity(img, model.encode_texts(padded, lens), lens)
        # Whatever sits in the padded word slots is ignored, not only zeros.
        pad = torch.arange(txt.shape[1])[None, :] >= lens[:, None]
        noisy = torch.where(pad[..., None], torch.randn_like(txt), txt)
        garbage = model.similarity(img, noisy, lens)
        # A caption scored alone (no padding at all) equals its column in the mixed-length batch.
        alone = model.similarity(img, model.encode_texts(tokens[1:2, :3], lens[1:2]), lens[1:2])
    torch.testing.assert_close(short, long, atol=1e-6, rtol=0)
    torch.testing.assert_close(garbage, short, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone[:, 0], short[:, 1], atol=1e-6, rtol=0)


def test_unmasked_padding_would_change_scores():
    # Guard for the masking test above: treating padded words as words changes the result.
    model = make("sgr").eval()
    images, tokens, lens = inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        masked = model.similarity(img, txt, lens)
        unmasked = model.similarity(img, txt, None)
    short = lens < lens.max()
    assert (masked[:, short] - unmasked[:, short]).abs().max() > 1e-4
    torch.testing.assert_close(masked[:, ~short], unmasked[:, ~short], atol=1e-6, rtol=0)


def test_similarity_matrix_tiles_match_one_call():
    model = make("sgr").eval()
    images, tokens, lens = inputs(n_img=7)
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
        whole = model.similarity(img, txt, lens)
    tiled = similarity_matrix(model, img, txt, lens, img_chunk=3, txt_chunk=2)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_eval_mode_is_deterministic_with_dropout():
    model = make("saf", dropout=0.5).eval()
    images, tokens, lens = inputs()
    with torch.no_grad():
        first = model.similarity(model.encode_images(images), model.encode_texts(tokens, lens), lens)
        second = model.similarity(model.encode_images(images), model.encode_texts(tokens, lens), lens)
    assert torch.equal(first, second)


def test_encoders_give_unit_vectors_and_zero_padding():
    model = make("sgr").eval()
    images, tokens, lens = inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
    assert img.shape == (5, REGIONS, EMBED) and txt.shape == (len(LENGTHS), max(LENGTHS), EMBED)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5, REGIONS))
    valid = torch.arange(txt.shape[1]) < lens[:, None]
    torch.testing.assert_close(txt.norm(dim=-1)[valid], torch.ones(int(lens.sum())))
    assert (txt[~valid] == 0).all()


def test_bad_arguments():
    with pytest.raises(InputError, match="head"):
        make("avg")
    model = make("sgr")
    with pytest.raises(ValueError, match="num_regions"):
        model.encode_images(torch.randn(2, REGIONS + 1, IMG_DIM))
    with pytest.raises(ValueError, match="lengths"):
        model.similarity(torch.randn(2, REGIONS, EMBED), torch.randn(3, 4, EMBED), torch.tensor([4, 5, 2]))


def test_real_flickr_features_match_oracle(shared_data):
    feats = np.load(shared_data / "flickr-dev" / "dev_ims.npy", mmap_mode="r")[:4]  # float16 (4, 16, 1280)
    torch.manual_seed(0)
    model = SGRAF(
        vocab_size=VOCAB, img_dim=feats.shape[2], embed_size=EMBED, num_regions=feats.shape[1]
    ).eval()
    tokens, lens = random_captions([12, 5, 8], VOCAB)
    with torch.no_grad():
        img = model.encode_images(torch.from_numpy(np.array(feats)))
        txt = model.encode_texts(tokens, lens)
        got = model.similarity(img, txt, lens)
        want = oracle(model, img, txt, lens)
    assert img.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_saf_training_batch_norm_ignores_padded_words():
    model = make("saf").train()
    images, tokens, lens = inputs()
    img, txt = model.encode_images(images), model.encode_texts(tokens, lens)
    pad = torch.arange(txt.shape[1])[None, :] >= lens[:, None]
    noisy = torch.where(pad[..., None], torch.randn_like(txt), txt)
    torch.testing.assert_close(
        model.similarity(img, noisy, lens), model.similarity(img, txt, lens), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_pair_vectors_equal_the_diagonal_with_gradients_also_for_a_zero_region(head):
    # The pair-list path (MSCN's meta representation, shortlist scoring) lays the word-region attention out
    # words first and normalises over words without Tensor.norm; values and gradients must match the
    # all-pairs path, and an all-zero region (zero-padded features) must not turn a gradient into NaN.
    model = make(head).eval()
    img_feat, tokens, lengths = inputs(n_img=len(LENGTHS))
    img_feat = img_feat.clone()
    img_feat[2, 1] = 0.0
    model.img_fc.bias.data.zero_()  # so region 1 of image 2 embeds to the zero vector
    img = model.encode_images(img_feat).detach().requires_grad_(True)
    txt = model.encode_texts(tokens, lengths).detach().requires_grad_(True)
    pairs = model.pair_vectors(img, txt, lengths)
    diag = model.similarity_vectors(img, txt, lengths).diagonal(dim1=0, dim2=1).t()
    torch.testing.assert_close(pairs, diag, atol=1e-5, rtol=0)
    g_pairs = torch.autograd.grad(pairs.sum(), (img, txt))
    g_diag = torch.autograd.grad(diag.sum(), (img, txt))
    for a in g_pairs:
        assert bool(torch.isfinite(a).all())
    # The zero region's own gradient is scaled by 1 / EPS in both paths (float noise, not compared).
    keep = torch.ones_like(img, dtype=torch.bool)
    keep[2, 1] = False
    torch.testing.assert_close(g_pairs[0][keep], g_diag[0][keep], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_pairs[1], g_diag[1], atol=1e-5, rtol=1e-4)
