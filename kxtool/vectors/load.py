"""The entry points that read a vectors file and write the kxtool format: :func:`load_vectors`
(through the cache), :func:`convert_vectors` and :func:`save_cache`, and the parse that detects
the format and hands the data to its parser."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..textio import (
    atomic_output,
    check_output,
    display_name,
    input_size,
    is_remote,
    local_path,
    os_error,
    read_blocks,
    staged_input,
    temp_dir,
    written_through,
)
from .binary_format import _parse_binary
from .cache import _cache_dirs, _cache_file, _cache_lookup_order, _source_identity, _try_cache
from .collect import _CacheTarget, _Collector, _warn_invalid_utf8
from .core import Vectors, _check_input, _check_limit
from .detect import _detect, _read_head, _refuse_foreign
from .kxv import CACHE_SUFFIX, _check_words_storable, _FileSink, _is_kxv, read_cache
from .text_format import _parse_text, _workers

_BLOCK = 16 << 20


def load_vectors(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    cache: bool = True,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Vectors:
    """Load word vectors from ``path`` (format detected; see the module docstring).

    ``limit`` keeps the first ``limit`` words. ``cache`` reads and writes the cache (never for
    stdin, ``-``). ``progress(phase, bytes_done, bytes_total)`` is called while a file is parsed.
    ``workers`` is the number of processes that parse a big text file (default: one per core,
    at most 8, for files over 96 MB; 1 parses in this process).

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "tiny.vec")
    >>> rows = ["the 0.1 0.2 0.3 0.4", "cat 0.5 0.1 0.2 0.3", "sat 0.3 0.3 0.3 0.3"]
    >>> _ = open(p, "w").write("3 4\\n" + "\\n".join(rows) + "\\n")
    >>> v = load_vectors(p, cache=False)
    >>> len(v), v.dim, v.format, v.words
    (3, 4, 'word2vec', ['the', 'cat', 'sat'])
    >>> [round(float(x), 2) for x in v["cat"]]
    [0.5, 0.1, 0.2, 0.3]
    """
    limit = _check_limit(limit)
    p = local_path(os.fspath(path))
    if is_remote(p):
        # a URL: a local copy is read (every format, memory maps included), never cached
        with staged_input(p) as local:
            vec = load_vectors(local, limit=limit, cache=False, progress=progress, workers=workers)
        vec.source = p
        return vec
    name = display_name(p)
    if p != "-":
        _check_input(p)
        if _is_kxv(p):
            return read_cache(p, limit=limit)
    if not cache or p == "-":
        return _parse(p, limit, None, progress, workers)

    ident = _source_identity(p)
    for candidate, want_limit in _cache_lookup_order(p, ident["path"], limit):
        vec = _try_cache(candidate, ident, want_limit, limit, name)
        if vec is not None:
            vec.source = name
            return vec
    targets = [_cache_file(ident["path"], limit, d) for d in _cache_dirs(ident["path"])]
    return _parse(p, limit, _CacheTarget(targets, ident, limit), progress, workers)


def save_cache(
    vectors: Vectors, path: str | os.PathLike[str], *, progress: Progress | None = None
) -> str:
    """Write ``vectors`` to ``path`` (a file or a URL) in kxtool's cache format, atomically.
    Returns the path."""
    p = local_path(os.fspath(path))
    _check_output(p)
    if written_through(p) or is_remote(p):
        with temp_dir() as tmp:
            staged = save_cache(vectors, os.path.join(tmp, "staged" + CACHE_SUFFIX))
            with open(staged, "rb") as fin, atomic_output(p) as fout:
                while block := fin.read(1 << 20):
                    fout.write(block)
        return p
    target = os.path.realpath(p)
    _check_words_storable(vectors.words, p)
    try:
        sink = _FileSink(target, vectors.dim, durable=True)
    except OSError as e:
        raise os_error(e, p, "cannot write") from None
    try:
        m = vectors.matrix
        n = len(m)
        step = max(1, (8 << 20) // max(1, 4 * vectors.dim))
        for s in range(0, n, step):
            block = np.asarray(m[s : s + step], dtype=np.float32)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                i = s + int(np.flatnonzero(~finite)[0])
                raise KxError(
                    f"cannot write {p!r}: the vector of {vectors.words[i]!r} (row {i + 1}) has"
                    " a value that is not a finite number"
                )
            sink.add(block)
            if progress is not None:
                progress("writing", min(n, s + step), n)
        sink.finish(vectors.words, {"source": None, "limit": None})
    except OSError as e:
        sink.abort()
        raise os_error(e, p, "cannot write") from None
    except BaseException:
        sink.abort()
        raise
    return p


def convert_vectors(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    limit: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Vectors:
    """Read ``src`` (any supported format) and write it to ``dst`` in the cache format.

    A text or binary source is streamed straight into ``dst``, so a file larger than memory
    converts. Returns the written vectors (memory-mapped from ``dst``).
    """
    limit = _check_limit(limit)
    s, d = local_path(os.fspath(src)), local_path(os.fspath(dst))
    _check_output(d)
    if is_remote(s):
        with staged_input(s) as local:
            vec = convert_vectors(local, d, limit=limit, progress=progress, workers=workers)
        vec.source = s
        return vec
    if written_through(d) or is_remote(d):
        # a device, FIFO or URL: the file is made in a temporary directory, then copied into
        # it (the format is written out of order); the vectors stay mapped from the copy made
        with temp_dir() as tmp:
            staged = os.path.join(tmp, "staged" + CACHE_SUFFIX)
            vec = convert_vectors(s, staged, limit=limit, progress=progress, workers=workers)
            with open(staged, "rb") as fin, atomic_output(d) as fout:
                while block := fin.read(1 << 20):
                    fout.write(block)
            return vec
    d = os.path.realpath(d)  # a symbolic link is followed: what it points to is replaced
    if s != "-":
        _check_input(s)
        if os.path.exists(d) and os.path.samefile(s, d):
            raise KxError(f"input and output are the same file: {d!r}")
        if _is_kxv(s):
            vec = read_cache(s, limit=limit)
            save_cache(vec, d, progress=progress)
            return read_cache(d)
    ident = _source_identity(s) if s != "-" else None
    target_spec = _CacheTarget([d], ident, limit, durable=True, strict=True)
    return _parse(s, limit, target_spec, progress, workers)


_COMPRESSED_NAMES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")


def _check_output(p: str) -> None:
    """Refuse an output the kxtool format cannot be written to (before any work is done)."""
    if p == "-":
        raise KxError("cannot write the kxtool vectors format to stdout: name an output file")
    ext = next((e for e in _COMPRESSED_NAMES if p.lower().endswith(e)), None)
    if ext is not None:
        raise KxError(
            f"cannot write {p!r}: the kxtool vectors format cannot be compressed (it is"
            f" memory-mapped when read); name the output without {ext}, e.g. {_kxv_name(p, ext)}"
        )
    check_output(p)


def _kxv_name(p: str, ext: str) -> str:
    stem = os.path.basename(p)[: -len(ext)] or "out"
    return stem if stem.endswith(CACHE_SUFFIX) else stem + CACHE_SUFFIX


def _parse(
    p: str,
    limit: int | None,
    target: _CacheTarget | None,
    progress: Progress | None,
    workers: int | None = None,
) -> Vectors:
    name = display_name(p)
    if p != "-" and os.path.isfile(p):
        try:
            with open(p, "rb") as f:
                _refuse_foreign(f.read(8), name)  # before textio's less specific refusal
        except OSError as e:
            raise os_error(e, p) from None
    total = input_size(p) if p != "-" else None
    blocks = read_blocks(p, _BLOCK)
    done = 0

    def counted() -> Iterator[bytes]:
        nonlocal done
        for b in blocks:
            done += len(b)
            if progress is not None:
                progress("reading vectors", done, total)
            yield b

    it = counted()
    head, complete = _read_head(it)
    if not head:
        raise KxError(f"{name}: the vectors file is empty")
    fmt, count, dim, hlen = _detect(head, name, complete=complete, size=total)
    # the parsers see the data in blocks of _BLOCK bytes, however much was read to detect
    body = head[hlen:]
    first = body[:_BLOCK]
    it = itertools.chain((body[i : i + _BLOCK] for i in range(_BLOCK, len(body), _BLOCK)), it)
    want = count if limit is None else (limit if count is None else min(count, limit))
    coll = _Collector(dim, want, target)
    coll.name = name
    if fmt == "word2vec-binary":
        coll.position = lambda row: f"record {row + 1}"
    else:
        lines_before = 0 if count is None else 1
        coll.position = lambda row: f"line {lines_before + row + 1}"
    try:
        if fmt == "word2vec-binary":
            assert count is not None
            _parse_binary(first, it, name, count, dim, limit, coll)
        else:
            _parse_text(first, it, name, count, dim, limit, coll, _workers(p, workers))
        vec = coll.finish(name, fmt)
        _warn_invalid_utf8(name, coll.invalid_note())
        return vec
    except BaseException:
        coll.abort()
        raise
    finally:
        with contextlib.suppress(Exception):
            blocks.close()
