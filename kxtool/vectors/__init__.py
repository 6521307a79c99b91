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
of that many numbers, or binary records whose sizes fit the data, see :func:`.detect._detect`), and
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
Files over 96 MB are parsed by several worker processes (forked by :mod:`kxtool.parallel`, at
most two blocks in flight per worker, results taken in order), one per core up to 8 unless
``workers`` says otherwise. A line with more fields than the dimension whose extra leading
fields are not all numbers keeps them as part of its word (GloVe 840B has a few words with
spaces).

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
rest of a cached load; see :func:`.kxv._damage`.) A cache written by a kxtool without checksums is
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

**Modules.** :mod:`.core` the :class:`Vectors` type; :mod:`.detect` the format of a file;
:mod:`.text_format` the text parser and :mod:`.decimals` its reader of numbers;
:mod:`.binary_format` the word2vec binary parser; :mod:`.collect` parsed rows into memory or a
cache file; :mod:`.kxv` the ``.kxv`` format (writing, header, checksums, reading); :mod:`.cache`
the cache directory, its lookup, listing and cleaning; :mod:`.load` the entry points that load,
convert and save; :mod:`.default` the built-in vectors and the language check. This module is
their face: it holds no code.
"""

from __future__ import annotations

from .cache import ENV_CACHE_DIR, CacheEntry, cache_dir, cache_entries, cache_path_for, clean_cache
from .core import Vectors, vectors_info
from .default import (
    DEFAULT_FILE,
    DEFAULT_NAME,
    DEFAULT_SOURCE,
    ENV_VECTORS,
    check_default_language,
    default_vectors,
    default_vectors_path,
    resolve_vectors,
)
from .kxv import CACHE_SUFFIX, CACHE_VERSION, MAGIC, read_cache, write_kxv
from .load import convert_vectors, load_vectors, save_cache

__all__ = [
    "CACHE_SUFFIX",
    "CACHE_VERSION",
    "DEFAULT_FILE",
    "DEFAULT_NAME",
    "DEFAULT_SOURCE",
    "ENV_CACHE_DIR",
    "ENV_VECTORS",
    "MAGIC",
    "CacheEntry",
    "Vectors",
    "cache_dir",
    "cache_entries",
    "cache_path_for",
    "check_default_language",
    "clean_cache",
    "convert_vectors",
    "default_vectors",
    "default_vectors_path",
    "load_vectors",
    "read_cache",
    "resolve_vectors",
    "save_cache",
    "vectors_info",
    "write_kxv",
]
