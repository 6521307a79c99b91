"""kxtool's own vectors file format, ``.kxv`` (described in :mod:`kxtool.vectors`): writing it
(streamed, :class:`_FileSink`, or in one go, :func:`write_kxv`), its header, the CRC-32 checksums
of its matrix and vocabulary, and reading it (memory-mapped)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import numpy as np

from .. import tempfiles
from ..errors import KxError
from ..textio import atomic_output, display_name, os_error, place_file
from .core import Vectors, _check_input, _check_limit

MAGIC = b"KXVECS\x00\x01"
CACHE_VERSION = 1
CACHE_SUFFIX = ".kxv"
_DATA_OFFSET = 64
_CRC_CHUNK = 1 << 20  # the matrix checksums cover chunks of this many bytes
_VERIFY_BYTES = 8 << 20  # matrix bytes checked when a cache is loaded (see _damage)


def _is_kxv(p: str) -> bool:
    if not os.path.isfile(p):  # never consume bytes from a pipe
        return False
    try:
        with open(p, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError as e:
        raise os_error(e, p) from None


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
    from .. import __version__

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
