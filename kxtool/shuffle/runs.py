"""Runs: batches of records grouped into piles by key bits, in memory or in a temporary file,
and the pile index that pass 2 reads them back with."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ..errors import KxError
from ..records import (
    WHERE_BITS,
    aligned_empty,
    count_separators,
    gather,
    gather_where,
    record_ends,
    starts_of,
)
from ..records import _native as _records_native
from ..textio import (
    os_error,
    preallocate,
)
from .keys import _round_keys, record_keys
from .plan import _INDEX_ENTRY, _IO_STEP, GROUP_SHARE, _work_memory

#: Alignment of what a run file written around the page cache holds (offsets, sizes, memory).
_ALIGN = 4096
#: Bytes a direct write of a run file is staged in (one aligned buffer per run file).
_STAGE = 1 << 20
#: Threads that read a range of piles from the runs around the page cache (see
#: :meth:`_Runs.read_ahead`), and the aligned buffer each one reads through: a direct read waits
#: for the device, so several in flight keep it busy.
READ_THREADS = 4
_READ_STAGE = 1 << 20
#: Bytes of the blocks that pass 2 reads ranges of piles into (see :meth:`_Runs.read_ahead`).
_BLOCK = 8 << 20


#: Directories whose file system refused a direct write: their run files go through the page
#: cache from then on.
_NO_DIRECT: set[str] = set()
#: Directories whose file system refused a direct read: pass 2 reads their run files through
#: the page cache from then on.
_NO_DIRECT_READ: set[str] = set()


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes-like) at ``offset``; OSError propagates."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + _IO_STEP], offset + done)


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    """Fill ``buf`` from ``offset``; return the bytes read (fewer only at the end of the
    file). OSError propagates."""
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done : done + _IO_STEP]], offset + done)
        if got == 0:
            break
        done += got
    return done


def _pread_direct(fd: int, stage: np.ndarray, dest: np.ndarray, offset: int) -> int:
    """Fill ``dest`` (uint8) from ``offset`` of a file opened with ``O_DIRECT``, through the
    aligned buffer ``stage`` (direct reads need aligned offsets, sizes and memory); return the
    bytes read (fewer only at the end of the file). OSError propagates."""
    done, n = 0, len(dest)
    while done < n:
        at = offset + done
        start = at - at % _ALIGN
        size = min(len(stage), _aligned(offset + n) - start)
        got = os.preadv(fd, [stage[:size]], start)
        take = min(got - (at - start), n - done)
        if take <= 0:
            break
        dest[done : done + take] = stage[at - start : at - start + take]
        done += take
    return done


def _reuse(buffer: np.ndarray | None, size: int, dtype: type) -> np.ndarray:
    """``buffer`` when it holds ``size`` items, else a new array of them: pages in use
    already cost nothing to fill again, where fresh ones are faulted in one by one."""
    if buffer is not None and len(buffer) >= size:
        return buffer
    return np.empty(size, dtype=dtype)


class _Range(NamedTuple):
    """Piles ``[first, end)`` of every run, read at once (see :meth:`_Runs.read_ahead`)."""

    first: int
    end: int
    #: a pile's keys at file offset k of run r are at (k - kbase[r]) / 8 of ``keys``; its
    #: bytes at file offset d are at d - dbase[r] of ``sources[source[r]]``
    kbase: np.ndarray
    dbase: np.ndarray
    keys: np.ndarray
    sources: list[np.ndarray]
    source: np.ndarray
    #: where each pile of the range starts in every run's file (keys, bytes): piles x runs
    at_k: np.ndarray
    at_d: np.ndarray


def _by_position(data: np.ndarray) -> bool:
    """Whether a run in memory holds where its records are (uint64) rather than their bytes."""
    return data.dtype == np.uint64


class _Runs:
    """Runs, each holding one batch of records grouped into ``2**bits`` piles by key bits.

    Pile ``p`` of a run holds the records whose key bits ``[shift, shift+bits)`` (counting from
    the top) equal ``p``. A run is stored as the keys of all its records (uint64, native
    order, grouped by pile) followed by their bytes (grouped alike, each record followed by
    the separator).

    With a ``directory`` a process appends its runs one after the other to a single temporary
    file (so one file is open however many runs and piles there are); :meth:`adopt` adds the
    runs other processes wrote, so that pass 2 can read every pile from all of them. Without
    one, runs stay in memory (an input that fits is ordered that way, in one pass).
    """

    def __init__(
        self,
        directory: str | None,
        sep: bytes,
        shift: int,
        bits: int,
        name: str,
        direct: bool = False,
    ) -> None:
        self.directory = directory
        #: whether the run file is written around the page cache (``O_DIRECT``, see
        #: :meth:`_append`): for inputs whose runs, input and output would not all fit in it
        self.direct = direct
        self._direct_fd: int | None = None
        self._stage: np.ndarray | None = None
        self.path = os.path.join(directory, f"{name}.runs") if directory is not None else ""
        self.sep = sep
        self.shift = shift
        self.bits = bits
        self.piles = 1 << bits
        self.name = name
        self.fd: int | None = None
        self.end = 0
        self.files: list[str] = [self.path] if directory is not None else []
        # the pile index: per run, its file (an index into files), where its keys and its bytes
        # start, and the records and data bytes of each of its piles (uint32 each: a pile's
        # offsets within a run follow from the piles before it, see _positions)
        self.run_file: list[int] = []
        self.key_base: list[int] = []
        self.data_base: list[int] = []
        self._counts: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        # per run in memory: its keys, its bytes and the lengths of its records (None when
        # not known: then they are found again from the separators). The run of a mapped
        # input's chunk holds, instead of its bytes, where each record is (uint64 positions
        # in ``sources``, see :func:`~kxtool.records.gather_where`): its bytes stay put
        self.memory: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        #: the buffers that runs of positions point into (the reader's mapped inputs)
        self.sources: list[np.ndarray] = []
        self._fds: dict[int, int] = {}
        # pass 2 around the page cache: descriptors opened with O_DIRECT, the threads that
        # read through them and whether the file system refused (then reads are buffered)
        self._direct_fds: dict[int, int] = {}
        self._readers: Any = None
        self._read_direct = (
            direct and hasattr(os, "O_DIRECT") and directory not in _NO_DIRECT_READ
        )
        # whether those reads land straight in aligned slots of the range's buffer (see
        # read_slack) rather than being copied there from a small aligned buffer
        self._slots = True
        # the arrays read_ahead fills (keys, blocks of bytes), refilled by later ones: two sets,
        # one for the range being ordered and one for the range read ahead (read_ahead)
        self._sets: list[tuple[np.ndarray | None, list[np.ndarray]]] = [(None, []), (None, [])]
        self._next_set = 0
        self._ahead = 0  # ranges read ahead and not yet used
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None  # (piles, runs) arrays
        self._cursor: tuple[int, np.ndarray, np.ndarray] | None = None
        # piles [first, end) of every run read at once by read_ahead(), served by pile_parts()
        self._group: _Range | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["fd"] = None
        state["_direct_fd"] = None
        state["_stage"] = None
        state["_fds"] = {}
        state["_direct_fds"] = {}
        state["_readers"] = None
        state["_sets"] = [(None, []), (None, [])]
        state["_ahead"] = 0
        state["_cursor"] = None
        state["_group"] = None
        return state

    @property
    def runs(self) -> int:
        return len(self.run_file)

    @property
    def in_memory(self) -> bool:
        return self.directory is None

    def pile_of(self, keys: np.ndarray) -> np.ndarray:
        x = keys << np.uint64(self.shift) if self.shift else keys
        return (x >> np.uint64(64 - self.bits)).astype(np.uint32 if self.bits > 16 else np.uint16)

    def spill(self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None) -> None:
        """Add one run: the records of ``data`` (whole records, separators included; ``ends``
        when already found) with their ``keys``, grouped by pile."""
        self.store(self.group(data, keys, ends))

    def group(
        self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """A batch grouped by pile, ready for :meth:`store`: its keys and bytes, the records
        and bytes of each pile, and (for runs kept in memory, where they cost what the key
        does and spare pass 2 a scan) the lengths of the records, grouped alike, or None.
        Touches nothing shared (threads may call it)."""
        n = len(keys)
        glengths = None
        if self.piles == 1:
            counts = np.array([n], dtype=np.int64)
            sizes = np.array([len(data)], dtype=np.int64)
            gkeys, grouped = keys, data
            if ends is not None and self.in_memory:
                glengths = np.diff(ends, prepend=0)
        else:
            if ends is None:
                ends = record_ends(data, self.sep[0])
            if len(ends) != n or (n and ends[-1] != len(data)):
                raise KxError("internal error: a batch does not hold whole records")
            starts = starts_of(ends)
            lengths = ends - starts
            del ends
            piles = self.pile_of(keys)
            order = np.argsort(piles, kind="stable")
            counts = np.bincount(piles, minlength=self.piles).astype(np.int64)
            sizes = np.bincount(piles, weights=lengths, minlength=self.piles).astype(np.int64)
            del piles
            grouped = gather(data, starts, lengths, order)
            del starts
            if self.in_memory:
                glengths = lengths[order]
            del lengths
            gkeys = keys[order]
            del order
        return gkeys, grouped, counts, sizes, glengths

    def native_grouping(self) -> bool:
        """Whether :meth:`group_records` runs in the compiled kernel."""
        return _records_native is not None and self.bits <= 30

    def group_records(
        self,
        data: np.ndarray,
        ends: np.ndarray | None,
        seed: int,
        first: int,
        origin: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`group` of records whose keys are not made yet (the first has index
        ``first``): with the compiled kernel, keyed and grouped in one pass (the same runs
        as numpy's record_keys, argsort and gather give). With an ``origin`` (``data`` lies
        in :attr:`sources` from that position on, for as long as the runs are kept), a run in
        memory holds where the records are instead of a copy of their bytes."""
        native = _records_native
        if not self.native_grouping() or not (
            data.dtype == np.uint8 and data.flags.c_contiguous
        ):
            n = len(ends) if ends is not None else count_separators(data, self.sep[0])
            return self.group(data, record_keys(seed, first, n), ends)
        if ends is None:
            ends = record_ends(data, self.sep[0])
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        n = len(ends)
        if n and ends[-1] != len(data):
            raise KxError("internal error: a batch does not hold whole records")
        by_position = origin is not None and self.in_memory
        grouped = np.empty(n if by_position else len(data), np.uint64 if by_position else np.uint8)
        gkeys = np.empty(n, dtype=np.uint64)
        glengths = np.empty(n, dtype=np.int64)
        counts = np.empty(self.piles, dtype=np.int64)
        sizes = np.empty(self.piles, dtype=np.int64)
        a, b, c = _round_keys(seed)
        native.group(
            data, ends, first, a, b, c, self.shift, self.bits, grouped, gkeys, glengths,
            counts, sizes, origin if by_position else None,
        )
        return gkeys, grouped, counts, sizes, glengths if self.in_memory else None

    def run_bytes(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The keys, bytes and lengths of run ``r`` in memory (the bytes of a run of positions
        copied out)."""
        keys, data, lengths = self.memory[r]
        if _by_position(data):
            data = gather_where(self.sources, data, lengths)  # type: ignore[arg-type]
        return keys, data, lengths

    def store(
        self, run: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]
    ) -> None:
        """Add a run made by :meth:`group`: in memory, or appended to this process's file."""
        gkeys, grouped, counts, sizes, glengths = run
        self._thaw()
        if self.directory is None:
            self.memory.append((gkeys, grouped, glengths))
            self.run_file.append(-1)
            self.key_base.append(0)
            self.data_base.append(0)
        else:
            key_base, data_base = self._append([gkeys, grouped])
            self.run_file.append(0)
            self.key_base.append(key_base)
            self.data_base.append(data_base)
        self._counts.append(counts.astype(np.uint32))
        # uint32 unless a pile of this run holds 4 GiB or more (a giant record, a huge budget)
        self._sizes.append(sizes.astype(np.uint32 if sizes.max() < 1 << 32 else np.uint64))

    def park(self, data: np.ndarray) -> tuple[int, int]:
        """Append raw bytes that must wait (records whose keys are not known yet) to this
        process's file; returns where they are, for :meth:`unpark`. They are not a run."""
        (base,) = self._append([data])
        return base, len(data)

    def _append(self, parts: list[np.ndarray]) -> list[int]:
        """Write ``parts`` (contiguous arrays) one after the other at the end of this process's
        file; where each one starts. Written around the page cache (:attr:`direct`, where the
        file system allows it), each part starts at a multiple of 4096 bytes, the gaps
        zeros: measured on a 12 GB input with 24 GiB of memory, copying the runs into fresh
        page-cache pages took most of the shuffle's CPU (62% of all samples)."""
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                if self.direct and hasattr(os, "O_DIRECT") and self.directory not in _NO_DIRECT:
                    with contextlib.suppress(OSError):  # e.g. tmpfs: no direct I/O
                        self._direct_fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
            padded = self._direct_fd is not None
            preallocate(
                self.fd, sum(_aligned(p.nbytes) if padded else p.nbytes for p in parts),
                self.path, self.end,
            )
            offsets = []
            for part in parts:
                offsets.append(self.end)
                if self._direct_fd is not None:
                    self._write_direct(part, self.end)
                    self.end += _aligned(part.nbytes)
                else:
                    _pwrite_all(self.fd, part, self.end)
                    self.end += part.nbytes
        except OSError as e:
            raise os_error(e, self.path, "cannot write temporary file") from None
        return offsets

    def _write_direct(self, part: np.ndarray, offset: int) -> None:
        """Write ``part`` at ``offset`` (aligned) through the direct descriptor, in aligned
        pieces staged in a buffer of :data:`_STAGE` bytes, the last one padded with zeros;
        should the file system refuse a direct write, the rest goes through the page cache
        (at the same offsets)."""
        if self._stage is None:
            self._stage = aligned_empty(_STAGE)
        stage = self._stage
        view = memoryview(part).cast("B")
        done = 0
        while done < len(view):
            k = min(_STAGE, len(view) - done)
            size = _aligned(k)
            stage[:k] = view[done : done + k]
            stage[k:size] = 0
            try:
                _pwrite_all(self._direct_fd, stage[:size], offset + done)  # type: ignore[arg-type]
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                _NO_DIRECT.add(self.directory)  # type: ignore[arg-type]
                with contextlib.suppress(OSError):
                    os.close(self._direct_fd)  # type: ignore[arg-type]
                self._direct_fd = None
                _pwrite_all(self.fd, view[done:], offset + done)  # type: ignore[arg-type]
                return
            done += k

    def unpark(self, offset: int, nbytes: int) -> np.ndarray:
        """The bytes :meth:`park` put at ``offset``."""
        buf = np.empty(nbytes, dtype=np.uint8)
        assert self.fd is not None
        try:
            if _pread_into(self.fd, buf, offset) != nbytes:
                raise KxError(f"internal error: parked data in {self.path!r} is short")
        except OSError as e:
            raise os_error(e, self.path, "cannot read temporary file") from None
        return buf

    def adopt(self, other: _Runs) -> None:
        """Add the runs of ``other`` (same piles), written by another process."""
        assert other.piles == self.piles and other.shift == self.shift
        assert not self.in_memory and not other.in_memory
        self._thaw()
        other._thaw()
        base = len(self.files)
        self.files.extend(other.files)
        self.run_file.extend(base + i for i in other.run_file)
        self.key_base.extend(other.key_base)
        self.data_base.extend(other.data_base)
        self._counts.extend(other._counts)
        self._sizes.extend(other._sizes)
        self._frozen = None

    def _thaw(self) -> None:
        """Back to per-run lists, so that runs can be added again."""
        if self._frozen is not None:
            counts, sizes = self._frozen
            self._counts = [counts[:, r].copy() for r in range(counts.shape[1])]
            self._sizes = [sizes[:, r].copy() for r in range(sizes.shape[1])]
            self._frozen = None
            self._cursor = None

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every (pile, run), as two (piles, runs) arrays."""
        if self._frozen is None:
            if self._counts:
                counts = np.ascontiguousarray(np.stack(self._counts, axis=1))
                sizes = np.ascontiguousarray(np.stack(self._sizes, axis=1))
            else:
                counts = sizes = np.zeros((self.piles, 0), dtype=np.uint32)
            self._counts, self._sizes = [], []  # one copy of the index is enough
            self._frozen = (counts, sizes)
            self._cursor = None
        return self._frozen

    def index_bytes(self) -> int:
        """Memory taken by the pile index."""
        return _INDEX_ENTRY * self.piles * self.runs

    def pile_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Records and data bytes of every pile, over all runs."""
        counts, sizes = self._index()
        return counts.sum(axis=1, dtype=np.int64), sizes.sum(axis=1, dtype=np.int64)

    def _positions(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Where pile ``p``'s keys and bytes start in every run: the run's start plus the
        piles before ``p``, kept as a cursor (piles are mostly visited in increasing order)."""
        counts, sizes = self._index()
        if self._cursor is None or p < self._cursor[0]:
            kpos = np.array(self.key_base, dtype=np.int64)
            dpos = np.array(self.data_base, dtype=np.int64)
            at = 0
        else:
            at, kpos, dpos = self._cursor
        if p > at:
            kpos = kpos + 8 * counts[at:p].sum(axis=0, dtype=np.int64)
            dpos = dpos + sizes[at:p].sum(axis=0, dtype=np.int64)
        self._cursor = (p, kpos, dpos)
        return kpos, dpos

    def _fd(self, i: int) -> int:
        if i == 0 and self.fd is not None:
            return self.fd
        fd = self._fds.get(i)
        if fd is None:
            try:
                fd = os.open(self.files[i], os.O_RDONLY)
            except OSError as e:
                raise os_error(e, self.files[i], "cannot read temporary file") from None
            self._fds[i] = fd
        return fd

    def read_slack(self, budget: int) -> int:
        """Bytes beyond its piles that :meth:`read_ahead` may take for a range of piles: read
        around the page cache, each run's bytes land straight in a slot of the range's buffer
        that starts and ends on page boundaries, up to two pages more per run (no copy). Where
        that would take more than a sixteenth of a ``budget`` (very many runs), the bytes are
        copied in through a small buffer instead and nothing more is taken."""
        if self.in_memory or not self._read_direct:
            return 0
        slack = 2 * _ALIGN * self.runs
        self._slots = slack <= GROUP_SHARE * budget / 4
        return slack if self._slots else 0

    def each_range(self, next_range: Callable[[bool], tuple | None]) -> Iterator[tuple]:
        """Pass 2's ranges of consecutive piles: each range ``next_range`` gives (a tuple that
        starts with ``first, end``), made the one :meth:`pile_parts` serves while the caller
        orders its piles, and the next one read meanwhile (not after a range of one pile,
        which alone may take the whole budget). ``next_range(wait)`` is the next range or None
        at the end; with ``wait`` false, None may also mean that none is known yet.

        In each run consecutive piles lie next to each other, so two reads per run (its keys,
        then its bytes) fetch a whole range: pass 2 reads segments as large as the range
        rather than one (run, pile) segment at a time, which beyond the page cache (S/M large,
        many runs x piles) would be millions of small reads."""
        current = next_range(True)
        pending = self.read_ahead(*current[:2]) if current is not None else None
        while current is not None:
            self.use(pending)
            first, end = current[:2]
            following = next_range(False)
            pending = None
            if following is not None and end - first > 1:
                pending = self.read_ahead(*following[:2])
            yield current
            self.release()
            if following is None:
                following = next_range(True)
            if following is not None and pending is None:
                pending = self.read_ahead(*following[:2])
            current = following

    def read_ahead(self, first: int, end: int) -> Any:
        """Start reading piles ``[first, end)`` of every run (by :data:`READ_THREADS` threads)
        while the caller orders the range before; :meth:`use` makes it the range that
        :meth:`pile_parts` serves. At most one range is read ahead at a time (the two take
        two sets of buffers). Returns None for runs in memory and for a range of one pile
        (such a pile is read as it is ordered)."""
        if self.in_memory or end - first < 2:
            return None
        counts, sizes = self._index()
        kpos, dpos = self._positions(first)
        piles_k = 8 * np.cumsum(counts[first:end], axis=0, dtype=np.int64)
        piles_d = np.cumsum(sizes[first:end], axis=0, dtype=np.int64)
        kcount, dsize = piles_k[-1] // 8, piles_d[-1]
        # where each pile of the range starts in every run (segments() of its piles)
        at_k = kpos + np.vstack((np.zeros_like(kpos), piles_k[:-1]))
        at_d = dpos + np.vstack((np.zeros_like(dpos), piles_d[:-1]))
        live = np.flatnonzero(kcount)
        slots = self._read_direct and self._slots
        kat = np.concatenate(([0], np.cumsum(kcount)[:-1]))
        # around the page cache, run r's bytes go to a page-aligned slot, at the offset they
        # have in their page, and are read there straight
        head = dpos % _ALIGN if slots else np.zeros_like(dpos)
        region = -(-(head + dsize) // _ALIGN) * _ALIGN if slots else dsize
        which = self._next_set
        self._next_set ^= 1
        keys_buf, blocks = self._sets[which]
        keys = _reuse(keys_buf, int(kcount.sum()), np.uint64)
        self._sets[which] = (keys, blocks)
        # the slots are carved from blocks of _BLOCK bytes kept from one range to the next
        # (a larger slot has a block of its own): pages in use already cost nothing to fill
        # again, where fresh ones are faulted in one by one, and blocks of the size pass 1
        # freed are found among its freed memory, where one buffer for the range would not
        # the buffers the range's bytes lie in, and which one holds each run's
        sources: list[np.ndarray] = []
        source = np.zeros(self.runs, dtype=np.uint64)
        dat = np.zeros(self.runs, dtype=np.int64)
        spans = []
        # (a new block is no bigger than what is left to place)
        left = int(region.sum())
        b = used = 0
        for r in live.tolist():
            size, n = int(region[r]), int(dsize[r])
            if size > _BLOCK:
                block, at = aligned_empty(size), 0
            else:
                while b < len(blocks) and used + size > len(blocks[b]):
                    b, used = b + 1, 0
                if b == len(blocks):
                    blocks.append(aligned_empty(max(size, min(_BLOCK, _aligned(left)))))
                block, at = blocks[b], used
                used += size
            left -= size
            if not sources or sources[-1] is not block:
                sources.append(block)
            source[r] = len(sources) - 1
            dat[r] = at + int(head[r])
            k_span = keys[kat[r] : kat[r] + kcount[r]]
            if slots:
                spans.append((r, k_span, int(kpos[r]), block[at : at + size], int(dpos[r]),
                              int(head[r]), n))
            else:
                spans.append((r, k_span, int(kpos[r]), block[at : at + n], int(dpos[r])))
        futures = self._read_spans(spans)
        self._ahead += 1
        group = _Range(first, end, kpos - 8 * kat, dpos - dat, keys, sources, source, at_k, at_d)
        return group, futures

    def use(self, pending: Any) -> None:
        """Wait for the range :meth:`read_ahead` started (its errors are raised here) and
        make it the one :meth:`pile_parts` serves."""
        self._group = None
        if pending is None:
            return
        group, futures = pending
        self._ahead -= 1
        for future in futures:
            future.result()
        self._group = group

    def _read_span(
        self, r: int, keys: np.ndarray, kpos: int, data: np.ndarray, dpos: int,
        head: int | None = None, nbytes: int | None = None,
        direct: tuple[int, np.ndarray] | None = None,
    ) -> None:
        """Fill ``keys`` and ``data`` from run ``r``'s file at ``kpos`` and ``dpos``. With
        ``direct`` (a descriptor opened with ``O_DIRECT`` and an aligned buffer) around the
        page cache, unless the file system refuses (then from then on through it): the keys
        through the buffer, and the bytes through it too, unless ``data`` is an aligned slot
        that the ``nbytes`` bytes at ``dpos`` fill from ``head`` on, read into straight."""
        path = self.files[self.run_file[r]]
        want = len(data) if head is None else nbytes
        try:
            got_keys = got = -1
            if direct is not None:
                fd, stage = direct
                try:
                    got_keys = _pread_direct(fd, stage, keys.view(np.uint8), kpos)
                    if head is None:
                        got = _pread_direct(fd, stage, data, dpos)
                    else:
                        # the whole slot: its start and size are aligned, as direct reads need
                        got = _pread_into(fd, data, dpos - head) - head
                        got = min(got, nbytes)  # type: ignore[type-var]
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self._read_direct = False  # e.g. a file system without direct reads
                    _NO_DIRECT_READ.add(self.directory)  # type: ignore[arg-type]
                    got_keys = got = -1
            if got < 0:
                fd = self._fd(self.run_file[r])
                got_keys = _pread_into(fd, keys, kpos)
                target = data if head is None else data[head : head + nbytes]
                got = _pread_into(fd, target, dpos)
        except OSError as e:
            raise os_error(e, path, "cannot read temporary file") from None
        if got_keys != 8 * len(keys) or got != want:
            raise KxError(f"temporary file {path!r} was truncated or changed during the run")

    def _read_spans(self, spans: list) -> list:
        """Start :meth:`_read_span` for each of ``spans`` on :data:`READ_THREADS` threads, each
        with an aligned buffer of its own: around the page cache where the file system allows
        (a direct read waits for the device: several in flight keep it busy), through it
        otherwise. Returns the threads' futures."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        fds: dict[int, int | None] = {}
        for f in sorted({self.run_file[span[0]] for span in spans}):
            if self._read_direct and f not in self._direct_fds:
                try:
                    self._direct_fds[f] = os.open(self.files[f], os.O_RDONLY | os.O_DIRECT)
                except OSError:  # no direct I/O here (or no such file: the buffered read says)
                    self._read_direct = False
                    _NO_DIRECT_READ.add(self.directory)  # type: ignore[arg-type]
            fds[f] = self._direct_fds.get(f)
            self._fd(f)  # opened here, not by the threads
        if self._readers is None:
            self._readers = (ThreadPoolExecutor(READ_THREADS), threading.local())
        pool, local = self._readers

        def read(part: list) -> None:
            stage = getattr(local, "stage", None)
            if stage is None and self._read_direct:
                stage = local.stage = aligned_empty(_READ_STAGE)
            for span in part:
                fd = fds[self.run_file[span[0]]]
                direct = (fd, stage) if self._read_direct and fd is not None else None
                self._read_span(*span, direct=direct)

        # each thread takes every READ_THREADS-th span (one task per thread, not per span:
        # a task costs tens of microseconds, as much as a read)
        return [pool.submit(read, spans[t::READ_THREADS]) for t in range(READ_THREADS)]

    def segments(self, p: int) -> list[tuple[int, int, int, int, int]]:
        """Pile ``p``'s segments, one per run that has records in it: (run, records, bytes,
        where its keys start, where its bytes start)."""
        counts, sizes = self._index()
        group = self._group
        if group is not None and group.first <= p < group.end:
            kpos, dpos = group.at_k[p - group.first], group.at_d[p - group.first]
        else:
            kpos, dpos = self._positions(p)
        rs = np.flatnonzero(counts[p])
        return list(
            zip(
                rs.tolist(),
                counts[p, rs].tolist(),
                sizes[p, rs].tolist(),
                kpos[rs].tolist(),
                dpos[rs].tolist(),
                strict=True,
            )
        )

    def pile_parts(
        self, p: int, limit: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """The bytes, keys and record lengths (None when not kept) of pile ``p``, in parts of
        whole runs' segments of about ``limit`` bytes at most (a single segment may be
        larger)."""
        if self._group is None or not self._group.first <= p < self._group.end:
            # a pile read alone (a big one): the buffers of earlier ranges are let go of
            # (unless a range is being read ahead into them)
            self._group = None
            if not self._ahead:
                self._sets = [(None, []), (None, [])]
        group = self._group
        if group is not None:
            counts, sizes = self._index()
            if int(sizes[p].sum()) <= limit:  # the whole pile at once, with no segment list
                rs = np.flatnonzero(counts[p])
                at_k, at_d = group.at_k[p - group.first], group.at_d[p - group.first]
                yield self._join_group(
                    group, rs, counts[p, rs].astype(np.int64), sizes[p, rs].astype(np.int64),
                    at_k[rs], at_d[rs],
                )
                return
        segments = self.segments(p)
        i = 0
        while i < len(segments):
            j, size = i + 1, segments[i][2]
            while j < len(segments) and size + segments[j][2] <= limit:
                size += segments[j][2]
                j += 1
            yield self.read(segments[i:j], size)
            i = j

    def read(
        self, segments: list[tuple[int, int, int, int, int]], size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The bytes, keys and record lengths of ``segments`` (from :meth:`segments`), of
        ``size`` bytes in all, one after the other. For runs in memory it touches nothing
        shared, so threads may call it."""
        if self.in_memory:
            return self._join_in_memory(segments, size)
        group = self._group
        if group is not None:
            columns = (np.array(c, dtype=np.int64) for c in zip(*segments, strict=True))
            return self._join_group(group, *columns)
        data = np.empty(size, dtype=np.uint8)
        keys = np.empty(sum(seg[1] for seg in segments), dtype=np.uint64)
        at = kat = 0
        for r, n, nbytes, k, d in segments:
            self._read_span(r, keys[kat : kat + n], k, data[at : at + nbytes], d)
            at += nbytes
            kat += n
        return data, keys, None

    @staticmethod
    def _join_group(
        group: _Range, rs: np.ndarray, ns: np.ndarray, nbytes: np.ndarray, ks: np.ndarray,
        ds: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, None]:
        """:meth:`read` of segments of the range read ahead: every segment is copied by the
        gather kernel, taken as one record (a pile has a segment in each of up to thousands
        of runs; copied one by one from here, that cost microseconds of the interpreter's
        time each, as much as the copying). The segments are given as columns: their runs,
        records, bytes, and where their keys and bytes are in the run files."""
        shift = np.uint64(WHERE_BITS)
        where = (group.source[rs] << shift) | (ds - group.dbase[rs]).astype(np.uint64)
        data = gather_where(group.sources, where, nbytes)
        key_where = (ks - group.kbase[rs]).astype(np.uint64)
        key_bytes = gather_where([group.keys.view(np.uint8)], key_where, 8 * ns)
        return data, key_bytes.view(np.uint64), None

    def positions(
        self, segments: list[tuple[int, int, int, int, int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Where the records of ``segments`` are (in :attr:`sources`), their keys and their
        lengths, one segment after the other; None unless every segment is of a run of
        positions in memory. Touches nothing shared (threads may call it)."""
        if not self.in_memory or not segments:
            return None
        runs = [self.memory[seg[0]] for seg in segments]
        if not all(_by_position(run[1]) for run in runs):
            return None
        parts = [(k // 8, k // 8 + n) for _r, n, _b, k, _d in segments]
        where = np.concatenate([run[1][a:b] for run, (a, b) in zip(runs, parts, strict=True)])
        keys = np.concatenate([run[0][a:b] for run, (a, b) in zip(runs, parts, strict=True)])
        lengths = np.concatenate(
            [run[2][a:b] for run, (a, b) in zip(runs, parts, strict=True)]  # type: ignore[index]
        )
        return where, keys, lengths

    def _join_in_memory(
        self, segments: list[tuple[int, int, int, int, int]], size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        parts = [
            (self.memory[r], k // 8, n, d, nbytes) for r, n, nbytes, k, d in segments
        ]
        with_lengths = all(run[2] is not None for run, *_ in parts)
        if len(parts) == 1 and not _by_position(parts[0][0][1]):
            (run_keys, run_data, run_lengths), k, n, d, nbytes = parts[0]
            lengths = run_lengths[k : k + n] if with_lengths else None
            return run_data[d : d + nbytes], run_keys[k : k + n], lengths
        data = np.empty(size, dtype=np.uint8)
        keys = np.empty(sum(n for *_, n, _d, _b in parts), dtype=np.uint64)
        lengths = np.empty(len(keys), dtype=np.int64) if with_lengths else None
        at = kat = 0
        for (run_keys, run_data, run_lengths), k, n, d, nbytes in parts:
            keys[kat : kat + n] = run_keys[k : k + n]
            if _by_position(run_data):
                data[at : at + nbytes] = gather_where(
                    self.sources, run_data[k : k + n], run_lengths[k : k + n]  # type: ignore[index]
                )
            else:
                data[at : at + nbytes] = run_data[d : d + nbytes]
            if lengths is not None:
                lengths[kat : kat + n] = run_lengths[k : k + n]  # type: ignore[index]
            at += nbytes
            kat += n
        return data, keys, lengths

    def release(self) -> None:
        """Let go of the range :meth:`use` made current."""
        self._group = None

    def close(self) -> None:
        """Close every file (the runs stay on disk)."""
        self._group = None
        for fd in (self.fd, self._direct_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self._direct_fd = None
        self._stage = None
        self._sets = [(None, []), (None, [])]
        self._ahead = 0
        if self._readers is not None:
            self._readers[0].shutdown(wait=True)
            self._readers = None
        for fd in (*self._fds.values(), *self._direct_fds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        self._direct_fds.clear()

    def remove(self) -> None:
        """Close and delete every file (or let go of the runs in memory)."""
        self.close()
        self.memory = []
        self.sources = []
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)


class _Spiller:
    """Collects batches of records and their keys into runs of about ``unit`` bytes of work
    memory."""

    def __init__(self, runs: _Runs, unit: int) -> None:
        self.runs = runs
        self.unit = unit
        self.data: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.ends: np.ndarray | None = None
        self.memory = 0

    def add(self, data: np.ndarray, keys: np.ndarray, ends: np.ndarray | None = None) -> None:
        """Add records (with their ``ends``, when they are known already)."""
        self.data.append(data)
        self.keys.append(keys)
        self.ends = ends if len(self.data) == 1 else None
        self.memory += _work_memory(len(data), len(keys))
        if self.memory >= self.unit:
            self.flush()

    def flush(self) -> None:
        data, keys, ends = self.data, self.keys, self.ends
        self.data, self.keys, self.ends, self.memory = [], [], None, 0
        if len(data) == 1:
            self.runs.spill(data[0], keys[0], ends)
        elif data:
            joined = np.concatenate(data)
            del data[:]  # let go of the pieces before the run is grouped
            self.runs.spill(joined, np.concatenate(keys))
