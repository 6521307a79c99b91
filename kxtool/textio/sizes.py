"""Sizes (``512M``), free space, reserving space, private temporary directories."""

from __future__ import annotations

import errno
import os
import re
import shutil

from .. import tempfiles
from ..errors import KxError
from .names import os_error

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
