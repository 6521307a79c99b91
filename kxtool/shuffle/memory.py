"""An input that fits in memory: its chunks keyed and grouped into runs held in memory, by
threads, while the next chunks are read.

Reading is a system call and a separator count, grouping is numpy and the records kernel;
both let go of the interpreter lock, so with a thread pool the main thread reads chunk
``i + 1`` while the threads group chunk ``i``, and each chunk's buffer is let go of (and its
memory reused for the next read) as soon as it is grouped. The runs are those of the one-pass
route either way; only when they are made changes. :meth:`_Grouper.to_disk` moves the runs to
a run file when an input that was expected to fit turns out not to.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import plan
from .plan import PILE_SHARE
from .reading import _Chunk
from .runs import _Runs


def _memory_layout(total: int, unit: int, jobs: int) -> tuple[int, int]:
    """Pile bits and threads for ``total`` bytes ordered in memory: piles of about half a work
    unit (their gather stays in cache), and a thread per :data:`~.plan.THREAD_MIN` bytes up to
    ``jobs``."""
    bits = 0
    if total > unit * PILE_SHARE:
        bits = min(16, math.ceil(math.log2(total / (unit * PILE_SHARE))))
    return bits, max(1, min(jobs, 1 + total // plan.THREAD_MIN))


class _Grouper:
    """Keys and groups chunks, in input order, into runs held in memory: here, or by
    ``threads`` threads with at most ``threads`` chunks in their hands at a time."""

    def __init__(
        self,
        runs: _Runs,
        seed: int,
        threads: int,
        recycle: Callable[[_Chunk], None] | None = None,
    ) -> None:
        self.runs = runs
        self.seed = seed
        self.threads = threads
        self.recycle = recycle  # takes chunks whose bytes were copied into a run
        self.records = 0  # records handed in so far (the index of the next one)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._pending: deque[tuple[_Chunk, Future]] = deque()

    def _group(self, chunk: _Chunk, first: int):  # type: ignore[no-untyped-def]
        return self.runs.group_records(chunk.data, chunk.ends, self.seed, first, chunk.origin)

    def add(self, chunk: _Chunk) -> None:
        """Group ``chunk`` (now, or in a thread); the chunk is let go of once it is."""
        first, self.records = self.records, self.records + chunk.count
        if self._pool is None:
            self._store(chunk, self._group(chunk, first))
            return
        while len(self._pending) >= self.threads:
            self._store(*self._pending.popleft())
        self._pending.append((chunk, self._pool.submit(self._group, chunk, first)))

    def _store(self, chunk: _Chunk, run) -> None:  # type: ignore[no-untyped-def]
        if isinstance(run, Future):
            run = run.result()
        self.runs.store(run)
        if self.recycle is not None and not np.may_share_memory(run[1], chunk.data):
            self.recycle(chunk)

    def finish(self) -> _Runs:
        """Wait for every chunk handed in; the runs in memory."""
        while self._pending:
            self._store(*self._pending.popleft())
        self.close()
        return self.runs

    def close(self) -> None:
        """Stop the threads (chunks not started are dropped: after an error or Ctrl-C)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def to_disk(self, disk: _Runs) -> None:
        """Move the runs grouped so far into ``disk`` (a run file, any piles), letting go of
        each one in memory once it is written; for an input that did not fit after all."""
        runs = self.finish()
        for r in range(len(runs.memory)):
            keys, data, lengths = runs.run_bytes(r)
            # let go of it once written (views would keep it)
            runs.memory[r] = (np.empty(0, np.uint64), np.empty(0, np.uint8), None)
            ends = np.cumsum(lengths) if lengths is not None else None
            disk.spill(data, keys, ends)
            del keys, data, lengths, ends
        runs.memory = []
