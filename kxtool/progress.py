"""The progress-callback convention shared by every engine.

An engine doing long work accepts ``progress: Progress | None``. It calls
``progress(phase, done, total)`` with a short phase label (e.g. ``"pass 1/2"``), the cumulative
amount done in that phase and the phase total (``None`` when unknown). A new phase label starts
a new bar. Engines never draw anything themselves: the CLI turns the calls into bars on stderr.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, "int | None"], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    """A progress callback that does nothing."""
