"""Word vectors: one :class:`Vectors` type and the loaders that build it.

:func:`load_vectors` reads, with the format detected from the content (never from the name):

- **word2vec text** and **fastText .vec**: a ``count dim`` header line, then ``word v1 ... vdim``
  per line (fastText's trailing space is fine);
- **GloVe text**: the same lines without a header (the dimension comes from the first line);
- **word2vec binary**: a ``count dim`` header line, then per word ``word<space>`` followed by
  ``dim`` little-endian float32 values (an optional newline after each vector is skipped);
- any of these compressed with gzip, bzip2, xz or zstd;
- **kxtool's cache format** (below), memory-mapped.

The format is decided on the first MiB (or the whole file, if smaller): a UTF-8 byte order mark
is skipped; a first line of two integers is a header when what follows agrees with it (text rows
of that many numbers, or binary records whose sizes fit the data, see :func:`_detect`), and
otherwise the first row of a 1-dimensional GloVe file if the file reads as one (``2 5`` is the
word "2"); a header with a count or dimension below 1 is an error. NumPy ``.npy`` and ``.npz``
files (arrays without a vocabulary) are a clear error.

A malformed input is a :class:`~kxtool.errors.KxError` naming the file and line (``record`` for
binary files): wrong number of values, a value that is not a finite number, a duplicate word, a
blank line in the middle, a truncated file, a word count that disagrees with the header. Words
that are not valid UTF-8 are kept with their invalid bytes replaced by U+FFFD, and a warning
(:class:`~kxtool.errors.KxWarning`) gives their number and the first line; it is given again
when the vectors come from the cache.

Text is parsed a block at a time: the words are split off each line, the numeric part of the whole
block is converted by numpy in one call, and the per-line field counts are checked with array
operations. Only when a block is found to be bad is it re-read line by line to name the line.
Files over 96 MB are parsed by several worker processes (plain ``python -c`` subprocesses fed
blocks through pipes, results taken in order), one per core up to 8 unless ``workers`` says
otherwise. A line with more fields than the dimension whose extra leading fields are not all
numbers keeps them as part of its word (GloVe 840B has a few words with spaces).

**Cache.** The first load of a text or binary file writes a cache file; later loads of the same
file (same resolved path, size and modification time in nanoseconds, same ``limit``) memory-map
it and take milliseconds. The cache lives in ``$KXTOOL_CACHE_DIR``, else
``$XDG_CACHE_HOME/kxtool``, else ``~/.cache/kxtool`` (in a ``vectors/`` subdirectory); if that
cannot be written, beside the source as ``<name>.kxv``; if neither can, nothing is cached. A cache
problem never makes a load fail: an unreadable or stale cache is rebuilt. A complete cache also
serves loads with a ``limit``.

**Damage.** A cache stores the CRC-32 of its vocabulary and of every MiB of its matrix. A load
checks the vocabulary and a sample of the matrix (all of it up to 8 MiB; else the first and
last MiB and 6 others picked at random) for its checksums and for values that are not finite
numbers; a cache that fails is reported by a warning, removed and rebuilt from the source.
``kxtool vectors cache`` (:func:`cache_entries`) checks every cache in full and lists a failing
one as ``damaged``. (A full check of a 458 MiB cache takes about 0.2 s here, more than the
rest of a cached load; see :func:`_damage`.) A cache written by a kxtool without checksums is
taken for stale and rebuilt; a ``.kxv`` file given as the input is read without them. A file in
the kxtool format never holds values that are not finite numbers: :func:`save_cache` refuses
them, as the loaders do.

**Cache format** (``.kxv``, version 1; all integers little-endian)::

    offset 0    8 bytes  magic b"KXVECS\\x00\\x01"
    offset 8    uint64   header offset      (the header is UTF-8 JSON, see below)
    offset 16   uint64   header length in bytes
    offset 24   zeros up to offset 64
    offset 64   the matrix: count x dim values, row-major
    then        the vocabulary: the words in row order, each followed by one NUL byte, UTF-8
    then        the JSON header

The header holds ``format`` (``"kxtool-vectors"``), ``version`` (1), ``count``, ``dim``,
``dtype`` (``"float32"`` or ``"float16"``), ``matrix_offset``, ``matrix_bytes``,
``matrix_encoding`` (``"raw"``, or ``"zlib-planes"``: the float16 values split into a plane of low
bytes and a plane of high bytes, deflated), ``words_offset``, ``words_bytes``, ``words_encoding``
(``"raw"`` or ``"zlib"``), ``checksums`` (``{"algorithm": "crc32", "chunk_bytes", "matrix",
"words"}``: the CRC-32 of each ``chunk_bytes`` bytes of the matrix as stored, and of the
vocabulary as stored; absent from files of older versions), ``source`` (``{"path", "size",
"mtime_ns", "format"}`` of the file it was made from, or null), ``limit`` and ``created_by``.
The header sits at the end so that a cache can be written while the source is still being read.
A raw float32 matrix can be mapped with ``numpy.memmap(path, "<f4", "r", offset=64,
shape=(count, dim))``. Caches are always raw float32; the built-in default vectors use float16
with ``zlib-planes``.

**Default vectors.** :func:`default_vectors` returns the 100,000 most frequent words of English
GloVe 6B 50d (public domain, PDDL 1.0) shipped in ``kxtool/data`` (made by
``tools/make_default_vectors.py``). :func:`resolve_vectors` picks a path, ``$KXTOOL_VECTORS`` or
the default, in that order.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import signal
import struct
import time
import warnings
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from . import tempfiles
from .errors import KxError, kxwarn
from .progress import Progress
from .textio import (
    atomic_output,
    check_output,
    display_name,
    input_size,
    os_error,
    place_file,
    read_blocks,
    temp_dir,
    written_through,
)

MAGIC = b"KXVECS\x00\x01"
CACHE_VERSION = 1
CACHE_SUFFIX = ".kxv"
_DATA_OFFSET = 64
_BLOCK = 16 << 20
_BIN_BATCH = 65536
_PARALLEL_MIN = 96 << 20  # text files from this size are parsed by several processes
_CRC_CHUNK = 1 << 20  # the matrix checksums cover chunks of this many bytes
_VERIFY_BYTES = 8 << 20  # matrix bytes checked when a cache is loaded (see _damage)

DEFAULT_NAME = "glove-6b-50d-100k"
DEFAULT_FILE = DEFAULT_NAME + CACHE_SUFFIX
DEFAULT_SOURCE = "kxtool built-in: English GloVe 6B 50d, 100k most frequent words"

ENV_VECTORS = "KXTOOL_VECTORS"
ENV_CACHE_DIR = "KXTOOL_CACHE_DIR"


@dataclass
class Vectors:
    """A vocabulary and its ``(n, dim)`` float32 matrix (possibly memory-mapped).

    Row ``i`` of :attr:`matrix` is the vector of ``words[i]``. Files are usually sorted by
    frequency, so low ids are frequent words. ``source`` names where the vectors came from,
    ``format`` how they were stored (``"word2vec"``, ``"glove"``, ``"word2vec-binary"``,
    ``"kxtool"``), ``cache_path`` the cache file that holds them (if any) and ``is_default`` is
    true for the built-in English set of :func:`default_vectors`.
    """

    words: list[str]
    matrix: np.ndarray
    source: str = "<memory>"
    _index: dict[str, int] | None = field(default=None, repr=False)
    _norms: np.ndarray | None = field(default=None, repr=False)
    is_default: bool = False
    format: str | None = None
    cache_path: str | None = None

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
            raise ValueError(
                f"matrix shape {self.matrix.shape} does not match {len(self.words)} words"
            )

    @property
    def index(self) -> dict[str, int]:
        """word -> row."""
        if self._index is None:
            self._index = dict(zip(self.words, range(len(self.words)), strict=True))
        return self._index

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.matrix[self.index[word]]

    def norms(self) -> np.ndarray:
        """Euclidean norm of every row (float32, computed once)."""
        if self._norms is None:
            m = self.matrix
            out = np.empty(len(m), dtype=np.float32)
            step = 65536
            for s in range(0, len(m), step):
                block = np.asarray(m[s : s + step], dtype=np.float32)
                out[s : s + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
            self._norms = out
        return self._norms

    def lookup(self, tokens: Iterable[str]) -> tuple[list[int], list[str]]:
        """Row ids of the known tokens (in order) and the list of unknown ones."""
        index = self.index
        ids: list[int] = []
        missing: list[str] = []
        for t in tokens:
            i = index.get(t)
            if i is None:
                missing.append(t)
            else:
                ids.append(i)
        return ids, missing

    def subset(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The float32 rows ``rows`` as an in-memory array."""
        return np.asarray(self.matrix[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def head(self, limit: int | None) -> Vectors:
        """The first ``limit`` words (all of them when ``limit`` is None or not smaller)."""
        if limit is None or limit >= len(self.words):
            return self
        return Vectors(
            self.words[:limit],
            self.matrix[:limit],
            source=self.source,
            is_default=self.is_default,
            format=self.format,
            cache_path=self.cache_path,
        )


# --------------------------------------------------------------------------------------------
# Public entry points


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
    """
    limit = _check_limit(limit)
    p = os.fspath(path)
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


def read_cache(path: str | os.PathLike[str], *, limit: int | None = None) -> Vectors:
    """Read a file in kxtool's cache format (memory-mapped when it is raw float32)."""
    p = os.fspath(path)
    _check_input(p)
    header = _read_kxv_header(p, strict=True)
    assert header is not None
    vec = _kxv_vectors(p, header, _check_limit(limit))
    why = _damage(p, header, full=False)
    if why is not None:
        raise _Damaged(p, why)
    vec.source = display_name(p)
    vec.cache_path = None  # the file is the source, not a cache of one
    return vec


def save_cache(
    vectors: Vectors, path: str | os.PathLike[str], *, progress: Progress | None = None
) -> str:
    """Write ``vectors`` to ``path`` in kxtool's cache format, atomically. Returns the path."""
    p = os.fspath(path)
    _check_output(p)
    if written_through(p):
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
    s, d = os.fspath(src), os.fspath(dst)
    _check_output(d)
    if written_through(d):
        # a device or FIFO: the file is made in a temporary directory, then copied into it
        # (the format is written out of order); the vectors stay mapped from the copy made
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


def default_vectors() -> Vectors:
    """The built-in English vectors: GloVe 6B 50d, the 100,000 most frequent words."""
    global _DEFAULT
    if _DEFAULT is None:
        path = default_vectors_path()
        if not os.path.isfile(path):
            raise KxError(
                f"the built-in vectors {path!r} are missing from this installation;"
                f" pass --vectors FILE or set {ENV_VECTORS}"
            )
        vec = read_cache(path)
        vec.source = DEFAULT_SOURCE
        vec.is_default = True
        vec.cache_path = None
        _DEFAULT = vec
    return _DEFAULT


_DEFAULT: Vectors | None = None


def default_vectors_path() -> str:
    """Where the built-in vectors file is installed."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", DEFAULT_FILE)


def resolve_vectors(
    path: str | os.PathLike[str] | None,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Vectors:
    """``path`` if given, else ``$KXTOOL_VECTORS`` if set, else :func:`default_vectors`."""
    if path is None or os.fspath(path) == "":
        env = os.environ.get(ENV_VECTORS, "").strip()
        if not env:
            return default_vectors().head(_check_limit(limit))
        try:
            return load_vectors(env, limit=limit, progress=progress)
        except KxError as e:
            raise KxError(f"{e.message} (named by {ENV_VECTORS})", e.exit_code) from None
    return load_vectors(path, limit=limit, progress=progress)


def vectors_info(vectors: Vectors, *, sample: int = 10) -> dict[str, Any]:
    """A summary for reports: size, dimension, norm statistics and the first few words."""
    norms = vectors.norms()
    n = len(norms)
    stats: dict[str, float | None]
    if n:
        stats = {
            "min": float(norms.min()),
            "mean": float(norms.mean(dtype=np.float64)),
            "median": float(np.median(norms)),
            "max": float(norms.max()),
            "std": float(norms.std(dtype=np.float64)),
        }
    else:  # pragma: no cover - loaders never return empty sets
        stats = dict.fromkeys(("min", "mean", "median", "max", "std"))
    return {
        "source": vectors.source,
        "format": vectors.format,
        "words": n,
        "dim": vectors.dim,
        "is_default": vectors.is_default,
        "cache": vectors.cache_path,
        "norms": stats,
        "zero_vectors": int(np.count_nonzero(norms == 0)),
        "sample": list(vectors.words[: max(0, sample)]),
    }


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def check_default_language(vectors: Vectors, text: str | Iterable[str]) -> None:
    """Refuse Chinese (Japanese, Korean) text when ``vectors`` are the built-in English ones.

    ``text`` is a string or an iterable of strings (documents or tokens). A no-op for any other
    vectors.
    """
    if not vectors.is_default:
        return
    items = [text] if isinstance(text, str) else text
    for item in items:
        if _CJK.search(item):
            raise KxError(
                "the built-in vectors are English (GloVe 6B) and cannot handle Chinese, Japanese"
                f" or Korean text: pass --vectors FILE (or set {ENV_VECTORS}) with vectors for"
                " that language, e.g. the Tencent AI Lab embeddings"
            )


def cache_dir() -> str:
    """The user cache directory for vectors (it may not exist yet)."""
    base = os.environ.get(ENV_CACHE_DIR, "").strip()
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = os.path.join(xdg, "kxtool") if xdg else os.path.join("~", ".cache", "kxtool")
    return os.path.join(os.path.expanduser(base), "vectors")


@dataclass
class CacheEntry:
    """One file of the vector cache directory (see :func:`cache_entries`)."""

    path: str
    bytes: int
    source: str | None  # the vectors file it was made from
    status: str  # "current", "stale" (source changed, or a cache without checksums),
    #              "orphaned" (source gone), "damaged" (unreadable, or fails its checks),
    #              "partial" (an interrupted write), "writing" (a write in progress)


#: A temporary file without an owner tag (written by kxtool before names carried one) is taken
#: for an interrupted write once it is this old (seconds).
_PARTIAL_AGE = 3600


def cache_entries(directory: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """The files of the vector cache directory (default :func:`cache_dir`) and whether each is
    still of use: ``current`` when its source file exists unchanged and the cache passes a full
    check (see :func:`_damage`), else ``damaged``; ``stale`` when the source changed (or the
    cache has no checksums: written by an older kxtool), ``orphaned`` when it is gone.

    Temporary files of cache writes are ``writing`` while the process that writes them runs
    and ``partial`` once it is gone (killed); an old-style temporary name without an owner is
    ``partial`` when over an hour old and not listed before."""
    d = os.fspath(directory) if directory is not None else cache_dir()
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise os_error(e, d, "cannot list") from None
    out: list[CacheEntry] = []
    now = time.time()
    for name in names:
        p = os.path.join(d, name)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if name.endswith(tempfiles.SUFFIX):
            owner = tempfiles.owner_of(name)
            if owner is not None:
                status = "partial" if owner.gone() else "writing"
                out.append(CacheEntry(p, st.st_size, None, status))
            elif now - st.st_mtime > _PARTIAL_AGE:
                out.append(CacheEntry(p, st.st_size, None, "partial"))
            continue
        if not name.endswith(CACHE_SUFFIX):
            continue
        header = _read_kxv_header(p, strict=False)
        src = header.get("source") if header is not None else None
        if header is None or not isinstance(src, dict) or not isinstance(src.get("path"), str):
            out.append(CacheEntry(p, st.st_size, None, "damaged"))
            continue
        try:
            now_src = os.stat(src["path"])
        except OSError:
            status = "orphaned"
        else:
            same = now_src.st_size == src.get("size") and now_src.st_mtime_ns == src.get(
                "mtime_ns"
            )
            status = "current" if same else "stale"
        if status == "current":
            if header.get("checksums") is None:
                status = "stale"
            else:
                try:
                    _kxv_vectors(p, header, None)  # the vocabulary's checks
                    why = _damage(p, header, full=True)
                except (KxError, OSError, ValueError):
                    why = "damaged"
                if why is not None:
                    status = "damaged"
        out.append(CacheEntry(p, st.st_size, src["path"], status))
    return out


def clean_cache(
    directory: str | os.PathLike[str] | None = None, *, everything: bool = False
) -> list[CacheEntry]:
    """Delete the cache files no load can use any more (stale, orphaned, damaged, partial), or
    every one with ``everything``; return what was deleted. Writes in progress (``writing``)
    are always left alone."""
    removed = []
    for entry in cache_entries(directory):
        if entry.status == "writing":
            continue
        if everything or entry.status != "current":
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise os_error(e, entry.path, "cannot remove") from None
            removed.append(entry)
    return removed


def cache_path_for(path: str | os.PathLike[str], *, limit: int | None = None) -> str | None:
    """The existing, valid cache file that a load of ``path`` would use, or None."""
    p = os.fspath(path)
    if p == "-" or not os.path.isfile(p) or _is_kxv(p):
        return None
    ident = _source_identity(p)
    for candidate, want_limit in _cache_lookup_order(p, ident["path"], _check_limit(limit)):
        header = _read_kxv_header(candidate, strict=False)
        if header is not None and _header_matches(header, ident, want_limit):
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Input checks and detection


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise KxError(f"limit must be a positive number of words, not {limit!r}")
    return int(limit)


def _check_input(p: str) -> None:
    if os.path.isdir(p):
        raise KxError(f"cannot read vectors from {p!r}: it is a directory")
    try:
        st = os.stat(p)
    except OSError as e:
        raise os_error(e, p) from None
    if st.st_size == 0 and os.path.isfile(p):
        raise KxError(f"{p}: the vectors file is empty")


def _is_kxv(p: str) -> bool:
    if not os.path.isfile(p):  # never consume bytes from a pipe
        return False
    try:
        with open(p, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError as e:
        raise os_error(e, p) from None


_TEXT_BYTES = np.zeros(256, dtype=bool)
_TEXT_BYTES[[9, 10, 13]] = True
_TEXT_BYTES[32:127] = True

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True


_INT = re.compile(rb"[+-]?[0-9]+")
_BOM = b"\xef\xbb\xbf"
_DETECT_BYTES = 1 << 20  # the head of the data that the format is decided on (or all of it)
_DETECT_LINES = 20  # lines (or binary records) of the head checked for agreement


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


# --------------------------------------------------------------------------------------------
# Parsing


class _Bad(Exception):
    """A malformed row (internal): message and 0-based row index within a batch."""

    def __init__(self, row: int, message: str, counts: Any = None) -> None:
        super().__init__(message)
        self.row = row
        self.message = message
        self.counts = counts  # values per line, when their number is what is wrong


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
    pieces: list[bytes] = []
    got = 0
    complete = True
    for b in it:
        pieces.append(b)
        got += len(b)
        if got >= _DETECT_BYTES:
            complete = False
            break
    head = b"".join(pieces)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
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
    results = _run_chunks(chunks(), dim, workers)
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


def _is_number(tok: bytes) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return b"_" not in tok


def _run_chunks(
    chunks: Iterator[tuple[int, bytes]], dim: int, workers: int
) -> Generator[tuple[int, tuple[Any, ...]], None, None]:
    """``(lines before, result of _chunk_job)`` in order; parsed by ``workers`` processes.

    The workers are plain ``python -c`` subprocesses fed through pipes (not multiprocessing,
    which would re-import the caller's main script); each has at most one chunk in hand, and
    results are read in chunk order, so the pipes cannot deadlock.
    """
    if workers <= 1:
        for lines_before, chunk in chunks:
            yield lines_before, _chunk_job(chunk, dim)
        return
    pool = _WorkerPool(workers)
    finished = False
    try:
        outstanding: collections.deque[tuple[int, int]] = collections.deque()
        for j, (lines_before, chunk) in enumerate(chunks):
            if len(outstanding) == workers:
                w, lb = outstanding.popleft()
                yield lb, pool.receive(w)
            w = j % workers
            pool.send(w, chunk, dim)
            outstanding.append((w, lines_before))
        while outstanding:
            w, lb = outstanding.popleft()
            yield lb, pool.receive(w)
        finished = True
    finally:
        pool.close(kill=not finished)


_WORKER_CODE = "from kxtool.vectors import _worker_main; _worker_main()"


class _WorkerPool:
    def __init__(self, n: int) -> None:
        import subprocess
        import sys

        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [pkg_parent, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        self.procs: list[Any] = []
        try:
            for _ in range(n):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _WORKER_CODE],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
        except OSError as e:
            self.close()
            raise KxError(f"cannot start a vectors parsing process: {e}") from None

    def send(self, w: int, chunk: bytes, dim: int) -> None:
        try:
            stdin = self.procs[w].stdin
            stdin.write(struct.pack("<QI", len(chunk), dim))
            stdin.write(chunk)
            stdin.flush()
        except OSError:
            raise self._died() from None

    def receive(self, w: int) -> tuple[Any, ...]:
        import pickle

        out = self.procs[w].stdout
        head = out.read(8)
        if len(head) < 8:
            raise self._died()
        (n,) = struct.unpack("<Q", head)
        data = out.read(n)
        if len(data) < n:
            raise self._died()
        return pickle.loads(data)

    def _died(self) -> KxError:
        return KxError("a vectors parsing process died (out of memory?); try --workers 1")

    def close(self, kill: bool = False) -> None:
        """Let the workers exit (they stop at end of input); ``kill`` them when abandoning."""
        for p in self.procs:
            if kill:
                with contextlib.suppress(Exception):
                    p.kill()
            with contextlib.suppress(Exception):
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except Exception:
                with contextlib.suppress(Exception):
                    p.kill()
                    p.wait()
            with contextlib.suppress(Exception):
                p.stdout.close()
        self.procs = []


def _worker_main() -> None:
    """A parsing worker: reads ``<len, dim, chunk>`` from stdin, writes pickled results."""
    import pickle
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            head = inp.read(12)
            if len(head) < 12:
                return
            n, dim = struct.unpack("<QI", head)
            chunk = inp.read(n)
            if len(chunk) < n:
                return
            data = pickle.dumps(_chunk_job(chunk, dim), protocol=pickle.HIGHEST_PROTOCOL)
            out.write(struct.pack("<Q", len(data)))
            out.write(data)
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):  # the parent went away
        return


def _numbers(joined: bytes, nlines: int, dim: int) -> np.ndarray:
    """The ``(nlines, dim)`` float32 values of newline-joined rows; raises :class:`_Bad`."""
    a = np.frombuffer(joined, dtype=np.uint8)
    values = _fixed_decimals(joined, a, nlines, dim)
    if values is not None:
        return values
    ws = _WS[a]
    starts = ~ws
    starts[1:] &= ws[:-1]
    cs = np.cumsum(starts, dtype=np.int32)
    per_line = np.diff(np.concatenate(([0], cs[np.flatnonzero(a == 10)], cs[-1:])))
    if (per_line != dim).any():
        i = int(np.flatnonzero(per_line != dim)[0])
        n = int(per_line[i])
        raise _Bad(i, f"expected {dim} numbers after the word, found {n}", per_line)
    values = _decimals(joined, a, ws, starts, cs)
    if values is None:
        values = _parse_floats(joined, np.float32)
    if values is None or values.size != nlines * dim:
        _locate_non_number(joined.split(b"\n"))
        raise _Bad(0, "malformed numbers")  # pragma: no cover - located above
    values = values.reshape(nlines, dim)
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise _Bad(i, "a value is not a finite number (nan or inf)")
    return values


def _parse_floats(text: bytes, dtype: Any) -> np.ndarray | None:
    """numpy's whitespace-separated number parser; None if something is not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


_POW10 = 10.0 ** np.arange(19)
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
_ODD = ~(_DIGIT | _WS)  # bytes that make a value need the general float parser
_ODD[[43, 45, 46]] = False  # + - .


def _fixed_decimals(joined: bytes, a: np.ndarray, nlines: int, dim: int) -> np.ndarray | None:
    """The fastest path: every value has one dot and the same number F of digits after it
    (word2vec's ``%f`` writes ``-0.123456``). Returns ``(nlines, dim)`` float32 or None.

    If each dot is followed by exactly F digits and then whitespace, no value holds two dots;
    if moreover there are ``nlines * dim`` dots, ``dim`` on each line, and the text without its
    dots parses as exactly that many integers, every value is one such decimal.
    """
    n = nlines * dim
    dots = np.flatnonzero(a == 46)
    if len(dots) != n or n == 0:
        return None
    after = dots[0] + 1
    f = 0
    while after + f < len(a) and _DIGIT[a[after + f]]:
        f += 1
    if f > 17:
        return None
    padded = np.concatenate((a, np.full(f + 1, 32, dtype=np.uint8)))
    for k in range(1, f + 1):
        if not _DIGIT[padded[dots + k]].all():
            return None
    if not (padded[dots + f + 1] <= 32).all():
        return None
    newlines = np.flatnonzero(a == 10)
    per_line = np.diff(np.concatenate(([0], np.searchsorted(dots, newlines), [n])))
    if (per_line != dim).any():
        return None
    ints = _parse_floats(joined.replace(b".", b""), np.int64)
    if ints is None or ints.size != n or (ints >= 10**18).any() or (ints <= -(10**18)).any():
        return None
    values = ints / _POW10[f]
    for z in np.flatnonzero(ints == 0).tolist():  # keep the sign of "-0.000000" (rare)
        p = int(dots[z]) - 1
        while p >= 0 and a[p] == 48:
            p -= 1
        if p >= 0 and a[p] == 45:
            values[z] = -0.0
    return values.astype(np.float32).reshape(nlines, dim)


def _decimals(
    joined: bytes, a: np.ndarray, ws: np.ndarray, starts: np.ndarray, cs: np.ndarray
) -> np.ndarray | None:
    """Fast path for plain decimals (``-0.123456``, ``0.41``, ``7``): float32 values, or None.

    Most vector files write fixed-point decimals. Without their dots they are integers, which
    numpy parses several times faster than floats; each is then divided by 10 to the power of
    its count of fraction digits (exact integers divided by exact powers of ten, so the result
    is the correctly rounded double, as a float parser gives). A few values with other
    characters (fastText's ``1.2e-05``) are converted one by one and blanked out first. Anything
    else (many such values, two dots, more than 18 characters) returns None: the general path.
    """
    spos = np.flatnonzero(starts)
    ntok = len(spos)
    if ntok == 0:
        return None
    ends = ~ws
    ends[:-1] &= ws[1:]
    epos = np.flatnonzero(ends) + 1
    if len(epos) != ntok:
        return None
    lengths = epos - spos
    odd = np.flatnonzero(_ODD[a])
    special_tok = None
    if len(odd):
        special_tok = np.unique(cs[odd].astype(np.int64) - 1)
        if len(special_tok) * 16 > ntok:
            return None
        buf = bytearray(joined)
        special = np.empty(len(special_tok), dtype=np.float64)
        for j, t in enumerate(special_tok.tolist()):
            s, e = int(spos[t]), int(epos[t])
            tok = joined[s:e]
            try:
                special[j] = float(tok)
            except ValueError:
                return None
            if b"_" in tok:
                return None
            buf[s:e] = b"0" * (e - s)
        joined = bytes(buf)
        a = np.frombuffer(joined, dtype=np.uint8)
        lengths[special_tok] = 1
    if int(lengths.max()) > 18:
        return None
    dots = np.flatnonzero(a == 46)
    frac = np.zeros(ntok, dtype=np.int64)
    if len(dots):
        dot_tok = cs[dots].astype(np.int64) - 1
        if len(dots) > 1 and not (np.diff(dot_tok) > 0).all():
            return None  # two dots in a token
        frac[dot_tok] = epos[dot_tok] - dots - 1
    ints = _parse_floats(joined.replace(b".", b""), np.int64)
    if ints is None or ints.size != ntok:
        return None
    values = ints / _POW10[frac]
    negative_zero = (ints == 0) & (a[spos] == 45)
    if negative_zero.any():
        values[negative_zero] = -0.0
    if special_tok is not None:
        values[special_tok] = special
    return values.astype(np.float32)


def _locate_non_number(rests: list[bytes]) -> None:
    for i, r in enumerate(rests):
        for t in r.split():
            if not _is_number(t):
                raise _Bad(i, f"{t.decode('utf-8', 'replace')!r} is not a number")


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


# --------------------------------------------------------------------------------------------
# Collecting rows: into memory or straight into a cache file


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


def _check_words_storable(words: Sequence[str], p: str) -> None:
    for w in words:
        if "\0" in w:
            raise KxError(f"cannot store word {w!r} in {p!r}: it contains a NUL character")


class _FileSink:
    """Streams float32 rows into a temporary ``.kxv`` file; ``finish`` renames it into place.

    The temporary file is named by :mod:`kxtool.tempfiles` (its name carries this process's
    host, pid and start time), so ``kxtool vectors cache`` can tell a write in progress from
    one whose process was killed; leftovers of killed writes of the same target are removed
    first. The CRC-32 of every ``_CRC_CHUNK`` bytes of the matrix is computed as it streams.
    """

    def __init__(self, final: str, dim: int, *, durable: bool = False) -> None:
        self.final = final
        self.dim = dim
        self.durable = durable
        self.rows = 0
        self.crcs = _ChunkCrcs()
        d = os.path.dirname(final) or "."
        base = os.path.basename(final)
        tempfiles.remove_stale(d, base)
        fd, self.tmp = tempfiles.make_temp_file(d, base)
        self.f: BinaryIO = os.fdopen(fd, "w+b", buffering=1 << 20)
        try:
            self.f.write(b"\0" * _DATA_OFFSET)
        except BaseException:
            self.abort()
            raise

    def add(self, m: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(m, dtype="<f4")).cast("B")
        self.f.write(data)
        self.crcs.update(data)
        self.rows += len(m)

    def finish(self, words: Sequence[str], meta: dict[str, Any]) -> str:
        f = self.f
        matrix_bytes = self.rows * self.dim * 4
        blob = _words_blob(words)
        header = _make_header(
            count=self.rows,
            dim=self.dim,
            dtype="float32",
            matrix_encoding="raw",
            matrix_bytes=matrix_bytes,
            words_offset=_DATA_OFFSET + matrix_bytes,
            words_bytes=len(blob),
            words_encoding="raw",
            checksums=_checksums(self.crcs.finish(), blob),
            **meta,
        )
        f.write(blob)
        f.write(header)
        f.seek(0)
        f.write(_prefix(_DATA_OFFSET + matrix_bytes + len(blob), len(header)))
        f.flush()
        if self.durable:
            os.fsync(f.fileno())
        f.close()
        if self.durable:  # a user's output: keeps a replaced file's mode, owner and links
            place_file(self.tmp, self.final, self.final)
        else:
            os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


class _ChunkCrcs:
    """The CRC-32 of each ``_CRC_CHUNK`` bytes of a byte stream fed in pieces of any size."""

    def __init__(self) -> None:
        self.chunk = _CRC_CHUNK
        self.done: list[int] = []
        self.crc = 0
        self.fill = 0

    def update(self, data: memoryview | bytes) -> None:
        view = memoryview(data).cast("B")
        pos, n = 0, len(view)
        while pos < n:
            take = min(n - pos, self.chunk - self.fill)
            self.crc = zlib.crc32(view[pos : pos + take], self.crc)
            self.fill += take
            pos += take
            if self.fill == self.chunk:
                self.done.append(self.crc)
                self.crc, self.fill = 0, 0

    def finish(self) -> tuple[int, list[int]]:
        if self.fill:
            self.done.append(self.crc)
            self.crc, self.fill = 0, 0
        return self.chunk, self.done


def _checksums(matrix: tuple[int, list[int]], words_blob: bytes) -> dict[str, Any]:
    chunk, crcs = matrix
    return {
        "algorithm": "crc32",
        "chunk_bytes": chunk,
        "matrix": crcs,
        "words": zlib.crc32(words_blob),
    }


def _words_blob(words: Sequence[str]) -> bytes:
    if not words:
        return b""
    return ("\0".join(words) + "\0").encode("utf-8")


def _prefix(header_offset: int, header_len: int) -> bytes:
    p = MAGIC + struct.pack("<QQ", header_offset, header_len)
    return p + b"\0" * (_DATA_OFFSET - len(p))


def _make_header(**fields: Any) -> bytes:
    from . import __version__

    h = {
        "format": "kxtool-vectors",
        "version": CACHE_VERSION,
        "matrix_offset": _DATA_OFFSET,
        **fields,
        "created_by": f"kxtool {__version__}",
    }
    return json.dumps(h, ensure_ascii=False, sort_keys=True).encode("utf-8")


def write_kxv(
    path: str | os.PathLike[str],
    words: Sequence[str],
    matrix: np.ndarray,
    *,
    dtype: str = "float32",
    compress: bool = False,
    source: dict[str, Any] | None = None,
) -> None:
    """Write a complete in-memory set in the cache format (float16 and compression allowed).

    Used for the built-in default vectors; :func:`save_cache` is the usual way.
    """
    p = os.fspath(path)
    _check_words_storable(words, p)
    n, dim = matrix.shape
    if n != len(words):
        raise ValueError("matrix and words differ in length")
    if dtype == "float32":
        raw = np.ascontiguousarray(matrix, dtype="<f4")
        data = raw.tobytes()
        menc = "raw"
    elif dtype == "float16":
        raw = np.ascontiguousarray(matrix, dtype="<f2")
        if compress:
            planes = raw.view(np.uint8).reshape(-1, 2).T.copy()  # low bytes, then high bytes
            data = zlib.compress(planes.tobytes(), 9)
            menc = "zlib-planes"
        else:
            data = raw.tobytes()
            menc = "raw"
    else:
        raise ValueError(f"unsupported dtype {dtype!r}")
    if not np.isfinite(raw).all():
        raise ValueError(f"the matrix has values that are not finite numbers as {dtype}")
    blob = _words_blob(words)
    wenc = "raw"
    if compress:
        blob = zlib.compress(blob, 9)
        wenc = "zlib"
    crcs = _ChunkCrcs()
    crcs.update(data)
    header = _make_header(
        count=n,
        dim=dim,
        dtype=dtype,
        matrix_encoding=menc,
        matrix_bytes=len(data),
        words_offset=_DATA_OFFSET + len(data),
        words_bytes=len(blob),
        words_encoding=wenc,
        checksums=_checksums(crcs.finish(), blob),
        source=source,
        limit=None,
    )
    with atomic_output(p) as f:
        f.write(_prefix(_DATA_OFFSET + len(data) + len(blob), len(header)))
        f.write(data)
        f.write(blob)
        f.write(header)


# --------------------------------------------------------------------------------------------
# Reading the cache format


def _read_kxv_header(p: str, *, strict: bool) -> dict[str, Any] | None:
    """The validated header of a ``.kxv`` file; None (or KxError when ``strict``) if bad."""

    def bad(why: str) -> None:
        if strict:
            raise KxError(f"{p}: not a valid kxtool vectors file ({why})")
        return None

    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pre = f.read(_DATA_OFFSET)
            if len(pre) < 24 or pre[: len(MAGIC)] != MAGIC:
                return bad("bad magic bytes")
            hoff, hlen = struct.unpack("<QQ", pre[8:24])
            if hoff + hlen != size or hlen > (16 << 20):
                return bad("truncated or damaged")
            f.seek(hoff)
            header = json.loads(f.read(hlen).decode("utf-8"))
    except FileNotFoundError:
        if strict:
            raise KxError(f"cannot open {p!r}: No such file or directory") from None
        return None
    except OSError as e:
        if strict:
            raise os_error(e, p) from None
        return None
    except (ValueError, UnicodeDecodeError):
        return bad("damaged header")
    try:
        n, dim = int(header["count"]), int(header["dim"])
        item = {"float32": 4, "float16": 2}[header["dtype"]]
        moff, mbytes = int(header["matrix_offset"]), int(header["matrix_bytes"])
        woff, wbytes = int(header["words_offset"]), int(header["words_bytes"])
        menc, wenc = header["matrix_encoding"], header["words_encoding"]
    except (KeyError, TypeError, ValueError):
        return bad("damaged header")
    if header.get("format") != "kxtool-vectors" or header.get("version") != CACHE_VERSION:
        return bad(f"unsupported version {header.get('version')!r}")
    if n < 1 or dim < 1 or menc not in ("raw", "zlib-planes") or wenc not in ("raw", "zlib"):
        return bad("damaged header")
    if menc == "raw" and mbytes != n * dim * item:
        return bad("damaged header")
    if moff + mbytes > woff or woff + wbytes > hoff:
        return bad("truncated or damaged")
    cs = header.get("checksums")
    if cs is not None and not _checksums_valid(cs, mbytes, item):
        return bad("damaged header")
    return header


def _checksums_valid(cs: Any, mbytes: int, item: int) -> bool:
    if not isinstance(cs, dict) or cs.get("algorithm") != "crc32":
        return False
    chunk, crcs, words = cs.get("chunk_bytes"), cs.get("matrix"), cs.get("words")
    if not isinstance(chunk, int) or chunk < 1 or chunk % 4 or chunk % item:
        return False
    if not isinstance(crcs, list) or len(crcs) != -(-mbytes // chunk):
        return False
    ints = [*crcs, words]
    return all(isinstance(c, int) and 0 <= c < (1 << 32) for c in ints)


class _Damaged(KxError):
    """A kxtool vectors file whose content fails its checks (``reason`` says which)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: damaged kxtool vectors file ({reason})")
        self.reason = reason


#: Picks the matrix chunks checked on a load (its own generator: a caller's seed is theirs).
_SAMPLER = random.Random()


def _damage(p: str, h: dict[str, Any], *, full: bool) -> str | None:
    """Why the raw matrix of the ``.kxv`` file ``p`` (header ``h``) is damaged, or None.

    The check of a chunk of ``_CRC_CHUNK`` bytes: its CRC-32 matches the header's (files
    written before kxtool stored checksums have none) and its values are finite numbers (no
    kxtool vectors file holds others: every loader and writer refuses them). ``full`` checks
    every chunk; otherwise up to ``_VERIFY_BYTES`` are checked: the whole matrix when it is no
    bigger, else the first and the last chunk and others picked at random on each load.

    Measured on a 400,000 x 300 cache (458 MiB, in the page cache, 2 shared cores): the CRC-32
    of the whole matrix takes 0.16-0.2 s, more than the rest of a cached load (memory-map, read
    and index the words: about 0.1 s), so a load checks 8 MiB (about 4 ms; the vocabulary's
    CRC-32 takes 1 ms more) and ``kxtool vectors cache`` checks every cache in full.
    Zlib-encoded matrices (the built-in vectors) are decoded in full, and zlib checks its own
    stream, so they are not checked here.
    """
    if h["matrix_encoding"] != "raw":
        return None
    moff, mbytes = int(h["matrix_offset"]), int(h["matrix_bytes"])
    dt = "<f4" if h["dtype"] == "float32" else "<f2"
    cs = h.get("checksums")
    chunk = int(cs["chunk_bytes"]) if cs is not None else _CRC_CHUNK
    n = -(-mbytes // chunk)
    budget = max(2, _VERIFY_BYTES // chunk)
    if full or n <= budget:
        chosen: Iterable[int] = range(n)
    else:
        chosen = sorted({0, n - 1, *_SAMPLER.sample(range(1, n - 1), budget - 2)})
    try:
        with open(p, "rb", buffering=0) as f:
            fd = f.fileno()
            for i in chosen:
                want = min(chunk, mbytes - i * chunk)
                data = os.pread(fd, want, moff + i * chunk)
                if len(data) != want:
                    return "truncated matrix"
                if cs is not None and zlib.crc32(data) != cs["matrix"][i]:
                    return f"matrix bytes {i * chunk}-{i * chunk + want} fail their checksum"
                if not np.isfinite(np.frombuffer(data, dt)).all():
                    return "a value in the matrix is not a finite number"
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    return None


def _kxv_vectors(
    p: str, h: dict[str, Any], limit: int | None, *, words: list[str] | None = None
) -> Vectors:
    n, dim = int(h["count"]), int(h["dim"])
    keep = n if limit is None else min(n, limit)
    cs = h.get("checksums")
    if words is None:
        with open(p, "rb") as f:
            f.seek(int(h["words_offset"]))
            blob = f.read(int(h["words_bytes"]))
        if cs is not None and zlib.crc32(blob) != cs["words"]:
            raise _Damaged(p, "the vocabulary fails its checksum")
        if h["words_encoding"] == "zlib":
            try:
                blob = zlib.decompress(blob)
            except zlib.error:
                raise _Damaged(p, "damaged vocabulary") from None
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged(p, "damaged vocabulary") from None
        if not text.endswith("\0"):
            raise _Damaged(p, "damaged vocabulary")
        words = text[:-1].split("\0", keep)[:keep] if keep < n else text[:-1].split("\0")
        if len(words) != keep:
            raise _Damaged(p, f"the vocabulary has {len(words)} words, the header says {n}")
    moff = int(h["matrix_offset"])
    if h["dtype"] == "float32":
        matrix = np.memmap(p, dtype="<f4", mode="r", offset=moff, shape=(n, dim))[:keep]
    elif h["matrix_encoding"] == "raw":
        raw16 = np.memmap(p, dtype="<f2", mode="r", offset=moff, shape=(n, dim))
        matrix = np.asarray(raw16[:keep], dtype=np.float32)
    else:
        with open(p, "rb") as f:
            f.seek(moff)
            data = f.read(int(h["matrix_bytes"]))
        if cs is not None:
            crcs = _ChunkCrcs()
            crcs.chunk = int(cs["chunk_bytes"])
            crcs.update(data)
            if crcs.finish()[1] != cs["matrix"]:
                raise _Damaged(p, "the matrix fails its checksum")
        try:
            planes = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
        except zlib.error:
            raise _Damaged(p, "damaged matrix") from None
        if planes.size != 2 * n * dim:
            raise _Damaged(p, "damaged matrix")
        inter = planes.reshape(2, n * dim).T.copy()
        matrix = inter.view("<f2").reshape(n, dim)[:keep].astype(np.float32)
    return Vectors(words, matrix, source=display_name(p), format="kxtool", cache_path=p)


# --------------------------------------------------------------------------------------------
# Cache location and validity


def _source_identity(p: str) -> dict[str, Any]:
    try:
        st = os.stat(p)
    except OSError as e:
        raise os_error(e, p) from None
    return {"path": os.path.realpath(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cache_dirs(real: str) -> list[str]:
    return [cache_dir(), os.path.dirname(real)]


def _cache_file(real: str, limit: int | None, directory: str) -> str:
    base = os.path.basename(real)
    tag = "" if limit is None else f".limit{limit}"
    if directory == os.path.dirname(real):
        return os.path.join(directory, f"{base}{tag}{CACHE_SUFFIX}")
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:80]
    return os.path.join(directory, f"{safe}-{digest}{tag}{CACHE_SUFFIX}")


def _cache_lookup_order(p: str, real: str, limit: int | None) -> list[tuple[str, int | None]]:
    dirs = _cache_dirs(real)
    order = [(_cache_file(real, None, d), None) for d in dirs]
    if limit is not None:
        order += [(_cache_file(real, limit, d), limit) for d in dirs]
    return order


def _header_matches(h: dict[str, Any], ident: dict[str, Any], limit: int | None) -> bool:
    src = h.get("source")
    if not isinstance(src, dict):
        return False
    return (
        src.get("path") == ident["path"]
        and src.get("size") == ident["size"]
        and src.get("mtime_ns") == ident["mtime_ns"]
        and h.get("limit") == limit
        and h.get("dtype") == "float32"
        and h.get("matrix_encoding") == "raw"
        and h.get("checksums") is not None  # older caches have none: stale, rebuilt
    )


def _try_cache(
    candidate: str, ident: dict[str, Any], want_limit: int | None, limit: int | None, name: str
) -> Vectors | None:
    """The vectors of cache file ``candidate`` if it is a valid cache of the source ``ident``.

    A cache that is damaged (see :func:`_damage`) is reported by a warning and, in the cache
    directory, removed; the caller then rebuilds it from the source."""
    header = _read_kxv_header(candidate, strict=False)
    if header is None:
        with contextlib.suppress(KxError):
            if _is_kxv(candidate):  # a kxtool vectors file, but its header is unusable
                _damaged(candidate, name, "unreadable header")
        return None
    if not _header_matches(header, ident, want_limit):
        return None
    try:
        vec = _kxv_vectors(candidate, header, limit)
        why = _damage(candidate, header, full=False)
    except _Damaged as e:
        why = e.reason
    except (KxError, OSError, ValueError) as e:
        why = str(e)
    if why is not None:
        _damaged(candidate, name, why)
        return None
    vec.format = header["source"].get("format") or "kxtool"
    _warn_invalid_utf8(name, header.get("invalid_utf8"))
    return vec


def _damaged(candidate: str, name: str, why: str) -> None:
    kxwarn(f"{name}: the cache file {candidate} is damaged ({why}); rebuilding it from the source")
    if os.path.dirname(os.path.abspath(candidate)) == os.path.abspath(cache_dir()):
        with contextlib.suppress(OSError):
            os.unlink(candidate)
