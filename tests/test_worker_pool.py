"""gpudl.worker_pool: results in order from every thread count, exceptions reaching the caller,
nested and concurrent calls, the polling loop seeing other threads' stores, bounded polling,
and a forked child making its own threads."""

import multiprocessing
import threading
import time

import numpy as np
import pytest
from gpudl import worker_pool


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 100])
def test_results_in_order_whatever_the_threads(workers, count):
    rng = np.random.default_rng()
    arrays = [rng.standard_normal(int(n)) for n in rng.integers(1, 50_000, count)]
    got = worker_pool.run(lambda a: float(np.sort(a).sum()), arrays, workers)
    assert got == [float(np.sort(a).sum()) for a in arrays]


def test_every_item_runs_once_on_several_threads():
    seen, lock = [], threading.Lock()

    def record(i):
        time.sleep(0.002)                   # releases the GIL: another thread takes items
        with lock:
            seen.append((i, threading.current_thread().name))
        return i

    assert worker_pool.run(record, range(40), 2) == list(range(40))
    assert sorted(i for i, _ in seen) == list(range(40))
    if worker_pool._CORES > 1:
        assert len({name for _, name in seen}) == 2


def test_an_exception_reaches_the_caller_and_the_pool_still_works():
    def fail_on_5(i):
        if i == 5:
            raise ValueError("item 5 failed")
        time.sleep(0.001)
        return i

    with pytest.raises(ValueError, match="item 5 failed"):
        worker_pool.run(fail_on_5, range(20), 2)
    assert worker_pool.run(lambda i: i * i, range(10), 2) == [i * i for i in range(10)]


def test_a_nested_call_runs_on_the_calling_thread():
    def outer(i):
        return sum(worker_pool.run(lambda j: i * j, range(4), 2))

    assert worker_pool.run(outer, range(6), 2) == [6 * i for i in range(6)]


def test_calls_from_two_threads_at_once():
    results = {}

    def caller(tag):
        results[tag] = [worker_pool.run(lambda i: (tag, i), range(30), 2) for _ in range(20)]

    threads = [threading.Thread(target=caller, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for tag in "ab":
        assert results[tag] == [[(tag, i) for i in range(30)]] * 20


def test_poll_sees_a_store_from_another_thread():
    """The compiled loop reads the counter anew each round (a load hoisted out of the loop
    would poll for all its 10**9 rounds, some 20 s here, and return 0)."""
    counters = np.zeros(2, np.int64)
    worker_pool._poll(counters, 1, 0, 1)
    timer = threading.Timer(0.01, counters.__setitem__, (1, 7))
    timer.start()
    start = time.perf_counter()
    assert worker_pool._poll(counters, 1, 0, 10 ** 9) == 7
    assert time.perf_counter() - start < 5
    assert worker_pool._poll(counters, 1, 7, 1000) == 7    # unchanged: all rounds, same value


@pytest.mark.parametrize("spin", [0.0, worker_pool.SPIN_S, 10.0])
def test_waiting_threads_stop_polling(spin):
    """After a job the workers poll for ``spin`` seconds (at most SPIN_S), then block: an idle
    half second costs the process about that much CPU per worker, not the half second."""
    worker_pool.run(lambda i: i, range(4), 2, spin)
    time.sleep(0.05)
    start = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - start < 0.1


def _child(queue):
    queue.put(worker_pool.run(lambda i: i + 1, range(8), 2))


def test_a_forked_child_makes_its_own_threads():
    worker_pool.run(lambda i: i, range(4), 2)          # the parent's threads exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == list(range(1, 9))
    child.join(timeout=60)
    assert child.exitcode == 0
