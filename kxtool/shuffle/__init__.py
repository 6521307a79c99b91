"""Uniform external-memory shuffle of byte records (lines).

The permutation
    Record ``i`` (its index over all inputs, header lines excluded) gets the 64-bit key
    ``f_seed(i)``, where ``f_seed`` is a keyed bijection of the 64-bit integers (rounds of
    "add a round key, then the murmur3 finaliser"). The output is the records in increasing key
    order. Keys are distinct, so the order is a total order that depends only on the seed and
    the number of records: not on the memory budget, the temporary directory or the number of
    piles, and two files with the same number of lines are permuted alike (parallel corpora
    stay aligned).

The passes
    Records are read once, in batches that fit the memory budget, straight into numpy buffers
    (they never become Python objects; see :mod:`kxtool.records`). Each batch is grouped into
    piles by the top bits of its keys (a counting sort) and kept as a *run*: in memory when the
    whole input fits, else appended to a run file in the temporary directory. Pass 2 loads one
    pile at a time (its segments from every run), orders it by key and writes it; since piles
    partition the key space in order, the concatenation is the fully ordered output. A pile
    too big for memory is scattered again by the next key bits, which changes nothing in the
    output.

Workers
    With ``jobs`` > 1 and an input too big for memory, worker processes share both passes.
    Plain input files are cut into byte ranges that the workers read themselves; each learns
    the index of its first record once the ranges before it are counted. Stdin and compressed
    inputs are read here and handed out through pipes. In pass 2 the workers write their piles
    straight into a single plain output file (positional writes; large outputs around the page
    cache), otherwise they send them back in order.

Memory
    Every per-record structure is counted against the budget: the bytes (twice while a batch
    or pile is reordered), and the offsets, key and sort arrays (:data:`RECORD_WORK` bytes a
    record; :data:`RECORD_REST` while a record waits in memory). Only a few files are open at
    any time, so the number of piles, runs and inputs is not limited by the open-file limit.

Modules
    :mod:`.keys` the permutation, :mod:`.reading` inputs into buffers, :mod:`.runs` piles and
    run files, :mod:`.memory` grouping an input that fits while it is read, :mod:`.output`
    ordering piles and writing them, :mod:`.workers` the process pool, :mod:`.plan` sizes and
    checks; this module decides the route and runs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import KxError
from ..progress import Progress
from ..textio import (
    STDIO,
    AtomicOutputs,
    check_output,
    check_readable,
    compression_of,
    expand_inputs,
    format_size,
    input_size,
    is_remote,
    local_path,
    parse_size,
    stdin_as_file,
    temp_dir,
)
from . import plan
from .keys import fresh_seed, record_keys, shuffle_lines
from .memory import _Grouper, _memory_layout
from .output import _drain_to_output, _Writer
from .plan import (
    IN_MEMORY_SHARE,
    MIN_MEMORY,
    SURE_FIT,
    UNIT_PEAK,
    _check_space,
    _pile_bits_for,
    _planning_size,
    _work_unit,
    default_jobs,
)
from .reading import _Chunk, _RangePlan, _Reader
from .runs import _records_native, _Runs, _Spiller
from .workers import _Pool

__all__ = [
    "MIN_MEMORY",
    "ShuffleResult",
    "check_shard_pattern",
    "default_jobs",
    "record_keys",
    "shuffle_files",
    "shuffle_lines",
]


@dataclass
class ShuffleResult:
    """What :func:`shuffle_files` did.

    >>> import os, tempfile
    >>> src = os.path.join(tempfile.mkdtemp(), "in.txt")
    >>> _ = open(src, "w").write("a\\nb\\nc\\n")
    >>> r = shuffle_files(src, src + ".out", seed=1)
    >>> r.records, r.bytes, r.in_memory, r.outputs == [src + ".out"]
    (3, 6, True, True)
    """

    seed: int
    records: int
    bytes: int
    header: int
    in_memory: bool
    runs: int
    piles: int
    jobs: int  # worker processes, or threads for an input ordered in memory
    outputs: list[str]


_allocator_tuned = False


def _tune_allocator() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it at once.

    The shuffle allocates and frees blocks of tens of megabytes over and over; by default each
    one is a fresh mapping whose pages the kernel must zero again, which cost as much time as
    the shuffling itself. It also keeps one arena for all threads, so that memory one thread
    frees serves the next allocation of another. This changes only where memory comes from and
    when it is handed back, not how much the shuffle asks for.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
        # one arena: blocks freed by one thread are reused by the others (threads order an
        # input that fits; with an arena each, peak memory grew by a quarter here)
        libc.mallopt(m_arena_max, 1)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Stop numpy from asking for transparent huge pages while the shuffle runs.

    numpy advises the kernel to back every large array with huge pages; the shuffle allocates
    and frees tens of megabytes over and over, and where the kernel compacts memory to find
    huge pages on demand that doubled the system time (measured: 2.6 s against 0.9 s on a
    500 MB input).
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # pragma: no cover - numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            yield
            return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


def _validate_output(output: str, shards: int | None, inputs: Sequence[str]) -> None:
    if hasattr(shards, "check"):  # named parts (--split)
        shards.check()  # type: ignore[union-attr]
        return
    if shards is None:
        check_output(output)
        return
    check_shard_pattern(output, shards)


def _checked_call(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    memory: str | int,
    header: int,
    shards: int | None,
) -> tuple[list[str], str, int]:
    """What every entry point checks first: the inputs (URL globs expanded, ``file://`` URLs
    made local paths, stdin at most once, each readable), the output, the budget and the
    header count. Returns the input paths, the output and the budget in bytes."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    # URL globs expanded; file:// URLs are local paths (and keep the byte-range route)
    paths = [local_path(p) for p in expand_inputs([os.fspath(p) for p in inputs])] or [STDIO]
    output = local_path(os.fspath(output))
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
    return paths, output, budget


def check_shard_pattern(output: str, shards: int) -> None:
    """Check ``output`` as the name pattern of ``shards`` outputs (``out/part-{:05d}.txt``):
    a :class:`KxError` when it is not one. Missing directories are fine (they are made)."""
    if shards < 1:
        raise KxError("--shards must be at least 1")
    if output == STDIO:
        raise KxError("--shards needs -o with a pattern such as 'out/part-{:05d}.txt'")
    try:
        names = {output.format(j) for j in range(min(shards, 3))} | {output.format(shards - 1)}
    except (IndexError, KeyError, ValueError) as e:
        raise KxError(f"invalid shard pattern {output!r}: {e}") from None
    if len(names) < min(shards, 3) or output.format(0) == output:
        raise KxError(
            f"shard pattern {output!r} must contain a field such as {{}} or {{:05d}} "
            "for the shard number"
        )
    for name in sorted(names):
        check_output(name, make_dirs=True)


def shuffle_files(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (STDIO,),
    output: str | os.PathLike[str] = STDIO,
    *,
    memory: int | str = "1G",
    seed: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    shards: int | None = None,
    header: int = 0,
    zero_terminated: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    cluster: object = None,
    _pile_bits: int | None = None,
) -> ShuffleResult:
    """Shuffle the records of ``inputs`` uniformly into ``output``, in bounded memory.

    ``inputs`` are files (plain, .gz, .bz2, .xz or .zst), ``"-"`` for stdin, or URLs
    (``s3://bucket/part-*.zst``, globs expanded; see :mod:`kxtool.textio.remote`), read once as
    one corpus. ``output`` is a file or a URL (written atomically; it may be one of the inputs)
    or ``"-"``; with ``shards`` it is a pattern such as ``"out/part-{:05d}.txt"`` for
    ``str.format``.
    ``memory`` bounds the memory for records (e.g. ``"512M"``). The same ``seed`` and input
    always give the same output, whatever ``memory`` and ``tmp_dir``. ``header`` lines of the
    first input stay on top (of every shard). Records end with a newline, or with NUL when
    ``zero_terminated``; a missing final terminator is added. Inputs that do not fit in memory
    are shuffled by ``jobs`` worker processes (default :func:`default_jobs`); the output does
    not depend on their number. With ``cluster`` (an address such as ``"local:2"`` or
    ``"tcp://host:8786"``, see :mod:`kxtool.cluster`) both passes run as tasks on a Dask
    cluster instead, with ``memory`` the budget of each worker; inputs, output and ``tmp_dir``
    must then be on storage every worker sees, and the output is the same byte for byte
    (:mod:`kxtool.shuffle.cluster`). Raises :class:`KxError`.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> src, out = os.path.join(d, "in.txt"), os.path.join(d, "out.txt")
    >>> _ = open(src, "w").write("".join(f"line {i}\\n" for i in range(5)))
    >>> r = shuffle_files(src, out, memory="64M", seed=7)
    >>> r.records, sorted(open(out).read().splitlines()) == [f"line {i}" for i in range(5)]
    (5, True)
    >>> _ = shuffle_files(src, os.path.join(d, "again.txt"), seed=7)  # same seed, same order
    >>> open(out).read() == open(os.path.join(d, "again.txt")).read()
    True
    """
    paths, output, budget = _checked_call(inputs, output, memory, header, shards)
    if tmp_dir is not None and is_remote(os.fspath(tmp_dir)):
        raise KxError(
            f"--tmp-dir {os.fspath(tmp_dir)!r} must be a local directory (or a mounted shared "
            "file system): the temporary runs are read back by byte ranges"
        )
    if tmp_dir is not None:
        tmp_dir = local_path(os.fspath(tmp_dir))
    if tmp_dir is not None and not os.path.isdir(tmp_dir):
        what = "does not exist" if not os.path.exists(tmp_dir) else "is not a directory"
        raise KxError(f"--tmp-dir {os.fspath(tmp_dir)!r} {what}")
    if seed is None:
        seed = fresh_seed()
    sep = b"\0" if zero_terminated else b"\n"
    if cluster is not None:
        from .cluster import shuffle_on_cluster

        return shuffle_on_cluster(
            paths, output, budget, seed, tmp_dir, shards, header, sep, cluster, progress,
            _pile_bits,
        )
    _tune_allocator()
    # stdin redirected from a plain file is read like that file: by byte ranges, in parallel
    with stdin_as_file() if STDIO in paths else contextlib.nullcontext() as stdin_path:
        if stdin_path is not None:
            paths = [stdin_path if p == STDIO else p for p in paths]
        return _shuffle_paths(
            paths, output, budget, seed, tmp_dir, shards, header, sep, jobs, progress, _pile_bits
        )


def _shuffle_paths(
    paths: list[str],
    output: str,
    budget: int,
    seed: int,
    tmp_dir: str | os.PathLike[str] | None,
    shards: int | None,
    header: int,
    sep: bytes,
    jobs: int | None,
    progress: Progress | None,
    _pile_bits: int | None,
) -> ShuffleResult:
    sizes = [input_size(p) for p in paths]
    known_total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    planning_total = known_total if known_total is not None else _planning_size(paths)
    if jobs is None:
        jobs = default_jobs()
    if jobs < 1:
        raise KxError("--jobs must be at least 1")
    unit = _work_unit(budget, planning_total, jobs)
    reader = _Reader(paths, sep, header, unit // 2, budget // 4, progress, known_total)
    # what may wait in memory while the input might still fit: the rest of the budget must
    # hold what spilling it then takes, a work unit's peak in each process that works on it
    # (with workers, the main process too: it reads, decompresses and hands out chunks)
    working = jobs + 1 if jobs > 1 else 1
    in_memory_limit = int(min(IN_MEMORY_SHARE * budget, budget - UNIT_PEAK * unit * working))

    tmp_base = os.fspath(tmp_dir) if tmp_dir is not None else None
    tmp_ctx = contextlib.ExitStack()
    # a URL output is staged in --tmp-dir (or $TMPDIR) and uploaded at the end
    outs_ctx = AtomicOutputs(make_dirs=shards is not None, stage_dir=tmp_base)
    with _small_pages(), tmp_ctx, outs_ctx as outs:
        ranges = None
        if jobs > 1 and known_total is not None:
            ranges = _RangePlan.make(paths, sep, header, reader.block, budget // 4, in_memory_limit)
        def workers_on_disk(total: int | None, per_byte: float) -> _Pool:
            """A temporary directory and the pool of workers that spill into it."""
            directory = tmp_ctx.enter_context(temp_dir(tmp_base))
            if known_total is not None and ranges is not None:
                needed = known_total + 8 * ranges.records_estimate
                _check_space(directory, needed, "the temporary files")
            bits = (
                _pile_bits
                if _pile_bits is not None
                else _pile_bits_for(total, per_byte, unit, budget, jobs)
            )
            pool = _Pool(jobs, directory, sep, bits, seed, unit, budget // 4,
                         plan.direct_runs(total))
            tmp_ctx.callback(pool.stop)
            return pool

        if ranges is not None:
            # plain files too big for memory: the workers read their own byte ranges
            pool = workers_on_disk(known_total, ranges.per_byte)
            runs = pool.pass1_ranges(ranges, progress, known_total)
            return _finish_on_disk(
                runs, pool, outs, output, shards, ranges.header, sep, progress, budget, seed
            )
        if _by_parts(paths, jobs, planning_total, in_memory_limit):
            # several files, some compressed, too big for memory: the workers read (and
            # decompress) whole files themselves, in parallel
            pool = workers_on_disk(planning_total, plan._PER_BYTE_GUESS)
            runs, head = pool.pass1_parts(paths, header, progress)
            return _finish_on_disk(
                runs, pool, outs, output, shards, head, sep, progress, budget, seed
            )

        # plain files that should fit are mapped rather than read: no copy of their bytes is
        # made until they are ordered, and no fresh memory is taken for them
        reader.map_files = (
            known_total is not None
            and _records_native is not None
            and known_total <= SURE_FIT * in_memory_limit
        )
        tmp_ctx.callback(reader.close_maps)
        # read until the input ends or clearly will not fit in memory; a file that will fit
        # by the records read so far is grouped (by threads) while the rest is read
        chunks = reader.chunks()
        held: list[_Chunk] = []
        held_memory = held_bytes = 0
        fits = True
        grouper: _Grouper | None = None
        tmp_ctx.callback(lambda: grouper is not None and grouper.close())
        for chunk in chunks:
            held_memory += chunk.memory()
            held_bytes += chunk.nbytes
            estimate = None if known_total is None else known_total * held_memory / held_bytes
            if held_memory > in_memory_limit or (
                estimate is not None and estimate > 1.25 * in_memory_limit
            ):
                held.append(chunk)
                fits = False
                break
            if grouper is None and estimate is not None and estimate <= SURE_FIT * in_memory_limit:
                grouper = _grouper(known_total, sep, seed, unit, jobs, reader)  # type: ignore[arg-type]
                for earlier in held:
                    grouper.add(earlier)
                held = []
            if grouper is not None:
                grouper.add(chunk)
            else:
                held.append(chunk)
            del chunk

        if fits:
            # one pass in memory: the batches are grouped into cache-sized piles as they are
            # keyed, then each pile is ordered and written
            if grouper is None:
                grouper = _grouper(held_bytes, sep, seed, unit, jobs, reader)
                held.reverse()
                while held:
                    grouper.add(held.pop())
            threads = grouper.threads
            runs = grouper.finish()
            writer = _Writer(
                outs, output, shards, grouper.records, reader.header, sep, progress, held_bytes
            )
            _drain_to_output(runs, budget, writer, threads)
            runs.remove()
            reader.close_maps()
            return ShuffleResult(
                seed,
                reader.records,
                held_bytes,
                len(reader.header),
                True,
                0,
                0,
                threads,
                writer.finish(),
            )

        # too big: pass 1 spills the records to runs, grouped into piles by key bits; pass 2
        # orders and writes one pile at a time
        directory = tmp_ctx.enter_context(temp_dir(tmp_base))
        per_byte = held_memory / max(1, held_bytes)
        if known_total is not None:
            records_est = int(known_total * reader.records / max(1, held_bytes))
            _check_space(directory, known_total + 8 * records_est, "the temporary files")
        if _pile_bits is not None:
            bits = _pile_bits
        else:
            bits = _pile_bits_for(planning_total, per_byte, unit, budget, jobs)
        space = None if known_total is not None else directory
        reader.unmap_pages()  # mapped bytes are read once more, not kept
        stream = _chain(held, chunks)
        first = 0
        direct = plan.direct_runs(planning_total)
        runs = _Runs(directory, sep, 0, bits, "run", direct)
        tmp_ctx.callback(runs.remove)
        if grouper is not None:
            # expected to fit, but did not: the runs grouped in memory go to disk first
            first = grouper.records
            grouper.to_disk(runs)
        if jobs > 1:
            reader.keep_ends = False  # the workers find the ends of what they are sent
            pool = _Pool(jobs, directory, sep, bits, seed, unit, budget // 4, direct)
            tmp_ctx.callback(pool.stop)
            spilled = runs
            runs = pool.pass1(stream, space, first)
            if spilled.runs:
                runs.adopt(spilled)
        else:
            _pass1(runs, stream, seed, unit, space, first)
        del held, stream
        return _finish_on_disk(
            runs,
            pool if jobs > 1 else None,
            outs,
            output,
            shards,
            reader.header,
            sep,
            progress,
            budget,
            seed,
        )


def _grouper(
    total: int, sep: bytes, seed: int, unit: int, jobs: int, reader: _Reader
) -> _Grouper:
    """What groups an input of ``total`` bytes in memory (runs, piles and threads), handing
    the buffers of grouped chunks back to ``reader``."""
    bits, threads = _memory_layout(total, unit, jobs)
    runs = _Runs(None, sep, 0, bits, "memory")
    runs.sources = reader.sources  # what runs of a mapped input point into
    return _Grouper(runs, seed, threads, reader.recycle)


def _by_parts(paths: list[str], jobs: int, planning_total: int | None, in_memory: int) -> bool:
    """Whether workers should read whole input files themselves: several regular files, at
    least one of them compressed (plain ones alone are cut into byte ranges), that will not
    fit in memory. A single compressed file is decompressed by one process (its stream
    cannot be split)."""
    if jobs < 2 or len(paths) < 2 or planning_total is None or planning_total <= in_memory:
        return False
    if any(p == STDIO or not os.path.isfile(p) for p in paths):
        return False
    return any(compression_of(p) is not None for p in paths)


def _finish_on_disk(
    runs: _Runs,
    pool: _Pool | None,
    outs: AtomicOutputs,
    output: str,
    shards: int | None,
    header: Sequence[bytes],
    sep: bytes,
    progress: Progress | None,
    budget: int,
    seed: int,
) -> ShuffleResult:
    """Pass 2: order and write the piles, by the workers or in this process."""
    counts, data_sizes = runs.pile_totals()
    total = int(counts.sum())
    total_bytes = int(data_sizes.sum())
    writer = _Writer(outs, output, shards, total, header, sep, progress, total_bytes)
    pile_budget = max(budget // 4, budget - runs.index_bytes())
    if pool is not None:
        pool.pass2(runs, pile_budget // len(pool.workers), writer)
        jobs = len(pool.workers)
        pool.stop()
    else:
        _drain_to_output(runs, pile_budget, writer)
        jobs = 1
    runs.remove()
    return ShuffleResult(
        seed,
        total,
        total_bytes,
        len(header),
        False,
        runs.runs,
        runs.piles,
        jobs,
        writer.finish(),
    )


def _chain(held: list[_Chunk], rest: Iterator[_Chunk]) -> Iterator[_Chunk]:
    """The chunks already read, then the rest, letting go of each held one once handed out."""
    held.reverse()
    while held:
        yield held.pop()
    yield from rest


def _pass1(
    runs: _Runs, chunks: Iterator[_Chunk], seed: int, unit: int, space: str | None, start: int
) -> None:
    """Pass 1 in this process: key the chunks' records (the first has index ``start``) and
    spill them."""
    spiller = _Spiller(runs, unit)
    for chunk in chunks:
        if space is not None:
            _check_space(space, chunk.nbytes + 8 * chunk.count, "the temporary files")
        spiller.add(chunk.data, record_keys(seed, start, chunk.count), chunk.ends)
        start += chunk.count
    spiller.flush()
