"""kxtool.parallel: the one seam for parallel work. Results come in item order whatever the
executor, the context is inherited (not pickled), and errors come back as they were."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from kxtool import parallel
from kxtool.errors import KxError


def _square_plus(context, item):
    return item * item + context["offset"], os.getpid()


def _fail_on(context, item):
    if item == context["bad"]:
        raise KxError(f"item {item} is bad")
    return item


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("the context must not be pickled")

    offset = 0


def _uses_unpicklable(context, item):
    return item + context.offset


@pytest.mark.parametrize("jobs", [None, 1, 2, 3])
def test_results_in_item_order_for_any_number_of_workers(jobs):
    with parallel.executor(jobs, {"offset": 5}) as ex:
        got = list(ex.map(_square_plus, range(200), window=7))
    assert [v for v, _ in got] == [i * i + 5 for i in range(200)]
    pids = {pid for _, pid in got}
    if jobs and jobs > 1:
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}


def test_the_context_is_inherited_not_pickled():
    with parallel.executor(2, _Unpicklable()) as ex:
        assert list(ex.map(_uses_unpicklable, range(10))) == list(range(10))


def test_an_error_in_a_task_reaches_the_caller_unchanged():
    for jobs in (1, 2):
        with parallel.executor(jobs, {"bad": 13}) as ex:
            with pytest.raises(KxError, match="item 13 is bad"):
                list(ex.map(_fail_on, range(40)))


def _die_on(context, item):
    if item == context["bad"] and os.getpid() != context["parent"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_a_worker_that_dies_is_an_error_not_a_hang():
    # multiprocessing's pool replaces a dead worker but never answers for the task it held
    with parallel.executor(2, {"bad": 5, "parent": os.getpid()}) as ex:
        with pytest.raises(parallel.WorkerLost, match="died"):
            list(ex.map(_die_on, range(20), window=4))


def _big(context, item):
    i, data = item
    return i, data[::-1], np.full((1000, 300), i, dtype=np.float32)


def test_big_bytes_and_arrays_travel_intact():
    items = [(i, bytes([i]) * 100_000 + b"end") for i in range(6)]
    with parallel.executor(2) as ex:
        got = list(ex.map(_big, items, window=3))
    for (i, data), (j, back, arr) in zip(items, got, strict=True):
        assert j == i and type(back) is bytes and back == data[::-1]
        assert arr.shape == (1000, 300) and (arr == i).all()


def test_an_abandoned_map_leaves_the_executor_usable():
    with parallel.executor(2, {"offset": 1}) as ex:
        it = ex.map(_square_plus, range(50), window=4)
        assert next(it)[0] == 1
        it.close()  # two tasks may still be running
        assert [v for v, _ in ex.map(_square_plus, range(10))] == [i * i + 1 for i in range(10)]


def test_items_are_not_read_far_ahead():
    seen = []

    def items():
        for i in range(1000):
            seen.append(i)
            yield i

    with parallel.executor(2, {"offset": 0}) as ex:
        it = ex.map(_square_plus, items(), window=4)
        next(it)
        assert len(seen) <= 5
    assert parallel._CONTEXT == {}


def test_default_jobs_is_within_the_cores():
    assert 1 <= parallel.default_jobs() <= 4
    assert parallel.default_jobs(1) == 1
