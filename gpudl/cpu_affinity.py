"""Keeping the threads of one ``cpu_threads.map_threads`` call on separate cores while it runs.

On a KVM guest (the 2-core CI machine here) Linux will not wake a thread on a virtual CPU that has
been idle for tens of milliseconds (the host has parked it), so after a pause both of a map's
threads land on the caller's core and stay there: each phase ends with one thread waking the
other, and a thread that blocks often never looks busy enough to be moved. The LSTM T 32 step
then ran 2.4-2.6 ms after a 50 ms pause instead of 1.5 ms, for as long as the bursts lasted.
PyTorch escapes this because its OpenMP workers spin for milliseconds after each region, so the
scheduler sees two busy threads and spreads them. Spinning steals a core from whatever runs next
(OpenBLAS's threads after a convolution, tried and removed); binding costs two system calls a
map (~4 us): the caller is held to the core it is on until the map ends, and each helper thread
is bound to another core of the caller's allowed set, moving only when the caller's core changes.
Between maps the caller is free again. Only maps that use every allowed core bind: a map on fewer
threads (a busy machine, a cap, processes sharing the cores) leaves placement to the scheduler.
``GPUDL_CPU_BIND=0`` turns binding off; it is off where the platform cannot bind (not Linux).
"""

import contextlib
import ctypes
import os
import threading

_enabled = (os.environ.get("GPUDL_CPU_BIND", "1").strip() != "0"
            and hasattr(os, "sched_setaffinity"))
_bound = threading.local()        # .cpus: the set this helper thread last bound itself to


def _libc_getcpu():
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu


_getcpu = _libc_getcpu() if _enabled else None


@contextlib.contextmanager
def caller_held(helpers):
    """Holds the calling thread on its current core for the block when the map's threads are
    as many as the caller's allowed cores; yields the core sets, one per helper (each another
    allowed core), else the caller's whole allowed set for each helper, or None for each when
    binding is off."""
    if _getcpu is None or helpers < 1:
        yield [None] * helpers
        return
    allowed = os.sched_getaffinity(0)
    here = _getcpu()
    others = sorted(allowed - {here})
    if here not in allowed or len(others) != helpers:
        # Only a map over every allowed core binds: with fewer threads (a busy machine, a
        # user's cap, several processes sharing the cores) the scheduler knows which are free.
        yield [allowed] * helpers
        return
    try:
        os.sched_setaffinity(0, {here})
    except OSError:                 # the core taken away meanwhile (cgroup change): unbound
        yield [None] * helpers
        return
    try:
        yield [{others[i % len(others)]} for i in range(helpers)]
    finally:
        os.sched_setaffinity(0, allowed)


def bind_helper(cpus):
    """Binds the calling helper thread to ``cpus`` (a set, or None: leave as is) when it is not
    bound there already."""
    if cpus is None or getattr(_bound, "cpus", None) == cpus:
        return
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:                 # a core taken away meanwhile (cgroup change): stay unbound
        return
    _bound.cpus = cpus
