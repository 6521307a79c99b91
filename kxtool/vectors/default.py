"""The built-in English vectors, the choice of vectors when none are named, and the check that
refuses Chinese, Japanese or Korean text with the built-in set."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ..errors import KxError
from ..progress import Progress
from .core import Vectors, _check_limit
from .kxv import CACHE_SUFFIX, read_cache
from .load import load_vectors

DEFAULT_NAME = "glove-6b-50d-100k"
DEFAULT_FILE = DEFAULT_NAME + CACHE_SUFFIX
DEFAULT_SOURCE = "kxtool built-in: English GloVe 6B 50d, 100k most frequent words"

ENV_VECTORS = "KXTOOL_VECTORS"


def default_vectors() -> Vectors:
    """The built-in English vectors: GloVe 6B 50d, the 100,000 most frequent words.

    >>> v = default_vectors()
    >>> len(v), v.dim, v.words[:3], v.is_default
    (100000, 50, ['the', ',', '.'], True)
    """
    global _DEFAULT
    if _DEFAULT is None:
        path = default_vectors_path()
        if not os.path.isfile(path):
            raise KxError(
                f"the built-in vectors {path!r} are missing from this installation;"
                f" pass --vectors FILE or set {ENV_VECTORS}"
            )
        vec = read_cache(path)
        vec.source = DEFAULT_SOURCE
        vec.is_default = True
        vec.cache_path = None
        _DEFAULT = vec
    return _DEFAULT


_DEFAULT: Vectors | None = None


def default_vectors_path() -> str:
    """Where the built-in vectors file is installed."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "data", DEFAULT_FILE)


def resolve_vectors(
    path: str | os.PathLike[str] | None,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Vectors:
    """``path`` if given, else ``$KXTOOL_VECTORS`` if set, else :func:`default_vectors`.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "tiny.vec")
    >>> _ = open(p, "w").write("2 3\\ncat 0.5 0.1 0.2\\ndog 0.4 0.2 0.2\\n")
    >>> len(resolve_vectors(p)), resolve_vectors(None).is_default  # no $KXTOOL_VECTORS set here
    (2, True)
    """
    if path is None or os.fspath(path) == "":
        env = os.environ.get(ENV_VECTORS, "").strip()
        if not env:
            return default_vectors().head(_check_limit(limit))
        try:
            return load_vectors(env, limit=limit, progress=progress)
        except KxError as e:
            raise KxError(f"{e.message} (named by {ENV_VECTORS})", e.exit_code) from None
    return load_vectors(path, limit=limit, progress=progress)


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def check_default_language(vectors: Vectors, text: str | Iterable[str]) -> None:
    """Refuse Chinese (Japanese, Korean) text when ``vectors`` are the built-in English ones.

    ``text`` is a string or an iterable of strings (documents or tokens). A no-op for any other
    vectors.
    """
    if not vectors.is_default:
        return
    items = [text] if isinstance(text, str) else text
    for item in items:
        if _CJK.search(item):
            raise KxError(
                "the built-in vectors are English (GloVe 6B) and cannot handle Chinese, Japanese"
                f" or Korean text: pass --vectors FILE (or set {ENV_VECTORS}) with vectors for"
                " that language, e.g. the Tencent AI Lab embeddings"
            )
