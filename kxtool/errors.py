"""The one error type that every user-facing failure is raised as."""

from __future__ import annotations


class KxError(Exception):
    """A failure the user can act on: a one-line message and an exit code.

    Engines raise it for missing files, malformed input (naming file and line), budgets that
    are too small, a full disk and the like. The CLI prints ``kxtool: error: <message>`` on
    stderr and exits with ``exit_code``.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split()) if "\n" in str(message) else str(message)
        self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message
