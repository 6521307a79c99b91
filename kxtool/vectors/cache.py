"""The cache of parsed vectors files: where it lives, which cache file serves a load (and
whether it is still good), and the listing and cleaning of ``kxtool vectors cache``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from .. import tempfiles
from ..errors import KxError, kxwarn
from ..textio import os_error
from .collect import _warn_invalid_utf8
from .core import Vectors, _check_limit
from .kxv import (
    CACHE_SUFFIX,
    _damage,
    _Damaged,
    _is_kxv,
    _kxv_vectors,
    _read_kxv_header,
)

ENV_CACHE_DIR = "KXTOOL_CACHE_DIR"


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
            same = now_src.st_size == src.get("size") and now_src.st_mtime_ns == src.get("mtime_ns")
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
