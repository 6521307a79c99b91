"""Draws with replacement (``kxtool shuffle -r -n N``), as GNU ``shuf -r``.

Draw ``k`` picks record ``floor(u_k * n / 2**64)``, where ``u_k`` is the key of ``k`` in a key
stream of its own (the seed with a constant xored in, so draws are not the shuffle's keys) and
``n`` is the number of records; the product is exact (128-bit), so each record is drawn with
probability within ``n / 2**64`` of ``1/n``. The count ``n`` must be known before the first
draw: a regular file is read twice (counted, then the drawn records are picked out in one
pass), and stdin or a pipe is first copied to a temporary file in ``tmp_dir`` (spooled). Memory
holds the distinct drawn records and 24 bytes a draw.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..records import gather, record_ends, starts_of
from ..textio import (
    STDIO,
    AtomicOutputs,
    format_size,
    open_filler,
    os_error,
    stdin_as_file,
    temp_dir,
)
from .keys import fresh_seed, record_keys
from .output import _Writer
from .permutation import count_records
from .plan import MAX_BLOCK
from .reading import _Reader

__all__ = ["draw_indices", "repeat_files"]

#: Xored into the seed for the stream of draws.
DRAW_SALT = 0xD1B54A32D192ED03
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def _mulhi(u: np.ndarray, n: int) -> np.ndarray:
    """``floor(u * n / 2**64)`` for uint64 ``u``, exactly (through 32-bit halves)."""
    a, b = u >> _S32, u & _M32
    c, d = np.uint64(n >> 32), np.uint64(n & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        bd_hi = (b * d) >> _S32
        mid = a * d + bd_hi  # < 2**64
        mid2 = b * c + (mid & _M32)  # < 2**64
        return a * c + (mid >> _S32) + (mid2 >> _S32)


def draw_indices(seed: int, n: int, count: int, start: int = 0) -> np.ndarray:
    """Draws ``start .. start+count-1`` of the stream for ``seed``: uniform record indices
    in ``[0, n)``, with replacement (uint64).

    >>> draw_indices(7, 10, 8).tolist() == draw_indices(7, 10, 8).tolist()
    True
    >>> bool((draw_indices(7, 10, 1000) < 10).all())
    True
    """
    if n <= 0:
        raise KxError("no lines to draw from")
    if n >= 1 << 64:
        raise KxError("too many lines to draw from")
    return _mulhi(record_keys(seed ^ DRAW_SALT, start, count), n)


def _spool(path: str, directory: str) -> str:
    """Copy the stream ``path`` (stdin, a pipe) into a file in ``directory``; its name."""
    target = os.path.join(directory, "spool")
    buf = np.empty(1 << 20, dtype=np.uint8)
    try:
        with open_filler(path) as fill, open(target, "wb") as out:
            while True:
                got = fill(memoryview(buf))
                if not got:
                    break
                out.write(memoryview(buf)[:got])
    except OSError as e:
        raise os_error(e, target, "cannot write") from None
    return target


def repeat_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    output: str | os.PathLike[str] = STDIO,
    count: int = 0,
    *,
    memory: int | str = "1G",
    seed: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    shards: Any = None,
    header: int = 0,
    zero_terminated: bool = False,
    progress: Progress | None = None,
) -> Any:
    """Write ``count`` records of ``inputs`` drawn uniformly with replacement (as GNU
    ``shuf -r -n``), ``header`` lines on top. The inputs are read twice (stdin and pipes are
    spooled to ``tmp_dir`` first); memory holds the distinct drawn records. Raises
    :class:`KxError` (also when the input has no record and ``count`` > 0). Returns a
    :class:`ShuffleResult`.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "in.txt")
    >>> _ = open(src, "w").write("a\\nb\\n")
    >>> r = repeat_files(src, os.path.join(d, "out.txt"), 6, seed=1)
    >>> r.records, set(open(os.path.join(d, "out.txt")).read().split()) <= {"a", "b"}
    (6, True)
    """
    from . import ShuffleResult, _checked_call

    if count < 0:
        raise KxError("-n/--head-count must not be negative")
    paths, output, budget = _checked_call(inputs, output, memory, header, shards)
    if seed is None:
        seed = fresh_seed()
    sep = b"\0" if zero_terminated else b"\n"
    with contextlib.ExitStack() as stack:
        if STDIO in paths:
            stdin_path = stack.enter_context(stdin_as_file())
            paths = [stdin_path or STDIO if p == STDIO else p for p in paths]
        streams = [p for p in paths if p == STDIO or not os.path.isfile(p)]
        if streams:
            directory = stack.enter_context(
                temp_dir(os.fspath(tmp_dir) if tmp_dir is not None else None)
            )
            spooled = {p: _spool(p, directory) for p in streams}
            paths = [spooled.get(p, p) for p in paths]
        n = count_records(paths, header=header, zero_terminated=zero_terminated)
        if count and n == 0:
            raise KxError("no lines to draw from")
        draws = draw_indices(seed, n, count) if count else np.empty(0, dtype=np.uint64)
        wanted = np.unique(draws)
        limit = int(0.3 * budget)
        reader = _Reader(paths, sep, header, max(1 << 16, min(MAX_BLOCK, budget // 8)),
                         budget // 4, progress, None)
        datas, lens = [], []
        held = start = 0
        for chunk in reader.chunks():
            lo, hi = np.searchsorted(wanted, [start, start + chunk.count])
            if hi > lo:
                ends = chunk.ends if chunk.ends is not None else record_ends(chunk.data, sep[0])
                starts = starts_of(ends)
                lengths = ends - starts
                pick = (wanted[lo:hi] - np.uint64(start)).astype(np.intp)
                datas.append(gather(chunk.data, starts, lengths, pick))
                lens.append(lengths[pick])
                held += len(datas[-1]) + 24 * (hi - lo)
                if held + 24 * count > limit:
                    raise KxError(
                        f"{count} draws do not fit in the memory budget: the lines drawn take "
                        f"more than {format_size(limit)} (30% of --memory); raise --memory"
                    )
            start += chunk.count
        data = np.concatenate(datas) if datas else np.empty(0, dtype=np.uint8)
        lengths = np.concatenate(lens) if lens else np.empty(0, dtype=np.int64)
        del datas, lens
        starts = starts_of(np.cumsum(lengths))
        where = np.searchsorted(wanted, draws)
        nbytes = int(lengths[where].sum()) if count else 0
        with AtomicOutputs(make_dirs=shards is not None) as outs:
            writer = _Writer(outs, output, shards, count, reader.header, sep, progress, nbytes)
            step = 1 << 20
            for a in range(0, count, step):
                idx = where[a : a + step]
                writer.write(gather(data, starts, lengths, idx), lengths[idx])
            written = writer.finish()
    return ShuffleResult(seed, count, nbytes, len(reader.header), True, 0, 0, 1, written)
