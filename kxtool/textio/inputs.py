"""Reading inputs: ``-`` and pipes, compressed streams recognised by content (gzip, bzip2, xz,
zstd; other formats refused), every read error as one line naming the file."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ..errors import KxError
from . import remote
from .names import _ALIASES, STDIO, display_name, os_error

_SNIFF = 264  # bytes looked at to recognise a compressed stream or archive (tar: 257 + 5)


_BZ2_BLOCK = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")


_DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError)


#: Formats kxtool recognises by their magic bytes but does not read: (magic, offset, name).
_UNREAD_FORMATS = (
    (b"\x04\x22\x4d\x18", 0, "lz4-compressed"),
    (b"\x02\x21\x4c\x18", 0, "lz4-compressed (legacy frame)"),
    (b"\xff\x06\x00\x00sNaPpY", 0, "snappy-compressed"),
    (b"LZIP", 0, "lzip-compressed"),
    (b"\x1f\x9d", 0, "compress (.Z) data"),
    (b"PK\x03\x04", 0, "a zip archive"),
    (b"PK\x05\x06", 0, "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7z archive"),
    (b"Rar!\x1a\x07", 0, "a rar archive"),
    (b"ustar", 257, "a tar archive"),
    (b"\x93NUMPY", 0, "a numpy .npy file"),
)


@contextlib.contextmanager
def stdin_as_file() -> Iterator[str | None]:
    """A path that reopens stdin, when stdin is an uncompressed regular file not yet read
    (``kxtool shuffle < big.txt``), so that it can be sized and read by byte ranges, by any
    process, like a named file; else ``None``. The path is ``/dev/fd/N`` for a duplicate of
    file descriptor 0 (closed on exit) and is named ``<stdin>`` in messages."""
    dup = -1
    try:
        fd = sys.stdin.fileno()
        st = os.fstat(fd)
        if (
            stat.S_ISREG(st.st_mode)
            and sys.stdin.buffer.tell() == 0
            and _sniff(os.pread(fd, _SNIFF, 0)) is None
            and os.path.isdir("/dev/fd")
        ):
            dup = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no stdin, closed, not seekable
        dup = -1
    if dup < 0:
        yield None
        return
    path = f"/dev/fd/{dup}"
    _ALIASES[path] = STDIO
    try:
        yield path
    finally:
        _ALIASES.pop(path, None)
        os.close(dup)


def _sniff(head: bytes) -> str | None:
    """The format of a stream that starts with ``head``: ``"gzip"``, ``"bzip2"``, ``"xz"``
    (read transparently), the name of a compressed or archive format that kxtool recognises
    but does not read (see :data:`_UNREAD_FORMATS`; :func:`_wrap_compressed` refuses it), or
    ``None`` for anything else (text). Full magic numbers are required (gzip with deflate;
    bzip2 with its level digit and block or end marker), so a text that merely starts with
    ``BZh`` is not taken for bzip2."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[3:4] and head[4:10] in _BZ2_BLOCK:
        return "bzip2"
    if head[:4] == _ZSTD_MAGIC or (
        len(head) >= 8 and head[:4] in _ZSTD_SKIPPABLE and _skippable_then_zstd(head)
    ):
        return "zstd"
    for magic, offset, name in _UNREAD_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


_ZSTD_SKIPPABLE = frozenset(bytes([0x50 + i, 0x2A, 0x4D, 0x18]) for i in range(16))


_READ_KINDS = (None, "gzip", "bzip2", "xz", "zstd")


def _skippable_then_zstd(head: bytes) -> bool:
    """A stream that opens with zstd skippable frames (metadata) followed by a zstd frame."""
    pos = 0
    while pos + 8 <= len(head) and head[pos : pos + 4] in _ZSTD_SKIPPABLE:
        pos += 8 + int.from_bytes(head[pos + 4 : pos + 8], "little")
    if pos + 4 <= len(head):
        return head[pos : pos + 4] == _ZSTD_MAGIC
    return pos > 0  # the frames run past what was looked at: take it for zstd


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a zstd stream: any number of frames, concatenated streams and
    skippable frames. A stream that ends inside a frame raises ``EOFError``; damaged data
    (a bad block, a checksum that does not match) raises ``ValueError``. Output is produced
    from small pieces of input, so memory stays bounded by the piece times the ratio."""

    PIECE = 1 << 15

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._dec = zstandard.ZstdDecompressor()
        self._obj = self._dec.decompressobj()
        self._pending = False  # input was fed to a frame that has not ended
        self._buf = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while self._pos >= len(self._buf) and not self._eof:
            chunk = self._raw.read(self.PIECE)
            if not chunk:
                self._eof = True
                if self._pending:
                    raise EOFError("the stream ends inside a frame")
                return
            out = []
            try:
                while chunk:
                    out.append(self._obj.decompress(chunk))
                    self._pending = True
                    if self._obj.eof:
                        chunk = self._obj.unused_data
                        self._obj = self._dec.decompressobj()
                        self._pending = False
                    else:
                        chunk = b""
            except self._zstd.ZstdError as e:
                raise ValueError(str(e)) from None
            self._buf = b"".join(out)
            self._pos = 0

    def readinto(self, view) -> int:  # type: ignore[no-untyped-def]
        self._fill()
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _zstd_reader(raw: BinaryIO, path: str | os.PathLike[str]) -> BinaryIO:
    try:
        reader = _ZstdReader(raw)
    except ImportError:
        raise KxError(
            f"cannot read {display_name(path)!r}: zstd input needs the zstandard package "
            "(pip install zstandard)"
        ) from None
    return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[return-value]


def _wrap_compressed(raw: BinaryIO, kind: str | None, path: str | os.PathLike[str]) -> BinaryIO:
    """``raw`` as a stream of decompressed bytes whose errors are :class:`KxError` naming
    ``path`` (see :class:`_Checked`)."""
    if kind is None:
        stream: BinaryIO = raw
    elif kind == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif kind == "bzip2":
        stream = bz2.BZ2File(raw, mode="rb")  # type: ignore[assignment]
    elif kind == "xz":
        stream = lzma.LZMAFile(raw, mode="rb")  # type: ignore[assignment]
    elif kind == "zstd":
        stream = _zstd_reader(raw, path)
    else:
        raise KxError(
            f"cannot read {display_name(path)!r}: it is {kind}, which kxtool does not read "
            "(it reads plain text, gzip, bzip2, xz and zstd)"
        )
    return _Checked(stream, kind, path, raw)  # type: ignore[return-value]


class _Checked:
    """A read-only stream proxy that turns every error while reading (corrupt or truncated
    compressed data, an I/O error) into a one-line :class:`KxError` naming the file and how
    many (decompressed) bytes were read before it."""

    PIECE = 1 << 20  # compressed streams are read in pieces of this size (see read)

    def __init__(
        self,
        stream: BinaryIO,
        kind: str | None,
        path: str | os.PathLike[str],
        raw: BinaryIO | None = None,
    ) -> None:
        self._stream = stream
        self._kind = kind
        self._path = path
        self._raw = raw if raw is not None else stream
        self.position = 0  # bytes handed out so far

    def consumed(self) -> int | None:
        """How far into the file (its stored, possibly compressed bytes) reading has got, or
        None when that cannot be told (a pipe): for progress against the file's size."""
        if self._kind is None:
            return self.position
        try:
            return self._raw.tell()
        except (OSError, ValueError, AttributeError):
            return None

    def _error(self, e: BaseException) -> KxError:
        if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.errno:
            return os_error(e, self._path, "cannot read")
        what = f"{self._kind} data" if self._kind else "data"
        at = f" after byte {self.position} of its content" if self.position else ""
        if isinstance(e, EOFError):
            problem = f"truncated {what}: it ends{at or ' early'}"
        else:
            problem = f"corrupt {what}{at} ({str(e) or type(e).__name__})"
        return KxError(f"cannot read {display_name(self._path)!r}: {problem}")

    def read(self, size: int = -1) -> bytes:
        if self._kind is not None and size is not None and size > self.PIECE:
            parts = []  # in pieces, so that an error can say how far the data was good
            while size > 0:
                part = self.read(min(size, self.PIECE))
                if not part:
                    break
                parts.append(part)
                size -= len(part)
            return b"".join(parts)
        try:
            data = self._stream.read(size)
        except _DECOMPRESS_ERRORS as e:
            raise self._error(e) from None
        self.position += len(data)
        return data

    def readinto(self, view) -> int:  # type: ignore[no-untyped-def]
        view = memoryview(view).cast("B")
        if self._kind is not None and len(view) > self.PIECE:
            done = 0
            while done < len(view):
                got = self.readinto(view[done : done + self.PIECE])
                if not got:
                    break
                done += got
            return done
        try:
            got = self._stream.readinto(view)  # type: ignore[attr-defined]
        except _DECOMPRESS_ERRORS as e:
            raise self._error(e) from None
        self.position += got or 0
        return got

    def readline(self, size: int = -1) -> bytes:
        try:
            line = self._stream.readline(size)
        except _DECOMPRESS_ERRORS as e:
            raise self._error(e) from None
        self.position += len(line)
        return line

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def close(self) -> None:
        with contextlib.suppress(*_DECOMPRESS_ERRORS):
            self._stream.close()

    def __getattr__(self, name: str):  # pragma: no cover - delegation
        return getattr(self._stream, name)


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zstd"`` or ``None`` for a file (by content, not by
    name); a
    compressed or archive format that kxtool does not read is a :class:`KxError`."""
    p = remote.local_path(os.fspath(path))
    if p == STDIO:
        return None
    if remote.is_remote(p):
        kind = _sniff(remote.url_head(p, _SNIFF))
    else:
        try:
            with open(p, "rb") as f:
                kind = _sniff(f.read(_SNIFF))
        except OSError as e:
            raise os_error(e, p) from None
    if kind not in _READ_KINDS:
        _wrap_compressed(None, kind, p)  # type: ignore[arg-type]  # raises
    return kind


def _check_not_directory(p: str) -> None:
    if os.path.isdir(p):
        raise KxError(f"cannot read {p!r}: it is a directory")


#: Capacity asked for a pipe on stdin (Linux's default is 64 KiB). Measured reading 2 GB
#: from ``cat``: 1.9 s with the default, 0.8 s with 1 MiB (a sixteenth of the wake-ups).
STDIN_PIPE_BYTES = 1 << 20


def _widen_stdin_pipe() -> None:
    """Ask for a larger pipe when stdin is one (Linux; quietly nothing elsewhere)."""
    try:
        import fcntl

        fd = sys.stdin.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, STDIN_PIPE_BYTES)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError, ValueError):
        pass


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open an input for binary reading: a file, a compressed file, a pipe, ``-`` (stdin) or
    a URL (``s3://bucket/key``, see :mod:`kxtool.textio.remote`).

    The stream yields decompressed bytes; errors while reading (corrupt or truncated data,
    I/O errors) are :class:`KxError` naming the file, as are errors opening it and formats
    kxtool recognises but does not read. Stdin is not closed on exit.
    """
    p = remote.local_path(os.fspath(path))
    if p == STDIO:
        _widen_stdin_pipe()
        raw = sys.stdin.buffer
        head = raw.peek(_SNIFF)[:_SNIFF] if hasattr(raw, "peek") else b""
        yield _wrap_compressed(raw, _sniff(head), p)
        return
    if remote.is_remote(p):
        raw = remote.open_url(p)
    else:
        _check_not_directory(p)
        try:
            raw = open(p, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise os_error(e, p) from None
    try:
        try:
            head = raw.peek(_SNIFF)[:_SNIFF]  # peek, not read+seek: pipes cannot seek
        except OSError as e:
            raise os_error(e, p, "cannot read") from None
        stream = _wrap_compressed(raw, _sniff(head), p)
        try:
            yield stream
        finally:
            stream.close()
    finally:
        raw.close()


def read_blocks(path: str | os.PathLike[str], block_size: int = 16 << 20) -> Iterator[bytes]:
    """Yield the (decompressed) bytes of ``path`` in blocks of about ``block_size`` bytes.

    Corrupt or truncated compressed data is a :class:`KxError` naming the file.
    """
    with open_input(path) as f:
        while True:
            block = f.read(block_size)
            if not block:
                return
            yield block


@contextlib.contextmanager
def open_filler(path: str | os.PathLike[str]) -> Iterator[Callable[[memoryview], int]]:
    """Open ``path`` like :func:`open_input` and yield ``fill(view)``, which reads
    (decompressed) bytes straight into ``view`` until it is full or the input ends and returns
    how many it read. Read errors become :class:`KxError` as in :func:`read_blocks`."""
    with open_input(path) as f:

        def fill(view: memoryview) -> int:
            done = 0
            want = len(view)
            while done < want:
                got = f.readinto(view[done:])  # type: ignore[attr-defined]
                if not got:
                    break
                done += got
            return done

        yield fill


def input_size(path: str | os.PathLike[str]) -> int | None:
    """The number of bytes ``path`` will yield, when it is known without reading it.

    Plain regular files: their size. Stdin, pipes, compressed files and URLs (read as
    streams, never by byte ranges): ``None``.
    """
    p = remote.local_path(os.fspath(path))
    if p == STDIO or remote.is_remote(p):
        return None
    try:
        st = os.stat(p)
    except OSError as e:
        raise os_error(e, p) from None
    if not os.path.isfile(p):
        return None
    if compression_of(p) is not None:
        return None
    return st.st_size


def check_readable(path: str | os.PathLike[str]) -> None:
    """Fail early, with a clear message, if ``path`` cannot be opened for reading or is in a
    format that kxtool does not read."""
    p = remote.local_path(os.fspath(path))
    if p == STDIO:
        return
    if not remote.is_remote(p):
        _check_not_directory(p)
    compression_of(p)  # opens it, and refuses formats kxtool recognises but does not read
