"""Worker processes that share both passes of a shuffle too big for memory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

from ..errors import KxError
from ..progress import Progress
from ..records import record_ends
from ..textio import (
    PositionalWriter,
)
from . import plan
from .keys import record_keys
from .output import _drain, _drain_pile, _PipeSink, _Queued, _Writer, _Writes
from .plan import _check_space
from .reading import _check_record_lengths, _Chunk, _RangePlan, _read_range, _Reader
from .runs import _Runs, _Spiller


class _Pool:
    """Worker processes that share both passes: workers read (their own byte ranges, or chunks
    the main process sends), key, spill, order and write; the main process coordinates. The
    output is the same as with one process."""

    def __init__(
        self,
        jobs: int,
        directory: str,
        sep: bytes,
        bits: int,
        seed: int,
        unit: int,
        max_record: int,
        direct: bool = False,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.workers: list[tuple[Any, Connection]] = []
        self.sep = sep
        self.bits = bits
        self.directory = directory
        self.direct = direct
        try:
            for w in range(jobs):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker,
                    args=(child, f"worker{w}", directory, sep, bits, seed, unit, max_record,
                          direct),
                    daemon=True,
                )
                proc.start()
                child.close()
                _enlarge_pipe(parent)
                self.workers.append((proc, parent))
        except BaseException:
            self.stop()
            raise

    def _failed(self, w: int) -> KxError:
        """The error a worker reported, or that it died."""
        proc, conn = self.workers[w]
        with contextlib.suppress(Exception):
            if conn.poll(1):
                msg = conn.recv()
                if msg[0] == "error":
                    return KxError(msg[1])
        proc.join(1)
        return KxError(f"a worker process died unexpectedly (exit code {proc.exitcode})")

    def _recv(self, w: int) -> tuple:
        try:
            msg = self.workers[w][1].recv()
        except (EOFError, OSError):
            raise self._failed(w) from None
        if msg[0] == "error":
            raise KxError(msg[1])
        return msg

    def _wait(self) -> list[int]:
        """Workers with a message waiting (blocks until there is one)."""
        from multiprocessing.connection import wait

        conns = {id(c): w for w, (_p, c) in enumerate(self.workers)}
        ready = wait([c for _p, c in self.workers])
        return [conns[id(c)] for c in ready]

    def pass1(self, chunks: Iterator[_Chunk], space: str | None, start: int = 0) -> _Runs:
        """Hand each chunk to whichever worker is free (the first chunk's first record has
        index ``start``); collect the runs they wrote."""
        jobs = len(self.workers)
        free = list(range(jobs))
        for chunk in chunks:
            if space is not None:
                _check_space(space, chunk.nbytes + 8 * chunk.count, "the temporary files")
            while not free:
                for w in self._wait():
                    self._recv(w)  # ("ready",)
                    free.append(w)
            w = free.pop(0)
            conn = self.workers[w][1]
            try:
                conn.send(("chunk", start, chunk.count, chunk.nbytes))
                conn.send_bytes(chunk.data)
            except OSError:
                raise self._failed(w) from None
            start += chunk.count
        return self._collect_runs()

    def pass1_ranges(self, plan: _RangePlan, progress: Progress | None, total: int | None) -> _Runs:
        """Hand each byte range to whichever worker is free; tell each worker the index of
        its first record once the workers before it have counted theirs."""
        jobs = len(self.workers)
        free = list(range(jobs))
        holder: dict[int, tuple[int, int]] = {}  # range index -> (worker, file)
        counted: dict[int, int] = {}  # range index -> records
        next_start = 0  # the range whose first record index is due next
        start = 0  # index of its first record
        lines_in_file: dict[int, int] = {0: len(plan.header)}
        done_bytes = 0
        sizes: dict[int, int] = {}
        ranges = plan.ranges()
        more = True
        while more or holder:
            while more and free:
                r = next(ranges, None)
                if r is None:
                    more = False
                    break
                w = free.pop(0)
                holder[r.index] = (w, r.file)
                sizes[r.index] = r.length
                msg = ("range", r.index, r.path, r.offset, r.length, r.add_sep)
                try:
                    self.workers[w][1].send(msg)
                except OSError:
                    raise self._failed(w) from None
            if not holder:
                break
            for w in self._wait():
                msg = self._recv(w)
                if msg[0] == "count":
                    counted[msg[1]] = msg[2]
                    while next_start in counted:
                        hw, f = holder[next_start]
                        base = lines_in_file.get(f, 0)
                        try:
                            self.workers[hw][1].send(("start", start, base))
                        except OSError:
                            raise self._failed(hw) from None
                        n = counted.pop(next_start)
                        start += n
                        lines_in_file[f] = base + n
                        next_start += 1
                elif msg[0] == "ready":
                    index = msg[1]
                    holder.pop(index)
                    done_bytes += sizes.pop(index)
                    free.append(w)
                    if progress is not None:
                        progress("reading", done_bytes, total)
        return self._collect_runs()

    def pass1_parts(
        self, paths: Sequence[str], header: int, progress: Progress | None
    ) -> tuple[_Runs, list[bytes]]:
        """Hand each input file (a *part*, typically compressed) to whichever worker is free:
        workers decompress and read whole parts themselves, in parallel. A part's first
        record index is known once every part before it has been read to its end. A worker
        that has read a part whose index is not known yet keeps its records (in memory up to
        its work unit, the rest parked in its run file) and takes the next part meanwhile; it
        keys them when the index arrives. Returns the runs and the header lines taken from
        the first part."""
        free = list(range(len(self.workers)))
        holder: dict[int, int] = {}  # part index -> the worker that reads or keeps it
        known = {0: 0}  # part index -> index of its first record (contiguous from part 0)
        frontier = 0  # the last part whose first index is known
        counts: dict[int, int] = {}  # part index -> records, once read to its end
        sent: set[int] = set()  # parts whose worker has its first index
        head: list[bytes] = []
        sizes = [os.path.getsize(p) for p in paths]
        done_bytes, total = 0, sum(sizes)
        todo = iter(enumerate(paths))
        more = True

        def send(w: int, msg: tuple) -> None:
            try:
                self.workers[w][1].send(msg)
            except OSError:
                raise self._failed(w) from None

        while more or holder:
            while more and free:
                item = next(todo, None)
                if item is None:
                    more = False
                    break
                j, path = item
                w = free.pop(0)
                holder[j] = w
                send(w, ("part", j, path, header if j == 0 else 0, known.get(j)))
                if j in known:
                    sent.add(j)
            if not holder:
                break
            for w in self._wait():
                msg = self._recv(w)
                if msg[0] == "parted":  # read to its end: the next part's index follows
                    _, j, n, lines = msg
                    if j == 0:
                        head = lines
                    counts[j] = n
                    while frontier in counts:
                        known[frontier + 1] = known[frontier] + counts[frontier]
                        frontier += 1
                    for part, hw in holder.items():
                        if part in known and part not in sent:
                            send(hw, ("start", part, known[part]))
                            sent.add(part)
                elif msg[0] == "free":  # the worker can take another part
                    free.append(w)
                elif msg[0] == "keyed":  # every record of the part is keyed and spilled
                    j = msg[1]
                    holder.pop(j)
                    done_bytes += sizes[j]
                    if progress is not None:
                        progress("reading", done_bytes, total)
        return self._collect_runs(), head

    def _collect_runs(self) -> _Runs:
        merged = _Runs(self.directory, self.sep, 0, self.bits, "merged", self.direct)
        for w in range(len(self.workers)):
            try:
                self.workers[w][1].send(("end",))
            except OSError:
                raise self._failed(w) from None
        for w in range(len(self.workers)):
            while True:
                msg = self._recv(w)
                if msg[0] == "runs":
                    merged.adopt(msg[1])
                    break
        return merged

    def pass2(self, runs: _Runs, budget: int, writer: _Writer) -> None:
        """Order and write the piles: straight into a plain output file when there is one,
        otherwise through the main process, in order."""
        jobs = len(self.workers)
        counts, sizes = runs.pile_totals()
        # ranges of consecutive piles, each read from every run at once, dealt out in turn
        groups = plan._pile_groups(counts, sizes, budget, runs.read_slack(budget))
        target = writer.direct_target()
        if target is not None:
            path, base = target
            offsets = (base + np.concatenate(([0], np.cumsum(sizes)[:-1]))).tolist()
            # ranges are handed out as workers finish them (two ahead each, so that none
            # waits for its next one): a worker that is slowed down takes fewer of them
            queue = iter(groups)
            ahead = [0] * jobs
            busy = set(range(jobs))

            def send(w: int, msg: tuple) -> None:
                try:
                    self.workers[w][1].send(msg)
                except OSError:
                    raise self._failed(w) from None

            def deal(w: int) -> None:
                group = next(queue, None)
                if group is not None:
                    send(w, ("group", group[0], group[1], offsets[group[0]]))
                    ahead[w] += 1
                elif ahead[w] == 0:
                    send(w, ("no_more",))

            for w in range(jobs):
                send(w, ("drain_to", runs, budget, path, writer.output))
            for w in range(jobs):
                deal(w)  # a first range each (or the end, should there be none)
            for w in range(jobs):
                if ahead[w]:
                    deal(w)  # and the next
            while busy:
                for w in self._wait():
                    msg = self._recv(w)
                    if msg[0] == "pile":
                        writer.advance(msg[1])
                    elif msg[0] == "group_done":
                        ahead[w] -= 1
                        deal(w)
                    elif msg[0] == "done":
                        busy.discard(w)
            writer.advance_done(int(sizes.sum()))
            return
        for w in range(jobs):
            try:
                self.workers[w][1].send(("drain", runs, groups[w::jobs], budget))
            except OSError:
                raise self._failed(w) from None
        for i, (first, end) in enumerate(groups):
            w = i % jobs
            conn = self.workers[w][1]
            for _ in range(int(np.count_nonzero(counts[first:end]))):
                while True:
                    msg = self._recv(w)
                    if msg[0] == "pile":
                        break
                    writer.write(np.frombuffer(conn.recv_bytes(), dtype=np.uint8))
        for w in range(jobs):
            self._recv(w)  # ("done",)

    def stop(self) -> None:
        """End every worker (politely if it is idle, by force otherwise)."""
        for _proc, conn in self.workers:
            with contextlib.suppress(Exception):
                conn.send(("exit",))
        for proc, conn in self.workers:
            proc.join(0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            with contextlib.suppress(Exception):
                conn.close()
        self.workers = []


def _enlarge_pipe(conn: Connection) -> None:
    """Bigger pipe buffers mean fewer wake-ups per megabyte (Linux only; best effort)."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(conn.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ


def _worker(
    conn: Connection,
    name: str,
    directory: str,
    sep: bytes,
    bits: int,
    seed: int,
    unit: int,
    max_record: int,
    direct: bool = False,
) -> None:
    """A worker process: pass 1 spills the chunks it is sent (around the page cache with
    ``direct``); pass 2 orders the piles it is given and writes them into the output or sends
    them back in order."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides and cleans up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    runs = _Runs(directory, sep, 0, bits, name, direct)
    fds: dict[str, int] = {}
    unit_max_record = max_record
    try:
        spiller = _Spiller(runs, unit)
        parts = _Parts(conn, seed, sep, unit, max_record, spiller, runs)
        while True:
            msg = conn.recv()
            kind = msg[0]
            if kind == "chunk":
                _, start, count, nbytes = msg
                data = np.empty(nbytes, dtype=np.uint8)
                if conn.recv_bytes_into(data) != nbytes:
                    raise KxError("internal error: a chunk arrived incomplete")
                spiller.add(data, record_keys(seed, start, count))
                del data
                conn.send(("ready",))
            elif kind == "range":
                _, index, path, offset, length, add_sep = msg
                data = _read_range(path, offset, length, add_sep, sep, fds)
                ends = record_ends(data, sep[0])
                conn.send(("count", index, len(ends)))
                reply = conn.recv()
                if reply[0] != "start":
                    return
                _, start, line_base = reply
                _check_record_lengths(ends, path, line_base, unit_max_record)
                spiller.add(data, record_keys(seed, start, len(ends)), ends)
                del data, ends
                conn.send(("ready", index))
            elif kind == "part":
                _, index, path, header, first = msg
                parts.read(index, path, header, first)
                conn.send(("free",))
            elif kind == "start":
                parts.start(msg[1], msg[2])
            elif kind == "end":
                spiller.flush()
                runs.close()
                conn.send(("runs", runs))
            elif kind == "drain":
                _, merged, groups, budget = msg
                _drain(merged, budget, _PipeSink(conn), groups)
                merged.close()
                conn.send(("done",))
            elif kind == "drain_to":
                _, merged, budget, path, out_name = msg
                _drain_to_file(merged, budget, path, out_name, conn)
                merged.close()
                conn.send(("done",))
            else:
                return
    except KxError as e:
        with contextlib.suppress(Exception):
            conn.send(("error", e.message))
    except BaseException as e:  # noqa: BLE001 - reported to the main process
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        runs.close()
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _drain_to_file(
    runs: _Runs,
    budget: int,
    path: str,
    name: str,
    conn: Connection,
) -> None:
    """Pass 2 in a worker: the ranges of consecutive piles it is sent, ``("group", first,
    end, offset)``, until ``("no_more",)``; each range read from every run at once and each of
    its piles written straight into the output, from ``offset`` on (a range's piles follow
    each other in the output)."""
    counts, sizes = runs.pile_totals()
    out = PositionalWriter(path, name, direct=int(sizes.sum()) >= plan.DIRECT_MIN)
    # the piles are written by threads while the next ones are ordered (a direct write waits
    # for the device), at most a sixteenth of the budget waiting
    writes = _Writes(out, lambda n: conn.send(("pile", n)), plan.write_queue(budget))
    # the main process sends ranges two ahead, so the next one is there to be read while
    # this one is ordered
    ended = False

    def next_range(wait: bool) -> tuple | None:
        nonlocal ended
        if ended or (not wait and not conn.poll()):
            return None
        msg = conn.recv()
        ended = msg[0] != "group"
        return None if ended else msg[1:]

    try:
        for first, end, offset in runs.each_range(next_range):
            for p in range(first, end):
                if not counts[p]:
                    continue
                sink = _Queued(writes, offset)
                _drain_pile(runs, p, int(counts[p]), int(sizes[p]), budget, sink)
                if sink.offset != offset + int(sizes[p]):
                    raise KxError(f"internal error: pile {p} wrote {sink.offset - offset} bytes")
                offset = sink.offset
            conn.send(("group_done",))
        writes.finish()
    finally:
        writes.close()
        out.close()


class _Parts:
    """Pass 1 over whole input files in a worker (see :meth:`_Pool.pass1_parts`): read
    (decompress) a part, key its records from its first index on and spill them. While a
    part's first index is unknown its chunks wait: in memory up to ``unit`` bytes over all
    parts, the rest parked in the run file. ``("start", part, first)`` from the main process is
    looked for between chunks; a part is reported ``("keyed", part)`` once all its records are
    spilled."""

    def __init__(
        self,
        conn: Connection,
        seed: int,
        sep: bytes,
        unit: int,
        max_record: int,
        spiller: _Spiller,
        runs: _Runs,
    ) -> None:
        self.conn = conn
        self.seed = seed
        self.sep = sep
        self.unit = unit
        self.max_record = max_record
        self.spiller = spiller
        self.runs = runs
        self.first: dict[int, int] = {}  # part -> index of its first record, once known
        self.waiting: dict[int, list[tuple[int, Any, int]]] = {}  # part -> (local, data, n)
        self.held = 0  # bytes waiting in memory
        self.read_to_end: set[int] = set()

    def read(self, part: int, path: str, header: int, first: int | None) -> None:
        if first is not None:
            self.first[part] = first
        reader = _Reader([path], self.sep, header, self.unit // 2, self.max_record, None, None)
        local = 0  # records of this part before the current chunk
        for chunk in reader.chunks():
            while self.conn.poll():
                msg = self.conn.recv()
                if msg[0] != "start":
                    raise KxError("internal error: a worker got a message out of turn")
                self.start(msg[1], msg[2])
            if part in self.first:
                keys = record_keys(self.seed, self.first[part] + local, chunk.count)
                self.spiller.add(chunk.data, keys)
            else:
                if self.held + chunk.nbytes <= self.unit:
                    data: Any = chunk.data
                    self.held += chunk.nbytes
                else:
                    data = self.runs.park(chunk.data)
                self.waiting.setdefault(part, []).append((local, data, chunk.count))
            local += chunk.count
        self.conn.send(("parted", part, local, reader.header))
        self.read_to_end.add(part)
        self._finish(part)

    def start(self, part: int, first: int) -> None:
        """The first index of ``part`` is known: key what waits."""
        self.first[part] = first
        for local, data, count in self.waiting.pop(part, []):
            if isinstance(data, tuple):  # parked in the run file
                data = self.runs.unpark(*data)
            else:
                self.held -= len(data)
            self.spiller.add(data, record_keys(self.seed, first + local, count))
        self._finish(part)

    def _finish(self, part: int) -> None:
        if part in self.read_to_end and part in self.first and part not in self.waiting:
            self.read_to_end.discard(part)
            self.conn.send(("keyed", part))
