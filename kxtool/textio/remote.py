"""URLs as inputs and outputs, through fsspec (``s3://``, ``gs://``, ``memory://``, ...).

A name is a URL when it starts with a scheme of two letters or more and ``://``
(``s3://bucket/key``), or is an fsspec chain (``simplecache::s3://...``). ``file://`` URLs are
plain local paths (:func:`local_path`): they keep every rule of local files and need nothing
installed. Every other URL needs the ``remote`` extra (``pip install 'kxtool[remote]'``: fsspec
and s3fs; other stores need their fsspec driver, e.g. gcsfs for ``gs://``); without it a URL is
a one-line :class:`KxError` naming the extra.

Inputs: :func:`expand_inputs` expands globs (``s3://bucket/crawl/part-*.jsonl.zst``) in sorted
order; :func:`open_url` opens one object as a buffered binary stream (``peek`` works, so the
compression sniffing of local inputs applies unchanged); :func:`url_head` reads its first bytes.
URL inputs are read as streams (like stdin and compressed files), never by byte ranges.

Outputs: :class:`~kxtool.textio.AtomicOutputs` stages a URL output in a local temporary file
(so that positional writes from worker processes work as for a local file) and, at commit, hands
it to :func:`upload`, which puts it in place as atomically as the store allows (see
:data:`DIRECT_UPLOAD`).

Settings of a store come from fsspec and its driver: for S3 the usual AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for an S3-compatible server...),
or fsspec's configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/*.json``);
``KXTOOL_S3_ENDPOINT`` sets the endpoint of ``s3://`` for kxtool alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from .. import tempfiles
from ..errors import KxError

#: How an input or output URL is recognised: ``scheme://`` (two or more letters, so that
#: ``C://`` stays a path) or an fsspec chain ``a::b://``.
_URL_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]+::)*[A-Za-z][A-Za-z0-9+.-]+://")

#: The install hint in every message about a missing module.
EXTRA_HINT = "pip install 'kxtool[remote]'"

#: Stores whose upload is atomic by itself: an object appears only when its upload completes
#: (an S3 PUT or CompleteMultipartUpload; a GCS upload when it is finalised), a failed upload
#: leaves nothing, and a replaced object is swapped whole. Outputs there are uploaded straight
#: to their name. Elsewhere a temporary key beside the target is written and then moved.
DIRECT_UPLOAD = frozenset({"s3", "s3a", "gs", "gcs"})

#: Object stores: "directories" are key prefixes (nothing to create), the first part of the
#: path is a bucket that must exist.
_BUCKETS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})

#: Block size of a remote input (bytes fetched per request, read ahead).
READ_BLOCK = 8 << 20


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a URL rather than a local path.

    >>> is_url("s3://bucket/key"), is_url("file:///tmp/x"), is_url("data/x.txt"), is_url("-")
    (True, True, False, False)
    """
    return isinstance(path, str) and _URL_RE.match(path) is not None


def local_path(path: str) -> str:
    """``path`` with a ``file://`` URL turned into the local path it names (anything else is
    returned unchanged): local files keep their rules whichever way they are named.

    >>> local_path("file:///tmp/x.txt"), local_path("file://localhost/tmp/x"), local_path("a/b")
    ('/tmp/x.txt', '/tmp/x', 'a/b')
    """
    if not path.startswith("file://"):
        return path
    rest = path[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise KxError(f"invalid file URL {path!r}: use file:///absolute/path")
    return rest


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL that fsspec opens (any URL but ``file://``).

    >>> is_remote("s3://bucket/key"), is_remote("file:///tmp/x"), is_remote("x.txt")
    (True, False, False)
    """
    return is_url(path) and not str(path).startswith("file://")


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise ImportError("fsspec") from None
    return fsspec


def _storage_options(url: str) -> dict[str, Any]:
    endpoint = os.environ.get("KXTOOL_S3_ENDPOINT")
    if endpoint and re.match(r"^(?:[^:]+::)*s3a?://", url):
        return {"endpoint_url": endpoint}
    return {}


def filesystem(url: str, action: str = "cannot open") -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it; a :class:`KxError` naming the
    extra to install when fsspec or the store's driver is missing.

    >>> fs, path = filesystem("memory://kxtool-doc/x.txt")
    >>> type(fs).__name__, path
    ('MemoryFileSystem', '/kxtool-doc/x.txt')
    """
    try:
        fsspec = _fsspec()
    except ImportError:
        raise KxError(f"{action} {url!r}: URLs need the remote extra ({EXTRA_HINT})") from None
    try:
        return fsspec.core.url_to_fs(url, **_storage_options(url))
    except ImportError as e:
        scheme = url.split("://", 1)[0].split("::")[-1]
        if scheme in ("s3", "s3a"):
            hint = EXTRA_HINT
        else:
            hint = str(e).splitlines()[0] if str(e) else f"install the fsspec driver for {scheme}"
        raise KxError(f"{action} {url!r}: {scheme}:// needs its fsspec driver ({hint})") from None
    except ValueError as e:
        raise KxError(f"{action} {url!r}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """One line saying what went wrong in a store."""
    if isinstance(e, KxError):
        return e.message.split(": ", 1)[-1]
    if isinstance(e, FileNotFoundError):
        text = str(e.strerror or (e.args[0] if e.args else "") or "")
        if "bucket" in text.lower():
            return "no such bucket"
        return "no such file or object"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    text = " ".join(str(e).split())
    return text or type(e).__name__


def remote_error(e: BaseException, url: str, action: str = "cannot open") -> KxError:
    """``e``, raised by a store about ``url``, as a one-line :class:`KxError`.

    >>> remote_error(FileNotFoundError("bkt/x"), "s3://bkt/x").message
    "cannot open 's3://bkt/x': no such file or object"
    """
    return KxError(f"{action} {url!r}: {_reason(e)}")


def _glob_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """``paths`` with every URL glob (``s3://bkt/part-*.zst``, ``file:///data/*.txt``) replaced by
    the objects it matches, in sorted (code point) order; a glob that matches nothing is a
    :class:`KxError`. Local paths are left alone (the shell expands their globs).

    >>> import fsspec
    >>> for i in (2, 1):
    ...     fsspec.filesystem("memory").pipe(f"/kxtool-doc/part-{i}.txt", b"x\\n")
    >>> expand_inputs(["memory://kxtool-doc/part-*.txt", "-"])
    ['memory:///kxtool-doc/part-1.txt', 'memory:///kxtool-doc/part-2.txt', '-']
    """
    out: list[str] = []
    for p in paths:
        if not is_url(p) or not _glob_magic(p.split("://", 1)[1]):
            out.append(p)
            continue
        if not is_remote(p):
            import glob

            found = sorted(glob.glob(local_path(p)))
            named = ["file://" + f if f.startswith("/") else f for f in found]
        else:
            fs, path = filesystem(p)
            try:
                found = sorted(fs.glob(path))
                found = [f for f in found if not fs.isdir(f)]
            except Exception as e:
                raise remote_error(e, p, "cannot list") from None
            named = [_unstrip(fs, p, f) for f in found]
        if not named:
            raise KxError(f"no input matches {p!r}")
        out.extend(named)
    return out


def _unstrip(fs: Any, url: str, path: str) -> str:
    """The URL of ``path`` in ``fs``, with the chain (``simplecache::``) of ``url`` kept."""
    scheme = url.split("://", 1)[0]
    chain = scheme.rsplit("::", 1)[0] + "::" if "::" in scheme else ""
    return chain + fs.unstrip_protocol(path)


def url_head(url: str, size: int) -> bytes:
    """The first ``size`` bytes of the object ``url`` (fewer when it is shorter); a
    :class:`KxError` naming it when it is missing, a directory, or cannot be read.

    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/kxtool-doc/head.txt", b"hello\\n")
    >>> url_head("memory://kxtool-doc/head.txt", 4)
    b'hell'
    """
    fs, path = filesystem(url)
    try:
        return bytes(fs.cat_file(path, start=0, end=size))
    except Exception as e:
        raise _open_error(fs, path, url, e) from None


def _open_error(fs: Any, path: str, url: str, e: BaseException) -> KxError:
    if isinstance(e, FileNotFoundError | IsADirectoryError):
        with contextlib.suppress(Exception):
            if fs.isdir(path):
                return KxError(f"cannot read {url!r}: it is a directory")
    return remote_error(e, url)


class _RemoteRaw(io.RawIOBase):
    """An fsspec file as a raw stream whose failures are :class:`KxError` naming the URL."""

    def __init__(self, f: Any, url: str) -> None:
        self._f = f
        self._url = url
        self._done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:  # type: ignore[no-untyped-def]
        try:
            got = self._f.readinto(view)
        except Exception as e:
            raise KxError(
                f"cannot read {self._url!r} after byte {self._done}: {_reason(e)}"
            ) from None
        self._done += got or 0
        return got

    def tell(self) -> int:
        return self._done

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()
        super().close()


def open_url(url: str) -> BinaryIO:
    """Open the object ``url`` for reading: a buffered binary stream (``peek`` works) whose
    errors, opening included, are one-line :class:`KxError` naming ``url``. Close it when done.
    Decompression is for :func:`~kxtool.textio.open_input`, which calls this for URLs.

    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/kxtool-doc/open.txt", b"a\\nb\\n")
    >>> f = open_url("memory://kxtool-doc/open.txt")
    >>> f.peek(1)[:1], f.read()
    (b'a', b'a\\nb\\n')
    >>> f.close()
    """
    fs, path = filesystem(url)
    try:
        f = fs.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")
    except Exception as e:
        raise _open_error(fs, path, url, e) from None
    return io.BufferedReader(_RemoteRaw(f, url), buffer_size=1 << 20)  # type: ignore[return-value]


def check_remote_output(url: str) -> None:
    """Fail early, before any work, when ``url`` cannot be an output: the extra or driver is
    missing, the URL names a bucket or a directory, the bucket does not exist, or the store
    cannot be reached. (A store that refuses to say whether the object exists, as a write-only
    S3 policy does, is given the benefit of the doubt: the upload will tell.)

    >>> check_remote_output("memory://kxtool-doc/out.txt")
    """
    fs, path = filesystem(url, "cannot write")
    if _protocol(fs) in _BUCKETS and "/" not in path.strip("/"):
        raise KxError(f"cannot write {url!r}: it names a bucket, not an object")
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
    except FileNotFoundError as e:
        if "bucket" in str(e).lower():
            bucket = path.split("/", 1)[0]
            raise KxError(f"cannot write {url!r}: no such bucket {bucket!r}") from None
        return  # a new object
    except PermissionError:
        return
    except Exception as e:
        raise remote_error(e, url, "cannot write") from None
    if info.get("type") == "directory":
        raise KxError(f"cannot write {url!r}: it is a directory")


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, tuple | list) else str(protocol)


def remote_exists(url: str) -> bool:
    """Whether the object ``url`` exists; True when the store will not say (permission
    denied), so that an object is never taken for one this run created. Other errors are
    :class:`KxError`.

    >>> remote_exists("memory://kxtool-doc/no-such-object")
    False
    """
    fs, path = filesystem(url)
    try:
        fs.invalidate_cache(path)
        fs.info(path)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True
    except Exception as e:
        raise remote_error(e, url) from None
    return True


def upload(local: str, url: str, make_dirs: bool = False) -> None:
    """Put the complete local file ``local`` in place as the object ``url``.

    Stores in :data:`DIRECT_UPLOAD` get it straight under its name: their uploads are atomic,
    so a reader sees the old object or the whole new one, never part of it, and a failed upload
    leaves nothing (s3fs aborts a failed multipart upload). Other stores get it under a
    temporary key beside the target (named by :mod:`kxtool.tempfiles`), moved onto the target
    once complete: atomic where the store's move is (``memory://``, HDFS rename), a copy and a
    delete elsewhere. The temporary key is removed when anything fails. Errors are one-line
    :class:`KxError` naming ``url``.

    >>> import fsspec, os, tempfile
    >>> src = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> _ = open(src, "wb").write(b"done\\n")
    >>> upload(src, "memory://kxtool-doc/uploaded.txt")
    >>> fsspec.filesystem("memory").cat("/kxtool-doc/uploaded.txt")
    b'done\\n'
    """
    fs, path = filesystem(url, "cannot write")
    protocol = _protocol(fs)
    try:
        if protocol not in _BUCKETS and make_dirs:
            parent = fs._parent(path)
            if parent and not fs.exists(parent):
                fs.makedirs(parent, exist_ok=True)
        if protocol in DIRECT_UPLOAD:
            fs.put_file(local, path)
            return
        parent, _, base = path.rpartition("/")
        temp = f"{parent}/{tempfiles.temp_file_name(base)}"
        try:
            fs.put_file(local, temp)
            fs.mv(temp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(temp)
            raise
    except KxError:
        raise
    except Exception as e:
        raise remote_error(e, url, "cannot write") from None
    finally:
        with contextlib.suppress(Exception):
            fs.invalidate_cache(path)


def remove(url: str) -> None:
    """Remove the object ``url`` if it is there (errors ignored: cleaning up after a failure).

    >>> remove("memory://kxtool-doc/no-such-object")
    """
    with contextlib.suppress(Exception):
        fs, path = filesystem(url)
        fs.rm_file(path)


@contextlib.contextmanager
def staged_input(url: str, directory: str | None = None) -> Iterator[str]:
    """A local copy of the object ``url`` (for readers that need a real file: memory maps,
    random access), in a private temporary directory removed on exit.

    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/kxtool-doc/staged.bin", b"\\x00\\x01")
    >>> with staged_input("memory://kxtool-doc/staged.bin") as p:
    ...     open(p, "rb").read()
    b'\\x00\\x01'
    """
    fs, path = filesystem(url)
    with tempfiles.private_dir(directory) as d:
        local = os.path.join(d, os.path.basename(path.rstrip("/")) or "object")
        try:
            fs.get_file(path, local)
        except Exception as e:
            raise _open_error(fs, path, url, e) from None
        yield local
