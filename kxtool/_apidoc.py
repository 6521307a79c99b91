"""The reference for Python users, ``docs/api.md``, generated from the docstrings of the public
API (the names :mod:`kxtool` exports). ``python -m kxtool.cli._reference`` writes it beside
the command reference; a test fails when it is stale, and another runs every example in it."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from typing import Any

import kxtool

_INTRO = """\
# kxtool Python API

Generated from the docstrings by `python -m kxtool.cli._reference`; do not edit by hand.

Every `kxtool` command is a thin face over one of these functions, so a Python user never
needs the command line. Import them from the package: `from kxtool import shuffle_files`.
Failures a user can act on raise `kxtool.KxError` (one line in `.message`, the CLI's exit
code in `.exit_code`); warnings are `kxtool.errors.KxWarning`. Examples are doctests, run by
the test suite.
"""


def public_names() -> list[str]:
    """The exported names, in the order of ``kxtool.__all__`` (dunder names left out)."""
    return [n for n in kxtool.__all__ if not n.startswith("__")]


def public_object(name: str) -> Any:
    """What ``kxtool.<name>`` names in the API: the object itself, even where a submodule of
    the same name was imported (``kxtool.wmd`` is then the module, not the function)."""
    import importlib

    module = kxtool._LAZY.get(name)
    if module is None:
        return getattr(kxtool, name)
    return getattr(importlib.import_module(f"kxtool.{module}"), name)


def _signature(name: str, obj: Any) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = []
    for p in sig.parameters.values():
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text = "*" + text
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        params.append((p.kind, text))
    out: list[str] = []
    star = False
    for kind, text in params:
        if kind is inspect.Parameter.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        if kind is inspect.Parameter.VAR_POSITIONAL:
            star = True
        out.append(text)
    ret = ""
    if sig.return_annotation is not sig.empty:
        ret = f" -> {_annotation(sig.return_annotation)}"
    return f"{name}({', '.join(out)}){ret}"


def _annotation(a: Any) -> str:
    return a if isinstance(a, str) else getattr(a, "__name__", repr(a))


def _doc(obj: Any) -> str:
    return textwrap.dedent(inspect.getdoc(obj) or "").strip()


def _fields(obj: Any) -> list[str]:
    if not dataclasses.is_dataclass(obj):
        return []
    rows = ["| field | type |", "| --- | --- |"]
    for f in dataclasses.fields(obj):
        rows.append(f"| `{f.name}` | `{_annotation(f.type)}` |")
    return rows


def _markdown_doc(doc: str) -> str:
    """Docstring text to Markdown: doctest blocks and ``::`` blocks become code blocks."""
    out: list[str] = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        if lines and lines[0].lstrip().startswith(">>>"):
            out.append("```python\n" + textwrap.dedent(para) + "\n```")
        elif lines and all(ln.startswith("    ") for ln in lines if ln.strip()):
            out.append("```\n" + textwrap.dedent(para) + "\n```")
        else:
            out.append(para)
    return "\n\n".join(out)


def entry(name: str) -> tuple[Any, str]:
    """The object behind an exported name and its Markdown section."""
    obj = public_object(name)
    kind = "class" if inspect.isclass(obj) else "function"
    head = _signature(name, obj) if kind == "function" or dataclasses.is_dataclass(obj) else name
    parts = [f"## `{name}`", "", f"```python\n{kind} {head}\n```", ""]
    doc = _doc(obj)
    if doc:
        parts += [_markdown_doc(doc), ""]
    fields = _fields(obj)
    if fields:
        parts += [*fields, ""]
    return obj, "\n".join(parts)


def api_markdown() -> str:
    """The whole of ``docs/api.md``."""
    names = public_names()
    out = [_INTRO, "| name | what it is |", "| --- | --- |"]
    sections = []
    for name in names:
        obj, text = entry(name)
        first = (_doc(obj).split("\n\n")[0] or "").replace("\n", " ").replace("|", "\\|")
        out.append(f"| [`{name}`](#{name.lower()}) | {first} |")
        sections.append(text)
    return "\n".join(out) + "\n\n" + "\n".join(sections).rstrip("\n") + "\n"
