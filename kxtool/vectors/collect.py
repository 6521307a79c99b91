"""Collecting parsed rows: the words decoded (invalid UTF-8 replaced, and warned about) and
checked for duplicates, the rows kept in memory or streamed straight into a cache file."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from ..errors import KxError, kxwarn
from ..textio import os_error
from .core import Vectors
from .kxv import _DATA_OFFSET, _check_words_storable, _FileSink, _kxv_vectors, _read_kxv_header


class _CacheTarget:
    """Where a parse may write its cache: candidate paths tried in order."""

    def __init__(
        self,
        paths: list[str],
        ident: dict[str, Any] | None,
        limit: int | None,
        *,
        durable: bool = False,
        strict: bool = False,
    ) -> None:
        self.paths = paths
        self.ident = ident
        self.limit = limit
        self.durable = durable
        self.strict = strict  # True: failing to write is an error (explicit conversion)


class _Collector:
    def __init__(self, dim: int, expected: int | None, target: _CacheTarget | None) -> None:
        self.dim = dim
        self.rows = 0
        self.words: list[str] = []
        self.index: dict[str, int] = {}
        self.target = target
        self.sink: _FileSink | None = None
        self.chunks: list[np.ndarray] = []
        self.prealloc: np.ndarray | None = None
        self.name = "<vectors>"
        self.position = lambda row: f"line {row + 1}"
        self.invalid_utf8 = 0  # words that were not valid UTF-8 (replaced), and the first one
        self.first_invalid = ""
        if target is not None:
            for path in target.paths:
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    self.sink = _FileSink(path, dim, durable=target.durable)
                    break
                except OSError as e:
                    if target.strict:
                        raise os_error(e, path, "cannot write") from None
        if self.sink is None and expected is not None and expected <= (1 << 31):
            with contextlib.suppress(MemoryError, ValueError):
                self.prealloc = np.empty((expected, dim), dtype=np.float32)

    def add(self, words: list[str], invalid: list[int], m: np.ndarray) -> None:
        """Append rows; ``invalid`` are the indices of ``words`` that were not valid UTF-8."""
        k = len(words)
        row0 = self.rows
        if invalid:
            if not self.invalid_utf8:
                self.first_invalid = self.position(row0 + invalid[0])
            self.invalid_utf8 += len(invalid)
        self.words.extend(words)
        self.index.update(zip(words, range(row0, row0 + k), strict=True))
        if len(self.index) != row0 + k:
            self._duplicate()
        if self.sink is not None:
            try:
                self.sink.add(m)
            except OSError as e:
                if self.target is not None and self.target.strict:
                    raise os_error(e, self.sink.final, "cannot write") from None
                self._to_memory()
        if self.sink is None:
            if self.prealloc is not None and row0 + k <= len(self.prealloc):
                self.prealloc[row0 : row0 + k] = m
            else:
                if self.prealloc is not None:
                    self.chunks.append(self.prealloc[:row0])
                    self.prealloc = None
                self.chunks.append(np.array(m, dtype=np.float32, copy=True))
        self.rows = row0 + k

    def _duplicate(self) -> None:
        seen: dict[str, int] = {}
        for i, w in enumerate(self.words):
            j = seen.setdefault(w, i)
            if j != i:
                raise KxError(
                    f"{_where(self.name, self.position(i))}: duplicate word {w!r}"
                    f" (first at {self.position(j)})"
                )
        raise AssertionError("duplicate not found")  # pragma: no cover

    def _to_memory(self) -> None:
        """A cache write failed: keep the rows written so far in memory and go on."""
        sink = self.sink
        assert sink is not None
        self.sink = None
        try:
            with contextlib.suppress(Exception):
                sink.f.flush()
            src = sink.tmp if os.path.exists(sink.tmp) else sink.final
            count = self.rows * self.dim
            rows = np.fromfile(src, dtype="<f4", count=count, offset=_DATA_OFFSET)
            if rows.size != count:
                raise KxError(f"{self.name}: lost vectors while writing the cache")
            self.chunks = [rows.reshape(self.rows, self.dim)]
        finally:
            sink.abort()

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()
            self.sink = None

    def invalid_note(self) -> dict[str, Any] | None:
        if not self.invalid_utf8:
            return None
        return {"words": self.invalid_utf8, "first": self.first_invalid}

    def finish(self, name: str, fmt: str) -> Vectors:
        words = self.words
        if self.sink is not None:
            target = self.target
            assert target is not None
            meta = {
                "source": None if target.ident is None else {**target.ident, "format": fmt},
                "limit": target.limit,
                "invalid_utf8": self.invalid_note(),
            }
            try:
                _check_words_storable(words, self.sink.final)
                path = self.sink.finish(words, meta)
                header = _read_kxv_header(path, strict=True)
                assert header is not None
                vec = _kxv_vectors(path, header, None, words=words)
                vec.source, vec.format, vec._index = name, fmt, self.index
                return vec
            except (OSError, KxError) as e:
                if target.strict:
                    if isinstance(e, OSError):
                        raise os_error(e, self.sink.final, "cannot write") from None
                    raise
                self._to_memory()
        if self.prealloc is not None:
            matrix = self.prealloc[: self.rows]
        elif len(self.chunks) == 1:
            matrix = self.chunks[0]
        elif self.chunks:
            matrix = np.concatenate(self.chunks)
            self.chunks = []
        else:
            matrix = np.empty((0, self.dim), dtype=np.float32)
        return Vectors(words, matrix, source=name, _index=self.index, format=fmt)


def _where(name: str, position: str) -> str:
    """``file:12`` for a line, ``file: record 12`` for a binary record."""
    if position.startswith("line "):
        return f"{name}:{position[5:]}"
    return f"{name}: {position}"


def _decode_words(words: list[bytes] | bytes) -> tuple[list[str], list[int]]:
    """Words given as a list or joined by newlines, decoded as UTF-8 (invalid bytes replaced
    by U+FFFD), and the indices of the words that were not valid UTF-8."""
    if not isinstance(words, bytes):
        if any(b"\n" in w for w in words):  # possible in binary files only
            return _decode_each(words)
        words = b"\n".join(words)
    try:
        return words.decode("utf-8").split("\n"), []
    except UnicodeDecodeError:
        return _decode_each(words.split(b"\n"))


def _decode_each(words: list[bytes]) -> tuple[list[str], list[int]]:
    out: list[str] = []
    bad: list[int] = []
    for i, w in enumerate(words):
        try:
            out.append(w.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(w.decode("utf-8", "replace"))
            bad.append(i)
    return out, bad


def _warn_invalid_utf8(name: str, note: Any) -> None:
    """The warning for words that were not valid UTF-8 (given when parsed and when cached)."""
    if not isinstance(note, dict) or not isinstance(note.get("words"), int) or note["words"] < 1:
        return
    n, first = note["words"], str(note.get("first", ""))
    where = f" (the first {'on' if first.startswith('line') else 'in'} {first})" if first else ""
    kxwarn(
        f"{name}: {n} {'word is' if n == 1 else 'words are'} not valid UTF-8{where}; their"
        " invalid bytes were replaced by U+FFFD"
    )
