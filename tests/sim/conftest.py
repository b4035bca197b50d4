"""Under Numba's CUDA simulator: block barriers on a condition variable instead of a busy poll.

The simulator runs each CUDA thread of a block as a Python thread; its ``BlockManager.run`` finds
out that every live thread reached ``syncthreads()`` by polling all of them in a loop that never
sleeps, so the main thread competes for the GIL with the CUDA threads for the whole launch (the
leading cost of the simulator suite after the tensor-core emulation). The same rules, kept
here: a barrier opens when every thread still running waits at it (a thread that returned no
longer counts, as in the simulator); a thread that raises aborts the others (their next or
current ``syncthreads()`` raises) and the launch re-raises the first exception, tagged with the
thread and block as the simulator does. ``thread._manager`` stays the block's manager (the mma
emulation keeps its per-block scratch there).
"""

import threading

from gpudl import backend

if backend.SIMULATOR:
    from numba.cuda.simulator import kernel as _sim

    class _Barrier:
        def __init__(self, threads):
            self.cond = threading.Condition()
            self.live = threads          # threads still running
            self.waiting = 0             # of which waiting at the barrier
            self.generation = 0          # barriers opened so far
            self.failed = None           # the first thread that raised

        def open_if_complete(self):
            """With ``cond`` held: open the barrier when every live thread waits at it."""
            if self.waiting and self.waiting == self.live:
                self.waiting = 0
                self.generation += 1
                self.cond.notify_all()

    def _syncthreads(self):
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads call")
        barrier = self._manager.gpudl_barrier
        with barrier.cond:
            generation = barrier.generation
            barrier.waiting += 1
            barrier.open_if_complete()
            while barrier.generation == generation and not self.abort:
                barrier.cond.wait()
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads clear")

    _simulator_thread_run = _sim.BlockThread.run

    def _thread_run(self):
        try:
            _simulator_thread_run(self)        # stores an exception in self.exception
        finally:
            manager = self._manager
            barrier = manager.gpudl_barrier
            with barrier.cond:
                barrier.live -= 1
                if self.exception and barrier.failed is None:
                    barrier.failed = self
                    for other in manager.gpudl_threads:
                        other.abort = True
                    barrier.cond.notify_all()
                barrier.open_if_complete()
                if not barrier.live:
                    barrier.cond.notify_all()

    def _block_run(self, grid_point, *args):
        import numpy as np

        def target():
            self._f(*args)

        self.gpudl_threads = [_sim.BlockThread(target, self, grid_point, block_point, self._debug)
                              for block_point in np.ndindex(*self._block_dim)]
        barrier = self.gpudl_barrier = _Barrier(len(self.gpudl_threads))
        for t in self.gpudl_threads:
            t.start()
        with barrier.cond:
            while barrier.live and barrier.failed is None:
                barrier.cond.wait()
        first = barrier.failed or next((t for t in self.gpudl_threads if t.exception), None)
        if first is not None:
            raise first.exception[0].with_traceback(first.exception[1])

    _sim.BlockThread.syncthreads = _syncthreads
    _sim.BlockThread.run = _thread_run
    _sim.BlockManager.run = _block_run


def pytest_configure(config):
    # the simulator runs the dropout kernel's xoroshiro128+ steps on NumPy uint64 scalars, which
    # warn when they wrap (the wrap is the arithmetic)
    config.addinivalue_line(
        "filterwarnings", r"ignore:overflow encountered in scalar:RuntimeWarning:.*dropout_cuda")

