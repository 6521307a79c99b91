"""Bytes in and out, shared by every engine.

- ``-`` means stdin (inputs) or stdout (outputs).
- Inputs compressed with gzip, bzip2 or xz are detected by their magic bytes and read
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
import lzma
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .errors import KxError

STDIO = "-"

_SNIFF = 10  # bytes looked at to recognise a compressed stream
_BZ2_BLOCK = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
_DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, gzip.BadGzipFile, ValueError)


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


def os_error(err: OSError, path: str | os.PathLike[str], action: str = "cannot open") -> KxError:
    """Turn an ``OSError`` about ``path`` into a one-line :class:`KxError`."""
    name = display_name(path)
    if err.errno == errno.ENOSPC:
        return KxError(f"no space left on device while writing {name!r}")
    if err.errno == errno.EDQUOT:
        return KxError(f"disk quota exceeded while writing {name!r}")
    reason = err.strerror or str(err)
    return KxError(f"{action} {name!r}: {reason}")


def _sniff(head: bytes) -> str | None:
    """The compression of a stream that starts with ``head``: the full magic numbers are
    required (gzip with deflate; bzip2 with its level digit and block or end marker; xz), so a
    text that merely starts with ``BZh`` is not taken for bzip2."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[3:4] and head[4:10] in _BZ2_BLOCK:
        return "bzip2"
    return None


def _wrap_compressed(raw: BinaryIO, kind: str | None) -> BinaryIO:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


def compression_for_name(path: str | os.PathLike[str]) -> str | None:
    """The compression an output named ``path`` is written with (by its extension)."""
    name = os.fspath(path).lower()
    for ext, kind in ((".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz")):
        if name.endswith(ext):
            return kind
    return None


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"xz"`` or ``None`` for a file (by content, not by name)."""
    p = os.fspath(path)
    if p == STDIO:
        return None
    try:
        with open(p, "rb") as f:
            return _sniff(f.read(_SNIFF))
    except OSError as e:
        raise os_error(e, p) from None


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open an input for binary reading: a file, a compressed file or ``-`` (stdin).

    The stream yields decompressed bytes. Stdin is not closed on exit. Errors opening the file
    become :class:`KxError`; errors while reading a compressed stream surface as the usual
    exceptions, which :func:`read_blocks` translates.
    """
    p = os.fspath(path)
    if p == STDIO:
        raw = sys.stdin.buffer
        head = raw.peek(_SNIFF)[:_SNIFF] if hasattr(raw, "peek") else b""
        kind = _sniff(head)
        stream = _wrap_compressed(raw, kind)
        yield stream
        return
    if os.path.isdir(p):
        raise KxError(f"cannot read {p!r}: it is a directory")
    try:
        raw = open(p, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise os_error(e, p) from None
    try:
        kind = _sniff(raw.peek(_SNIFF)[:_SNIFF])  # peek, not read+seek: pipes cannot seek
        stream = _wrap_compressed(raw, kind)
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()
    finally:
        raw.close()


def _read_error(e: BaseException, path: str | os.PathLike[str]) -> KxError:
    """The :class:`KxError` for an error raised while reading ``path``."""
    if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.errno:
        return os_error(e, path, "cannot read")
    return KxError(
        f"cannot read {display_name(path)!r}: corrupt or truncated compressed data ({e})"
    )


def read_blocks(path: str | os.PathLike[str], block_size: int = 16 << 20) -> Iterator[bytes]:
    """Yield the (decompressed) bytes of ``path`` in blocks of about ``block_size`` bytes.

    Corrupt or truncated compressed data is a :class:`KxError` naming the file.
    """
    with open_input(path) as f:
        while True:
            try:
                block = f.read(block_size)
            except _DECOMPRESS_ERRORS as e:
                raise _read_error(e, path) from None
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
            try:
                while done < want:
                    got = f.readinto(view[done:])  # type: ignore[attr-defined]
                    if not got:
                        break
                    done += got
            except _DECOMPRESS_ERRORS as e:
                raise _read_error(e, path) from None
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
    """Fail early, with a clear message, if ``path`` cannot be opened for reading."""
    p = os.fspath(path)
    if p == STDIO:
        return
    if os.path.isdir(p):
        raise KxError(f"cannot read {p!r}: it is a directory")
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise os_error(e, p) from None


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


class AtomicOutputs:
    """A set of outputs written atomically together; ``-`` is stdout.

    Each :meth:`open` gives a file that writes to a temporary file beside its target. When the
    ``with`` block ends without an exception, every temporary file is renamed over its target
    (after an fsync when it replaces an existing file, so that a crash cannot lose both); on
    any exception, Ctrl-C included, the temporary files are removed and the targets are
    untouched. A new file keeps the permissions of the file it replaces (or the usual ones, for
    a new file). A target named ``*.gz``, ``*.bz2`` or ``*.xz`` is written compressed.
    """

    def __init__(self) -> None:
        # (file, compressor or None, temporary path, target)
        self._open: list[tuple[BinaryIO, BinaryIO | None, str, str]] = []
        self._stdout: BinaryIO | None = None

    def open(self, path: str | os.PathLike[str], size: int | None = None) -> BinaryIO:
        """A file writing to a temporary file beside ``path``; ``size``, when known, reserves
        the space at once (a full disk is then an error before anything is written)."""
        p = os.fspath(path)
        if p == STDIO:
            if self._stdout is None:
                self._stdout = _KeepOpen(sys.stdout.buffer)  # type: ignore[assignment]
            return self._stdout  # type: ignore[return-value]
        target = os.path.abspath(p)
        directory = os.path.dirname(target)
        if os.path.isdir(target):
            raise KxError(f"cannot write {p!r}: it is a directory")
        if not os.path.isdir(directory):
            raise KxError(f"cannot write {p!r}: directory {directory!r} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(
                dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".kxtmp"
            )
        except OSError as e:
            raise os_error(e, p, "cannot write") from None
        try:
            try:
                mode = os.stat(target).st_mode & 0o7777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.fchmod(fd, mode)
            kind = compression_for_name(target)
            if size and kind is None:
                preallocate(fd, size, p)
            f = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        comp: BinaryIO | None = None
        if kind == "gzip":
            comp = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0)  # type: ignore[assignment]
        elif kind == "bzip2":
            comp = bz2.BZ2File(f, mode="wb")  # type: ignore[assignment]
        elif kind == "xz":
            comp = lzma.LZMAFile(f, mode="wb")  # type: ignore[assignment]
        self._open.append((f, comp, tmp, target))
        return _Reporting(comp or f, p)  # type: ignore[return-value]

    def temp_path(self, path: str | os.PathLike[str]) -> str:
        """The temporary file an opened ``path`` is being written to (for writers in other
        processes, which write into it with ``pwrite``)."""
        target = os.path.abspath(os.fspath(path))
        for _f, _comp, tmp, t in self._open:
            if t == target:
                return tmp
        raise KeyError(path)

    def commit(self) -> None:
        """Flush, fsync and rename every output into place."""
        if self._stdout is not None:
            self._stdout.flush()
        for f, comp, _tmp, target in self._open:
            try:
                if comp is not None:
                    comp.close()  # writes the trailer; the file itself stays open
                f.flush()
                f.truncate()  # drop any space reserved beyond what was written
                if os.path.lexists(target):
                    # replacing a file: its data must be on disk before the rename, or a crash
                    # could lose both versions; a new file is flushed by the kernel as usual
                    os.fsync(f.fileno())
                f.close()
            except OSError as e:
                raise os_error(e, target, "cannot write") from None
        for _f, _comp, tmp, target in self._open:
            os.replace(tmp, target)
        self._open.clear()

    def discard(self) -> None:
        """Close and remove every temporary file."""
        for f, comp, tmp, _target in self._open:
            if comp is not None:
                with contextlib.suppress(Exception):
                    comp.close()
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._open.clear()

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
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open one output for binary writing, atomically (see :class:`AtomicOutputs`)."""
    with AtomicOutputs() as outs:
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


@contextlib.contextmanager
def temp_dir(parent: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """A private temporary directory under ``parent`` (default ``$TMPDIR``), always removed."""
    base = os.fspath(parent) if parent is not None else tempfile.gettempdir()
    if not os.path.isdir(base):
        raise KxError(f"temporary directory {base!r} does not exist")
    try:
        path = tempfile.mkdtemp(prefix="kxtool-", dir=base)
    except OSError as e:
        raise os_error(e, base, "cannot create a temporary directory in") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
