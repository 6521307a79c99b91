"""Tokenisation: jieba for Chinese, a word regex elsewhere, lowercasing and stopwords.

>>> tok = Tokenizer()
>>> tok("The cat sat on the mat.")
['cat', 'sat', 'mat']

``lang="auto"`` looks at each text: one with CJK ideographs goes through jieba (which also
splits any Latin words in it), any other through the word regex. jieba is imported and its
dictionary loaded only when the first Chinese text arrives, with its log chatter silenced.

English clitics are split as in the Penn Treebank (``don't`` -> ``do n't``), the tokenisation
of GloVe and word2vec; ``n't`` is kept, it is a negation. Stopwords are compared
case-insensitively, so ``lowercase=False`` keeps the case of the
surviving tokens but still drops ``The``. The built-in lists (``kxtool/data/stopwords_*.txt``)
leave negations in the text: "good" and "not good" should not be the same document.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from .errors import KxError

__all__ = ["Tokenizer", "has_cjk", "tokenize", "default_stopwords", "load_stopwords"]

LANGS = ("auto", "zh", "en")

# CJK Unified Ideographs and their extensions, compatibility ideographs.
_CJK_CLASS = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002a6df\U0002a700-\U0002ebef\U00030000-\U0003134f"
)
_CJK_RE = re.compile(f"[{_CJK_CLASS}]")
# A word: a decimal number ("3.5", "1,000"), or letters/digits (no underscore) with inner
# apostrophes kept ("don't", "o'clock").
_WORD_RE = re.compile(r"\d+(?:[.,]\d+)+(?![^\W_])|[^\W_]+(?:'[^\W_]+)*")
# A jieba token worth keeping has at least one letter, digit or ideograph.
_CONTENT_RE = re.compile(r"[^\W_]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# English clitics split off as the Penn Treebank tokeniser (and so GloVe and word2vec) does:
# "don't" -> "do" "n't", "it's" -> "it" "'s", "we'll" -> "we" "'ll".
_CLITIC_RE = re.compile(r"^(.+?)(n't|'s|'m|'re|'ve|'ll|'d)$", re.IGNORECASE)


def _split_clitics(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        m = _CLITIC_RE.match(t) if "'" in t else None
        if m is None:
            out.append(t)
        else:
            out += m.groups()
    return out


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains a CJK ideograph (Chinese characters, kanji, hanja)."""
    return _CJK_RE.search(text) is not None


# ---------------------------------------------------------------------------------------------
# stopwords


def _read_words(lines: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for line in lines:
        w = line.strip()
        if w and not w.startswith("#"):
            out.add(w.lower())
    return out


@cache
def _builtin(name: str) -> frozenset[str]:
    text = resources.files("kxtool").joinpath("data", f"stopwords_{name}.txt").read_text("utf-8")
    return frozenset(_read_words(text.splitlines()))


def default_stopwords() -> frozenset[str]:
    """The built-in English and Chinese stopwords (lowercase)."""
    return _builtin("en") | _builtin("zh")


def load_stopwords(path: str | os.PathLike[str]) -> frozenset[str]:
    """Stopwords from a UTF-8 file, one word per line (blank lines and ``#`` lines skipped)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise KxError(f"cannot read stopwords {p!r}: it is a directory")
    try:
        with open(p, encoding="utf-8-sig") as f:
            return frozenset(_read_words(f))
    except FileNotFoundError:
        raise KxError(
            f"stopwords file {p!r} not found (use 'default', 'none' or a file with one word"
            " per line)"
        ) from None
    except UnicodeDecodeError as e:
        raise KxError(f"cannot read stopwords {p!r}: not UTF-8 ({e.reason})") from None
    except OSError as e:
        from .textio import os_error

        raise os_error(e, p) from None


def _resolve_stopwords(stopwords: Any) -> frozenset[str]:
    if stopwords is None:
        return frozenset()
    if isinstance(stopwords, str | os.PathLike):
        s = os.fspath(stopwords)
        if s == "default":
            return default_stopwords()
        if s == "none" or s == "":
            return frozenset()
        return load_stopwords(s)
    if isinstance(stopwords, Iterable):
        return frozenset(str(w).lower() for w in stopwords)
    raise TypeError(f"stopwords must be 'default', 'none', a path or a set, not {stopwords!r}")


# ---------------------------------------------------------------------------------------------
# jieba, loaded once and quietly

_jieba_lock = threading.Lock()
_jieba_cut: Any = None


def _jieba() -> Any:
    """jieba's ``lcut``, with the dictionary loaded and the log chatter silenced."""
    global _jieba_cut
    if _jieba_cut is None:
        with _jieba_lock:
            if _jieba_cut is None:
                import logging

                try:
                    import jieba
                except ImportError:  # pragma: no cover - jieba is a dependency
                    raise KxError("Chinese text needs jieba: pip install jieba") from None
                jieba.setLogLevel(logging.WARNING)
                where = _jieba_cache_dir()
                if where is not None and getattr(jieba, "dt", None) is not None:
                    jieba.dt.tmp_dir = where  # its dictionary cache, not in $TMPDIR
                jieba.initialize()
                _jieba_cut = jieba.lcut
    return _jieba_cut


def _jieba_cache_dir() -> str | None:
    """kxtool's cache directory (``$KXTOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/kxtool``, else
    ``~/.cache/kxtool``), made if need be, for jieba's ``jieba.cache``; ``None`` (jieba's own
    default, the temporary directory) when it cannot be made."""
    from .vectors.cache import cache_dir

    where = os.path.dirname(cache_dir())
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return None
    return where if os.access(where, os.W_OK) else None


def warm_up() -> None:
    """Load jieba now (e.g. before forking worker processes)."""
    _jieba()


# ---------------------------------------------------------------------------------------------


class Tokenizer:
    """Turn a text into a list of tokens.

    ``lang``: ``"auto"`` (jieba when the text has CJK ideographs, the word regex otherwise),
    ``"zh"`` (always jieba) or ``"en"`` (always the word regex). ``lowercase``: fold case.
    ``stopwords``: ``"default"`` (built-in English + Chinese lists), ``"none"``, a file path
    (one word per line) or a set of strings; matched case-insensitively.

    >>> Tokenizer()("I don't like the cold.")
    ["n't", 'like', 'cold']
    >>> Tokenizer(stopwords="none", lowercase=False)("Don't panic")
    ['Do', "n't", 'panic']
    """

    def __init__(
        self,
        lang: str = "auto",
        lowercase: bool = True,
        stopwords: str | os.PathLike[str] | Iterable[str] | None = "default",
    ) -> None:
        if lang not in LANGS:
            raise KxError(f"unknown language {lang!r} (choose from auto, zh, en)")
        self.lang = lang
        self.lowercase = bool(lowercase)
        self.stopwords = _resolve_stopwords(stopwords)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(lang={self.lang!r}, lowercase={self.lowercase}, "
            f"stopwords=<{len(self.stopwords)} words>)"
        )

    def uses_jieba(self, text: str) -> bool:
        """Whether ``text`` would be cut by jieba."""
        return self.lang == "zh" or (self.lang == "auto" and has_cjk(text))

    def __call__(self, text: str) -> list[str]:
        raw = self._words(text)
        stop = self.stopwords
        if self.lowercase:
            out = [t.lower() for t in raw]
            return [t for t in out if t not in stop] if stop else out
        return [t for t in raw if t.lower() not in stop] if stop else raw

    def split(self, text: str) -> tuple[list[str], list[str]]:
        """The tokens of ``text`` (what calling the tokenizer gives) and the stopwords that were
        dropped from it, both in text order: a text whose tokens are ``[]`` had only stopwords
        when the second list is not empty, and no words at all when it is."""
        raw = self._words(text)
        if self.lowercase:
            raw = [t.lower() for t in raw]
        stop = self.stopwords
        kept: list[str] = []
        dropped: list[str] = []
        for t in raw:
            (dropped if stop and t.lower() in stop else kept).append(t)
        return kept, dropped

    def _words(self, text: str) -> list[str]:
        """The words of ``text`` before case folding and stopword removal."""
        text = text.translate(_APOSTROPHES)
        if self.uses_jieba(text):
            raw = [t.strip() for t in _jieba()(text)]
            return [t for t in raw if t and _CONTENT_RE.search(t)]
        raw = _WORD_RE.findall(text)
        if "'" in text:
            raw = _split_clitics(raw)
        return raw


def tokenize(text: str, **kw: Any) -> list[str]:
    """``Tokenizer(**kw)(text)`` with the tokenizer built once per distinct set of options.

    >>> tokenize("The cat sat on the mat.", stopwords="none")
    ['the', 'cat', 'sat', 'on', 'the', 'mat']
    """
    return _cached_tokenizer(tuple(sorted(kw.items(), key=lambda kv: kv[0])))(text)


def _cached_tokenizer(key: tuple[tuple[str, Any], ...]) -> Tokenizer:
    try:
        return _tok_cache_get(key)
    except TypeError:  # unhashable option (a list of stopwords): no caching
        return Tokenizer(**dict(key))


@lru_cache(maxsize=32)
def _tok_cache_get(key: tuple[tuple[str, Any], ...]) -> Tokenizer:
    return Tokenizer(**dict(key))
