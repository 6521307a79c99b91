"""Running kxtool's tasks on a Dask cluster (``dask.distributed``; the ``cluster`` extra).

kxtool writes no scheduler of its own: an engine cuts its work into tasks (pure functions of
byte ranges, piles, query blocks; see :mod:`kxtool.parallel`), and Dask schedules them, runs
them again on another worker when one is lost, and moves their results.

- :func:`connect` turns an address into a client: ``local:N`` starts a ``LocalCluster`` of
  ``N`` worker processes on 127.0.0.1 (one thread each, no dashboard, quiet logs) that lives
  as long as the connection; any other value (``tcp://host:8786``, ``tls://...``, a scheduler
  file's address) is handed to ``distributed.Client`` as it is, so Dask's own configuration
  applies (TLS certificates, timeouts, ``DASK_*`` variables). A ``distributed.Client`` is
  taken as it is.
- :class:`DaskExecutor` is the cluster's :class:`~kxtool.parallel.Executor`: the context is
  sent once to every worker (``scatter(broadcast=True)``), each item is one task, results
  come back in the order of the items, at most ``window`` tasks are submitted ahead, and a
  :class:`~kxtool.errors.KxError` raised in a task reaches the caller as the same error
  with the same message. Tasks still pending are cancelled when the caller stops early, on
  an error and on Ctrl-C.

Without ``dask[distributed]`` installed every entry point raises a one-line
:class:`~kxtool.errors.KxError` that names the extra.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import KxError
from .parallel import Executor, Task

#: The environment variable that stands for ``--cluster`` when the option is not given.
ENV = "KXTOOL_CLUSTER"

_MISSING = (
    "--cluster needs Dask's distributed scheduler: pip install 'kxtool[cluster]'"
    " (dask[distributed])"
)


def _distributed() -> Any:
    """The ``distributed`` module, or the one-line error naming the extra."""
    try:
        import distributed
    except ImportError:
        raise KxError(_MISSING) from None
    return distributed


def available() -> bool:
    """Whether ``dask.distributed`` can be imported (the ``cluster`` extra is installed).

    >>> isinstance(available(), bool)
    True
    """
    try:
        _distributed()
    except KxError:
        return False
    return True


class Cluster:
    """A connection to a Dask cluster: its ``client`` and, for ``local:N``, the
    ``LocalCluster`` it started (closed with the connection). Use :func:`connect`."""

    def __init__(self, client: Any, local: Any = None, owned: bool = True) -> None:
        self.client = client
        self.local = local
        self.owned = owned

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def workers(self) -> dict[str, int]:
        """Address -> threads of every worker the scheduler knows now."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return {a: int(w.get("nthreads", 1)) for a, w in info.items()}

    def threads(self) -> int:
        """Task slots over all workers (at least 1)."""
        return max(1, sum(self.workers().values()))

    def worker_threads(self) -> int:
        """Threads of the busiest worker: tasks that may run side by side in one process."""
        return max([1, *self.workers().values()])

    def close(self) -> None:
        """Close the client (and the local cluster it started); idempotent."""
        if not self.owned:
            return
        self.owned = False
        with contextlib.suppress(Exception):
            self.client.close()
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_local(address: str) -> int | None:
    """The worker count of a ``local:N`` address, or ``None`` for any other address.

    >>> parse_local("local:4"), parse_local("tcp://10.0.0.1:8786")
    (4, None)
    """
    if not address.startswith("local:"):
        return None
    n = address[len("local:") :]
    if not n.isdigit() or int(n) < 1:
        raise KxError(f"--cluster {address!r}: local:N needs N, the number of workers, >= 1")
    return int(n)


def connect(address: Any) -> Cluster:
    """A :class:`Cluster` for ``address``: ``local:N``, a scheduler address, or a
    ``distributed.Client`` (used as it is and not closed). Raises :class:`KxError` when the
    extra is missing or the scheduler cannot be reached.

    >>> connect("local:0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kxtool.errors.KxError: --cluster 'local:0': local:N needs N, the number of workers, >= 1
    """
    if isinstance(address, Cluster):
        return Cluster(address.client, None, owned=False)
    if not isinstance(address, str):  # a Client already
        return Cluster(address, None, owned=False)
    n = parse_local(address)
    dist = _distributed()
    if n is not None:
        try:
            local = dist.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # the HTTP routes (health, metrics) every scheduler serves: on a free
                # loopback port, not 8787, which another cluster here may hold
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.CRITICAL,
            )
        except Exception as e:  # noqa: BLE001 - any failure to start is one line
            raise KxError(f"--cluster {address!r}: cannot start a local cluster: {e}") from None
        try:
            client = dist.Client(local)
        except BaseException:
            local.close()
            raise
        return Cluster(client, local)
    try:
        client = dist.Client(address)
    except Exception as e:  # noqa: BLE001 - OSError, TimeoutError, ValueError alike
        message = " ".join(str(e).split()) or type(e).__name__
        raise KxError(f"--cluster {address!r}: cannot reach the scheduler: {message}") from None
    return Cluster(client)


class _Failed:
    """A :class:`KxError` raised by a task, returned as its result: the caller raises it again
    (the same type and one-line message), and the worker does not log it as a crash."""

    __slots__ = ("error", "exit_code")

    def __init__(self, error: KxError) -> None:
        self.error = error
        self.exit_code = error.exit_code

    def raise_(self) -> None:
        self.error.exit_code = self.exit_code
        raise self.error


# contexts unpickled on this worker, by token (a worker keeps one copy however many tasks)
_CONTEXTS: dict[str, Any] = {}


def _context(token: str, blob: Any) -> Any:
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        import pickle

        ctx = _CONTEXTS[token] = pickle.loads(blob)
    return ctx


def _forget(token: str) -> None:
    """Run on every worker when a map is over: let go of its context."""
    _CONTEXTS.pop(token, None)


def _call(fn: Task, token: str, blob: Any, item: Any) -> Any:
    """The task as it runs on a worker: the context is unpickled once per worker from the
    scattered blob."""
    try:
        return fn(_context(token, blob), item)
    except KxError as e:
        return _Failed(e)


def _lost(e: BaseException) -> None:
    """Raise a one-line :class:`KxError` for Dask's failures that are not a task's own: a task
    whose workers kept dying (Dask gave up on it), the scheduler gone."""
    kind = type(e).__name__
    if kind == "KilledWorker":
        raise KxError(
            "a task was lost with its worker too many times (out of memory? see"
            " distributed.scheduler.allowed-failures)"
        ) from None
    if kind in ("CommClosedError", "CancelledError", "FutureCancelledError"):
        raise KxError(f"lost the Dask cluster while tasks were running ({kind})") from None


def run_tasks(
    cluster: Cluster,
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    context: Any = None,
    window: int | None = None,
) -> Iterator[Any]:
    """Run ``fn(context, item)`` for every item on the cluster; yield the results in item
    order. ``context`` is sent once to every worker (it stays there while the results are
    read); at most ``window`` tasks are submitted ahead of the result being waited for.
    Pending tasks are cancelled when the caller stops early, on an error and on Ctrl-C."""
    import uuid

    _distributed()
    client = cluster.client
    window = max(1, window or 4 * cluster.threads())
    # the context travels as one pickle (protocol 5): Dask would otherwise walk a nested
    # context and serialise each of its arrays on its own (a corpus of 10,000 docs took
    # 7 s to scatter that way, 0.4 s as one pickle); each worker unpickles it once
    import pickle

    token = uuid.uuid4().hex[:12]
    try:
        blob = pickle.dumps(context, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):  # a lambda, a local function
        import cloudpickle

        blob = cloudpickle.dumps(context, protocol=5)
    ctx = client.scatter([blob], broadcast=True, hash=False)[0]
    del blob
    tag = f"kxtool-{getattr(fn, '__name__', 'task')}-{token}"
    pending: deque[Any] = deque()
    it = iter(enumerate(items))
    more = True
    try:
        while True:
            while more and len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    more = False
                    break
                i, item = nxt
                pending.append(
                    client.submit(_call, fn, token, ctx, item, pure=False, key=f"{tag}-{i}")
                )
            if not pending:
                return
            try:
                result = pending[0].result()
            except Exception as e:  # noqa: BLE001 - Dask's own failures become one line
                _lost(e)
                raise
            pending.popleft()
            if isinstance(result, _Failed):
                result.raise_()
            yield result
    finally:
        if pending:
            with contextlib.suppress(Exception):
                client.cancel(list(pending), force=True)
        with contextlib.suppress(Exception):
            client.cancel([ctx], force=True)
        with contextlib.suppress(Exception):
            client.run(_forget, token)


class DaskExecutor(Executor):
    """The :class:`~kxtool.parallel.Executor` of a Dask cluster (see the module's notes).

    ``cluster`` is anything :func:`connect` takes; a connection made here is closed with the
    executor.
    """

    def __init__(self, cluster: Any, context: Any = None) -> None:
        self.cluster = connect(cluster)
        self.context = context
        self.jobs = self.cluster.threads()

    def map(self, fn: Task, items: Iterable[Any], *, window: int | None = None) -> Iterator[Any]:
        return run_tasks(
            self.cluster, fn, items, context=self.context, window=max(window or 0, 4 * self.jobs)
        )

    def close(self) -> None:
        self.cluster.close()
