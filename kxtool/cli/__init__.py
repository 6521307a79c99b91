"""kxtool's command-line face: one Typer app, one module per command.

Each command module registers itself on :data:`app` when imported; engines are imported
inside the command bodies so that ``kxtool --help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys

from . import dim as _dim  # noqa: F401  (registers `kxtool dim`)
from . import hubness as _hubness  # noqa: F401  (registers `kxtool hubness`)
from . import shuffle as _shuffle  # noqa: F401  (registers `kxtool shuffle`)
from . import vectors as _vectors  # noqa: F401  (registers `kxtool vectors`)
from . import wmd as _wmd  # noqa: F401  (registers `kxtool wmd`)
from ._app import Terminated, app


def _on_sigterm(signum, frame):  # type: ignore[no-untyped-def]
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """The ``kxtool`` console script."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if "_KXTOOL_COMPLETE" in os.environ:  # a shell asks for completions (see completions/)
        from typer._completion_classes import completion_init

        completion_init()
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="kxtool")
    except SystemExit as e:
        if argv is None and e.code in (0, None):
            _quick_exit()
        raise
    if argv is None:  # pragma: no cover - Typer exits itself
        _quick_exit()


def _quick_exit() -> None:
    """End a successful run without the interpreter's teardown.

    Freeing every module and object at exit took 30-40 ms here, a fifth of a small shuffle's
    time. Every output is closed by then; what remains is flushed and the exit handlers run
    (temporary files, multiprocessing), so only the teardown is skipped. Where anything is
    unusual (a flush fails, a Python thread still runs) the ordinary exit happens instead."""
    import atexit
    import threading

    if threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the ordinary exit reports it
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(0)


__all__ = ["app", "main"]
