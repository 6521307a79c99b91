"""The word2vec binary format: a ``count dim`` header line, then per word the word, a space
and ``dim`` little-endian float32 values (an optional newline after each vector is skipped)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import KxError
from .collect import _Collector, _decode_words

_BIN_BATCH = 65536


def _parse_binary(
    first: bytes,
    rest: Iterator[bytes],
    name: str,
    count: int,
    dim: int,
    limit: int | None,
    coll: _Collector,
) -> None:
    want = count if limit is None else min(count, limit)
    rec = 4 * dim
    buf = first
    pos = 0
    exhausted = False
    words_b: list[bytes] = []
    vecs: list[bytes] = []

    def flush() -> None:
        if not words_b:
            return
        row0 = coll.rows
        m = np.frombuffer(b"".join(vecs), dtype="<f4").reshape(-1, dim)
        finite = np.isfinite(m)
        if not finite.all():
            i = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise KxError(f"{name}: record {row0 + i + 1}: a value is not a finite number")
        coll.add(*_decode_words(words_b), m)
        words_b.clear()
        vecs.clear()

    r = 0
    while r < want:
        while True:
            while pos < len(buf) and buf[pos] in b"\n\r":
                pos += 1
            sp = buf.find(b" ", pos, pos + 65536)
            if sp >= 0 and sp + 1 + rec <= len(buf):
                break
            if exhausted:
                if pos >= len(buf):
                    raise KxError(
                        f"{name}: the header announces {count} vectors but the data ends after"
                        f" {r} (truncated?)"
                    )
                if sp < 0 and len(buf) - pos >= 65536:
                    raise KxError(f"{name}: record {r + 1}: no word found (not word2vec binary?)")
                raise KxError(f"{name}: record {r + 1}: truncated vector data")
            if sp < 0 and len(buf) - pos >= 65536:
                raise KxError(f"{name}: record {r + 1}: no word found (not word2vec binary?)")
            nxt = next(rest, None)
            if nxt is None:
                exhausted = True
            else:
                buf = buf[pos:] + nxt
                pos = 0
        if sp == pos:
            raise KxError(f"{name}: record {r + 1}: empty word")
        words_b.append(buf[pos:sp])
        vecs.append(buf[sp + 1 : sp + 1 + rec])
        pos = sp + 1 + rec
        r += 1
        if len(words_b) >= _BIN_BATCH:
            flush()
    flush()
