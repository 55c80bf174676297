"""Shortlist evaluation against exact evaluation on a small random SGRAF, and its config keys."""

from __future__ import annotations

import pytest
import torch

from noisycorr.backbones.base import Backbone, similarity_matrix
from noisycorr.backbones.sgraf import SGRAF
from noisycorr.backbones.vse import VSE
from noisycorr.config import EvalConfig, load_config
from noisycorr.data.precomp import load_precomp
from noisycorr.data.synthetic import write_synthetic
from noisycorr.data.vocab import Vocabulary
from noisycorr.engine.inference import evaluate_method
from noisycorr.errors import InputError
from noisycorr.eval.retrieval import retrieval_metrics, t2i_ranks
from noisycorr.eval.shortlist import cheap_scores, global_vectors, shortlist_mask, shortlist_similarities

N_IMG, N_TXT, REGIONS, VOCAB = 13, 29, 5, 30


def _sgraf(head: str, seed: int = 0, chunk_elems: int | None = None) -> SGRAF:
    torch.manual_seed(seed)
    return SGRAF(vocab_size=VOCAB, img_dim=12, embed_size=16, word_dim=8, sim_dim=8, num_regions=REGIONS,
                 head=head, chunk_elems=chunk_elems).eval()


def _encoded(model: SGRAF, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(2, 9, (N_TXT,), generator=g)
    tokens = torch.randint(4, VOCAB, (N_TXT, int(lens.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None, :] >= lens[:, None]] = 0
    with torch.no_grad():
        img = model.encode_images(torch.randn(N_IMG, REGIONS, 12, generator=g))
        txt = model.encode_texts(tokens, lens)
    return img, txt, lens


def _global_node_oracle(model: SGRAF, img, txt, lens) -> torch.Tensor:
    """The exact head with every word node masked out, one image at a time: what ``global_scores`` must give."""
    with torch.no_grad():
        img_glo = model.img_attn(img)
        txt_glo = model.txt_attn(txt, torch.arange(txt.shape[1])[None, :] < lens[:, None])
        no_words = torch.zeros(txt.shape[:2], dtype=torch.bool)
        return torch.cat([model.score_with_globals(img[i : i + 1], img_glo[i : i + 1], txt, txt_glo, no_words)
                          for i in range(img.shape[0])])


def _logit_oracle(model: SGRAF, img, txt, lens) -> torch.Tensor:
    """SAF's global node before its L2 normalisation, through the modules, one image at a time: what its
    ``shortlist_scores`` must rank by (they drop the constant ``w . p``)."""
    with torch.no_grad():
        img_glo = model.img_attn(img)
        txt_glo = model.txt_attn(txt, torch.arange(txt.shape[1])[None, :] < lens[:, None])
        return torch.stack([model.score(model.global_proj((img_glo[i] - txt_glo).pow(2)))[:, 0] - model.score.bias
                            for i in range(img.shape[0])])


def _cheap_oracle(model: SGRAF, img, txt, lens) -> torch.Tensor:
    """The score the shortlist is picked by: SAF's pre-normalisation logit, SGR's global-node head."""
    return (_logit_oracle if model.head == "saf" else _global_node_oracle)(model, img, txt, lens)


def _oracle_mask(model: SGRAF, img, txt, lens, k: int) -> torch.Tensor:
    """Each image's k best captions and each caption's k best images by the cheap score, one query at a time."""
    cos = _cheap_oracle(model, img, txt, lens)
    mask = torch.zeros(N_IMG, N_TXT, dtype=torch.bool)
    for i in range(N_IMG):
        mask[i, torch.argsort(cos[i], descending=True)[:k]] = True
    for j in range(N_TXT):
        mask[torch.argsort(cos[:, j], descending=True)[:k], j] = True
    return mask


@pytest.mark.parametrize("head,chunk_elems", [("sgr", None), ("saf", None), ("sgr", 200)])
def test_a_shortlist_as_long_as_the_split_is_the_exact_matrix(head, chunk_elems):
    model = _sgraf(head, chunk_elems=chunk_elems)  # 200: a few captions per head call
    img, txt, lens = _encoded(model)
    exact = similarity_matrix(model, img, txt, lens)
    for k in (N_TXT, N_TXT + 5):
        (short,) = shortlist_similarities([model], [(img, txt, lens)], k, chunk=4)
        torch.testing.assert_close(short, exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head,k", [("sgr", 1), ("sgr", 3), ("saf", 4)])
def test_b_shortlisted_cells_are_exact_and_rank_ahead_of_the_rest(head, k):
    model = _sgraf(head)
    img, txt, lens = _encoded(model)
    exact = similarity_matrix(model, img, txt, lens)
    (short,) = shortlist_similarities([model], [(img, txt, lens)], k, chunk=4)
    mask = _oracle_mask(model, img, txt, lens, k)
    assert 0 < int(mask.sum()) < N_IMG * N_TXT
    torch.testing.assert_close(short[mask], exact[mask], atol=1e-5, rtol=0)
    assert float(short[~mask].max()) <= float(short[mask].min()) - 1  # the rest sits at least 1 below
    for i in range(N_IMG):  # image queries: the candidates keep their exact order
        cols = mask[i].nonzero().squeeze(1)
        assert torch.equal(cols[torch.argsort(short[i, cols])], cols[torch.argsort(exact[i, cols])])
    for j in range(N_TXT):  # caption queries
        rows = mask[:, j].nonzero().squeeze(1)
        assert torch.equal(rows[torch.argsort(short[rows, j])], rows[torch.argsort(exact[rows, j])])


class _Wrapped(Backbone):
    """A plug-in with a pairwise head: scored through ``similarity``, not SGRAF's own fast path."""

    def __init__(self, inner: SGRAF):
        super().__init__()
        self.inner = inner

    def similarity(self, img_emb, txt_emb, txt_lengths=None):
        return self.inner.similarity(img_emb, txt_emb, txt_lengths)


def test_a_backbone_without_a_fast_path_is_scored_through_similarity():
    model = _sgraf("sgr")
    img, txt, lens = _encoded(model)
    (plain,) = shortlist_similarities([_Wrapped(model).eval()], [(img, txt, lens)], 3)
    mask = shortlist_mask(cheap_scores([_Wrapped(model).eval()], [(img, txt, lens)]), 3)
    torch.testing.assert_close(plain[mask], similarity_matrix(model, img, txt, lens)[mask], atol=1e-5, rtol=0)
    (whole,) = shortlist_similarities([_Wrapped(model).eval()], [(img, txt, lens)], N_TXT)
    torch.testing.assert_close(whole, similarity_matrix(model, img, txt, lens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["sgr", "saf"])
def test_global_scores_are_the_head_on_the_global_node_alone(head):
    model = _sgraf(head, chunk_elems=300)  # 300: a few images per chunk
    img, txt, lens = _encoded(model)
    with torch.no_grad():
        img_glo = model.img_attn(img)
        txt_glo = model.txt_attn(txt, torch.arange(txt.shape[1])[None, :] < lens[:, None])
        got = model.global_scores(img_glo, txt_glo)
    torch.testing.assert_close(got, _global_node_oracle(model, img, txt, lens), atol=1e-6, rtol=0)


def test_saf_picks_by_the_global_node_logit_before_normalisation_in_one_product():
    model = _sgraf("saf")
    img, txt, lens = _encoded(model)
    with torch.no_grad():
        img_glo = model.img_attn(img)
        txt_glo = model.txt_attn(txt, torch.arange(txt.shape[1])[None, :] < lens[:, None])
        got = model.shortlist_scores(img_glo, txt_glo)
        sgr = _sgraf("sgr")
        sgr_glo = sgr.img_attn(img), sgr.txt_attn(txt, torch.arange(txt.shape[1])[None, :] < lens[:, None])
        torch.testing.assert_close(sgr.shortlist_scores(*sgr_glo), sgr.global_scores(*sgr_glo), atol=0, rtol=0)
    torch.testing.assert_close(got, _logit_oracle(model, img, txt, lens), atol=1e-5, rtol=0)
    torch.testing.assert_close(cheap_scores([model], [(img, txt, lens)]), got, atol=1e-6, rtol=0)


def test_the_rest_is_ordered_by_the_cheap_score():
    model = _sgraf("saf")
    img, txt, lens = _encoded(model)
    (short,) = shortlist_similarities([model], [(img, txt, lens)], 2)
    mask = _oracle_mask(model, img, txt, lens, 2)
    cheap = _cheap_oracle(model, img, txt, lens)
    torch.testing.assert_close(short[~mask] - short[~mask].max(), cheap[~mask] - cheap[~mask].max(),
                               atol=1e-5, rtol=0)


def test_other_backbones_shortlist_by_the_cosine_of_their_global_vectors():
    model = _Wrapped(_sgraf("sgr")).eval()
    img, txt, lens = _encoded(model.inner)
    gi, gt = global_vectors(model, img, txt, lens)
    torch.testing.assert_close(cheap_scores([model], [(img, txt, lens)]), gi @ gt.t(), atol=1e-6, rtol=0)


def test_mask_chunks_do_not_change_it():
    cheap = torch.randn(11, 23, generator=torch.Generator().manual_seed(0))
    whole = shortlist_mask(cheap, 3, chunk=1000)
    assert torch.equal(shortlist_mask(cheap, 3, chunk=2), whole)
    assert bool(whole.sum(1).ge(3).all()) and bool(whole.sum(0).ge(3).all())


def test_rank_metrics_read_the_shortlist_matrix():
    model = _sgraf("sgr")
    img, txt, lens = _encoded(model)
    ci = torch.arange(N_TXT) % N_IMG
    exact = similarity_matrix(model, img, txt, lens)
    (full,) = shortlist_similarities([model], [(img, txt, lens)], N_TXT)
    assert retrieval_metrics(full, ci, ks=(1, 2, 3)) == pytest.approx(retrieval_metrics(exact, ci, ks=(1, 2, 3)))
    (short,) = shortlist_similarities([model], [(img, txt, lens)], 3)
    mask = _oracle_mask(model, img, txt, lens, 3)
    # t2i: a truth among the caption's candidates moves up by the items the shortlist left out ahead of
    # it; a truth outside them ranks after every candidate.
    hit = mask[ci, torch.arange(N_TXT)]
    short_r, exact_r = t2i_ranks(short, ci), t2i_ranks(exact, ci)
    assert bool(hit.any()) and bool((~hit).any())
    assert bool((short_r[hit] <= exact_r[hit]).all())
    assert bool((short_r[~hit] >= mask.sum(0)[~hit]).all())
    missed_ahead = ((exact > exact[ci, torch.arange(N_TXT)]) & ~mask).sum(0)
    assert torch.equal(short_r[hit], exact_r[hit] - missed_ahead[hit])


def test_networks_of_an_ensemble_share_one_shortlist():
    a, b = _sgraf("sgr", seed=0), _sgraf("saf", seed=3)
    enc_a, enc_b = _encoded(a), _encoded(b)
    sa, sb = shortlist_similarities([a, b], [enc_a, enc_b], 3)
    def z(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean()) / x.std()

    mask = shortlist_mask((z(_cheap_oracle(a, *enc_a)) + z(_cheap_oracle(b, *enc_b))) / 2, 3)
    torch.testing.assert_close(sa[mask], similarity_matrix(a, *enc_a)[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(sb[mask], similarity_matrix(b, *enc_b)[mask], atol=1e-5, rtol=0)
    mean = (sa + sb) / 2
    assert float(mean[~mask].max()) < float(mean[mask].min())


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("shortlist-eval")
    write_synthetic(root, seed=5, n_train=8, n_dev=4, n_test=12, n_regions=4, feat_dim=8, n_concepts=6)
    split = load_precomp(root, "test")
    return split, Vocabulary.build(split.captions, min_count=1)


def test_evaluate_method_in_shortlist_mode(tiny_split):
    split, vocab = tiny_split
    torch.manual_seed(0)
    sgraf = SGRAF(vocab_size=len(vocab), img_dim=8, embed_size=16, word_dim=8, sim_dim=8, num_regions=4)
    exact = evaluate_method([sgraf], split, vocab)
    every = evaluate_method([sgraf], split, vocab, settings=EvalConfig(mode="shortlist", shortlist_k=10**6))
    assert every == pytest.approx(exact)
    some = evaluate_method([sgraf], split, vocab, settings=EvalConfig(mode="shortlist", shortlist_k=2))
    assert some != pytest.approx(exact)
    vse = VSE(vocab_size=len(vocab), img_dim=8, embed_size=16, word_dim=8)  # a dot product: stays exact
    assert evaluate_method([vse], split, vocab, settings=EvalConfig(mode="shortlist", shortlist_k=1)) == (
        evaluate_method([vse], split, vocab)
    )


def test_c_config_keys_parse_and_bad_values_are_one_line_errors():
    cfg = load_config("flickr-dev-sgraf", ["eval.mode=shortlist", "eval.shortlist_k=20"])
    assert (cfg.eval.mode, cfg.eval.shortlist_k) == ("shortlist", 20)
    assert (load_config("demo").eval.mode, load_config("demo").eval.shortlist_k) == ("exact", 50)
    for override, key in (("eval.mode=fast", "eval.mode"), ("eval.shortlist_k=0", "eval.shortlist_k"),
                          ("eval.shortlist_k=-3", "eval.shortlist_k"), ("eval.shortlist_k=2.5", "eval.shortlist_k"),
                          ("eval.shortlist_k=true", "eval.shortlist_k")):
        with pytest.raises(InputError) as err:
            load_config("demo", [override])
        assert key in str(err.value) and "\n" not in str(err.value) and str(err.value).count("expected") == 1
    with pytest.raises(InputError):
        shortlist_mask(torch.zeros(2, 2), 0)
