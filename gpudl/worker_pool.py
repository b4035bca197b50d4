"""gpudl's CPU worker threads: ``run(fn, items, workers)`` maps ``fn`` over ``items`` on the
calling thread and up to ``workers - 1`` kept threads, each taking the next item when done.

A training step of a small model hands work to the threads several times (an LSTM layer: the
forward chains, the backward chains, the weight gradients), a few hundred microseconds apart.
A thread that blocks in between lets its CPU go idle, and on a virtual machine an idle virtual
CPU is given back to the host: waking it again took 500-900 us, not ~35 us, in streaks of
seconds on this project's 2-core VM, and an LSTM step of 1.6 ms took 2.5 ms (the work then ran
on the calling thread alone). So a caller whose next job follows soon may ask the workers to
poll for it for ``spin`` seconds after this one before they block (``SPIN_S`` for the LSTM's
phases), the way OpenMP and OpenBLAS workers do, but briefly and only when asked: a polling
worker holds its core, and after a convolution (whose next GEMMs OpenBLAS threads) a 1 ms poll
made a LeNet step 8 -> 12 ms; libgomp's default kept a PyTorch worker busy ~8 ms after each
call. The caller itself polls for its workers' last items for up to ``SPIN_S``. The polling
runs in a compiled loop without the GIL, reading a counter with atomic loads and a ``pause``
between reads.
"""

import os
import platform
import threading
import time

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

SPIN_S = 0.001              # the longest a waiting thread polls before it blocks

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

_PAUSE = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _load_acquire(typingctx, array, index):
    """array[index] read with an atomic acquire load (the compiled loop below must see the
    stores of other threads: a plain load would be hoisted out of it)."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def _pause(typingctx):
    """The spin-wait hint (x86 ``pause``: lets the core's other thread run, saves power);
    nothing elsewhere."""
    def codegen(context, builder, signature, args):
        if _PAUSE:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(), codegen


@numba.njit(nogil=True, cache=True)
def _poll(counters, index, old, rounds):
    """Poll ``counters[index]`` until it differs from ``old``, for at most ``rounds`` reads;
    return the last value read."""
    value = _load_acquire(counters, index)
    for _ in range(rounds):
        if value != old:
            break
        _pause()
        value = _load_acquire(counters, index)
    return value


def _rounds_per_second():
    """How many ``_poll`` reads a second this CPU makes (``pause`` takes 10-150 cycles)."""
    counters = np.zeros(1, np.int64)
    _poll(counters, 0, 0, 10)                   # compiled (or loaded from the cache) first
    rounds = 20_000
    start = time.perf_counter()
    _poll(counters, 0, 0, rounds)
    return rounds / max(time.perf_counter() - start, 1e-6)


class _Job:
    def __init__(self, fn, items, helpers, spin):
        self.fn, self.items, self.helpers, self.spin = fn, items, helpers, spin
        self.results = [None] * len(items)
        self.pending = iter(range(len(items)))     # next() on it is atomic under the GIL
        self.error = None

    def work(self):
        try:
            for i in self.pending:
                self.results[i] = self.fn(self.items[i])
        except BaseException as error:          # noqa: BLE001 (re-raised by the caller)
            self.error = self.error or error
            for _ in self.pending:              # the other threads stop taking items
                pass


class _Pool:
    """Threads that run jobs; counters[0] counts jobs started, counters[1] helpers finished."""

    def __init__(self, size):
        self.counters = np.zeros(2, np.int64)
        self.condition = threading.Condition()
        self.job = None
        self.busy = threading.Lock()            # one job at a time; others run in order
        self.rounds_per_second = _rounds_per_second()
        self.threads = [threading.Thread(target=self._serve, args=(i,), daemon=True,
                                         name=f"gpudl-worker-{i}") for i in range(size)]
        for thread in self.threads:
            thread.start()

    def _wait(self, index, old, spin):
        """Until counters[index] != old: polled for ``spin`` seconds, then blocked."""
        if spin > 0 and _poll(self.counters, index, old,
                              int(spin * self.rounds_per_second)) != old:
            return
        with self.condition:
            self.condition.wait_for(lambda: self.counters[index] != old)

    def _serve(self, number):
        seen, spin = 0, 0.0
        while True:
            self._wait(0, seen, spin)
            seen = int(self.counters[0])
            job = self.job
            spin = job.spin
            if number < job.helpers:
                job.work()
                with self.condition:
                    self.counters[1] += 1
                    self.condition.notify_all()

    def run(self, fn, items, workers, spin):
        job = _Job(fn, items, min(workers, len(items), len(self.threads) + 1) - 1, spin)
        with self.condition:
            finished = int(self.counters[1])
            self.job = job
            self.counters[0] += 1
            self.condition.notify_all()
        job.work()
        target = finished + job.helpers
        while int(self.counters[1]) < target:
            self._wait(1, int(self.counters[1]), SPIN_S)
        if job.error is not None:
            raise job.error
        return job.results


_pool = []                  # [(pid, _Pool)], made at first use (a forked child makes its own)
_inside = threading.local()


def run(fn, items, workers, spin=0.0):
    """[fn(item) for item in items] on up to ``workers`` threads, the caller's among them, each
    taking the next item when done; the first exception raised by ``fn`` is raised here once
    every thread has stopped. The workers then poll for the next job for ``spin`` seconds
    (at most SPIN_S) before they block. ``fn`` should release the GIL for its work (NumPy, nogil Numba).
    In order on the calling thread when workers or items are 1, inside another job's ``fn``,
    or while another thread's job runs."""
    items = list(items)
    if workers <= 1 or len(items) <= 1 or getattr(_inside, "job", False):
        return [fn(item) for item in items]
    if not _pool or _pool[0][0] != os.getpid():
        _pool[:] = [(os.getpid(), _Pool(max(1, _CORES - 1)))]
    pool = _pool[0][1]
    if not pool.busy.acquire(blocking=False):
        return [fn(item) for item in items]
    _inside.job = True
    try:
        return pool.run(fn, items, workers, min(spin, SPIN_S))
    finally:
        _inside.job = False
        pool.busy.release()
