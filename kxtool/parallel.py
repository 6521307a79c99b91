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
  pipes. At most ``window`` tasks are in flight, so a long stream of items is never read
  ahead. Workers ignore Ctrl-C (the caller handles it) and are stopped on exit, however it
  comes.

A cluster executor (Dask) stands beside these with the same :meth:`Executor.map`: it sends the
context to the workers once and the items as tasks. Engines take an executor, or build a
local one with :func:`executor`.

A :class:`~kxtool.errors.KxError` raised in a task reaches the caller as the same error.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Task = Callable[[Any, Any], Any]

# the context of the tasks of the pool being started (inherited by forked workers)
_CONTEXT: dict[int, Any] = {}


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


def _worker_init(key: int) -> None:
    """Workers die quietly when the pool is stopped, and leave Ctrl-C to the parent."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_KEY
    _WORKER_KEY = key


_WORKER_KEY = 0


def _run(fn: Task, item: Any) -> Any:
    return fn(_CONTEXT[_WORKER_KEY], item)


class ProcessExecutor(Executor):
    """``jobs`` forked worker processes that inherit ``context``."""

    _next_key = 0

    def __init__(self, jobs: int, context: Any = None) -> None:
        import multiprocessing as mp

        self.jobs = jobs
        ProcessExecutor._next_key += 1
        self._key = ProcessExecutor._next_key
        _CONTEXT[self._key] = context
        try:
            ctx = mp.get_context("fork")
            self._pool: Any = ctx.Pool(jobs, initializer=_worker_init, initargs=(self._key,))
        except BaseException:
            _CONTEXT.pop(self._key, None)
            raise

    def map(self, fn: Task, items: Iterable[Any], *, window: int | None = None) -> Iterator[Any]:
        window = max(1, window or 4 * self.jobs)
        pending: deque[Any] = deque()
        for item in items:
            pending.append(self._pool.apply_async(_run, (fn, item)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()
        _CONTEXT.pop(self._key, None)


def default_jobs(limit: int = 4) -> int:
    """The cores this process may use, at most ``limit``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))


def executor(jobs: int | None, context: Any = None) -> Executor:
    """A local executor for ``jobs`` workers: serial for one job (or ``None``), else forked
    processes (serial where this platform cannot fork)."""
    if jobs is None or jobs <= 1:
        return SerialExecutor(context)
    try:
        return ProcessExecutor(jobs, context)
    except ValueError:  # pragma: no cover - no fork on this platform
        return SerialExecutor(context)
