"""Caption tokenizer and the SCAN/NCR vocabulary (JSON ``word2idx`` / ``idx2word`` / ``idx``)."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from noisycorr.data.paths import atomic_write_bytes
from noisycorr.errors import InputError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
MASK = "<mask>"
SPECIALS = (PAD, START, END, UNK)

# Abbreviations that NLTK's English Punkt model does not end a sentence after. Punkt learned them
# from news text; this is the part of that list that occurs in image captions (the "." kept in
# tokens such as "mr.", "st.", "u.s." of the released vocabularies shows where Punkt did not split).
# fmt: off
_ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "inc", "co", "corp", "ltd", "bros", "no",
    "mt", "ft", "ave", "blvd", "rd", "gen", "gov", "sen", "rep", "lt", "col", "sgt", "capt", "cmdr",
    "prof", "rev", "messrs", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "u.s", "u.k", "u.n", "e.g", "i.e", "a.m", "p.m", "j.p", "t.j",
))
# fmt: on
_LEADING_PUNCT = "(\"`{[:;&#*@)}]-,'"  # stripped from a word's front before the abbreviation test
# A word ending in a period (plus closers), whitespace, then more text: a possible sentence end.
_CANDIDATE = re.compile(r"(\S*)\.[\"')\]}]*\s+(?=(\S))")
# Closing quotes/brackets after the space that Punkt moves back onto the sentence they close.
_REALIGN = re.compile(r"[\"')\]}]+(?:\s+|$)")
_NUMBER = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$")
_INITIAL = re.compile(r"^[^\W\d]\.$")


@lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _ends_sentence(word: str, next_char: str) -> bool:
    """Punkt's decision for a period-final ``word`` followed by a word starting with ``next_char``.

    Mirrors Punkt's first pass (a period-final word ends a sentence unless it is an ellipsis or a
    known abbreviation) and its orthographic second pass as it plays out on lower-cased text: an
    initial ("a.") or a number ("3.") followed by a lower-case word or punctuation is not a
    sentence end.
    """
    core = word.lstrip(_LEADING_PUNCT)
    if not core or core.endswith(".."):
        return False
    stem = core[:-1]
    if stem in _ABBREVIATIONS or stem.rsplit("-", 1)[-1] in _ABBREVIATIONS:
        return False
    if _INITIAL.match(core) or _NUMBER.match(core):
        return not (next_char.islower() or next_char in ";:,.!?")
    return True


def _sentences(text: str) -> list[str]:
    """Split ``text`` where Punkt would; only periods matter for the word tokenizer downstream."""
    cuts = []
    for m in _CANDIDATE.finditer(text):
        if _ends_sentence(m.group(1) + ".", m.group(2)):
            closer = _REALIGN.match(text, m.end())
            cuts.append(closer.end() if closer else m.end())
    if not cuts:
        return [text]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# Words the Treebank tokenizer splits although they hold only letters ("cannot" -> "can", "not").
_SPLIT_WORDS = frozenset(("cannot", "gimme", "gonna", "gotta", "lemme", "wanna"))
_PLAIN = re.compile(r"[a-z0-9]+")


def _plain_words(text: str) -> list[str] | None:
    """The tokens of a lower-cased caption of ASCII letters and digits only, with at most a final
    period (``"a dog ."``, ``"a dog."``): its words, the period apart, as the Treebank tokenizer gives
    them; None for any other caption (those go through NLTK). Tokenizing is the one per-caption loop
    of loading, and most captions of a large set take this path (tested against NLTK)."""
    words = text.split()
    if not words:
        return None
    last = words[-1]
    if last == "." and len(words) > 1:
        words.pop()
    elif last.endswith(".") and _PLAIN.fullmatch(last, 0, len(last) - 1):
        words[-1] = last[:-1]
    else:
        last = ""
    if not all(_PLAIN.fullmatch(w) for w in words) or not _SPLIT_WORDS.isdisjoint(words):
        return None
    if last.endswith("."):
        words.append(".")
    return words


def tokenize(caption: str) -> list[str]:
    """Lower-case and split a caption into words as ``nltk.word_tokenize(caption.lower())`` does.

    NLTK's ``word_tokenize`` first splits sentences with the Punkt model (a downloaded data file),
    then runs the Treebank-style ``NLTKWordTokenizer`` on each sentence, which separates only the
    final period of its input. This function replaces the Punkt step by a rule-based split after
    periods (see :func:`_ends_sentence`), so that "a dog. a cat ." gives
    ``["a", "dog", ".", "a", "cat", "."]`` without any data download.
    """
    text = caption.lower()
    plain = _plain_words(text)
    if plain is not None:
        return plain
    tok = _word_tokenizer()
    if "." not in text:
        return tok.tokenize(text)
    out: list[str] = []
    for sentence in _sentences(text):
        out.extend(tok.tokenize(sentence))
    return out


class Vocabulary:
    """Word <-> id map with ``<pad>``=0, ``<start>``=1, ``<end>``=2, ``<unk>``=3.

    Args:
        words: words after the four specials, in id order (duplicates and specials skipped).
    """

    def __init__(self, words: Iterable[str] = ()):
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []
        for w in (*SPECIALS, *words):
            self.add_word(w)

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def __call__(self, word: str) -> int:
        """Id of ``word``; ``<unk>`` (3) when it is not in the vocabulary."""
        return self.word2idx.get(word, 3)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.idx2word == other.idx2word

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    @property
    def idx(self) -> int:
        """Number of ids in use (NCR's ``idx`` field)."""
        return len(self.idx2word)

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def add_word(self, word: str) -> int:
        """Append ``word`` if new (e.g. ``"<mask>"`` at run time) and return its id."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = len(self.idx2word)
            self.word2idx[word] = idx
            self.idx2word.append(word)
        return idx

    def encode(self, caption: str) -> list[int]:
        """Token ids of a caption: ``[<start>] + ids + [<end>]``, unknown words as ``<unk>``."""
        get = self.word2idx.get
        return [1, *(get(t, 3) for t in tokenize(caption)), 2]

    def encode_many(self, captions: Iterable[str]) -> list[list[int]]:
        """:meth:`encode` for each caption (identical captions are tokenized once)."""
        cache: dict[str, list[int]] = {}
        out = []
        for c in captions:
            ids = cache.get(c)
            if ids is None:
                ids = cache[c] = self.encode(c)
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids`` (padding dropped)."""
        return [self.idx2word[i] for i in ids if i != 0]

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 4) -> Vocabulary:
        """Vocabulary of the words seen at least ``min_count`` times, in first-seen order (as NCR)."""
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(tokenize(c))
        return cls(w for w, n in counts.items() if n >= min_count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "word2idx": dict(self.word2idx),
            "idx2word": {str(i): w for i, w in enumerate(self.idx2word)},
            "idx": len(self.idx2word),
        }

    def to_json(self, path: str | Path) -> None:
        """Write the NCR JSON layout (byte-identical to ``json.dump`` of NCR's vocabulary), atomically."""
        atomic_write_bytes(path, json.dumps(self.to_dict()).encode("utf-8"))

    @classmethod
    def from_json(cls, path: str | Path) -> Vocabulary:
        """Read an NCR vocabulary JSON and check that it is consistent.

        Raises:
            InputError: not JSON, a missing ``word2idx`` / ``idx2word`` / ``idx`` key, ids that are
                not 0..idx-1, ``idx2word`` not the inverse of ``word2idx``, specials not at 0..3.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, "a vocabulary JSON file", "no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(path, "a JSON document", f"invalid JSON ({err})") from None
        if not isinstance(d, dict):
            raise InputError(path, "a JSON object", type(d).__name__)
        for key in ("word2idx", "idx2word", "idx"):
            if key not in d:
                raise InputError(path, f"the key {key!r}", "no such key")
        w2i, i2w, n = d["word2idx"], d["idx2word"], d["idx"]
        if not isinstance(w2i, dict) or not isinstance(i2w, dict):
            raise InputError(path, "objects under 'word2idx' and 'idx2word'", "another JSON type")
        if not isinstance(n, int) or n != len(w2i):
            raise InputError(
                path, f"'idx' equal to the {len(w2i)} words of 'word2idx'", repr(n), where="key 'idx'"
            )
        words: list[str | None] = [None] * n
        for w, i in w2i.items():
            if not isinstance(i, int) or not 0 <= i < n or words[i] is not None:
                raise InputError(path, f"distinct ids in 0..{n - 1}", repr(i), where=f"word2idx[{w!r}]")
            words[i] = w
        if len(i2w) != n:
            raise InputError(path, f"{n} entries", f"{len(i2w)}", where="key 'idx2word'")
        for i, w in enumerate(words):
            if i2w.get(str(i)) != w:
                raise InputError(path, repr(w), repr(i2w.get(str(i))), where=f"idx2word[{str(i)!r}]")
        for i, s in enumerate(SPECIALS):
            if w2i.get(s) != i:
                raise InputError(path, f"id {i}", repr(w2i.get(s)), where=f"word2idx[{s!r}]")
        vocab = cls()
        vocab.word2idx = dict(w2i)
        vocab.idx2word = [str(w) for w in words]
        return vocab
