"""Temporary files and directories whose names say who owns them.

Every temporary name kxtool makes carries an owner tag: the host, the process id and the
process's start time (``host@pid-start``). A later run can then tell a temporary left by a
process that was killed (SIGKILL, an OOM kill, power loss) from one that belongs to a run still
going: the owner is gone when it ran on this host and no process with that id and start time
exists any more (the start time guards against a reused process id). Such leftovers are
removed by :func:`remove_stale` (the next write beside the same target, the next shuffle in
the same temporary directory, ``kxtool vectors cache --clean``).

Names:
- a file beside a target ``NAME``: ``.NAME.<owner>.<random>.kxtmp``
- a private directory: ``kxtool-<owner>.<random>``
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import KxError

SUFFIX = ".kxtmp"
DIR_PREFIX = "kxtool-"

_OWNER = r"(?P<host>[A-Za-z0-9-]+)@(?P<pid>\d+)-(?P<start>\d+)"
_FILE_RE = re.compile(r"^\.(?P<base>.+)\." + _OWNER + r"\.[A-Za-z0-9]+" + re.escape(SUFFIX) + "$")
_DIR_RE = re.compile("^" + re.escape(DIR_PREFIX) + _OWNER + r"\.[A-Za-z0-9]+$")


def _hostname() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename  # what socket.gethostname() gives, without its import
    import socket  # pragma: no cover - not POSIX

    return socket.gethostname()  # pragma: no cover


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", _hostname() or "localhost")


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if there is none
    (or this system has no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces: split after it
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def owner_tag() -> str:
    """This process's owner tag, ``host@pid-start``."""
    pid = os.getpid()
    return f"{_host()}@{pid}-{_start_time(pid) or 0}"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int

    def gone(self) -> bool:
        """True when this owner ran on this host and is no longer running."""
        if self.host != _host():
            return False  # another machine's (a shared file system): not ours to judge
        if self.pid == os.getpid() and self.start == (_start_time(self.pid) or 0):
            return False
        start = _start_time(self.pid)
        if start is None:
            if os.path.isdir("/proc"):
                return True
            # no /proc: fall back to whether the pid exists at all
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except OSError:
                return False
            return False
        return start != self.start


def owner_of(name: str) -> Owner | None:
    """The owner of a temporary file or directory called ``name`` (a base name), or None when
    the name is not one of kxtool's temporaries."""
    m = _FILE_RE.match(name) or _DIR_RE.match(name)
    if m is None:
        return None
    return Owner(m["host"], int(m["pid"]), int(m["start"]))


def is_temp_name(name: str) -> bool:
    return owner_of(name) is not None


def temp_file_name(target_base: str) -> str:
    """A fresh temporary base name for a file that will become ``target_base``."""
    return f".{target_base}.{owner_tag()}.{os.urandom(4).hex()}{SUFFIX}"


def make_temp_file(directory: str, target_base: str, mode: int = 0o600) -> tuple[int, str]:
    """Create (exclusively) a temporary file in ``directory`` for ``target_base``: returns its
    descriptor (open for reading and writing) and path. Raises ``OSError``."""
    for _ in range(100):
        path = os.path.join(directory, temp_file_name(target_base))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"no free temporary name in {directory!r}")  # pragma: no cover


def make_temp_dir(parent: str) -> str:
    """Create a private temporary directory under ``parent``. Raises ``OSError``."""
    for _ in range(100):
        path = os.path.join(parent, f"{DIR_PREFIX}{owner_tag()}.{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name in {parent!r}")  # pragma: no cover


def stale_in(directory: str, target_base: str | None = None) -> list[str]:
    """Paths of kxtool temporaries in ``directory`` whose owner is gone (see :class:`Owner`);
    with ``target_base``, only the temporary files meant to become that name."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if target_base is not None:
            m = _FILE_RE.match(name)
            if m is None or m["base"] != target_base:
                continue
        owner = owner_of(name)
        if owner is not None and owner.gone():
            found.append(os.path.join(directory, name))
    return sorted(found)


def remove_stale(directory: str, target_base: str | None = None) -> list[str]:
    """Remove what :func:`stale_in` finds; returns the paths removed (errors are ignored: a
    leftover that cannot be removed is no reason to fail the work at hand)."""
    removed = []
    for path in stale_in(directory, target_base):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    if removed:
        _REMOVED.extend(removed)
    return removed


#: What :func:`remove_stale` removed in this process (the CLI reports it with ``--verbose``).
_REMOVED: list[str] = []


def take_removed() -> list[str]:
    """The leftovers removed since the last call (and forget them)."""
    out = list(_REMOVED)
    _REMOVED.clear()
    return out


@contextlib.contextmanager
def private_dir(parent: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """A private temporary directory under ``parent`` (default ``$TMPDIR``), always removed.
    Leftovers of killed runs in ``parent`` are removed first."""
    import tempfile

    given = parent is not None
    base = os.fspath(parent) if parent is not None else tempfile.gettempdir()
    if not os.path.exists(base):
        raise KxError(f"temporary directory {base!r} does not exist")
    if not os.path.isdir(base):
        what = "option --tmp-dir" if given else "temporary directory"
        raise KxError(f"{what} {base!r} is not a directory")
    remove_stale(base)
    try:
        path = make_temp_dir(base)
    except OSError as e:
        from .textio import os_error

        raise os_error(e, base, "cannot create a temporary directory in") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
