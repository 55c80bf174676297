"""D2S-VSE's student and teacher around a pooled-caption backbone (VSE): the dense-to-sparse wrapper.

:class:`DistilledText` is a :class:`Backbone` that evaluates like the backbone it wraps, with two
additions: a *student head* that gives the caption embedding, and a frozen *teacher*, a copy of the
backbone whose ``encode_texts`` embeds the dense text. D2S-VSE (:mod:`noisycorr.methods.d2s`) loads
its stage-1 weights into both and distils the teacher's dense embedding into the student's.

Student heads (``head``):

- ``prompt``: the authors' idea, on our BiGRU: ``P`` learned prompt vectors attend, through a small
  transformer decoder, to the caption's word features; the mean of the decoded prompts, projected,
  is added to the backbone's own pooled caption vector and the sum normalised. The projection
  starts at zero, so the student starts exactly as the stage-1 caption embedding (the authors'
  student is the prompt output alone, trained from scratch on a pretrained BERT).
- ``plain``: no head, the backbone's pooled caption embedding is the student (the simpler
  equivalent: distillation acts on the BiGRU and GPO directly).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from noisycorr.backbones.base import Backbone
from noisycorr.backbones.ops import l2norm, length_mask
from noisycorr.errors import InputError

HEADS = ("prompt", "plain")


class PromptHead(nn.Module):
    """Learned prompts that read a caption's words through a transformer decoder.

    Args:
        dim: word feature size = embedding size.
        n_prompts: number of learned prompt vectors P.
        layers: decoder layers.
        heads: attention heads (must divide ``dim``).
    """

    def __init__(self, dim: int, n_prompts: int = 16, layers: int = 1, heads: int = 4):
        super().__init__()
        if n_prompts < 1 or layers < 1 or heads < 1 or dim % heads:
            raise InputError("method", f"prompt_tokens >= 1, prompt_layers >= 1, prompt_heads dividing {dim}",
                             f"{n_prompts}, {layers}, {heads}")
        self.prompts = nn.Parameter(torch.randn(n_prompts, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, dim) word features, (B,) lengths -> (B, dim) offset to the pooled caption vector."""
        queries = self.prompts.to(words.dtype).expand(words.shape[0], -1, -1)
        pad = ~length_mask(lengths.to(words.device), words.shape[1])
        decoded = self.decoder(queries, words, memory_key_padding_mask=pad)  # (B, P, dim)
        return self.out(decoded.mean(dim=1))


class DistilledText(Backbone):
    """A backbone with a student caption head and a frozen teacher copy (see the module docstring).

    Args:
        base: the wrapped backbone; it must expose ``encode_words`` and ``pool_words`` (VSE does).
        head: ``prompt`` or ``plain``.
        n_prompts, layers, heads: :class:`PromptHead` sizes.

    While training with gradients, the last caption embedding is kept for :meth:`cached_texts`, so
    that a loss added after the method's own step need not encode the batch twice. The teacher is
    frozen, so a method may embed every pair's dense text once (:meth:`keep_taught`) and look the
    vectors up by pair index (:meth:`taught`) instead of running the teacher over the long texts each step.
    """

    def __init__(self, base: Backbone, *, head: str = "prompt", n_prompts: int = 16, layers: int = 1, heads: int = 4):
        super().__init__()
        if head not in HEADS:
            raise InputError("method.student_head", f"one of {list(HEADS)}", repr(head))
        if not (hasattr(base, "encode_words") and hasattr(base, "pool_words")):
            raise InputError("model.backbone", "a backbone with pooled caption vectors over word features (vse)",
                             type(base).__name__)
        self.image_input = base.image_input
        self.base = base
        self.head = PromptHead(int(base.embed_size), n_prompts, layers, heads) if head == "prompt" else None
        self.teacher = copy.deepcopy(base)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._cache: tuple[Tensor, Tensor] | None = None
        self._taught: tuple[tuple[tuple[int, int], ...], Tensor] | None = None  # (teacher version, (N, embed))

    def train(self, mode: bool = True) -> DistilledText:
        """Set the mode of the student; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def encode_images(self, images: Tensor) -> Tensor:
        """As the wrapped backbone."""
        return self.base.encode_images(images)

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) token ids, (B,) lengths -> (B, embed) student caption vectors (unit norm)."""
        if self.head is None:
            emb = self.base.encode_texts(tokens, lengths)
        else:
            words, word_lengths = self.base.encode_words(tokens, lengths)
            emb = l2norm(self.base.pool_words(words, word_lengths) + self.head(words, word_lengths), dim=-1)
        self._cache = (tokens, emb) if (self.training and torch.is_grad_enabled()) else None
        return emb

    def cached_texts(self, tokens: Tensor) -> Tensor | None:
        """The embedding of the last training-mode ``encode_texts`` call when it was on this very
        ``tokens`` tensor, else None; the cache is emptied."""
        cache, self._cache = self._cache, None
        return cache[1] if cache is not None and cache[0] is tokens else None

    @torch.no_grad()
    def teach(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, L) dense-text token ids, (B,) lengths -> (B, embed) frozen teacher vectors."""
        return self.teacher.encode_texts(tokens, lengths)

    def _teacher_version(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), p._version) for p in self.teacher.parameters())

    def keep_taught(self, vectors: Tensor) -> None:
        """Keep (N, embed) teacher vectors of every training pair (row = pair index) for :meth:`taught`,
        valid while the teacher's weights stay as they are now."""
        self._taught = (self._teacher_version(), vectors)

    @property
    def has_taught(self) -> bool:
        """Whether teacher vectors are kept for the teacher's current weights."""
        return self._taught is not None and self._taught[0] == self._teacher_version()

    def taught(self, index: Tensor) -> Tensor | None:
        """(B,) pair indices -> (B, embed) kept teacher vectors, or None when none are kept for the
        teacher's current weights."""
        if self._taught is None or not self.has_taught:
            return None
        vectors = self._taught[1]
        return vectors[index.to(vectors.device, torch.long)]

    def similarity(self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None) -> Tensor:
        """As the wrapped backbone."""
        return self.base.similarity(img_emb, txt_emb, txt_lengths)

    def global_embeddings(
        self, img_emb: Tensor, txt_emb: Tensor, txt_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """As the wrapped backbone."""
        return self.base.global_embeddings(img_emb, txt_emb, txt_lengths)
