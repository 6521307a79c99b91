"""kxtool's command-line face: one Typer app, one module per command.

Each command module registers itself on :data:`app` when imported; engines are imported
inside the command bodies so that ``kxtool --help`` stays fast.
"""

from __future__ import annotations

import signal
import sys

from . import shuffle as _shuffle  # noqa: F401  (registers `kxtool shuffle`)
from ._app import Terminated, app


def _on_sigterm(signum, frame):  # type: ignore[no-untyped-def]
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """The ``kxtool`` console script."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="kxtool")


__all__ = ["app", "main"]
