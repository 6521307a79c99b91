"""The shuffle as tasks on a Dask cluster (``--cluster``; see :mod:`kxtool.cluster`).

The permutation is the one of :mod:`.keys` (record ``i`` of all inputs gets key
``f_seed(i)``), so the output is byte-identical to the one-machine run with the same seed,
shards, header and separator, for any number of workers. Inputs, the output and the
temporary directory must be on storage every worker sees (a shared file system).

Pass 1, counting
    The inputs are cut into *units*: byte ranges of plain files (cut just after a separator,
    as :class:`~.reading._RangePlan` cuts them), several consecutive ranges to a task, or a
    whole compressed file (a *part*). One task per unit counts its records (a part's task
    also takes the header lines when it is the first input). The client adds the counts up:
    each unit now knows the global index of its first record.
Pass 1, scattering
    One task per unit reads it again, keys its records (``record_keys(seed, first, n)``) and
    spills them into runs grouped by pile, exactly as a local worker does (:class:`~.runs._Runs`),
    in a run file of its own under the temporary directory: written under a name unique to
    the attempt, then renamed to the unit's name, so a task that Dask runs again (its worker
    was lost) leaves one complete file with the same content. It returns the pile index of
    its runs.
Pass 2
    The client merges the pile indexes; piles partition the key space in order, so pile
    ``p`` starts in the output after the bytes of the piles before it. One task per group of
    consecutive piles orders them (:func:`~.output._drain_pile`, split again by the next key
    bits when a pile is too big for a worker's budget) and writes them: at their offsets into
    the output's temporary file (a single plain output), or else into a part file of its own
    (temp name, then renamed) that the client appends, in order, through the same writer as
    a local run (shards, header, compression, stdout).

``--memory`` is each worker's budget (divided among a worker's threads). The temporary
directory is removed at the end, on an error and on Ctrl-C (pending tasks are cancelled
first; a task still running when its directory is removed fails to create anything).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import KxError
from ..progress import Progress
from ..records import record_ends
from ..textio import (
    AtomicOutputs,
    PositionalWriter,
    compression_of,
    display_name,
    temp_dir,
)
from ..textio.remote import filesystem, is_remote, remote_error
from . import plan
from .keys import record_keys
from .output import _drain, _OffsetSink, _Sink, _Writer
from .plan import RECORD_REST, _pile_bits_for, _work_unit
from .reading import _check_record_lengths, _RangePlan, _read_header, _read_range, _Reader
from .runs import _pwrite_all, _Runs, _Spiller

#: Seconds a pass-1 scatter task sleeps first (tests set it on the workers to have time to
#: kill one mid-pass; never set otherwise).
_DELAY = 0.0

#: Largest share of the input one task of either pass takes (when there are enough).
_TASK_MAX = 1 << 30


def _token() -> str:
    return uuid.uuid4().hex[:12]


# -- the tasks (they run on the workers) --------------------------------------------------------


def _unit_records(
    ctx: dict, unit: tuple, head: list[bytes] | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """The records of a unit as (buffer of whole records, their count), header taken out
    (a part's header lines go to ``head``)."""
    kind, _file, path, what = unit
    sep = ctx["sep"]
    if kind == "range":
        fds: dict[str, int] = {}
        try:
            for offset, length, add_sep in what:
                data = _read_range(path, offset, length, add_sep, sep, fds)
                yield data, int(np.count_nonzero(data == sep[0]))
        finally:
            for fd in fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        return
    reader = _Reader([path], sep, what, ctx["block"], ctx["max_record"], None, None)
    for chunk in reader.chunks():
        yield chunk.data, chunk.count
    if head is not None:
        head.extend(reader.header)


def _count_task(ctx: dict, unit: tuple) -> tuple[int, list[bytes] | None]:
    """Pass 1, counting: the records of a unit (and a first part's header lines)."""
    head: list[bytes] = []
    n = sum(count for _data, count in _unit_records(ctx, unit, head))
    return n, head if unit[0] == "part" and unit[3] else None


def _scatter_task(ctx: dict, item: tuple) -> _Runs | None:
    """Pass 1, scattering: key a unit's records from ``first`` on and spill them into a run
    file of its own (named for the attempt, then renamed to the unit's name)."""
    from . import _tune_allocator

    _tune_allocator()
    if _DELAY:
        time.sleep(_DELAY)
    index, unit, first, expected, line_base = item
    path = unit[2]
    directory = ctx["dir"]
    runs = _Runs(directory, ctx["sep"], 0, ctx["bits"], f"p1-{index}-{_token()}")
    spiller = _Spiller(runs, ctx["unit"])
    start = first
    try:
        for data, count in _unit_records(ctx, unit):
            ends = record_ends(data, ctx["sep"][0])
            if unit[0] == "range":
                _check_record_lengths(ends, path, line_base + start - first, ctx["max_record"])
            spiller.add(data, record_keys(ctx["seed"], start, count), ends)
            start += count
        spiller.flush()
        runs.close()
        if start - first != expected:
            raise KxError(f"{display_name(path)!r} changed while it was being read")
        if runs.runs == 0:
            return None
        final = os.path.join(directory, f"p1-{index}.runs")
        os.replace(runs.path, final)
    except BaseException:
        runs.remove()
        raise
    runs.path = final
    runs.files = [final]
    return runs


class _FileSink(_Sink):
    """Ordered records appended to a part file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0

    def write(self, data: np.ndarray, lengths: np.ndarray | None = None) -> None:
        _pwrite_all(self.fd, data, self.offset)
        self.offset += len(data)


def _order_task(ctx: dict, item: dict) -> tuple[int, int]:
    """Pass 2: order the piles ``a:b`` and write them (at their offsets into the output, or
    into the group's part file). Returns (group, bytes written)."""
    g = item["group"]
    token = _token()
    sub = _Runs(ctx["dir"], ctx["sep"], 0, ctx["bits"], f"p2-{g}-{token}")
    sub.files = ctx["files"]
    sub.run_file = ctx["run_file"]
    sub.key_base = item["kpos"]
    sub.data_base = item["dpos"]
    sub._frozen = (item["counts"], item["sizes"])
    sizes = item["sizes"].sum(axis=1, dtype=np.int64)
    target = ctx["target"]
    out = None
    part = final = ""
    fd = -1
    try:
        if target is not None:
            path, name, base = target
            out = PositionalWriter(path, name, direct=ctx["direct"])
            sink: _Sink = _OffsetSink(out, base + item["offset"])
            start = sink.offset  # type: ignore[attr-defined]
        else:
            final = os.path.join(ctx["dir"], f"p2-{g}.part")
            part = os.path.join(ctx["dir"], f"p2-{g}-{token}.part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            sink = _FileSink(fd)
            start = 0
        # consecutive piles are read from every run at once, as on one machine
        _drain(sub, ctx["budget"], sink)
        written = sink.offset - start  # type: ignore[attr-defined]
        if written != int(sizes.sum()):
            raise KxError(f"internal error: wrote {written} bytes of {int(sizes.sum())}")
        if fd >= 0:
            os.close(fd)
            fd = -1
            os.replace(part, final)
    except OSError as e:
        from ..textio import os_error

        raise os_error(e, part or ctx["dir"], "cannot write temporary file") from None
    finally:
        sub.close()
        if out is not None:
            out.close()
        if fd >= 0:
            os.close(fd)
        if part and os.path.exists(part):
            with contextlib.suppress(OSError):
                os.unlink(part)
    return g, written


# -- the client ---------------------------------------------------------------------------------


def _units(
    paths: Sequence[str], sep: bytes, header: int, block: int, max_record: int, task_bytes: int
) -> tuple[list[tuple], list[bytes] | None]:
    """Pass-1 units over the inputs, in input order, and the header when the first input is
    plain (else the first part's count task finds it)."""
    units: list[tuple] = []
    head: list[bytes] | None = None
    for i, path in enumerate(paths):
        if is_remote(path) or compression_of(path) is not None:
            # a URL is read as a stream by the task (as one machine does)
            units.append(("part", i, path, header if i == 0 else 0))
            continue
        first = 0
        if i == 0:
            head, first = _read_header(path, sep, header, max_record)
        size = os.path.getsize(path)
        ranges = _RangePlan([path], sep, block, max_record, [], first, size, 0).ranges()
        group: list[tuple[int, int, bool]] = []
        nbytes = 0
        for r in ranges:
            group.append((r.offset, r.length, r.add_sep))
            nbytes += r.length
            if nbytes >= task_bytes:
                units.append(("range", i, path, group))
                group, nbytes = [], 0
        if group:
            units.append(("range", i, path, group))
    return units, head


def _size(path: str) -> int:
    """Bytes of an input file or object."""
    if is_remote(path):
        fs, key = filesystem(path)
        try:
            return int(fs.size(key))
        except Exception as e:  # noqa: BLE001 - the store's own error, as one line
            raise remote_error(e, path) from None
    return os.path.getsize(path)


def _unit_bytes(unit: tuple) -> int:
    if unit[0] == "range":
        return sum(length for _o, length, _a in unit[3])
    return _size(unit[2])


def shuffle_on_cluster(
    paths: Sequence[str],
    output: str,
    budget: int,
    seed: int,
    tmp_dir: str | os.PathLike[str] | None,
    shards: int | None,
    header: int,
    sep: bytes,
    cluster: Any,
    progress: Progress | None,
    _pile_bits: int | None = None,
    _task_bytes: int | None = None,
    stats: dict | None = None,
) -> Any:
    """:func:`kxtool.shuffle.shuffle_files` with both passes as tasks on ``cluster`` (see the
    module's notes); the arguments are those :func:`shuffle_files` has checked. ``stats``,
    when given, is filled with task counts and bytes (benchmarks)."""
    from ..cluster import connect, run_tasks
    from . import ShuffleResult

    for p in paths:
        if not (is_remote(p) or os.path.isfile(p)):
            raise KxError(
                f"--cluster: {display_name(p)!r} is not a regular file; the workers read the"
                " inputs themselves (stdin and pipes cannot be shared)"
            )
    with connect(cluster) as cl:
        threads = cl.threads()
        worker_budget = max(plan.MIN_MEMORY, budget // cl.worker_threads())
        sizes = [_size(p) for p in paths]
        streamed = [is_remote(p) or compression_of(p) is not None for p in paths]
        compressed = any(streamed)
        planning = sum(s * (plan.COMPRESSION_GUESS if c else 1)
                       for c, s in zip(streamed, sizes, strict=True))
        unit = _work_unit(worker_budget, planning, 1)
        max_record = worker_budget // 4
        block = max(256, min(plan.MAX_BLOCK, unit // 2, max_record))
        task_bytes = _task_bytes or max(block, min(_TASK_MAX, -(-planning // (4 * threads))))
        units, head = _units(paths, sep, header, block, max_record, task_bytes)
        per_byte = plan._PER_BYTE_GUESS
        if not compressed and sum(sizes):
            with open(paths[0], "rb") as f:
                sample = f.read(1 << 20)
            per_byte = 1 + RECORD_REST * max(1, sample.count(sep)) / max(1, len(sample))
        bits = _pile_bits if _pile_bits is not None else _pile_bits_for(
            planning, per_byte, unit, worker_budget, 1
        )
        ctx = dict(sep=sep, block=block, max_record=max_record, seed=seed, bits=bits, unit=unit)
        st = stats if stats is not None else {}
        st.update(workers=len(cl.workers()), threads=threads, units=len(units), pile_bits=bits)
        started = time.perf_counter()
        total_in = sum(_unit_bytes(u) for u in units)
        # pass 1, counting
        counts: list[int] = []
        done = 0
        for u, (n, h) in zip(units, run_tasks(cl, _count_task, units, context=ctx), strict=True):
            counts.append(n)
            if h is not None:
                head = h
            done += _unit_bytes(u)
            if progress is not None:
                progress("counting", done, total_in)
        head = head or []
        st["count_seconds"] = time.perf_counter() - started
        st["unit_bytes"] = [_unit_bytes(u) for u in units]
        st["unit_records"] = counts
        firsts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)[:-1])).tolist()
        # records of the same file before each unit (for line numbers in errors)
        line_base, seen_in = [], {}
        for u, n in zip(units, counts, strict=True):
            base = seen_in.get(u[1], len(head) if u[1] == 0 else 0)
            line_base.append(base)
            seen_in[u[1]] = base + n
        with contextlib.ExitStack() as stack:
            directory = stack.enter_context(temp_dir(os.fspath(tmp_dir) if tmp_dir else None))
            if not compressed:  # (compressed inputs grow by an unknown factor)
                plan._check_space(directory, total_in + 8 * sum(counts), "the temporary files")
            ctx["dir"] = directory
            items = [
                (i, u, firsts[i], counts[i], line_base[i]) for i, u in enumerate(units)
            ]
            # pass 1, scattering
            t1 = time.perf_counter()
            merged = _Runs(directory, sep, 0, bits, "merged")
            merged.files = []
            done = 0
            for item, runs in zip(items, run_tasks(cl, _scatter_task, items, context=ctx),
                                  strict=True):
                if runs is not None:
                    merged.adopt(runs)
                done += _unit_bytes(item[1])
                if progress is not None:
                    progress("reading", done, total_in)
            st["scatter_seconds"] = time.perf_counter() - t1
            pile_counts, pile_sizes = merged.pile_totals()
            total = int(pile_counts.sum())
            total_bytes = int(pile_sizes.sum())
            st.update(records=total, bytes=total_bytes, runs=merged.runs, piles=merged.piles,
                      run_files=len(merged.files))
            outs = stack.enter_context(AtomicOutputs(make_dirs=shards is not None))
            writer = _Writer(outs, output, shards, total, head, sep, progress, total_bytes)
            t2 = time.perf_counter()
            groups = _pass2_items(merged, pile_sizes, threads, unit, _task_bytes)
            st["pass2_tasks"] = len(groups)
            st["group_bytes"] = [int(g["sizes"].sum()) for g in groups]
            st["group_records"] = [int(g["counts"].sum()) for g in groups]
            # workers write a local output in place; an output on a URL is staged where only
            # this process sees it, so the tasks write part files that are appended here
            target = writer.direct_target() if total_bytes and not is_remote(output) else None
            ctx2 = dict(
                dir=directory, sep=sep, bits=bits, files=merged.files,
                run_file=merged.run_file, budget=worker_budget,
                target=None if target is None else (target[0], output, target[1]),
                direct=total_bytes >= plan.DIRECT_MIN,
            )
            for g, written in run_tasks(cl, _order_task, groups, context=ctx2):
                if target is not None:
                    writer.advance(written)
                    continue
                part = os.path.join(directory, f"p2-{g}.part")
                reader = _Reader([part], sep, 0, block, max(max_record, 1), None, None)
                for chunk in reader.chunks():
                    writer.write(chunk.data)
                os.unlink(part)
            if target is not None:
                writer.advance_done(total_bytes)
            st["pass2_seconds"] = time.perf_counter() - t2
            merged.close()
            result_paths = writer.finish()
        return ShuffleResult(
            seed, total, total_bytes, len(head), False, merged.runs, merged.piles, threads,
            result_paths,
        )


def _pass2_items(
    merged: _Runs, pile_sizes: np.ndarray, threads: int, unit: int, task_bytes: int | None
) -> list[dict]:
    """Pass-2 items: consecutive piles of about ``task_bytes`` together, each with its slice
    of the pile index and where its piles start in every run and in the output."""
    counts, sizes = merged._index()
    total = int(pile_sizes.sum())
    target = task_bytes or max(unit, min(_TASK_MAX, -(-total // (4 * threads))))
    kpos = np.array(merged.key_base, dtype=np.int64)
    dpos = np.array(merged.data_base, dtype=np.int64)
    groups: list[dict] = []
    offset = 0
    a = 0
    npiles = merged.piles
    while a < npiles:
        b, nbytes = a, 0
        while b < npiles and (b == a or nbytes + int(pile_sizes[b]) <= target):
            nbytes += int(pile_sizes[b])
            b += 1
        if nbytes:
            groups.append(dict(
                group=len(groups), a=a, b=b, counts=np.ascontiguousarray(counts[a:b]),
                sizes=np.ascontiguousarray(sizes[a:b]), kpos=kpos.tolist(),
                dpos=dpos.tolist(), offset=offset,
            ))
        kpos = kpos + 8 * counts[a:b].sum(axis=0, dtype=np.int64)
        dpos = dpos + sizes[a:b].sum(axis=0, dtype=np.int64)
        offset += nbytes
        a = b
    return groups
