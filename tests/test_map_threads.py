"""gpudl.cpu_threads.map_threads: results in order from every thread count, every item once,
exceptions reaching the caller, nested and concurrent calls, and a forked child making its own
threads."""

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
from gpudl import cpu_threads


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 100])
def test_results_in_order_whatever_the_threads(workers, count):
    rng = np.random.default_rng()
    arrays = [rng.standard_normal(int(n)) for n in rng.integers(1, 50_000, count)]
    got = cpu_threads.map_threads(lambda a: float(np.sort(a).sum()), arrays, workers)
    assert got == [float(np.sort(a).sum()) for a in arrays]


def test_every_item_runs_once_on_several_threads():
    seen, lock = [], threading.Lock()

    def record(i):
        time.sleep(0.002)                   # releases the GIL: another thread takes items
        with lock:
            seen.append((i, threading.current_thread().name))
        return i

    assert cpu_threads.map_threads(record, range(40), 2) == list(range(40))
    assert sorted(i for i, _ in seen) == list(range(40))
    if cpu_threads._CORES > 1:
        assert len({name for _, name in seen}) == 2


def test_an_exception_reaches_the_caller_and_the_pool_still_works():
    def fail_on_5(i):
        if i == 5:
            raise ValueError("item 5 failed")
        time.sleep(0.001)
        return i

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with pytest.raises(ValueError, match="item 5 failed"):
        cpu_threads.map_threads(fail_on_5, range(20), 2)
    if before is not None:
        assert os.sched_getaffinity(0) == before        # the caller no longer held (cpu_affinity)
    assert cpu_threads.map_threads(lambda i: i * i, range(10), 2) == [i * i for i in range(10)]


def test_a_nested_call_runs_on_the_calling_thread():
    def outer(i):
        return sum(cpu_threads.map_threads(lambda j: i * j, range(4), 2))

    assert cpu_threads.map_threads(outer, range(6), 2) == [6 * i for i in range(6)]


def test_calls_from_two_threads_at_once():
    results = {}

    def caller(tag):
        results[tag] = [cpu_threads.map_threads(lambda i: (tag, i), range(30), 2) for _ in range(20)]

    threads = [threading.Thread(target=caller, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for tag in "ab":
        assert results[tag] == [[(tag, i) for i in range(30)]] * 20


def _child(queue):
    queue.put(cpu_threads.map_threads(lambda i: i + 1, range(8), 2))


def test_a_forked_child_makes_its_own_threads():
    cpu_threads.map_threads(lambda i: i, range(4), 2)          # the parent's threads exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == list(range(1, 9))
    child.join(timeout=60)
    assert child.exitcode == 0
