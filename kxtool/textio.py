"""Bytes in and out, shared by every engine.

- ``-`` means stdin (inputs) or stdout (outputs).
- Inputs compressed with gzip, bzip2, xz or zstd are detected by their magic bytes and read
  transparently.
- Outputs are written atomically: a temporary file beside the target, renamed over it only
  when everything was written; on any error (or Ctrl-C) the temporary file is removed and an
  existing target is left untouched.
- Every ``OSError`` the user can act on becomes a one-line :class:`KxError` naming the file.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import tempfiles
from .errors import KxError

STDIO = "-"

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

_ALIASES: dict[str, str] = {}  # paths standing for stdin (see stdin_as_file)


def display_name(path: str | os.PathLike[str]) -> str:
    """How a path is named in messages (``-``, and a path for it, is shown as ``<stdin>``)."""
    p = os.fspath(path)
    p = _ALIASES.get(p, p)
    return "<stdin>" if p == STDIO else p


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


def os_error(
    err: OSError, path: str | os.PathLike[str], action: str = "cannot open"
) -> KxError | BrokenPipeError:
    """Turn an ``OSError`` about ``path`` into a one-line :class:`KxError`. ``-`` is named
    stdout when ``action`` is about writing, else ``<stdin>``. A closed pipe (the reader of
    stdout or of a FIFO went away, as ``| head`` does) is no fault of the data: it stays a
    ``BrokenPipeError``, which the CLI ends quietly."""
    if err.errno == errno.EPIPE:
        return err if isinstance(err, BrokenPipeError) else BrokenPipeError(*err.args)
    p = os.fspath(path)
    writing = "writ" in action
    if p == STDIO and writing:
        where = "cannot write to stdout"
    else:
        where = f"{action} {display_name(p)!r}"
    if err.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif err.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    else:
        reason = err.strerror or str(err)
    return KxError(f"{where}: {reason}")


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


def compression_for_name(path: str | os.PathLike[str]) -> str | None:
    """The compression an output named ``path`` is written with (by its extension)."""
    name = os.fspath(path).lower()
    for ext, kind in ((".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz"), (".zst", "zstd")):
        if name.endswith(ext):
            return kind
    return None


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"xz"``, ``"zstd"`` or ``None`` for a file (by content, not by
    name); a
    compressed or archive format that kxtool does not read is a :class:`KxError`."""
    p = os.fspath(path)
    if p == STDIO:
        return None
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


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open an input for binary reading: a file, a compressed file, a pipe or ``-`` (stdin).

    The stream yields decompressed bytes; errors while reading (corrupt or truncated data,
    I/O errors) are :class:`KxError` naming the file, as are errors opening it and formats
    kxtool recognises but does not read. Stdin is not closed on exit.
    """
    p = os.fspath(path)
    if p == STDIO:
        raw = sys.stdin.buffer
        head = raw.peek(_SNIFF)[:_SNIFF] if hasattr(raw, "peek") else b""
        yield _wrap_compressed(raw, _sniff(head), p)
        return
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

    Plain regular files: their size. Stdin, pipes and compressed files: ``None``.
    """
    p = os.fspath(path)
    if p == STDIO:
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
    p = os.fspath(path)
    if p == STDIO:
        return
    _check_not_directory(p)
    compression_of(p)  # opens it, and refuses formats kxtool recognises but does not read


class _KeepOpen:
    """A stream proxy whose ``close`` does nothing (for stdout)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __getattr__(self, name: str):  # pragma: no cover - delegation
        return getattr(self._stream, name)

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        return self._stream.write(data)

    def writelines(self, lines) -> None:  # type: ignore[no-untyped-def]
        self._stream.writelines(lines)

    def close(self) -> None:
        self._stream.flush()


@dataclass
class _Output:
    """One output of an :class:`AtomicOutputs` set."""

    file: BinaryIO  # what the bytes go into: the temporary file, or the target itself
    comp: BinaryIO | None  # the compressor writing into ``file``, if any
    tmp: str | None  # the temporary file; None when the target is written through
    target: str  # the path finally written (symlinks resolved)
    name: str  # the path as the user gave it (for messages)
    replaces: bool  # an existing regular file is replaced


class AtomicOutputs:
    """A set of outputs written together; ``-`` is stdout.

    What a target is decides how it is written:

    - a regular file, or a name that does not exist yet: written to a temporary file beside it
      (its name carries its owner, see :mod:`kxtool.tempfiles`) and renamed over the target
      only when the whole set was written (after an fsync when it replaces a file, so that a
      crash cannot lose both). On any exception, Ctrl-C included, the temporary files are
      removed and the targets are untouched. A replaced file keeps its permission bits and,
      where this process may set them, its owner and group.
    - a regular file with several hard links: written to a temporary file first all the same,
      then copied into the file itself, so that every link sees the result (as GNU ``shuf -o``
      and ``sort -o`` do).
    - a symbolic link: followed; what it points to is written as above, and the link stays.
    - a character or block device, a FIFO: opened and written through, never renamed over
      (``-o /dev/null`` stays a device; ``/dev/full`` is a "no space left" error).

    A target named ``*.gz``, ``*.bz2``, ``*.xz`` or ``*.zst`` is written compressed. With
    ``make_dirs``, missing directories of a target are created (and removed again if the set
    is discarded while they are still empty).
    """

    def __init__(self, make_dirs: bool = False) -> None:
        self._open: list[_Output] = []
        self._stdout: BinaryIO | None = None
        self._make_dirs = make_dirs
        self._made_dirs: list[str] = []

    def open(self, path: str | os.PathLike[str], size: int | None = None) -> BinaryIO:
        """A file writing (eventually) to ``path``; ``size``, when known, reserves the space of
        a temporary file at once (a full disk is then an error before anything is written)."""
        p = os.fspath(path)
        check_output(p, self._make_dirs)
        if p == STDIO:
            if self._stdout is None:
                self._stdout = _KeepOpen(sys.stdout.buffer)  # type: ignore[assignment]
            return _Reporting(self._stdout, STDIO)  # type: ignore[arg-type, return-value]
        try:
            st: os.stat_result | None = os.stat(p)  # follows symbolic links
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise os_error(e, p, "cannot write") from None
        kind = compression_for_name(p)
        if st is not None and (not stat.S_ISREG(st.st_mode) or _is_descriptor_link(p)):
            # a device, FIFO or socket; or /dev/stdout and the like, whatever they stand for
            return self._open_through(p, st, kind)
        target = os.path.realpath(p)  # follows symbolic links (a dangling one: its target)
        directory = os.path.dirname(target)
        self._ensure_directory(p, directory)
        base = os.path.basename(target)
        tempfiles.remove_stale(directory, base)
        try:
            fd, tmp = tempfiles.make_temp_file(directory, base)
        except OSError as e:
            raise os_error(e, p, "cannot write") from None
        try:
            if size and kind is None:
                preallocate(fd, size, p)
            f = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        out = _Output(f, _compressor(f, kind), tmp, target, p, st is not None)
        self._open.append(out)
        return _Reporting(out.comp or f, p)  # type: ignore[return-value]

    def _ensure_directory(self, p: str, directory: str) -> None:
        _check_directory(p, directory, self._make_dirs)
        if os.path.isdir(directory):
            return
        missing = []
        d = directory
        while d and not os.path.exists(d):
            missing.append(d)
            d = os.path.dirname(d)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise os_error(e, directory, "cannot create directory") from None
        self._made_dirs.extend(missing)  # deepest first

    def _open_through(self, p: str, st: os.stat_result, kind: str | None) -> BinaryIO:
        flags = os.O_WRONLY | os.O_CLOEXEC
        if stat.S_ISREG(st.st_mode):
            flags |= os.O_TRUNC  # /dev/stdout redirected to a file: as the shell would
        try:
            fd = os.open(p, flags)
            f = os.fdopen(fd, "wb", buffering=1 << 20)
        except OSError as e:
            raise os_error(e, p, "cannot write") from None
        out = _Output(f, _compressor(f, kind), None, p, p, False)
        self._open.append(out)
        return _Reporting(out.comp or f, p)  # type: ignore[return-value]

    def temp_path(self, path: str | os.PathLike[str]) -> str | None:
        """The temporary file an opened ``path`` is being written to (for writers in other
        processes, which write into it with ``pwrite``), or None when ``path`` is written
        through (a device or FIFO) and only sequential writes reach it."""
        p = os.fspath(path)
        for out in self._open:
            if out.name == p:
                return out.tmp
        raise KeyError(path)

    def commit(self) -> None:
        """Flush, fsync and rename (or copy) every output into place."""
        if self._stdout is not None:
            try:
                self._stdout.flush()
            except OSError as e:
                raise os_error(e, STDIO, "cannot write") from None
        for out in self._open:
            try:
                if out.comp is not None:
                    out.comp.close()  # writes the trailer; the file itself stays open
                out.file.flush()
                if out.tmp is not None:
                    out.file.truncate()  # drop any space reserved beyond what was written
                    if out.replaces:
                        # replacing a file: its data must be on disk before the rename, or a
                        # crash could lose both versions; a new file is flushed as usual
                        os.fsync(out.file.fileno())
                out.file.close()
            except OSError as e:
                raise os_error(e, out.name, "cannot write") from None
        for out in self._open:
            if out.tmp is not None:
                place_file(out.tmp, out.target, out.name)
        self._open.clear()
        self._made_dirs.clear()

    def discard(self) -> None:
        """Close and remove every temporary file (and the directories made for them)."""
        for out in self._open:
            if out.comp is not None:
                with contextlib.suppress(Exception):
                    out.comp.close()
            with contextlib.suppress(OSError):
                out.file.close()
            if out.tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(out.tmp)
        self._open.clear()
        for d in self._made_dirs:
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only while empty
        self._made_dirs.clear()

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def check_output(path: str | os.PathLike[str], make_dirs: bool = False) -> None:
    """Fail early, before any work is done, when an output named ``path`` cannot be written:
    an empty name, a directory, a socket, a directory that does not exist (unless
    ``make_dirs``: it will be created)."""
    p = os.fspath(path)
    if p == STDIO:
        return
    if not p:
        raise KxError("an output file name is empty")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise os_error(e, p, "cannot write") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise KxError(f"cannot write {p!r}: it is a directory")
    if st is not None and stat.S_ISSOCK(st.st_mode):
        raise KxError(f"cannot write {p!r}: it is a socket")
    if st is None:
        _check_directory(p, os.path.dirname(os.path.realpath(p)), make_dirs)


def _check_directory(p: str, directory: str, make_dirs: bool) -> None:
    if os.path.isdir(directory):
        return
    d = directory
    while d and not os.path.exists(d):
        d = os.path.dirname(d)
    if d and not os.path.isdir(d):
        raise KxError(f"cannot write {p!r}: {d!r} is not a directory")
    if not make_dirs:
        raise KxError(f"cannot write {p!r}: directory {directory!r} does not exist")


def written_through(path: str | os.PathLike[str]) -> bool:
    """Whether an output named ``path`` is written through rather than replaced: ``-``, an
    existing device, FIFO or socket (after symbolic links), or a descriptor's name such as
    ``/dev/stdout`` (see :class:`AtomicOutputs`)."""
    p = os.fspath(path)
    if p == STDIO:
        return True
    try:
        st = os.stat(p)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode) or _is_descriptor_link(p)


_FD_LINK = re.compile(r"^/(?:proc/(?:self|thread-self|\d+)/fd|dev/fd)/\d+$")


def _is_descriptor_link(p: str) -> bool:
    """True when ``p`` is, or leads through symbolic links to, an open descriptor's name
    (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``): such a name stands for whatever the
    descriptor is open on, so it is written through, never renamed over."""
    path = os.path.abspath(p)
    for _ in range(40):
        if _FD_LINK.match(path):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.join(os.path.dirname(path), os.readlink(path))
        path = os.path.normpath(path)
    return False


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _compressor(f: BinaryIO, kind: str | None) -> BinaryIO | None:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(f, mode="wb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(f, mode="wb")  # type: ignore[return-value]
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise KxError("writing .zst needs the zstandard package (pip install zstandard)") from (
                None
            )
        # level 3 (zstd's default), every core compressing, and a checksum in each frame
        cctx = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True)
        return cctx.stream_writer(f, closefd=False)  # type: ignore[return-value]
    return None


def place_file(tmp: str, target: str, name: str) -> None:
    """Put the complete temporary file ``tmp`` (beside ``target``) in place of ``target``, a
    regular file or a name that does not exist yet (symlinks already resolved): a replaced
    file's permission bits and, where this process may set them, its owner and group are
    kept; a file with several hard links is rewritten in place so that every link sees the
    result; otherwise ``tmp`` is renamed over ``target`` (atomic)."""
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise os_error(e, name, "cannot write") from None
    try:
        if st is None:
            os.chmod(tmp, 0o666 & ~_umask())
        else:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.chown(tmp, st.st_uid, st.st_gid)
                with contextlib.suppress(OSError):  # chown may clear set-id bits
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if st is not None and st.st_nlink > 1:
            _copy_into(tmp, target, name)
            os.unlink(tmp)
        else:
            os.replace(tmp, target)
    except OSError as e:
        raise os_error(e, name, "cannot write") from None


def _copy_into(src: str, target: str, name: str) -> None:
    """Rewrite the file ``target`` (its own inode, so every hard link sees it) with the bytes
    of ``src``. If that fails, ``src`` is kept and named in the error."""
    try:
        with open(src, "rb") as fin, open(target, "r+b") as fout:
            size = os.fstat(fin.fileno()).st_size
            done = 0
            while done < size:
                sent = os.sendfile(fout.fileno(), fin.fileno(), done, size - done)
                if sent == 0:
                    break
                done += sent
            fout.truncate(size)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as e:
        err = os_error(e, name, "cannot write")
        raise KxError(f"{err.message} (the complete output is kept in {src!r})") from None


class _Reporting:
    """A file proxy that turns write errors (disk full...) into :class:`KxError`."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self._name = name

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        try:
            return self._f.write(data)
        except OSError as e:
            raise os_error(e, self._name, "cannot write") from None

    def writelines(self, lines) -> None:  # type: ignore[no-untyped-def]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            raise os_error(e, self._name, "cannot write") from None

    def __getattr__(self, name: str):  # pragma: no cover - delegation
        return getattr(self._f, name)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], make_dirs: bool = False) -> Iterator[BinaryIO]:
    """Open one output for binary writing (see :class:`AtomicOutputs`)."""
    with AtomicOutputs(make_dirs) as outs:
        yield outs.open(path)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str | int) -> int:
    """Parse a size such as ``512M``, ``1.5G``, ``64k``, ``2GiB`` or ``1000`` into bytes.

    Suffixes are binary (K = 1024). A bare number is bytes.
    """
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise KxError(f"invalid size {text!r}: use a number with an optional K, M, G or T suffix")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return int(value)


def format_size(n: float) -> str:
    """A short human form of a byte count (``1.5G``)."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"  # pragma: no cover


#: Files smaller than this are not preallocated (it only pays for big writes).
PREALLOCATE_MIN = 4 << 20


def preallocate(fd: int, size: int, name: str | os.PathLike[str], offset: int = 0) -> None:
    """Reserve ``size`` bytes from ``offset`` on for the file open on ``fd``.

    Writing into reserved space is markedly faster on some file systems, and a full disk shows
    up here, before any data is written. File systems that cannot reserve space are fine.
    """
    if size < PREALLOCATE_MIN or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, offset, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise os_error(e, name, "cannot write") from None
        # EOPNOTSUPP, EINVAL...: the file system does not reserve space; write as usual


def free_space(directory: str | os.PathLike[str]) -> int:
    """Free bytes available to this user on the file system of ``directory``."""
    try:
        return shutil.disk_usage(os.fspath(directory)).free
    except OSError as e:
        raise os_error(e, directory, "cannot inspect") from None


def temp_dir(parent: str | os.PathLike[str] | None = None):  # type: ignore[no-untyped-def]
    """A private temporary directory under ``parent`` (default ``$TMPDIR``), always removed;
    leftovers of killed runs there are removed first (see :mod:`kxtool.tempfiles`)."""
    return tempfiles.private_dir(parent)


#: Block size that direct (page-cache bypassing) writes are aligned to.
DIRECT_ALIGN = 4096


class PositionalWriter:
    """Writes bytes at given offsets of an existing file (``pwrite``), from several processes
    at once if need be.

    With ``direct``, the block-aligned middle of each large write goes around the page cache
    (``O_DIRECT``) when the file system allows it: a large output then costs no copy into the
    page cache and pushes nothing else out of it. This needs the data's address to agree with
    the file offset modulo :data:`DIRECT_ALIGN` (see :meth:`phase`); other writes, and the
    unaligned ends, are written as usual. Errors become :class:`KxError` naming ``name``.
    """

    def __init__(self, path: str, name: str, direct: bool = False) -> None:
        self.name = name
        try:
            self.fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            raise os_error(e, name, "cannot write") from None
        self.direct_fd: int | None = None
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except OSError:  # e.g. tmpfs: no direct I/O
                self.direct_fd = None

    @staticmethod
    def phase(offset: int) -> int:
        """Where, modulo :data:`DIRECT_ALIGN`, data meant for ``offset`` should start in memory."""
        return offset % DIRECT_ALIGN

    def pwrite(self, data, offset: int) -> None:  # type: ignore[no-untyped-def]
        """Write all of ``data`` (a bytes-like object) at ``offset``."""
        view = memoryview(data).cast("B")
        try:
            if self.direct_fd is not None and len(view) >= 4 * DIRECT_ALIGN:
                import numpy as np

                address = np.frombuffer(view, dtype=np.uint8).ctypes.data
                if (address - offset) % DIRECT_ALIGN == 0:
                    head = -offset % DIRECT_ALIGN
                    body = (len(view) - head) // DIRECT_ALIGN * DIRECT_ALIGN
                    self._write(self.fd, view[:head], offset)
                    try:
                        self._write(self.direct_fd, view[head : head + body], offset + head)
                    except OSError as e:
                        if e.errno != errno.EINVAL:
                            raise
                        # the file system refused this direct write: no more of them
                        os.close(self.direct_fd)
                        self.direct_fd = None
                        self._write(self.fd, view[head : head + body], offset + head)
                    self._write(self.fd, view[head + body :], offset + head + body)
                    return
            self._write(self.fd, view, offset)
        except OSError as e:
            raise os_error(e, self.name, "cannot write") from None

    @staticmethod
    def _write(fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done : done + (1 << 30)], offset + done)

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.direct_fd = None
