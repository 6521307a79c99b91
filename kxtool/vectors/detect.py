"""Which format a vectors file is in, decided on the head of its (decompressed) data."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from ..errors import KxError
from .decimals import _is_number
from .kxv import MAGIC

_TEXT_BYTES = np.zeros(256, dtype=bool)
_TEXT_BYTES[[9, 10, 13]] = True
_TEXT_BYTES[32:127] = True

_INT = re.compile(rb"[+-]?[0-9]+")
_BOM = b"\xef\xbb\xbf"
_DETECT_BYTES = 1 << 20  # the head of the data that the format is decided on (or all of it)
_DETECT_LINES = 20  # lines (or binary records) of the head checked for agreement


def _read_head(blocks: Iterator[bytes]) -> tuple[bytes, bool]:
    """The head of the data that the format is decided on: whole blocks up to at least
    ``_DETECT_BYTES`` (the rest of ``blocks`` is left unread), without a UTF-8 byte order mark,
    and whether it is all of the data."""
    pieces: list[bytes] = []
    got = 0
    complete = True
    for b in blocks:
        pieces.append(b)
        got += len(b)
        if got >= _DETECT_BYTES:
            complete = False
            break
    head = b"".join(pieces)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    return head, complete


def _looks_like_text_row(line: bytes, dim: int) -> bool:
    """A word and ``dim`` numbers (a word may have spaces, as in GloVe 840B, if the extra
    fields are not all numbers)."""
    toks = line.split()
    if len(toks) < dim + 1 or not all(_is_number(t) for t in toks[len(toks) - dim :]):
        return False
    extra = toks[1 : len(toks) - dim]
    return not extra or not all(_is_number(t) for t in extra)


def _rows_agree(data: bytes, dim: int, complete: bool) -> bool:
    """Whether the first lines of ``data`` (up to ``_DETECT_LINES``; a last line that may be
    cut off is left out unless ``complete``) are all text rows of ``dim`` numbers."""
    lines = data.split(b"\n", _DETECT_LINES)
    if len(lines) > _DETECT_LINES or not complete:
        lines = lines[:-1]
    lines = [ln for ln in lines if ln.strip()]
    return bool(lines) and all(_looks_like_text_row(ln, dim) for ln in lines)


def _binary_agrees(
    data: bytes, count: int, dim: int, complete: bool, size: int | None, hlen: int
) -> bool:
    """Whether ``data`` (what follows a ``count dim`` header of ``hlen`` bytes) reads as
    word2vec binary records: a word, a space, ``4 * dim`` bytes (then an optional newline).

    When ``data`` is the whole file (``complete``), exactly ``count`` records must fill it.
    Otherwise the first records in hand must read, one of their vectors must have a byte that
    text never has (text read as records always looks like text), and when the file size is
    known it must hold ``count`` records of at least the smallest size (a one-byte word) and of
    at most a quarter and 16 bytes more than those seen on average (later words are longer
    than the first, frequent ones). Text with words beyond ASCII, read as records, passes the
    first checks; its lines, written in decimals, are about twice the size of binary records
    of the same dimension, which the last check sees from about 10 dimensions up.
    """
    rec = 4 * dim
    pos = r = 0
    untextlike = False
    n = len(data)
    while r < count and (complete or r < _DETECT_LINES):
        while pos < n and data[pos] in b"\n\r":
            pos += 1
        sp = data.find(b" ", pos, pos + 65536)
        if sp < 0 or sp + 1 + rec > n:
            break
        if sp == pos:
            return False
        if not untextlike:
            vec = np.frombuffer(data, np.uint8, rec, sp + 1)
            untextlike = not _TEXT_BYTES[vec].all()
        pos = sp + 1 + rec
        r += 1
    if complete:
        return r == count and not data[pos:].strip()
    if r == 0 or not untextlike:
        return False
    if size is not None:
        body = size - hlen
        return count * (2 + rec) <= body <= count * (1.25 * pos / r + 16)
    return True


def _refuse_foreign(head: bytes, name: str) -> None:
    """A clear error for array files that hold numbers without their words."""
    if head.startswith(b"\x93NUMPY"):
        what = "a NumPy .npy array (it has no vocabulary)"
    elif head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what = "a zip archive (a NumPy .npz file?)"
    else:
        return
    raise KxError(
        f"{name}: {what}, which kxtool does not read as word vectors: it reads word2vec text or"
        " binary, GloVe text and fastText .vec files (plain, gzip, bzip2, xz or zstd) and its"
        " own .kxv format"
    )


def _detect(
    head: bytes, name: str, *, complete: bool = True, size: int | None = None
) -> tuple[str, int | None, int, int]:
    """``(format, count, dim, header_bytes)`` from the head of the decompressed data.

    ``complete`` says that ``head`` is all of it; ``size`` is the file's size when known. A
    first line of two integers is a ``count dim`` header when what follows agrees with it:
    text rows of ``dim`` numbers (word2vec text, fastText), or binary records (see
    :func:`_binary_agrees`). Otherwise, if every line is a word and one number, the file is a
    1-dimensional GloVe file whose first word is a number (``2 5``: the word "2"). A header
    with a count or dimension below 1 is an error unless the file reads as such a GloVe file.
    A 1-dimensional word2vec text file is also a valid 1-dimensional GloVe file: it is taken for
    word2vec when its count agrees with its lines (always, when the file is bigger than the head).
    """
    if head.startswith(MAGIC):
        raise KxError(f"{name}: a compressed kxtool vectors file: decompress it first")
    _refuse_foreign(head, name)
    nl = head.find(b"\n")
    first = head if nl < 0 else head[:nl]
    toks = first.split()
    if not toks:
        raise KxError(f"{name}:1: expected a word and its vector (or a 'count dim' header)")
    if len(toks) == 2 and _INT.fullmatch(toks[0]) and _INT.fullmatch(toks[1]):
        count, dim = int(toks[0]), int(toks[1])
        rest = b"" if nl < 0 else head[nl + 1 :]
        glove1 = _rows_agree(head, 1, complete)
        if count < 1 or dim < 1:
            if glove1:
                return "glove", None, 1, 0
            raise KxError(
                f"{name}:1: invalid header '{count} {dim}': the vector count and the dimension"
                " must be positive"
            )
        if not rest.strip():
            raise KxError(f"{name}: no vectors after the header '{count} {dim}'")
        body = rest.lstrip(b"\n")
        if _rows_agree(body, dim, complete):
            if dim == 1 and glove1 and complete:
                rows = sum(1 for ln in rest.split(b"\n") if ln.strip())
                if rows != count:
                    return "glove", None, 1, 0
            return "word2vec", count, dim, nl + 1
        if _binary_agrees(rest, count, dim, complete, size, nl + 1):
            return "word2vec-binary", count, dim, nl + 1
        if glove1:
            return "glove", None, 1, 0
        # Neither reads cleanly: the parser that the first record suggests names the problem.
        sp = body.find(b" ")
        region = body[sp + 1 : sp + 1 + 4 * dim] if sp >= 0 else b""
        if sp > 0 and region and not _TEXT_BYTES[np.frombuffer(region, np.uint8)].all():
            return "word2vec-binary", count, dim, nl + 1
        return "word2vec", count, dim, nl + 1
    if len(toks) < 2:
        raise KxError(f"{name}:1: expected a word and its vector, found 1 field")
    return "glove", None, len(toks) - 1, 0
