"""Lines that are not read from a file: ``-e/--echo`` (the arguments are the lines) and
``-i/--input-range LO-HI`` (the integers LO..HI), and ``--random-source`` (a seed from a
file's bytes), as in GNU ``shuf``.

The order is the shuffle's: line ``i`` goes where the keys put record ``i``, so
``kxtool shuffle -i 1-N --seed S`` is byte-identical to ``seq 1 N | kxtool shuffle --seed S``
and ``-e A B C`` to shuffling a file of the lines A, B, C. An integer range is never held
as text: its order comes from the keys alone (:func:`~.permutation.ordered_indices`), 16
bytes a line while they fit in the budget and more passes over the indices beyond, so a
range of any size runs in bounded memory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import KxError
from ..textio import STDIO, AtomicOutputs, display_name, open_filler, os_error
from .keys import fresh_seed
from .permutation import ordered_indices
from .repeat import draw_indices

__all__ = ["shuffle_echo", "parse_input_range", "shuffle_range", "seed_from_file"]

_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
#: Bytes of a --random-source file that make the seed.
RANDOM_SOURCE_BYTES = 1 << 20
#: Lines rendered and written at once.
_STEP = 1 << 18


def parse_input_range(text: str) -> tuple[int, int]:
    """``"LO-HI"`` as ``(LO, HI)``; HI may be LO-1 (an empty range), as in GNU shuf.

    >>> parse_input_range("1-10")
    (1, 10)
    """
    m = _RANGE_RE.match(text)
    if m is None:
        raise KxError(f"invalid input range {text!r}: write LO-HI, e.g. 1-100")
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo - 1:
        raise KxError(f"invalid input range {text!r}: HI is below LO")
    if hi >= 1 << 64:
        raise KxError(f"invalid input range {text!r}: HI must be below 2**64")
    return lo, hi


def seed_from_file(path: str | os.PathLike[str]) -> int:
    """The seed ``--random-source FILE`` stands for: the first 8 bytes (little-endian) of the
    BLAKE2b digest of the file's first MiB (all of it when shorter), so any file, a device
    such as /dev/urandom or a pipe works, and the same bytes give the same seed. An empty
    source is an error, as GNU shuf's "end of file".

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "src")
    >>> _ = open(p, "wb").write(b"some bytes")
    >>> seed_from_file(p) == seed_from_file(p)
    True
    """
    p = os.fspath(path)
    buf = bytearray(RANDOM_SOURCE_BYTES)
    try:
        with open_filler(p) if p == STDIO else open(p, "rb", buffering=0) as f:
            if callable(f):
                got = f(memoryview(buf))
            else:
                got = 0
                view = memoryview(buf)
                while got < len(buf):
                    k = f.readinto(view[got:])
                    if not k:
                        break
                    got += k
    except OSError as e:
        raise os_error(e, p) from None
    if got == 0:
        raise KxError(f"--random-source {display_name(p)!r}: end of file (it is empty)")
    digest = hashlib.blake2b(bytes(buf[:got]), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _blocks(
    seed: int, n: int, count: int | None, repeat: bool, memory: int | str
) -> Iterator[np.ndarray]:
    """Indices of the lines to write, in order: the shuffle (its first ``count``), or draws
    with replacement (``repeat``: ``count`` of them, or forever when ``count`` is None)."""
    if not repeat:
        yield from ordered_indices(seed, n, count, memory, _STEP)
        return
    if count == 0:
        return
    for start in itertools.count(0, _STEP):
        k = _STEP if count is None else min(_STEP, count - start)
        if k <= 0:
            return
        yield draw_indices(seed, n, k, start)


def _write(output: str, chunks: Iterator[bytes]) -> int:
    lines = 0
    with AtomicOutputs() as outs:
        f = outs.open(output)
        for data, k in chunks:
            f.write(data)
            lines += k
    return lines


def shuffle_range(
    lo: int,
    hi: int,
    output: str | os.PathLike[str] = STDIO,
    *,
    seed: int | None = None,
    count: int | None = None,
    repeat: bool = False,
    memory: int | str = "1G",
    zero_terminated: bool = False,
) -> int:
    """Write the integers ``lo .. hi`` shuffled (``-i LO-HI``): the first ``count`` when given;
    with ``repeat``, ``count`` draws with replacement (forever when ``count`` is None). The same
    order as shuffling a file of those lines with ``seed``; bounded memory for any range.
    Returns the lines written.

    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> shuffle_range(1, 5, out, seed=2)
    5
    >>> sorted(map(int, open(out).read().split()))
    [1, 2, 3, 4, 5]
    """
    if seed is None:
        seed = fresh_seed()
    n = hi - lo + 1
    if n < 0:
        raise KxError("invalid input range: HI is below LO")
    if repeat and n == 0 and count != 0:
        raise KxError("no lines to repeat")
    sep = "\0" if zero_terminated else "\n"

    def render() -> Iterator[tuple[bytes, int]]:
        for idx in _blocks(seed, n, count, repeat, memory):
            if hi < 1 << 63:
                vals = (idx.astype(np.int64) + lo).tolist()
            else:
                vals = [lo + v for v in idx.tolist()]
            yield (sep.join(map(str, vals)) + sep).encode(), len(vals)

    return _write(os.fspath(output), render())


def shuffle_echo(
    args: Sequence[str | bytes],
    output: str | os.PathLike[str] = STDIO,
    *,
    seed: int | None = None,
    count: int | None = None,
    repeat: bool = False,
    zero_terminated: bool = False,
) -> int:
    """Write ``args`` as lines, shuffled (``-e/--echo``): the first ``count`` when given; with
    ``repeat``, ``count`` draws with replacement (forever when ``count`` is None). The same
    order as shuffling a file of those lines with ``seed``. Returns the lines written.

    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> shuffle_echo(["a", "b", "c"], out, seed=2, count=2)
    2
    >>> len(open(out).read().split())
    2
    """
    if seed is None:
        seed = fresh_seed()
    sep = b"\0" if zero_terminated else b"\n"
    lines = [a if isinstance(a, bytes) else os.fsencode(a) for a in args]
    n = len(lines)
    if repeat and n == 0 and count != 0:
        raise KxError("no lines to repeat")

    def render() -> Iterator[tuple[bytes, int]]:
        for idx in _blocks(seed, n, count, repeat, "1G"):
            picked = [lines[i] for i in idx.tolist()]
            yield sep.join(picked) + sep if picked else b"", len(picked)

    return _write(os.fspath(output), render())
