"""An exact uniform sample without replacement (``kxtool shuffle -n N``), in one pass.

The full shuffle writes the records in increasing order of their keys ``f_seed(i)``; its first
``N`` lines are the ``N`` records with the smallest keys, in key order. This module finds them
in one pass over the input, keeping at most about ``2 N`` candidates: the records read so far
whose key is below the ``N``-th smallest key seen (a threshold that only falls). Keys are
uniform, so past the first ``N`` records few are candidates (about ``N log(n/N)`` in all) and
a chunk without one costs only its keys. Memory is bounded by the sample (its bytes and keys
twice over), not by the input; a sample that does not fit in the budget is an error, never a
spill. The result is byte-identical to the first ``N`` records of :func:`shuffle_files` with
the same seed, whatever the budget, and ``N`` larger than the input gives the whole shuffle.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..records import gather, record_ends, starts_of
from ..textio import (
    STDIO,
    AtomicOutputs,
    check_readable,
    format_size,
    input_size,
    parse_size,
)
from .keys import _order, record_keys
from .output import _Writer
from .permutation import _write_npy, record_indices
from .plan import MAX_BLOCK, MIN_MEMORY
from .reading import _Reader

__all__ = ["sample_files"]

#: Share of the budget the kept sample may take (its candidates and one copy while they are
#: thinned out take as much again).
SAMPLE_SHARE = 0.3
#: Bytes a kept record costs beyond its own: its key and length, and the offsets, selection
#: and order arrays while the sample is thinned out or ordered.
SAMPLE_RECORD = 48


class _Sample:
    """The ``n`` records with the smallest keys among those added so far."""

    def __init__(self, n: int, limit: int) -> None:
        self.n = n
        self.limit = limit  # bytes of memory the kept records may take
        self.data = np.empty(0, dtype=np.uint8)  # kept records, concatenated
        self.lengths = np.empty(0, dtype=np.int64)
        self.keys = np.empty(0, dtype=np.uint64)
        self.threshold: np.uint64 | None = None  # the n-th smallest key, once n were seen
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending_count = 0
        self.pending_memory = 0
        self.seen = 0
        self.order = np.empty(0, dtype=np.intp)

    def memory(self) -> int:
        return len(self.data) + SAMPLE_RECORD * len(self.keys) + self.pending_memory

    def add(self, data: np.ndarray, count: int, keys: np.ndarray, sep: int) -> None:
        """Offer the ``count`` records of ``data`` (whole records), keyed by ``keys``."""
        self.seen += count
        if self.n == 0 or count == 0:
            return
        if self.threshold is None:
            chosen: np.ndarray | None = None  # every record is a candidate
        else:
            chosen = np.flatnonzero(keys < self.threshold)
            if len(chosen) == 0:
                return
        ends = record_ends(data, sep)
        starts = starts_of(ends)
        lengths = ends - starts
        if chosen is None:
            part = (data, lengths, keys)
        else:
            part = (gather(data, starts, lengths, chosen), lengths[chosen], keys[chosen])
        self.pending.append(part)
        self.pending_count += len(part[1])
        self.pending_memory += len(part[0]) + SAMPLE_RECORD * len(part[1])
        if self.pending_count >= max(self.n, 1024) or self.memory() > self.limit:
            self.compact()

    def compact(self) -> None:
        """Keep only the ``n`` smallest keys among the kept and pending records."""
        if not self.pending:
            return
        datas = [self.data] + [p[0] for p in self.pending]
        lengths = np.concatenate([self.lengths] + [p[1] for p in self.pending])
        keys = np.concatenate([self.keys] + [p[2] for p in self.pending])
        self.pending = []
        self.pending_count = self.pending_memory = 0
        data = np.concatenate(datas) if len(datas) > 1 else datas[0]
        del datas
        if len(keys) > self.n:
            keep = np.argpartition(keys, self.n - 1)[: self.n]
            keep.sort()  # the input order: a sequential gather
            starts = starts_of(np.cumsum(lengths))
            data = gather(data, starts, lengths, keep)
            lengths = lengths[keep]
            keys = keys[keep]
        self.data, self.lengths, self.keys = data, lengths, keys
        if len(keys) >= self.n:
            self.threshold = keys.max()
        if self.memory() > self.limit:
            raise KxError(
                f"a sample of {self.n} lines does not fit in the memory budget: "
                f"{min(self.n, self.seen)} lines take {format_size(self.memory())}, "
                f"{format_size(self.limit)} may be kept ({int(SAMPLE_SHARE * 100)}% of "
                "--memory); raise --memory, or write the full shuffle and take its head"
            )

    def ordered(self, step: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The kept records in key order, in slices of ``step`` records."""
        self.compact()
        self.order = _order(self.keys, 0)
        starts = starts_of(np.cumsum(self.lengths))
        for a in range(0, len(self.order), step):
            idx = self.order[a : a + step]
            yield gather(self.data, starts, self.lengths, idx), self.lengths[idx]

    def indices(self, seed: int, step: int = 1 << 20) -> Iterator[np.ndarray]:
        """The input indices of the kept records in key order (after :meth:`ordered`)."""
        for a in range(0, len(self.order), step):
            yield record_indices(seed, self.keys[self.order[a : a + step]])


def sample_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    output: str | os.PathLike[str] = STDIO,
    count: int = 0,
    *,
    memory: int | str = "1G",
    seed: int | None = None,
    shards: Any = None,
    header: int = 0,
    zero_terminated: bool = False,
    progress: Progress | None = None,
    permutation: str | os.PathLike[str] | None = None,
) -> Any:
    """Write ``count`` records of ``inputs`` drawn uniformly without replacement, in random
    order: exactly the first ``count`` records :func:`shuffle_files` writes with the same
    ``seed`` (``header`` lines on top), in one pass over the input and memory bounded by the
    sample. ``count`` larger than the input gives the whole shuffle. A sample that does not fit
    in ``memory`` is a :class:`KxError`. ``shards`` (a count or :class:`Parts`) splits the
    sample as it would the shuffle. ``permutation`` names a ``.npy`` file for the input index
    of each line written (see :func:`write_permutation`), written with the data. Returns a
    :class:`ShuffleResult` whose ``records`` are those written.

    >>> import os, tempfile
    >>> from kxtool.shuffle import shuffle_files
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "in.txt")
    >>> _ = open(src, "w").write("".join(f"line {i}\\n" for i in range(100)))
    >>> r = sample_files(src, os.path.join(d, "s.txt"), 5, seed=3)
    >>> _ = shuffle_files(src, os.path.join(d, "all.txt"), seed=3)
    >>> sample = open(os.path.join(d, "s.txt")).read().splitlines()
    >>> r.records, sample == open(os.path.join(d, "all.txt")).read().splitlines()[:5]
    (5, True)
    """
    from . import ShuffleResult, _validate_output

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    paths = [os.fspath(p) for p in inputs] or [STDIO]
    output = os.fspath(output)
    if count < 0:
        raise KxError("-n/--head-count must not be negative")
    budget = parse_size(memory)
    if budget < MIN_MEMORY:
        raise KxError(f"--memory must be at least {format_size(MIN_MEMORY)}")
    if header < 0:
        raise KxError("--header must not be negative")
    if paths.count(STDIO) > 1:
        raise KxError("stdin ('-') can be read only once")
    _validate_output(output, shards, paths)
    for p in paths:
        check_readable(p)
    if seed is None:
        seed = secrets.randbits(63)
    sep = b"\0" if zero_terminated else b"\n"
    sizes = [input_size(p) for p in paths]
    total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    block = max(1 << 16, min(MAX_BLOCK, budget // 8))
    reader = _Reader(paths, sep, header, block, budget // 4, progress, total)
    sample = _Sample(count, int(SAMPLE_SHARE * budget))
    start = 0
    for chunk in reader.chunks():
        sample.add(chunk.data, chunk.count, record_keys(seed, start, chunk.count), sep[0])
        start += chunk.count
        del chunk
    sample.compact()
    kept = len(sample.keys)
    nbytes = int(sample.lengths.sum())
    with AtomicOutputs(make_dirs=shards is not None) as outs:
        writer = _Writer(outs, output, shards, kept, reader.header, sep, progress, nbytes)
        for data, lengths in sample.ordered():
            writer.write(data, lengths)
        written = writer.finish()
        if permutation is not None:
            perm = os.fspath(permutation)
            _write_npy(outs, perm, kept, sample.indices(seed))
            written.append(perm)
    return ShuffleResult(seed, kept, nbytes, len(reader.header), True, 0, 0, 1, written)
