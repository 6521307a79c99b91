"""The one Typer app, and what every command face shares: error handling, progress bars on
stderr, JSON output and warnings. This package is the only place that knows Typer, Rich and
tqdm."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.exceptions import TyperException

from .. import __version__
from ..errors import KxError, KxWarning

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="kxtool",
    help=(
        "Fast, correct command-line tools for the text-data chores of NLP work: a uniform "
        "shuffle of corpora larger than memory, Word Mover's/Rotator's Distance, word-vector "
        "dimension estimates and hubness statistics."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _plain_argument_names() -> None:
    """Arguments in help as users read them in man pages: ``A B`` for required ones and
    ``[FILE]...`` for optional ones, without Typer's Python type (``FILE <list[Path]>``) or its
    braces around required names (``{A} {B}``)."""
    from typer.core import TyperArgument

    def usage_name(self: Any) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    TyperArgument._usage_display_name = usage_name  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


_plain_argument_names()


class Terminated(KeyboardInterrupt):
    """Raised from the SIGTERM handler so that cleanup runs as it does for Ctrl-C."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kxtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kxtool: text-data chores of NLP work, done fast and right."""


def err(message: str) -> None:
    """Write one line to stderr."""
    with contextlib.suppress(Exception):
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()


def warn(message: str) -> None:
    err(f"kxtool: warning: {message}")


class _CheckedStdout:
    """``sys.stdout`` while a command runs: a failed write or flush (a full disk, an I/O
    error) is a :class:`KxError` saying so; a closed pipe stays a ``BrokenPipeError``."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _fail(self, e: OSError) -> KxError:
        from ..textio import os_error

        return os_error(e, "-", "cannot write")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._fail(e) from None

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._fail(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """Engines' :class:`KxWarning` as ``kxtool: warning: ...``; others as Python shows them."""
    if issubclass(category, KxWarning):
        warn(str(message))
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def guard(fn: F) -> F:
    """Turn the exceptions a user may meet into a one-line message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", KxWarning)
        real_stdout = sys.stdout
        sys.stdout = _CheckedStdout(real_stdout)  # type: ignore[assignment]
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a full disk shows here, not in the interpreter's last flush
            return result
        except KxError as e:
            if e.message.startswith("cannot write to stdout"):
                _silence_stdout()
            err(f"kxtool: error: {e.message}")
            raise typer.Exit(e.exit_code) from None
        except Terminated:
            err("kxtool: terminated")
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err("kxtool: interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(141) from None
        except MemoryError:
            err("kxtool: error: out of memory (try a smaller --memory or batch)")
            raise typer.Exit(1) from None
        except (TyperException, typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a bug: say so in one line unless debugging
            if os.environ.get("KXTOOL_DEBUG"):
                raise
            err(f"kxtool: internal error: {type(e).__name__}: {e} (set KXTOOL_DEBUG=1 to see more)")
            raise typer.Exit(70) from None
        finally:
            if isinstance(sys.stdout, _CheckedStdout):
                sys.stdout = real_stdout

    return wrapper  # type: ignore[return-value]


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a guarded command on the app: ``@command("shuffle")``."""

    def decorate(fn: F) -> F:
        app.command(name, **kwargs)(guard(fn))
        return fn

    return decorate


def add_group(group: typer.Typer, name: str, help: str) -> None:
    """Register a sub-app (``kxtool vectors info``); its commands should use :func:`guard`."""
    app.add_typer(group, name=name, help=help)


class Bars:
    """A progress callback (see :mod:`kxtool.progress`) drawn as tqdm bars on stderr.

    Bars appear only when stderr is a terminal (or ``force`` is true); otherwise every call is a
    no-op. Use as a context manager so the last bar is closed.
    """

    def __init__(
        self, enabled: bool | None = None, unit: str | Callable[[str], str] = "B"
    ) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.unit = unit  # a unit, or phase -> unit (e.g. bytes while reading, steps after)
        self._bar: Any = None
        self._phase: str | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if phase != self._phase:
            self.close()
            from tqdm import tqdm

            unit = self.unit(phase) if callable(self.unit) else self.unit
            scale = unit == "B"
            try:
                width = os.get_terminal_size(sys.stderr.fileno()).columns
            except (OSError, ValueError):
                width = 0
            self._bar = tqdm(
                total=total,
                desc=phase,
                unit=unit,
                unit_scale=scale,
                unit_divisor=1024 if scale else 1000,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=width > 0,
                ncols=None if width > 0 else 80,  # a terminal that reports no size
            )
            self._phase = phase
        bar = self._bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._phase = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def print_json(obj: Any) -> None:
    """One JSON object on stdout (NaN becomes null)."""
    sys.stdout.write(json.dumps(_nan_to_none(obj), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def parse_size_option(value: str, option: str, minimum: int = 1) -> int:
    """``--memory 512M`` and friends; a bad value, or one below ``minimum`` bytes, is a usage
    error (exit 2)."""
    from ..textio import format_size, parse_size

    with usage_errors(option):
        n = parse_size(value)
    if n <= 0:
        raise typer.BadParameter("must be greater than zero", param_hint=option)
    if n < minimum:
        raise typer.BadParameter(f"must be at least {format_size(minimum)}", param_hint=option)
    return n


@contextlib.contextmanager
def usage_errors(option: str | None) -> Any:
    """Inside, a :class:`KxError` about an option's value is a usage error of ``option``
    (exit 2), as a bad value found by Typer itself would be."""
    try:
        yield
    except KxError as e:
        raise typer.BadParameter(e.message, param_hint=option) from None


_COUNT_RE = re.compile(r"^\s*(\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*|\d+(?:\.\d+)?[eE]\+?\d+)\s*$")


def parse_count(value: str | int, option: str, minimum: int = 0) -> int:
    """A whole number given as ``100000``, ``100_000``, ``100,000`` or ``1e5`` (an integral
    value in scientific notation); anything else is a usage error (exit 2) in one line."""
    if isinstance(value, int):
        n = value
    else:
        m = _COUNT_RE.match(str(value))
        if m is None:
            raise typer.BadParameter(
                f"{value!r} is not a whole number (write e.g. 100000, 100_000, 100,000 or 1e5)",
                param_hint=option,
            )
        text = m.group(1).replace(",", "").replace("_", "")
        if "e" in text.lower():
            from decimal import Decimal

            d = Decimal(text)
            if d != d.to_integral_value():
                raise typer.BadParameter(f"{value!r} is not a whole number", param_hint=option)
            n = int(d)
        else:
            n = int(text)
    if n < minimum:
        raise typer.BadParameter(f"must be at least {minimum}, not {n}", param_hint=option)
    return n


def deprecated_flag(used: bool, old: str, new: str, later: str | None = None) -> None:
    """Warn that the short flag ``old`` for ``new`` is deprecated (and what it will mean in the
    next release, ``later``)."""
    if not used:
        return
    then = f"; in the next release {old} will mean {later}" if later else ""
    warn(f"{old} for {new} is deprecated: write {new}{then}")


#: The one option vocabulary: each short flag, the long names it may stand for (one meaning
#: under different names where a command names it after its own work), and that meaning.
#: docs/cli.md shows this table and a test checks every command against it.
SHORT_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "-h": (("--help",), "help"),
    "-o": (("--output",), "the output file ('-': stdout)"),
    "-j": (("--jobs",), "worker processes (or threads)"),
    "-v": (("--verbose",), "report more on stderr"),
    "-s": (("--seed",), "the random seed"),
    "-S": (("--memory",), "the memory budget, e.g. 512M (as sort -S)"),
    "-T": (("--tmp-dir",), "the directory for temporary files (as sort -T)"),
    "-z": (("--zero-terminated",), "records end with NUL (as shuf -z)"),
    "-n": (("--limit", "--head-count"), "how many: the first N rows, items or lines (as head -n)"),
    "-r": (("--repeat",), "draw with replacement (as shuf -r)"),
    "-e": (("--echo",), "the arguments are the lines (as shuf -e)"),
    "-i": (("--input-range",), "the integers LO..HI are the lines (as shuf -i)"),
    "-k": (("--top", "--k"), "the number of nearest neighbours"),
    "-m": (("--metric",), "the distance metric"),
    "-t": (("--text",), "the arguments are the texts themselves"),
}


def choices(*values: str) -> Callable[[str], list[str]]:
    """Shell completion for an option that takes one of ``values``: ``autocompletion=``."""

    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete


CLUSTER_HELP = (
    "Run the work as tasks on a Dask cluster (extra kxtool[cluster]; default $KXTOOL_CLUSTER): "
    "'local:N' starts N "
    "worker processes here; any other value is a scheduler address (tcp://host:8786, "
    "tls://...) for distributed.Client, with Dask's own configuration. The result is the "
    "same as without it."
)


def cluster_option(help: str = CLUSTER_HELP) -> Any:
    """The ``--cluster ADDRESS`` option (``$KXTOOL_CLUSTER`` when it is not given)."""
    return typer.Option(
        None, "--cluster", envvar="KXTOOL_CLUSTER", metavar="ADDRESS", help=help,
        show_envvar=True,
    )


@contextlib.contextmanager
def cluster_connection(address: str | None) -> Any:
    """The :class:`kxtool.cluster.Cluster` for ``--cluster`` (``None`` without it), closed at
    the end; a missing extra or an unreachable scheduler is a one-line error."""
    if not address:
        yield None
        return
    from ..cluster import connect

    with connect(address) as cluster:
        yield cluster
