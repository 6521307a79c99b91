"""The shuffle's sizes: memory accounting, work units, piles, and the checks on space."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..errors import KxError
from ..parallel import default_jobs  # noqa: F401  (re-exported by the shuffle)
from ..textio import (
    STDIO,
    format_size,
    free_space,
)

#: Bytes of memory a record costs, beyond its own bytes, while a batch or a pile is being
#: worked on: its offsets, length, key, the sort arrays and the output offsets. The bytes
#: themselves count twice (the batch and its reordered copy); see :func:`_work_memory`.
RECORD_WORK = 112
#: Bytes of memory a record costs, beyond its own bytes, while it waits in memory (its key).
RECORD_REST = 16
#: Largest block read from an input at once.
MAX_BLOCK = 16 << 20
#: Size above which a pile is first split into cache-sized buckets before it is ordered.
CACHE_BUCKET = 64 << 20
#: Memory a pass-1 batch and a pass-2 pile aim at (see :func:`_work_unit`).
WORK_UNIT = 16 << 20
#: Size of a pile relative to a pass-1 batch: smaller piles keep the pass-2 gather in cache.
PILE_SHARE = 0.5
#: Bytes of input per thread when an input that fits is ordered in memory by several threads.
THREAD_MIN = 32 << 20
#: Share of the budget the records may take when the whole input is ordered in memory.
IN_MEMORY_SHARE = 0.8
#: A file whose records read so far, scaled to its size, take at most this share of the
#: in-memory limit is grouped while it is read (it is moved to disk should it not fit after
#: all); otherwise its chunks wait until the input ends or clearly will not fit.
SURE_FIT = 0.8
#: Peak memory of a process working on one work unit, in units: the batch, its grouped copy,
#: the key, order and offset arrays and numpy's temporaries (measured as proportional set
#: size: 2.3 on random 20-200-byte lines).
UNIT_PEAK = 2.5
#: Piles when the input size is not known in advance (stdin, compressed inputs).
UNKNOWN_SIZE_PILE_BITS = 8
#: Expansion assumed for compressed inputs when planning piles.
COMPRESSION_GUESS = 5
#: Bytes of memory one (run, pile) entry of the pile index takes (two uint32).
_INDEX_ENTRY = 8
#: Smallest budget accepted.
MIN_MEMORY = 4 << 10
#: Disk-space head-room asked for beyond the estimate.
DISK_SLACK = 16 << 20
#: Outputs at least this big are written around the page cache (see
#: :class:`~kxtool.textio.PositionalWriter`): they would only push other files out of it, and the
#: kernel's write-back would throttle the writer anyway.
DIRECT_MIN = 256 << 20
#: Bytes kept free in front of each block the reader reads, for the start of a record that
#: spans two blocks (a longer one is joined by a copy).
HEADROOM = 64 << 10
#: Buffers of chunks already grouped that the reader keeps for its next reads.
SPARE_BUFFERS = 2
#: Threads that write an output ordered in memory, and the size of each of their writes
#: (several direct writes in flight keep the device busier than one large one at a time).
WRITE_THREADS = 4
WRITE_PIECE = 4 << 20
#: Share of a worker's pass-2 budget that a group of consecutive piles read at once may take
#: (see :func:`_pile_groups`); a pile joins a group only while its own work memory stays within
#: :data:`GROUP_PILE_SHARE`, so the two together stay within the 0.6 a lone pile may take.
GROUP_SHARE = 0.25
GROUP_PILE_SHARE = 0.35
#: Bytes written or read by one system call at most (Linux caps a call at about 2 GiB).
_IO_STEP = 1 << 30


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the OS tells it."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        return None


def direct_runs(total: int | None) -> bool:
    """Whether run files are written around the page cache: when the input, its runs and the
    output (three times ``total``) would not fit in this machine's memory together, so that
    caching the runs would only push the input and each other out of it."""
    memory = physical_memory()
    return total is not None and memory is not None and 3 * total > memory


def write_queue(budget: int) -> int:
    """Bytes of ordered piles that may wait for the threads that write them in pass 2: a
    sixteenth of ``budget``, and at most 16 MiB (enough to keep the device busy)."""
    return max(WRITE_PIECE // 8, min(16 << 20, budget // 16))


def _work_memory(nbytes: int, count: int) -> int:
    """Memory taken while ``count`` records of ``nbytes`` bytes are keyed, ordered and copied."""
    return 2 * nbytes + RECORD_WORK * count


def _pile_groups(
    counts: np.ndarray, sizes: np.ndarray, budget: int, slack: int = 0
) -> list[tuple[int, int]]:
    """Pass 2's reading plan: ranges ``[first, end)`` of consecutive piles, each read from
    every run at once (two reads per run instead of two per run and pile), holding at most
    :data:`GROUP_SHARE` of ``budget`` with the ``slack`` a range's reads take beyond its
    piles (see :meth:`~kxtool.shuffle.runs._Runs.read_slack`); a pile too big to share the
    budget is a range alone. Empty piles fall in whichever range they are next to."""
    limit = GROUP_SHARE * budget - slack
    alone = 2 * sizes + (RECORD_WORK * counts) > GROUP_PILE_SHARE * budget
    held = sizes + 8 * counts
    groups: list[tuple[int, int]] = []
    first, size = 0, 0
    for p, (big, h) in enumerate(zip(alone.tolist(), held.tolist(), strict=True)):
        if big or size + h > limit:
            if p > first:
                groups.append((first, p))
            first, size = p, 0
            if big:
                groups.append((p, p + 1))
                first = p + 1
                continue
        size += h
    if len(counts) > first:
        groups.append((first, len(counts)))
    return groups


def _resplit_bits(nbytes: int, count: int, budget: int) -> int:
    """Key bits by which pass 2 scatters again a pile of ``count`` records and ``nbytes``
    bytes that is too big for ``budget``: enough for each part to fit, unless the new pile
    index (8 bytes per sub-run and sub-pile; a sub-run holds half the budget's work) would then
    pass a sixteenth of the budget. Fewer bits only mean that the parts are scattered once
    more: a level costs two more passes over the pile's bytes but never memory beyond the
    budget. (Unbounded, a 128 GB pile with 45 MB had an index of about 6 GB.)"""
    need = _work_memory(nbytes, count)
    bits = math.ceil(math.log2(max(2.0, need / (0.5 * budget))))
    sub_runs = max(1, math.ceil(need / (0.5 * budget)))
    room = budget / 16 / (_INDEX_ENTRY * sub_runs)
    if room >= 2:
        bits = min(bits, int(math.log2(room)))
    else:
        bits = 1
    return max(1, min(16, bits))


def _check_space(directory: str, needed: int, what: str) -> None:
    free = free_space(directory)
    if free < needed + DISK_SLACK:
        raise KxError(
            f"not enough free space in {directory!r} for {what}: about "
            f"{format_size(needed + DISK_SLACK)} needed, {format_size(free)} free "
            "(use --tmp-dir elsewhere)"
        )


def _planning_size(paths: Sequence[str]) -> int | None:
    """A generous guess at the size of compressed inputs, to plan piles (not to check space):
    text rarely compresses better than 5:1. ``None`` when stdin is among the inputs."""
    if STDIO in paths:
        return None
    try:
        return sum(COMPRESSION_GUESS * os.path.getsize(p) for p in paths)
    except OSError:
        return None


#: Resting memory per byte assumed before any record is seen (lines of about 100 bytes).
_PER_BYTE_GUESS = 1.16


def _work_per_byte(per_byte: float) -> float:
    """Work memory per data byte (see :func:`_work_memory`), from the resting memory per byte
    (``1 + RECORD_REST / mean record length``)."""
    return 2.0 + RECORD_WORK * max(0.0, per_byte - 1.0) / RECORD_REST


def _unit_cap(budget: int, jobs: int) -> int:
    """The largest work unit: a quarter of a worker's share of the budget, so that a unit's
    peak (:data:`UNIT_PEAK` units) in every worker stays within the budget with room left
    for what waits (chunks the main process holds, parts a worker is ahead on)."""
    return max(MIN_MEMORY // 4, budget // (4 * max(1, jobs)))


def _pile_plan(total: int, per_byte: float, unit: int, budget: int, jobs: int) -> tuple[int, int]:
    """Pile bits and the size of the pile index for ``total`` bytes in runs of ``unit``."""
    wpb = _work_per_byte(per_byte)
    # a pile holds about half a work unit, and its work memory stays within half a worker's
    # share of the budget (pass 2 checks 0.6 and splits a pile again beyond that)
    pile_bytes = min(unit * PILE_SHARE / per_byte, 0.5 * (budget / max(1, jobs)) / wpb)
    bits = min(16, max(1, math.ceil(math.log2(max(2.0, total / pile_bytes)))))
    run_bytes = max(unit / wpb, min(MAX_BLOCK, unit // 2))
    index = math.ceil(total / run_bytes) * (1 << bits) * _INDEX_ENTRY
    return bits, index


def _work_unit(budget: int, known_total: int | None, jobs: int = 1) -> int:
    """The memory a batch (pass 1) and a pile (pass 2) aim at.

    Small units keep the working set in cache and are markedly faster than budget-sized ones;
    they are made bigger only where the pile index (runs x piles) would otherwise take more
    than an eighth of the budget, on very large inputs, and never beyond a quarter of a worker's
    share of the budget.
    """
    cap = _unit_cap(budget, jobs)
    unit = min(WORK_UNIT, cap)
    if known_total is not None:
        while unit < cap:
            _bits, index = _pile_plan(known_total, _PER_BYTE_GUESS, unit, budget, jobs)
            if index <= budget / 8:
                break
            unit = min(cap, 2 * unit)
    return unit


def _pile_bits_for(
    known_total: int | None, per_byte: float, unit: int, budget: int, jobs: int = 1
) -> int:
    """Enough piles that each one is about half a work unit and fits in memory in pass 2
    (smaller piles measured faster here), unless the pile index would then take more than an
    eighth of the budget: then fewer, bigger piles, which pass 2 splits again."""
    if known_total is None:
        # unknown size (stdin, compressed): plan for a large input; piles that still turn out
        # too big are split again in pass 2, which changes nothing in the output
        return UNKNOWN_SIZE_PILE_BITS
    bits, index = _pile_plan(known_total, per_byte, unit, budget, jobs)
    while bits > 1 and index > budget / 8:
        bits -= 1
        index //= 2
    return bits
