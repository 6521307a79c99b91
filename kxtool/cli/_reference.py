"""Generated artefacts of the app: the command reference (``docs/cli.md``) and the shell
completion scripts (``completions/``). ``python -m kxtool.cli._reference`` rewrites them; a test
fails when the committed copies are stale."""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any

import typer

from . import app

PROG = "kxtool"
COMPLETE_VAR = "_KXTOOL_COMPLETE"
COMPLETION_FILES = {"bash": "kxtool.bash", "zsh": "_kxtool", "fish": "kxtool.fish"}


def completion_script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish).

    The scripts ask ``kxtool`` itself for candidates at completion time, so they follow every
    command and option of the installed version.
    """
    from typer._completion_shared import get_completion_script

    script = get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
    return script.rstrip("\n") + "\n"


def _help_markdown(text: str) -> str:
    """Click help text to Markdown: ``\\b`` paragraphs become code blocks."""
    out: list[str] = []
    for para in textwrap.dedent(text or "").strip().split("\n\n"):
        if para.startswith("\b"):
            body = textwrap.dedent(para[1:].lstrip("\n"))
            out.append("```\n" + body.rstrip() + "\n```")
        else:
            out.append(" ".join(line.strip() for line in para.splitlines()))
    return "\n\n".join(out)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _params_table(cmd: Any, ctx: Any) -> list[str]:
    rows = []
    for param in cmd.get_params(ctx):
        if param.name == "help":
            continue
        if getattr(param, "param_type_name", "") == "argument":
            names = f"`{param.make_metavar(ctx) if hasattr(param, 'make_metavar') else param.name}`"
        else:
            names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            metavar = getattr(param, "metavar", None)
            if metavar and not getattr(param, "is_flag", False):
                names += f" {metavar}"
        default = param.default
        if callable(default) or default in (None, False, (), []) or getattr(param, "is_flag", 0):
            shown = ""
        else:
            shown = f"`{default}`"
        rows.append(f"| {_cell(names)} | {_cell(getattr(param, 'help', '') or '')} | {shown} |")
    if not rows:
        return []
    return ["| option | meaning | default |", "| --- | --- | --- |", *rows]


def _render(cmd: Any, path: list[str], parent: Any, out: list[str]) -> None:
    from typer import _click

    ctx = _click.Context(cmd, info_name=path[-1], parent=parent)
    if len(path) > 1:
        out.append(f"{'#' * min(len(path), 4)} `{' '.join(path)}`")
        out.append("")
        pieces = " ".join(cmd.collect_usage_pieces(ctx))
        out.append(f"```\n{' '.join(path)} {pieces}\n```")
        out.append("")
        if cmd.help:
            out.append(_help_markdown(cmd.help))
            out.append("")
        table = _params_table(cmd, ctx)
        if table:
            out.extend(table)
            out.append("")
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            _render(sub, [*path, name], ctx, out)


def cli_markdown() -> str:
    """The command reference, generated from the app."""
    root = typer.main.get_command(app)
    out = [
        "# kxtool command reference",
        "",
        "Generated from the app by `python -m kxtool.cli._reference`; do not edit by hand.",
        "",
        _help_markdown(root.help or ""),
        "",
    ]
    out += _vocabulary()
    _render(root, [PROG], None, out)
    return "\n".join(out).rstrip("\n") + "\n"


def _vocabulary() -> list[str]:
    from ._app import SHORT_FLAGS

    rows = [
        "## Short options",
        "",
        "A short option means the same thing in every command that has it:",
        "",
        "| short | long | meaning |",
        "| --- | --- | --- |",
    ]
    for short, (longs, meaning) in SHORT_FLAGS.items():
        rows.append(f"| `{short}` | {', '.join(f'`{x}`' for x in longs)} | {_cell(meaning)} |")
    rows += [
        "",
        "Deprecated, still accepted for one release with a warning: `kxtool shuffle -m SIZE`",
        "(now `-S`/`--memory`), `kxtool dim -n N` (now `--vocab`) and `kxtool dim -m METHOD`",
        "(now `--method`).",
        "",
    ]
    return rows


def expected_files(root: str) -> dict[str, str]:
    """Every generated file (path under ``root``) with the content it should have."""
    from .._apidoc import api_markdown

    files = {
        os.path.join(root, "docs", "cli.md"): cli_markdown(),
        os.path.join(root, "docs", "api.md"): api_markdown(),
    }
    for shell, name in COMPLETION_FILES.items():
        files[os.path.join(root, "completions", name)] = completion_script(shell)
    return files


def main(argv: list[str] | None = None) -> int:
    root = (argv or sys.argv[1:] or [os.getcwd()])[0]
    for path, text in expected_files(root).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
