"""Named parts of the shuffled output (``--split train.txt=0.98 --split valid.txt=5000
--split test.txt=rest``).

The parts are consecutive stretches of the one shuffled order, in the order given, so their
concatenation is the full shuffle with the same seed, and parallel files with the same line
count get aligned parts. A part's size is

- ``N`` (digits, ``_`` allowed): exactly N lines;
- a fraction ``0.98`` or a percentage ``98%`` of all the lines ``n``: the fraction parts take
  ``floor(n * F_k) - floor(n * F_(k-1))`` lines, where ``F_k`` is the sum of the fractions up
  to and including part ``k`` (exact decimal arithmetic), so fractions summing to 1 cover
  ``n`` exactly and each part is within one line of its share;
- ``rest``: what the others leave (at most one part).

Parts asking for more lines than the input has are an error; lines no part takes (no
``rest``) are left out with a warning. Every part gets the header; a part named ``*.gz`` (and
so on) is compressed; all parts are renamed into place together at the end, so an error leaves
none of them behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import KxError, kxwarn
from ..textio import STDIO, check_output

__all__ = ["Parts", "split_files"]

_COUNT = re.compile(r"^\d+(?:_\d+)*$")
_FRACTION = re.compile(r"^(?:0?\.\d+|1\.0*|0\.0*|0|1)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)%$")


@dataclass(frozen=True)
class _Part:
    name: str
    count: int | None = None
    fraction: Fraction | None = None  # of all the lines
    rest: bool = False


class Parts:
    """Named parts of a shuffled output, parsed from ``NAME=SIZE`` specs (see the module).

    >>> p = Parts(["train.txt=0.8", "valid.txt=1", "test.txt=rest"])
    >>> p.bounds(10)
    [0, 8, 9, 10]
    >>> p.name(2)
    'test.txt'
    """

    def __init__(self, specs: Sequence[str]) -> None:
        if not specs:
            raise KxError("--split needs at least one NAME=SIZE")
        self.parts = [self._parse(s) for s in specs]
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise KxError("--split: each part needs a name of its own")
        if sum(p.rest for p in self.parts) > 1:
            raise KxError("--split: at most one part may be 'rest'")
        total = sum((p.fraction for p in self.parts if p.fraction is not None), Fraction(0))
        if total > 1:
            raise KxError(f"--split: the fractions add up to {float(total):g}, more than 1")

    @staticmethod
    def _parse(spec: str) -> _Part:
        name, eq, size = spec.rpartition("=")
        size = size.strip()
        if not eq or not name:
            raise KxError(
                f"--split {spec!r}: write NAME=SIZE, SIZE a count (5000), a fraction (0.98), "
                "a percentage (98%) or 'rest'"
            )
        if name == STDIO:
            raise KxError("--split: a part must be a file, not '-'")
        if size == "rest":
            return _Part(name, rest=True)
        if _COUNT.match(size):
            return _Part(name, count=int(size.replace("_", "")))
        m = _PERCENT.match(size)
        if m:
            f = Fraction(m.group(1)) / 100
        elif _FRACTION.match(size) and "." in size:
            f = Fraction(size)
        else:
            raise KxError(
                f"--split {spec!r}: SIZE must be a count (5000), a fraction between 0 and 1 "
                "written with a point (0.98), a percentage (98%) or 'rest'"
            )
        if f > 1:
            raise KxError(f"--split {spec!r}: a fraction must be at most 1")
        return _Part(name, fraction=f)

    def __len__(self) -> int:
        return len(self.parts)

    def __bool__(self) -> bool:
        return True

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    def name(self, j: int) -> str:
        return self.parts[j].name

    def check(self) -> None:
        """Fail before any work when a part cannot be written (see ``check_output``)."""
        for p in self.parts:
            check_output(p.name, make_dirs=True)

    def sizes(self, total: int) -> list[int]:
        """The lines of each part for an input of ``total`` lines."""
        sizes = [0] * len(self.parts)
        cum = Fraction(0)
        before = 0
        for i, p in enumerate(self.parts):
            if p.count is not None:
                sizes[i] = p.count
            elif p.fraction is not None:
                cum += p.fraction
                upto = (cum * total).__floor__()
                sizes[i] = upto - before
                before = upto
        asked = sum(sizes)
        if asked > total:
            raise KxError(
                f"--split asks for {asked} lines but the input has {total}"
            )
        rest = [i for i, p in enumerate(self.parts) if p.rest]
        if rest:
            sizes[rest[0]] = total - asked
        elif asked < total:
            kxwarn(
                f"--split: {total - asked} of {total} lines belong to no part and are left out "
                "(add a part NAME=rest to keep them)"
            )
        return sizes

    def bounds(self, total: int) -> list[int]:
        """Where each part starts in the shuffled order, and where the last one ends."""
        out = [0]
        for s in self.sizes(total):
            out.append(out[-1] + s)
        return out


def split_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    parts: Sequence[str] | Parts,
    **options: Any,
) -> Any:
    """Shuffle ``inputs`` into named parts (``["train.txt=0.98", "valid.txt=5000",
    "test.txt=rest"]``, see :class:`Parts`) in one run; ``options`` are those of
    :func:`shuffle_files` (``seed``, ``memory``, ``header``...). The parts, concatenated in the
    order given, are the full shuffle with the same seed. Returns a :class:`ShuffleResult`.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "in.txt")
    >>> _ = open(src, "w").write("".join(f"{i}\\n" for i in range(10)))
    >>> names = [os.path.join(d, n) for n in ("train.txt", "test.txt")]
    >>> r = split_files(src, [names[0] + "=0.7", names[1] + "=rest"], seed=1)
    >>> [len(open(n).read().split()) for n in names]
    [7, 3]
    """
    from . import shuffle_files

    if not isinstance(parts, Parts):
        parts = Parts(parts)
    return shuffle_files(inputs, parts.name(0), shards=parts, **options)
