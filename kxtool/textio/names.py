"""How files are named in messages, and ``OSError`` as a one-line :class:`KxError`."""

from __future__ import annotations

import errno
import os

from ..errors import KxError

STDIO = "-"


_ALIASES: dict[str, str] = {}  # paths standing for stdin (see stdin_as_file)


def display_name(path: str | os.PathLike[str]) -> str:
    """How a path is named in messages (``-``, and a path for it, is shown as ``<stdin>``)."""
    p = os.fspath(path)
    p = _ALIASES.get(p, p)
    return "<stdin>" if p == STDIO else p


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
