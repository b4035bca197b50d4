"""gpudl.cpu_affinity: a map's caller held to its core while the map runs and free again after
it (after an exception too: test_map_threads), helpers bound to the caller's other allowed cores,
nothing bound when the caller may use one core, and GPUDL_CPU_BIND=0 binding nothing."""

import os
import subprocess
import sys
import threading
import time

import pytest
from gpudl import cpu_affinity, cpu_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or
                                len(os.sched_getaffinity(0)) < 2 or cpu_affinity._getcpu is None,
                                reason="binding needs Linux and two allowed cores")


def _affinity_per_thread(workers=None):
    """Each thread's affinity sets while it ran items of a map over ``workers`` threads (by
    default one per allowed core: only such a map binds, whatever the machine's core count)."""
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    items = 4 * workers
    seen, lock = {}, threading.Lock()

    def record(i):
        time.sleep(0.002)                   # releases the GIL: the helper takes items too
        with lock:
            seen.setdefault(threading.current_thread().name, set()).add(
                frozenset(os.sched_getaffinity(0)))
        return i

    assert cpu_threads.map_threads(record, range(items), workers) == list(range(items))
    return seen


def test_caller_held_and_helper_bound_elsewhere_during_a_map_then_caller_free():
    before = os.sched_getaffinity(0)
    seen = _affinity_per_thread()
    caller = seen.pop(threading.current_thread().name)
    assert len(caller) == 1 and len(next(iter(caller))) == 1       # one core, the whole map
    (held,) = next(iter(caller))
    assert seen                                                     # the helpers took items
    for sets in seen.values():                                      # each helper: another core
        assert all(len(s) == 1 and held not in s and s <= before for s in sets)
    assert os.sched_getaffinity(0) == before


def test_a_caller_limited_to_one_core_binds_nothing_and_helpers_follow_its_set():
    before = os.sched_getaffinity(0)
    only = {min(before)}
    _affinity_per_thread()                  # helpers bound to single cores first
    os.sched_setaffinity(0, only)
    try:
        seen = _affinity_per_thread(2)      # a helper, though the caller has one core
    finally:
        os.sched_setaffinity(0, before)
    for sets in seen.values():
        assert sets == {frozenset(only)}


def test_a_map_not_over_every_allowed_core_binds_nothing():
    before = os.sched_getaffinity(0)
    for helpers in (len(before), len(before) + 3):     # more helpers than other cores
        with cpu_affinity.caller_held(helpers) as cpus:
            assert os.sched_getaffinity(0) == before
            assert cpus == [before] * helpers
    with cpu_affinity.caller_held(len(before) - 1) as cpus:    # every core: bound
        (held,) = os.sched_getaffinity(0)
        assert sorted(c for (c,) in cpus) == sorted(before - {held})
    assert os.sched_getaffinity(0) == before


def test_bind_off_by_environment():
    script = ("import os, threading, time\n"
              "from gpudl import cpu_threads\n"
              "full = os.sched_getaffinity(0)\n"
              "def f(i):\n"
              "    time.sleep(0.002)\n"
              "    return os.sched_getaffinity(0) == full\n"
              "assert all(cpu_threads.map_threads(f, range(8), 2))\n")
    env = dict(os.environ, GPUDL_CPU_BIND="0")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
