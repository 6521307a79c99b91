"""The one error type that every user-facing failure is raised as."""

from __future__ import annotations


class KxError(Exception):
    """A failure the user can act on: a one-line message and an exit code.

    Engines raise it for missing files, malformed input (naming file and line), budgets that
    are too small, a full disk and the like. The CLI prints ``kxtool: error: <message>`` on
    stderr and exits with ``exit_code``.

    >>> try:
    ...     raise KxError("cannot open 'x.txt': No such file or directory")
    ... except KxError as e:
    ...     print(e.message, e.exit_code)
    cannot open 'x.txt': No such file or directory 1
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split()) if "\n" in str(message) else str(message)
        self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class KxWarning(UserWarning):
    """Something the user should know that does not stop the work: a value that may be off,
    input that was repaired. Engines issue it with :func:`kxwarn` (``warnings.warn``), so a
    Python caller sees an ordinary warning and the CLI prints ``kxtool: warning: <message>``."""


def kxwarn(message: str) -> None:
    """Issue a :class:`KxWarning` (one line) from an engine."""
    import warnings

    warnings.warn(KxWarning(" ".join(str(message).split())), stacklevel=2)
