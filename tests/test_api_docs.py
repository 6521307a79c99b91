"""The Python API reference: every public name has a docstring with an example, every example
runs (doctest) and gives what it shows, and docs/api.md is generated from them (its staleness
is checked with the other generated files in test_cli.py)."""

from __future__ import annotations

import doctest

import pytest

from kxtool._apidoc import public_names, public_object


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path, monkeypatch):
    """Examples make their files with tempfile: keep them in the test's directory."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("KXTOOL_VECTORS", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _examples(name: str) -> list[doctest.DocTest]:
    import math

    import numpy as np

    obj = public_object(name)
    globs = {n: public_object(n) for n in public_names()} | {"np": np, "math": math}
    return [t for t in doctest.DocTestFinder(recurse=False).find(obj, name, globs=globs)
            if t.examples]


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_has_an_example_that_runs(name):
    tests = _examples(name)
    assert tests, f"kxtool.{name} has no example (>>>) in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of kxtool.{name} failed"
