"""The text formats (word2vec text, GloVe, fastText ``.vec``): complete lines are cut into
chunks of about a block each, every chunk is parsed on its own (words split off, numbers read
by :mod:`.decimals`) and the rows are collected in order. Big files are parsed by several
processes through :mod:`kxtool.parallel`; a chunk is the task.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import parallel
from ..errors import KxError
from ..textio import input_size
from .collect import _Collector, _decode_words
from .decimals import _Bad, _is_number, _numbers

_PARALLEL_MIN = 96 << 20  # text files from this size are parsed by several processes
_WINDOW = 2  # chunks in flight per worker: one in hand, one waiting for it


def _workers(p: str, workers: int | None) -> int:
    """How many processes parse a text file: 1 for small files, else one per core (max 8)."""
    if workers is not None:
        return max(1, int(workers))
    if p == "-":
        return 1
    try:
        size = os.path.getsize(p)
    except OSError:
        return 1
    if input_size(p) is None:
        size *= 3  # compressed: text expands about threefold
    if size < _PARALLEL_MIN:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _parse_text(
    first: bytes,
    rest: Iterator[bytes],
    name: str,
    count: int | None,
    dim: int,
    limit: int | None,
    coll: _Collector,
    workers: int,
) -> None:
    header_lines = 1 if count is not None else 0
    cap = limit
    if count is not None:
        cap = count + 1 if cap is None else min(cap, count + 1)  # one extra line catches excess

    def chunks() -> Iterator[tuple[int, bytes]]:
        """``(lines before, chunk of complete lines without the final newline)``, capped."""
        lines_before = header_lines
        carry = b""
        for block in itertools.chain((first,), rest):
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            chunk = data[:cut]
            n = chunk.count(b"\n") + 1
            if cap is not None and lines_before - header_lines + n >= cap:
                chunk = _first_lines(chunk, cap - (lines_before - header_lines))
                yield lines_before, chunk
                return
            yield lines_before, chunk
            lines_before += n
        if carry.strip():
            yield lines_before, carry

    blank_at: int | None = None  # a blank line seen after the last row (fine at the very end)
    try:
        executor = parallel.executor(workers, dim)
    except OSError as e:
        raise KxError(f"cannot start a vectors parsing process: {e}") from None
    with executor:
        results = executor.map(_chunk_task, chunks(), window=_WINDOW * workers)
        try:
            for lines_before, res in results:
                if res[0] == "bad":
                    raise KxError(f"{name}:{lines_before + res[1] + 1}: {res[2]}")
                _, words_blob, values, trailing = res
                if len(values) and blank_at is not None:
                    raise KxError(f"{name}:{blank_at}: blank line")
                if trailing is not None and blank_at is None:
                    blank_at = lines_before + trailing + 1
                if len(values):
                    coll.add(*_decode_words(words_blob), values)
        except parallel.WorkerLost:
            raise KxError(
                "a vectors parsing process died (out of memory?); try --workers 1"
            ) from None
        finally:
            results.close()

    if count is not None:
        if coll.rows > count:
            raise KxError(
                f"{name}:{header_lines + count + 1}: more vectors than the {count} announced by"
                " the header"
            )
        if coll.rows < count and (limit is None or coll.rows < limit):
            raise KxError(
                f"{name}: the header announces {count} vectors but the file has {coll.rows}"
                " (truncated?)"
            )
    if coll.rows == 0:
        raise KxError(f"{name}: no vectors found")


def _first_lines(chunk: bytes, n: int) -> bytes:
    """The first ``n`` (>= 1) lines of ``chunk``, without the final newline."""
    pos = -1
    for _ in range(n):
        pos = chunk.find(b"\n", pos + 1)
        if pos < 0:
            return chunk
    return chunk[:pos]


def _chunk_task(dim: int, item: tuple[int, bytes]) -> tuple[int, tuple[Any, ...]]:
    """The task of :mod:`kxtool.parallel` for a chunk ``(lines before, chunk)``:
    ``(lines before, _chunk_job(chunk, dim))``."""
    lines_before, chunk = item
    return lines_before, _chunk_job(chunk, dim)


def _chunk_job(chunk: bytes, dim: int) -> tuple[Any, ...]:
    """Parse complete text lines (a worker's job; pure, so it can run in another process).

    Returns ``("ok", words joined by newlines, (k, dim) float32 values, index of the first
    trailing blank line or None)`` or ``("bad", line index in the chunk, message)``.
    """
    try:
        return ("ok", *_chunk_rows(chunk, dim))
    except _Bad as bad:
        return ("bad", bad.row, bad.message)


def _chunk_rows(chunk: bytes, dim: int) -> tuple[bytes, np.ndarray, int | None]:
    lines = chunk.split(b"\n")
    parts = [ln.split(None, 1) for ln in lines]
    trailing = None
    if any(len(pp) != 2 for pp in parts):
        end = len(parts)
        while end and not parts[end - 1]:
            end -= 1
        if end < len(parts):
            trailing = end
        for i in range(end):
            if len(parts[i]) != 2:
                if not parts[i]:
                    raise _Bad(i, "blank line")
                raise _Bad(i, f"expected a word and {dim} numbers, found 1 field")
        parts = parts[:end]
        if not parts:
            return b"", np.empty((0, dim), dtype=np.float32), trailing
    words = [pp[0] for pp in parts]
    rests = [pp[1] for pp in parts]
    try:
        values = _numbers(b"\n".join(rests), len(rests), dim)
    except _Bad as bad:
        # A few files (GloVe 840B) have words with spaces in them ("at name@domain.com"): a
        # line with more than dim values whose extra leading fields are not all numbers.
        if bad.counts is None or not _join_spaced_words(words, rests, bad.counts, dim):
            raise
        values = _numbers(b"\n".join(rests), len(rests), dim)
    return b"\n".join(words), values, trailing


def _join_spaced_words(words: list[bytes], rests: list[bytes], counts: Any, dim: int) -> bool:
    """Move the leading fields of over-long lines into their word; False if any line is bad."""
    for i in np.flatnonzero(counts != dim).tolist():
        toks = rests[i].split()
        extra = len(toks) - dim
        if extra <= 0 or all(_is_number(t) for t in toks[:extra]):
            return False
        words[i] = b" ".join([words[i], *toks[:extra]])
        rests[i] = b" ".join(toks[extra:])
    return True
