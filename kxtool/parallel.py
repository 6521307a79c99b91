"""The one seam through which engines hand out parallel work.

An engine cuts its work into *tasks*: a module-level function ``fn(context, item)`` and an
iterable of items (chunks of pairs, blocks of queries, chunks of text lines). The *context*
is what every task reads and no task changes (a prepared document space, a corpus, the
parameters); it is handed over once per worker, not once per task. An :class:`Executor` runs
the tasks and yields their results **in the order of the items**, so the output never
depends on which executor ran it or on how many workers it had.

Executors:

- :class:`SerialExecutor`: in this process (one job, or work too small to share).
- :class:`ProcessExecutor`: worker processes started with ``fork``. The context is published
  before the workers start and inherited, never pickled; items and results travel through
  pipes, one pair per worker, with their big buffers (numpy arrays, large ``bytes``) beside
  the pickle rather than copied into it. Each worker holds one task at a time and the next
  item goes to whichever is free; at most ``window`` tasks are in flight (running, or done
  and waiting for their turn), so a long stream of items is never read ahead. Workers ignore
  Ctrl-C (the caller handles it) and are stopped on exit, however it comes.

The cluster executor (Dask, :class:`kxtool.cluster.DaskExecutor`) stands beside these with the
same :meth:`Executor.map`: it sends the context to the workers once and the items as tasks.
Engines build their executor with :func:`executor`, which gives it for a ``cluster``.

A :class:`~kxtool.errors.KxError` raised in a task reaches the caller as the same error. A
worker process that dies (killed, out of memory) takes its task with it: :meth:`Executor.map`
then raises :class:`WorkerLost` rather than wait for a result that never comes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import KxError

Task = Callable[[Any, Any], Any]

# the context of the tasks of the pool being started (inherited by forked workers)
_CONTEXT: dict[int, Any] = {}


class WorkerLost(KxError):
    """A worker process died while tasks were in flight (killed; out of memory?)."""

    def __init__(self, message: str = "a worker process died (out of memory?)") -> None:
        super().__init__(message)


class Executor:
    """Runs ``fn(context, item)`` for every item; results in item order."""

    jobs: int = 1

    def map(self, fn: Task, items: Iterable[Any], *, window: int | None = None) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Runs every task in this process, one after another."""

    def __init__(self, context: Any = None) -> None:
        self.context = context
        self.jobs = 1

    def map(self, fn: Task, items: Iterable[Any], *, window: int | None = None) -> Iterator[Any]:
        for item in items:
            yield fn(self.context, item)


# -- the forked workers and what travels between them and the caller
#
# Every worker has a pipe for its tasks and one for its results, and holds at most one task:
# the caller hands an item to an idle worker and reads a result only from a worker that has
# finished, so neither side can block the other. A message is a pickle (protocol 5) whose big
# buffers (numpy arrays, large ``bytes``) travel beside it, written straight from their memory
# and read straight into the memory that holds them at the other end: a 16 MiB block of text
# and the 7 MiB of numbers parsed from it are not copied into and out of a pickle, as they are
# by multiprocessing's pool (which this executor used at first: parsing a 1.1 GB vectors file
# took 1.5 s more CPU time in the caller, about 10% of the parse; see ARCHITECTURE.md).

_FRAME = struct.Struct("<QI")  # pickle bytes, number of buffers (each then a uint64 length)
_BIG = 1 << 16  # ``bytes`` from this size travel beside the pickle
_PIPE_BYTES = 1 << 20  # pipe capacity asked for (Linux; the default is 64 KiB)


class _Beside:
    """A large ``bytes`` object to be sent as an out-of-band buffer (read back as ``bytes``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        return bytes, (pickle.PickleBuffer(self.data),)


def _beside(obj: Any, depth: int = 0) -> Any:
    """``obj`` with its large ``bytes`` marked, also within small tuples (a few levels deep:
    items and results are often ``(index, data)``); lists and the like are left as they are."""
    kind = type(obj)
    if kind is bytes and len(obj) >= _BIG:
        return _Beside(obj)
    if kind is tuple and len(obj) <= 8 and depth < 3:
        return tuple(_beside(x, depth + 1) for x in obj)
    return obj


def _send(fd: int, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(_beside(obj), protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = _FRAME.pack(len(data), len(views)) + b"".join(struct.pack("<Q", v.nbytes) for v in views)
    for piece in (head, data, *views):
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


def _read_into(fd: int, buf: Any) -> Any:
    view = memoryview(buf).cast("B")
    got, want = 0, len(view)
    while got < want:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError
        got += n
    return buf


def _receive(fd: int) -> Any:
    """The next message on ``fd``; EOFError when the other end is gone."""
    import numpy as np

    n, k = _FRAME.unpack(_read_into(fd, bytearray(_FRAME.size)))
    sizes = struct.unpack(f"<{k}Q", _read_into(fd, bytearray(8 * k))) if k else ()
    data = _read_into(fd, bytearray(n))
    buffers = [_read_into(fd, np.empty(s, dtype=np.uint8)) for s in sizes]
    return pickle.loads(data, buffers=buffers)


def _worker(key: int, tasks: int, results: int, others: list[int]) -> None:
    """A worker's life: run the tasks it is sent until its task pipe closes."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # dies quietly when the pool is stopped
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    for fd in others:  # the caller's ends, so that a closed pipe is seen as closed
        with contextlib.suppress(OSError):
            os.close(fd)
    context = _CONTEXT[key]
    while True:
        try:
            fn, item = _receive(tasks)
        except EOFError:
            return
        try:
            out: tuple[bool, Any] = (True, fn(context, item))
        except BaseException as e:  # the caller sees it, as if the task had run there
            out = (False, e)
        try:
            try:
                _send(results, out)
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                _send(results, (False, RuntimeError(f"a task's result cannot be sent: {e}")))
        except BrokenPipeError:  # the caller went away
            return


def _widen(*fds: int) -> None:
    """Ask for pipes of ``_PIPE_BYTES`` (fewer, larger reads and writes), where Linux allows."""
    try:
        import fcntl

        size = fcntl.F_SETPIPE_SZ  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # pragma: no cover - not Linux
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, size, _PIPE_BYTES)


class ProcessExecutor(Executor):
    """``jobs`` forked worker processes that inherit ``context`` (see the module's notes)."""

    _next_key = 0

    def __init__(self, jobs: int, context: Any = None) -> None:
        self.jobs = jobs
        ProcessExecutor._next_key += 1
        self._key = ProcessExecutor._next_key
        _CONTEXT[self._key] = context
        self._pids: list[int] = []
        self._tasks: list[int] = []  # per worker: the write end of its task pipe
        self._results: list[int] = []  # per worker: the read end of its result pipe
        try:
            for _ in range(jobs):
                task_r, task_w = os.pipe()
                result_r, result_w = os.pipe()
                _widen(task_w, result_w)
                pid = os.fork()
                if pid == 0:  # the worker
                    code = 0
                    try:
                        _worker(self._key, task_r, result_w,
                                [task_w, result_r, *self._tasks, *self._results])
                    except BaseException:  # noqa: BLE001 - a worker never returns to the caller
                        code = 1
                    finally:
                        os._exit(code)
                os.close(task_r)
                os.close(result_w)
                self._pids.append(pid)
                self._tasks.append(task_w)
                self._results.append(result_r)
        except BaseException:
            self.close()
            raise

    def map(self, fn: Task, items: Iterable[Any], *, window: int | None = None) -> Iterator[Any]:
        window = max(self.jobs, window or 4 * self.jobs)
        idle = deque(range(self.jobs))
        running: dict[int, int] = {}  # worker -> sequence number of its task
        finished: dict[int, tuple[bool, Any]] = {}  # sequence number -> (ok, result)
        it = iter(items)
        try:
            yield from self._run(fn, it, window, idle, running, finished)
        finally:
            # an abandoned map (the caller stopped early): let the tasks still running finish
            # and drop their results, so that the workers are idle for the next map
            for w in list(running):
                if self._results:  # (not once the executor is closed)
                    with contextlib.suppress(EOFError, OSError):
                        _receive(self._results[w])
                running.pop(w)

    def _run(
        self,
        fn: Task,
        it: Iterator[Any],
        window: int,
        idle: deque[int],
        running: dict[int, int],
        finished: dict[int, tuple[bool, Any]],
    ) -> Iterator[Any]:
        import select

        handed = given = 0  # tasks handed out; results given back
        more = True
        while True:
            while more and idle and handed - given < window:
                try:
                    item = next(it)
                except StopIteration:
                    more = False
                    break
                w = idle.popleft()
                try:
                    _send(self._tasks[w], (fn, item))
                except BrokenPipeError:
                    raise WorkerLost() from None
                running[w] = handed
                handed += 1
            if given in finished:
                ok, value = finished.pop(given)
                given += 1
                if not ok:
                    raise value
                yield value
                continue
            if not running:
                return
            fds = {self._results[w]: w for w in running}
            ready, _, _ = select.select(list(fds), [], [])
            for fd in ready:
                w = fds[fd]
                try:
                    out = _receive(fd)
                except EOFError:
                    raise WorkerLost() from None
                finished[running.pop(w)] = out
                idle.append(w)

    def close(self) -> None:
        import signal

        for fd in self._tasks:  # an idle worker sees its task pipe close and ends
            with contextlib.suppress(OSError):
                os.close(fd)
        for fd in self._results:
            with contextlib.suppress(OSError):
                os.close(fd)
        for pid in self._pids:  # one still busy is stopped: the caller is done with it
            with contextlib.suppress(OSError):
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
        self._pids, self._tasks, self._results = [], [], []
        _CONTEXT.pop(self._key, None)


def default_jobs(limit: int = 4) -> int:
    """The cores this process may use, at most ``limit``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))


def resolve_jobs(jobs: int | None) -> int:
    """``--jobs`` as engines take it: ``None`` or 1 is one, 0 or less is one per core."""
    if jobs is None or jobs == 1:
        return 1
    if jobs <= 0:
        return max(1, os.cpu_count() or 1)
    return jobs


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter): tasks of several items."""
    chunk: list[Any] = []
    for x in items:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def executor(jobs: int | None, context: Any = None, cluster: Any = None) -> Executor:
    """A local executor for ``jobs`` workers: serial for one job (or ``None``), else forked
    processes (serial where this platform cannot fork). With ``cluster`` (an address such as
    ``"local:2"`` or ``"tcp://host:8786"``, or a :class:`kxtool.cluster.Cluster`), the Dask
    executor of :mod:`kxtool.cluster` instead, whatever ``jobs``.

    >>> with executor(1, 10) as ex:
    ...     list(ex.map(lambda ctx, x: ctx + x, [1, 2]))
    [11, 12]
    """
    if cluster is not None:
        from .cluster import DaskExecutor

        return DaskExecutor(cluster, context)
    if jobs is None or jobs <= 1:
        return SerialExecutor(context)
    try:
        return ProcessExecutor(jobs, context)
    except ValueError:  # pragma: no cover - no fork on this platform
        return SerialExecutor(context)
