"""Writing outputs: what a name stands for decides how it is written (see
:class:`AtomicOutputs`), and positional writes into one file from several processes."""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import lzma
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .. import tempfiles
from ..errors import KxError
from . import remote
from .names import STDIO, os_error
from .sizes import preallocate


def compression_for_name(path: str | os.PathLike[str]) -> str | None:
    """The compression an output named ``path`` is written with (by its extension)."""
    name = os.fspath(path).lower()
    for ext, kind in ((".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz"), (".zst", "zstd")):
        if name.endswith(ext):
            return kind
    return None


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
    url: bool = False  # the target is a URL: ``tmp`` is a local staging file, uploaded at commit
    existed: bool = True  # (URLs) the target object was there before


def _open_staged(fd: int, tmp: str, size: int | None, name: str) -> BinaryIO:
    """The temporary file ``tmp`` (open as ``fd``) as a buffered binary file, ``size`` bytes
    reserved when given (errors name ``name``); on any failure it is closed and removed."""
    try:
        if size:
            preallocate(fd, size, name)
        return os.fdopen(fd, "wb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

    - a URL (``s3://bucket/key``, see :mod:`kxtool.textio.remote`): written to a local
      temporary file in ``stage_dir`` (default ``$TMPDIR``), so that positional writes work as
      for a local file, and uploaded when the whole set was written: straight to its name
      where an upload is atomic (S3, GCS), else to a temporary key then moved onto the name.
      Nothing reaches the store before the commit; an object this set created is removed
      again when a later upload of the set fails. ``file://`` URLs are local paths.

    A target named ``*.gz``, ``*.bz2``, ``*.xz`` or ``*.zst`` is written compressed. With
    ``make_dirs``, missing directories of a target are created (and removed again if the set
    is discarded while they are still empty).
    """

    def __init__(
        self, make_dirs: bool = False, stage_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self._open: list[_Output] = []
        self._stdout: BinaryIO | None = None
        self._make_dirs = make_dirs
        self._made_dirs: list[str] = []
        self._stage_dir = os.fspath(stage_dir) if stage_dir is not None else None

    def open(self, path: str | os.PathLike[str], size: int | None = None) -> BinaryIO:
        """A file writing (eventually) to ``path``; ``size``, when known, reserves the space of
        a temporary file at once (a full disk is then an error before anything is written)."""
        name = os.fspath(path)
        p = remote.local_path(name)
        check_output(p, self._make_dirs)
        if remote.is_remote(p):
            return self._open_remote(p, size)
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
        f = _open_staged(fd, tmp, size if kind is None else None, p)
        out = _Output(f, _compressor(f, kind), tmp, target, name, st is not None)
        self._open.append(out)
        return _Reporting(out.comp or f, p)  # type: ignore[return-value]

    def _open_remote(self, url: str, size: int | None) -> BinaryIO:
        """A URL output: staged in a local temporary file, uploaded at commit."""
        import tempfile

        directory = self._stage_dir or tempfile.gettempdir()
        base = os.path.basename(url.rstrip("/")) or "output"
        existed = remote.remote_exists(url)
        tempfiles.remove_stale(directory, base)
        try:
            fd, tmp = tempfiles.make_temp_file(directory, base)
        except OSError as e:
            raise os_error(e, directory, "cannot create a temporary file in") from None
        kind = compression_for_name(url)
        f = _open_staged(fd, tmp, size if kind is None else None, directory)
        out = _Output(f, _compressor(f, kind), tmp, url, url, False, url=True, existed=existed)
        self._open.append(out)
        return _Reporting(out.comp or f, url)  # type: ignore[return-value]

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
            if out.name == p or out.target == p:
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
        uploaded: list[_Output] = []
        try:
            for out in self._open:
                if out.url:
                    assert out.tmp is not None
                    remote.upload(out.tmp, out.target, self._make_dirs)
                    uploaded.append(out)
                    with contextlib.suppress(OSError):
                        os.unlink(out.tmp)
        except BaseException:
            for out in uploaded:
                if not out.existed:
                    remote.remove(out.target)  # the set is not complete: take it back
            raise
        for out in self._open:
            if out.tmp is not None and not out.url:
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
    p = remote.local_path(os.fspath(path))
    if p == STDIO:
        return
    if not p:
        raise KxError("an output file name is empty")
    if remote.is_remote(p):
        remote.check_remote_output(p)
        return
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
    p = remote.local_path(os.fspath(path))
    if p == STDIO:
        return True
    if remote.is_remote(p):
        return False
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
    """Open one output for binary writing (see :class:`AtomicOutputs`): a file, ``-`` or a
    URL."""
    with AtomicOutputs(make_dirs) as outs:
        yield outs.open(path)


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
