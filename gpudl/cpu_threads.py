"""How many threads gpudl's CPU work uses: the cores that other processes leave free.

A multi-threaded GEMM, OpenMP region or thread-pool map finishes only when its slowest thread
does. On a machine whose cores are busy with other processes, each helper thread waits for a
time slice, and a LeNet step of ~15 small GEMMs measured 800-2,000 ms instead of ~20 ms
single-threaded (OpenBLAS's pthreads workers, 2 cores, two busy processes beside it). So the
thread count follows the load: every ``INTERVAL`` seconds at most, :func:`refresh` measures how
much CPU time the rest of the machine used since the last look (``/proc/stat`` minus this
process's own time) and caps the threads at the cores left over, at least one. It sets
OpenBLAS's (or any BLAS threadpoolctl knows) thread count when that changes, and
:func:`count` is what gpudl's own threads use (:func:`map_serial_blas` for work calling BLAS:
convolution chunks, the attention twin's tiles; :func:`map_threads` for Numba-only work: pooling
chunks, the LSTM's row groups); gpudl runs no OpenMP pool.

The ceiling is the BLAS thread count found at the first look (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or threadpoolctl settings of the user win), further capped by
``GPUDL_CPU_THREADS`` when set; ``GPUDL_CPU_THREADS=0`` turns the adaptation off. A BLAS count
changed by the user later becomes the new ceiling. Without ``/proc/stat`` (not Linux) the count
stays at the ceiling.
"""

import os
import threading
import time

from . import cpu_affinity

INTERVAL = 0.2              # seconds between two looks at the machine's load

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_TICK = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

_next_look = 0.0           # time.monotonic() of the next measurement
_serial_lock = threading.Lock()
_count = 1
_state = {"ceiling": None, "blas": None, "blas_set": None, "last": None, "adaptive": True,
          "serial": 0}       # serial: how many serial_blas blocks are open (BLAS held at 1)


def count():
    """Threads gpudl's CPU work should use now (>= 1); re-measured at most every INTERVAL s."""
    if time.monotonic() >= _next_look:
        refresh()
    return _count


def refresh():
    """Measure the other processes' CPU use and update the thread count (and BLAS's)."""
    global _next_look, _count
    now = time.monotonic()
    _next_look = now + INTERVAL
    if _state["ceiling"] is None:
        _start()
    ceiling = _ceiling()
    busy = _busy_elsewhere(now)
    free = ceiling if busy is None else _CORES - busy
    _count = max(1, min(ceiling, int(free + 0.5)))
    if not _state["serial"]:
        _set_blas(_count)
    return _count


def set_ceiling(threads):
    """The most threads gpudl's CPU work may use from now on (torch.set_num_threads): the
    load still lowers the count, never above this."""
    if _state["ceiling"] is None:
        _start()
    _state["ceiling"] = threads
    refresh()


def ceiling():
    """The most threads gpudl's CPU work may use (torch.get_num_threads)."""
    if _state["ceiling"] is None:
        _start()
    return _state["ceiling"]


def _start():
    setting = os.environ.get("GPUDL_CPU_THREADS", "").strip()
    user_cap = int(setting) if setting.isdigit() else None
    _state["blas"] = _blas_controller() if user_cap != 0 else None
    blas_threads = _state["blas"].num_threads if _state["blas"] is not None else _CORES
    ceiling = max(1, min(_CORES, blas_threads))
    if user_cap:
        ceiling = min(ceiling, user_cap)
    _state["ceiling"] = ceiling
    _state["adaptive"] = user_cap != 0


def _ceiling():
    """The start-up ceiling, or the BLAS count the user set since (threadpoolctl, ...)."""
    blas = _state["blas"]
    if blas is not None and _state["blas_set"] is not None and not _state["serial"]:
        current = _current_blas_threads(blas)
        if current != _state["blas_set"]:
            _state["ceiling"] = max(1, min(_CORES, current))
            _state["blas_set"] = None
    return _state["ceiling"]


def _busy_elsewhere(now):
    """Cores' worth of CPU time used by other processes since the last call (None: unknown)."""
    if not _state["adaptive"]:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
    ticks = [int(v) for v in fields[:8]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) * _TICK
    mine = time.process_time()
    last, _state["last"] = _state["last"], (now, busy, mine)
    if last is None or now - last[0] < INTERVAL / 2:
        return 0.0 if last is None else None
    return max(0.0, (busy - last[1]) - (mine - last[2])) / (now - last[0])


def _blas_controller():
    """threadpoolctl's controller of the BLAS NumPy uses, or None. Other BLAS libraries may be
    loaded too (SciPy's, which Numba loads when it compiles), in no fixed order: NumPy's is
    the one in NumPy's own folders (a wheel's numpy.libs), else the first found."""
    try:
        import numpy as np
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    found = ThreadpoolController().select(user_api="blas").lib_controllers
    home = os.path.dirname(os.path.realpath(np.__file__))
    numpy_own = [c for c in found
                 if os.path.realpath(c.filepath or "").startswith((home + os.sep, home + ".libs"))]
    return (numpy_own or found or [None])[0]


def _current_blas_threads(blas):
    return blas.get_num_threads()


def _set_blas(threads):
    blas = _state["blas"]
    if blas is None or threads == _state["blas_set"]:
        return
    blas.set_num_threads(threads)
    _state["blas_set"] = threads


def serial_blas():
    """BLAS on one thread inside the block (``with serial_blas() as serial:``), for callers that
    run GEMMs on threads of their own.

    OpenBLAS (pthreads) lets one threaded GEMM run at a time, so two callers' threaded GEMMs would
    take turns; with BLAS on one thread each caller's GEMM runs on its own core. Yields False,
    changing nothing, when BLAS's thread count cannot be set (no threadpoolctl, or
    ``GPUDL_CPU_THREADS=0``): callers should then not thread their GEMMs themselves.
    """
    return _SerialBlas()


class _SerialBlas:
    """serial_blas's block. A class, not a generator context manager: cpu_matmul enters one per
    GEMM, and a contextlib block costs six Python calls where this costs two."""

    held = False        # whether __enter__ counted this block in _state["serial"]

    def __enter__(self):
        if _state["ceiling"] is None:
            _start()
        blas = _state["blas"]
        if blas is None:
            return False
        # While held, refresh() neither sets BLAS's count nor takes the 1 for a user's new
        # ceiling (threads of the caller's pool call count() meanwhile).
        with _serial_lock:
            _state["serial"] += 1           # first: a refresh from now on leaves BLAS alone
            if _state["serial"] == 1:
                before = _state["blas_set"]
                _state["restore"] = before if before is not None else _current_blas_threads(blas)
                if _state["restore"] != 1:  # at one thread already (a busy machine): no call
                    blas.set_num_threads(1)     # into threadpoolctl (~1 us), none to restore
        self.held = True
        return True

    def __exit__(self, *exc):
        if not self.held:
            return False
        with _serial_lock:
            if _state["serial"] == 1 and _state["restore"] != 1:
                _state["blas"].set_num_threads(_state["restore"])
            _state["serial"] -= 1           # last: BLAS is back to what refresh last set
        return False


def map_serial_blas(fn, items, workers):
    """[fn(item) for item in items] on up to ``workers`` threads (``map_threads``), BLAS on one
    thread meanwhile so that each thread's GEMMs run on a core of their own; on one thread
    too, so that BLAS's own threads never run (and spin) between gpudl's (cpu_matmul's doc).
    One thread (in order) when BLAS's thread count cannot be set."""
    with serial_blas() as serial:
        return map_threads(fn, items, workers if serial else 1)


_map_pool = []              # [(pid, ThreadPoolExecutor)] for map_threads, made on first use
_inside = threading.local()     # .job: this thread runs an item of a map_threads call


def map_threads(fn, items, workers):
    """[fn(item) for item in items] on up to ``workers`` threads, the caller's among them, each
    taking the next item when done; the first exception raised by ``fn`` is raised here once
    every thread has stopped (items not started by then are skipped). ``fn`` should release the
    GIL for its work (NumPy, nogil Numba) and call no threaded BLAS (``map_serial_blas`` for
    that). In order on the calling thread when workers or items are 1, or inside another
    call's ``fn`` (its pool's threads may all be busy with that call)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1 or getattr(_inside, "job", False):
        return [fn(item) for item in items]
    results = [None] * len(items)
    pending = iter(range(len(items)))      # next() on a range iterator is atomic under the GIL
    errors = []

    def loop(cpus=None):
        cpu_affinity.bind_helper(cpus)
        _inside.job = True
        try:
            for i in pending:
                results[i] = fn(items[i])
        except BaseException as error:      # noqa: BLE001 (re-raised by the caller)
            errors.append(error)
            for _ in pending:               # the other threads stop taking items
                pass
        finally:
            _inside.job = False

    if not _map_pool or _map_pool[0][0] != os.getpid():    # a forked child has no threads
        from concurrent.futures import ThreadPoolExecutor
        _map_pool[:] = [(os.getpid(), ThreadPoolExecutor(max(1, _CORES - 1), "gpudl-map"))]
    with cpu_affinity.caller_held(min(workers, len(items)) - 1) as helper_cpus:
        helpers = [_map_pool[0][1].submit(loop, cpus) for cpus in helper_cpus]
        loop()
        for done in helpers:
            done.result()                   # every helper done before the caller goes on
    if errors:
        raise errors[0]
    return results


def chunk_size(total, most, workers):
    """Items per chunk for map_serial_blas: at most ``most`` (>= 1) and as equal a number of
    chunks for each of ``workers`` threads as ``total`` allows."""
    rounds = -(-total // (max(1, workers) * max(1, most)))
    return int(max(1, min(total, -(-total // (max(1, workers) * max(1, rounds))))))
