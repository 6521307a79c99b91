"""Suite-wide isolation: no test touches the real home directory or its caches.

Every test (and every ``kxtool`` subprocess a test starts, since they inherit the environment)
gets a cache directory, ``$HOME`` and ``$XDG_CACHE_HOME`` of its own session,
under pytest's temporary directory.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME", "KXTOOL_CACHE_DIR")}
    os.environ["HOME"] = str(base)
    os.environ["XDG_CACHE_HOME"] = str(base / ".cache")
    os.environ["KXTOOL_CACHE_DIR"] = str(base / ".cache" / "kxtool")
    try:
        yield base
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
