"""BiGRU caption encoder: packing against a one-caption-at-a-time GRU, padding, word-vector init."""

from __future__ import annotations

import pytest
import torch
from bb_helpers import random_captions

from noisycorr.backbones.text import BiGRUTextEncoder
from noisycorr.errors import InputError

VOCAB, WORD, EMBED = 30, 8, 12


def make(**kw) -> BiGRUTextEncoder:
    torch.manual_seed(0)
    return BiGRUTextEncoder(VOCAB, WORD, EMBED, **kw).eval()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_packed_batch_equals_each_caption_alone(num_layers):
    enc = make(num_layers=num_layers)
    tokens, lens = random_captions([6, 2, 4, 5], VOCAB, pad_to=8)
    with torch.no_grad():
        out, out_lens = enc(tokens, lens)
        for row, n in enumerate(lens.tolist()):
            h, _ = enc.rnn(enc.embed(tokens[row : row + 1, :n]))
            alone = (h[..., :EMBED] + h[..., EMBED:]) / 2
            torch.testing.assert_close(out[row, :n], alone[0], atol=1e-6, rtol=0)
    assert out.shape == (4, 8, EMBED) and torch.equal(out_lens, lens)
    assert (out[torch.arange(8) >= lens[:, None]] == 0).all()


def test_per_word_features_are_unit_vectors():
    enc = make(per_word=True)
    tokens, lens = random_captions([5, 3], VOCAB)
    with torch.no_grad():
        out, _ = enc(tokens, lens)
    valid = torch.arange(5) < lens[:, None]
    torch.testing.assert_close(out.norm(dim=-1)[valid], torch.ones(8))
    assert not make(per_word=False)(tokens, lens)[0].norm(dim=-1)[valid].sub(1).abs().lt(1e-4).all()


def test_word_vectors_initialise_the_embedding():
    vectors = torch.randn(VOCAB, WORD)
    enc = make(word_vectors=vectors)
    assert torch.equal(enc.embed.weight.detach(), vectors)
    default = make().embed.weight.detach()
    assert default.abs().max() <= 0.1 and default.std() > 0.03
    with pytest.raises(InputError, match=r"\(30, 8\)"):
        make(word_vectors=torch.randn(VOCAB + 1, WORD))


def test_bad_lengths_are_rejected():
    enc = make()
    tokens, _lens = random_captions([4, 3], VOCAB)
    with pytest.raises(ValueError, match="lengths"):
        enc(tokens, torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="lengths"):
        enc(tokens, torch.tensor([0, 3]))


def test_dropout_only_in_training():
    enc = make(dropout=0.5)
    tokens, lens = random_captions([6, 4], VOCAB)
    with torch.no_grad():
        assert torch.equal(enc(tokens, lens)[0], enc(tokens, lens)[0])
        enc.train()
        assert not torch.equal(enc(tokens, lens)[0], enc(tokens, lens)[0])


def _packed(enc: BiGRUTextEncoder, tokens, lens):
    """The packed-GRU path (the one training differentiates through)."""
    with torch.enable_grad():
        out, _ = enc(tokens, lens)
    return out.detach()


@pytest.mark.parametrize("per_word", [False, True])
def test_inference_word_table_equals_the_packed_gru(per_word):
    enc = make(per_word=per_word)
    for lengths, pad in (([6, 2, 4, 5, 2, 6], 9), ([3, 3, 3], 3), ([2], 2)):
        tokens, lens = random_captions(lengths, VOCAB, pad_to=pad)
        with torch.no_grad():
            fast, _ = enc(tokens, lens)
        assert enc._table is not None, "the table path did not run"
        torch.testing.assert_close(fast, _packed(enc, tokens, lens), atol=1e-6, rtol=0)
        assert (fast[torch.arange(pad) >= lens[:, None]] == 0).all()


def test_word_table_follows_weight_updates():
    enc = make()
    tokens, lens = random_captions([5, 3, 4], VOCAB, pad_to=6)
    with torch.no_grad():
        enc(tokens, lens)
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    _packed_out = enc(tokens, lens)[0]
    _packed_out.sum().backward()
    opt.step()
    with torch.no_grad():
        after_step, _ = enc(tokens, lens)
    torch.testing.assert_close(after_step, _packed(enc, tokens, lens), atol=1e-6, rtol=0)
    enc.load_state_dict(make(num_layers=1).state_dict() | {"embed.weight": torch.randn(VOCAB, WORD)})
    with torch.no_grad():
        after_load, _ = enc(tokens, lens)
    torch.testing.assert_close(after_load, _packed(enc, tokens, lens), atol=1e-6, rtol=0)


def test_no_word_table_where_the_recurrence_is_most_of_the_work():
    enc = BiGRUTextEncoder(VOCAB, WORD, 2 * WORD + 1).eval()  # input projection < 1/3 of the GRU's work
    tokens, lens = random_captions([5, 3], VOCAB, pad_to=6)
    with torch.no_grad():
        out, _ = enc(tokens, lens)
    assert enc._table is None
    torch.testing.assert_close(out, _packed(enc, tokens, lens), atol=1e-6, rtol=0)
    at_limit = BiGRUTextEncoder(VOCAB, WORD, 2 * WORD).eval()
    with torch.no_grad():
        at_limit(tokens, lens)
    assert at_limit._table is not None
