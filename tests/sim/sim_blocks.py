"""How the simulator suite runs a block of simulated CUDA threads (installed by conftest.py).

Numba's simulator runs each CUDA thread of a block as a new Python thread and finds out that
every live thread reached ``syncthreads()`` by polling them all in a loop that never sleeps.
Profiled (session 19), a launch of 130 blocks of 128 threads spent 45 of its 65 s starting
threads: each ``Thread.start()`` waits until the new thread has run, and it competes for the
GIL with the threads already running. So here:

- **A block whose kernel can never wait for another thread** (at a block barrier, or at the
  tensor-core emulation's warp rendezvous, kernels/_mma_emulation.py) **runs its threads one
  after another** on the calling thread, dressed as each in turn (the simulated ``cuda`` module
  reads ``threadIdx`` and friends from ``threading.current_thread()``). Without a barrier no thread can see another's
  progress, so any order is one the hardware may choose. "Can never wait" is decided from the
  code: no barrier's name among the names the kernel, or anything it reaches through its
  globals, closure cells or the modules it holds, loads (``_uses_barrier``).
- **Any other block runs its threads as greenlets** on the calling thread (``_run_green``): one
  runs until it returns or waits (at the block barrier, or at the mma emulation's warp
  rendezvous, through ``manager.gpudl_wait``), then the next, in thread order on one pass and
  in reverse on the next (starting the other way in every other block), so a missing barrier
  is caught whichever thread of the pair writes first; the calling thread is dressed as
  whichever runs, and what a call leaves on it (cp.async groups) follows its simulated thread
  across switches. The barrier opens when every thread still running waits at it (a thread
  that returned no longer counts, as in the simulator); a thread that raises ends the block
  (the others are ended where they wait) and the launch re-raises its exception, tagged with
  the thread and block as the simulator does; a wait no thread can end (a warp whose lanes do
  not all reach an mma) raises in the first thread that waits, rather than hanging. Session 19
  ran these blocks on 128 pooled OS threads with a condition-variable barrier: every barrier
  and every emulated mma then cost dozens of thread wake-ups through the GIL (session 25,
  benchmarks/RESULTS.md, measured the difference).

``thread._manager`` is the block's manager in both (the mma emulation keeps its per-block
scratch there); each simulated thread starts with no state left by another.

- **A block's shared array is created once** (``_shared_array``): the simulator's own creates
  it with a get-then-set that two threads can both pass before either sets, and the one whose
  array was replaced then wrote into an array no other thread read, and read slots no thread
  wrote (recycled memory: the previous launch's values). Rare (the GIL must switch inside a
  few bytecodes), but CI under load got a cross entropy loss 1.4 % off that way (session 23).
  The greenlets switch only where a thread waits, so this interleaving no longer arises here;
  the atomic creation stays for any runner on OS threads.
- **What a kernel did not write is poisoned** (``POISON``; ``GPUDL_SIM_POISON=0`` turns it off):
  every shared array of the launch before each block runs (the simulator keeps one per source
  line for the whole launch, so without this a block reads what the previous block left), the
  dynamic shared memory likewise, and each local array when created: NaN in floats, a large
  sentinel in integers (``_poison_value``). A kernel that reads a slot no thread of its block
  wrote (on a GPU: whatever the memory held) then fails its comparison, even where the value is
  multiplied by zero (0 * NaN is NaN). Free: no measurable CPU time (session 23,
  benchmarks/RESULTS.md).
"""

import os
import sys
import threading
import types

import greenlet
import numpy as np
from numba.core import types as nb_types
from numba.cuda.simulator import kernel as _sim
from numba.cuda.simulator import kernelapi as _sim_api
from numba.np import numpy_support

# names of what waits for other threads: the block barriers, and the tensor-core emulation's
# warp rendezvous (kernels/_mma_emulation.py)
_BARRIER_NAMES = frozenset(("syncthreads", "syncthreads_count", "syncthreads_and",
                            "syncthreads_or", "this_grid", "sync", "_collective"))
# unwritten shared and local slots poisoned (_poison_value): GPUDL_SIM_POISON unset or "nan":
# NaN; "0": off; a number (say 1e30): floats that finite value (a NaN a comparison drops, as in
# ``if v > m: m = v``, a large value wins), uint32 slots (tiles of packed tf32/f16 bits) its
# float32 bits
POISON = os.environ.get("GPUDL_SIM_POISON", "nan")
POISON = {"0": "", "1": "nan"}.get(POISON, POISON)


def _tagged(exc, thread_idx, block_idx):
    """``exc`` as the simulator reports it: the thread and the block first."""
    where = f"tid={list(thread_idx)} ctaid={list(block_idx)}"
    return type(exc)(f"{where}: {exc}" if str(exc) else where)


def _dress(thread, manager, block_idx, thread_idx):
    """``thread`` as the simulated thread ``thread_idx`` of block ``block_idx``."""
    x, y, _ = manager._block_dim
    thread.blockIdx, thread.threadIdx = _sim.Dim3(*block_idx), _sim.Dim3(*thread_idx)
    thread.thread_id = thread_idx[0] + x * (thread_idx[1] + y * thread_idx[2])
    thread._manager, thread.abort, thread.exception = manager, False, None


def _strip(thread, own):
    """Remove what a simulated thread's call left on ``thread`` beyond the names in ``own``."""
    for name in set(vars(thread)) - own:
        delattr(thread, name)


# ------------------------------------------------------------------ barrier-free blocks in turn
_barrier_use = {}        # function -> whether it (or what it reaches) may wait at a barrier


def _names(code):
    """The global, closure and attribute names ``code`` and the code nested in it load."""
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _cells(fn):
    out = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            out[name] = cell.cell_contents
        except ValueError:                      # a cell not assigned yet
            pass
    return out


def _uses_barrier(fn):
    """Whether ``fn`` may wait at a block barrier: a barrier's name among the names it loads, or
    a function it reaches (by global, closure cell, or an attribute of a module it holds; a
    device function's Python body) that may. Anything unreadable counts as waiting."""
    fn = getattr(fn, "fn", fn)                  # a simulated device function
    if not isinstance(fn, types.FunctionType):
        return True
    known = _barrier_use.get(fn)
    if known is not None:
        return known
    _barrier_use[fn] = False                    # a recursive call: settled below
    names = _names(fn.__code__)
    uses = bool(names & _BARRIER_NAMES)
    if not uses:
        scope = {**fn.__globals__, **_cells(fn)}
        modules = [v for v in scope.values() if isinstance(v, types.ModuleType)]
        reached = [scope[n] for n in names if n in scope]
        reached += [getattr(m, n) for m in modules for n in names if hasattr(m, n)]
        uses = any(_may_wait(obj) for obj in reached)
    _barrier_use[fn] = uses
    return uses


def _may_wait(obj):
    target = getattr(obj, "fn", obj)
    if not isinstance(target, types.FunctionType):
        return False                            # data, classes, NumPy's compiled functions
    if (target.__module__ or "").startswith(("numpy", "numba")):
        # NumPy never waits; the simulator's API does only under a barrier's name, which the
        # caller's own names show
        return target.__name__ in _BARRIER_NAMES
    return _uses_barrier(target)


def _unseen_barrier(*_):
    raise RuntimeError("sim_blocks: this kernel reached a block barrier that _uses_barrier did "
                       "not find in its code: it ran its threads in turn")


def _run_in_turn(manager, grid_point, args):
    me = threading.current_thread()
    own = set(vars(me))
    try:
        for point in np.ndindex(*manager._block_dim):
            _dress(me, manager, grid_point, point)
            me.syncthreads = _unseen_barrier
            try:
                manager._f(*args)
            except Exception as exc:
                raise _tagged(exc, point, grid_point).with_traceback(exc.__traceback__) \
                    from None
            _strip(me, own)
    finally:
        _strip(me, own)


# ------------------------------------------------------------------ blocks that wait, greenlets
_STALLED_BARRIER = ("sim_blocks: threads of the block wait at a barrier while the others wait "
                    "at something else that cannot complete (a warp's mma)")


class _Barrier:
    """The block barrier: it opens when every thread still running waits at it (a thread that
    returned no longer counts, as in the simulator)."""

    def __init__(self, threads):
        self.live = threads          # threads still running
        self.waiting = 0             # of which waiting at the barrier
        self.generation = 0          # barriers opened so far

    def arrive(self):
        """This thread waits at the barrier; returns what tells that it opened since."""
        generation = self.generation
        self.waiting += 1
        self.open_if_complete()
        return lambda: self.generation != generation

    def leave(self):
        """A thread returned."""
        self.live -= 1
        self.open_if_complete()

    def open_if_complete(self):
        if self.waiting and self.waiting == self.live:
            self.waiting = 0
            self.generation += 1


class _Simulated:
    """One simulated thread of a block run as greenlets: its greenlet, what it waits for, and
    the attributes it has on the calling thread while it runs (threadIdx and friends, the
    barrier, and whatever a call leaves there: cp.async groups)."""

    def __init__(self, run, attributes, point):
        self.greenlet = greenlet.greenlet(run)
        self.attributes, self.point = attributes, point
        self.until, self.stalled = None, None


def _run_green(manager, grid_point, args):
    """Run the block's threads as greenlets on the calling thread: one runs until it returns or
    waits (``gpudl_wait``: the block barrier, a warp's rendezvous), then the next runnable one.
    A wait that no thread can ever end raises in the waiting thread."""
    me = threading.current_thread()
    own = set(vars(me))
    scheduler = greenlet.getcurrent()
    barrier = manager.gpudl_barrier = _Barrier(int(np.prod(manager._block_dim)))

    def wait(until, stalled):
        """In a simulated thread: wait until ``until()``; ``stalled``: the error if never."""
        if not until():
            scheduler.switch((until, stalled))

    def syncthreads():
        wait(barrier.arrive(), _STALLED_BARRIER)

    manager.gpudl_wait = wait
    threads = []
    for point in np.ndindex(*manager._block_dim):
        _dress(me, manager, grid_point, point)
        me.syncthreads = syncthreads
        for name in ("syncthreads_count", "syncthreads_and", "syncthreads_or"):
            setattr(me, name, types.MethodType(getattr(_sim.BlockThread, name), me))
        threads.append(_Simulated(lambda: manager._f(*args), _take(me, own), point))
    # Each pass runs the ready threads forward or backward, alternating from pass to pass and
    # from block to block, so that a read of another thread's write with no barrier between
    # them finds the slot's older contents (the poison, or a previous phase's value) on one pass
    # or the other, whichever of the two threads comes first in thread order.
    ready, waiting, backward = threads, [], sum(grid_point) % 2 == 1
    try:
        while ready:
            if backward:
                ready.reverse()
            backward = not backward
            for thread in ready:
                vars(me).update(thread.attributes)
                try:
                    if thread.until is None:
                        waits = thread.greenlet.switch()
                    else:
                        waits = thread.greenlet.throw(RuntimeError(thread.stalled))
                except Exception as exc:
                    raise _tagged(exc, thread.point, grid_point).with_traceback(
                        exc.__traceback__) from None
                thread.attributes = _take(me, own)
                if thread.greenlet.dead:
                    barrier.leave()
                else:
                    thread.until, thread.stalled = waits
                    waiting.append(thread)
            ready, still = [], []
            for thread in waiting:
                if thread.until():
                    thread.until = None
                    ready.append(thread)
                else:
                    still.append(thread)
            waiting = still
            if not ready and waiting:             # none can go on: the first waiter fails
                ready, waiting = waiting[:1], waiting[1:]
    finally:
        _strip(me, own)
        for thread in threads:                    # after a failure: the others end here
            if not thread.greenlet.dead:
                thread.greenlet.throw(greenlet.GreenletExit)


def _take(thread, own):
    """What ``thread`` holds beyond the names in ``own``, removed from it."""
    attributes = vars(thread)
    return {name: attributes.pop(name) for name in attributes.keys() - own}


def _block_run(self, grid_point, *args):
    if POISON:
        _poison_block_shared()
    if not _uses_barrier(self._f):
        return _run_in_turn(self, grid_point, args)
    return _run_green(self, grid_point, args)


# ------------------------------------------------------------------ shared arrays
def _shared_array(self, shape, dtype, alignment=None):
    """``cuda.shared.array`` as the simulator's (one array per launch for each source line that
    asks: the blocks run one after another; size 0 is the dynamic shared memory), but the line's
    array is published with ``dict.setdefault``, atomic under the GIL: a thread that finds none
    and creates one gets the array stored first, whichever thread stored it. The caller's line
    comes from its frame (the simulator read the whole stack with its source lines)."""
    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    if isinstance(dtype, nb_types.Type):
        dtype = numpy_support.as_dtype(dtype)
    if shape == 0:
        return _dynamic_shared(self, dtype)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    res = self._allocations.get(caller)
    if res is None:
        res = self._allocations.setdefault(caller, _new(shape, dtype))
    return res


def _dynamic_shared(shared, dtype):
    """The launch's dynamic shared memory as an array of ``dtype`` (as many as fit)."""
    count = shared._dynshared_size // dtype.itemsize
    return np.frombuffer(shared._dynshared.data, dtype=dtype, count=count)


def _local_array(self, shape, dtype, alignment=None):
    """``cuda.local.array`` as the simulator's (a new array at each call), poisoned (POISON)."""
    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    if isinstance(dtype, nb_types.Type):
        dtype = numpy_support.as_dtype(dtype)
    return _new(shape, dtype)


# ------------------------------------------------------------------ poisoning
def _poison_value(dtype):
    """What an unwritten slot of ``dtype`` holds when poisoned: NaN for floats (complex: both
    parts), for signed integers a large negative number (-2**30, or the type's minimum if
    narrower: as an index out of any array's bounds, numpy's negative wrap-around included; as a
    count, an empty loop), for unsigned ones the type's maximum (uint32: all ones, NaN as packed
    tf32 or f16/bf16 bits), for booleans True. With a number for POISON: floats that value
    (clipped to the type's range), uint32 its float32 bits."""
    number = None if POISON == "nan" else float(POISON)
    if dtype.kind in "fc":
        if number is None:
            return np.nan
        return np.clip(number, -np.finfo(dtype).max, np.finfo(dtype).max)
    if dtype.kind == "i":
        return max(np.iinfo(dtype).min, -2 ** 30)
    if dtype.kind == "u":
        if number is not None and dtype.itemsize == 4:
            return np.float32(number).view(np.uint32)
        return np.iinfo(dtype).max
    if dtype.kind == "b":
        return True
    return None


def _poison(array):
    value = _poison_value(array.dtype)
    if value is not None:
        array.fill(value)


def _new(shape, dtype):
    array = np.empty(shape, dtype)
    if POISON:
        _poison(array)
    return array


def _poison_block_shared():
    """Before a block runs: every shared array of the launch poisoned again (the simulator keeps
    one array per source line for the whole launch, so a block would otherwise read what the
    previous block left where it wrote nothing), and the dynamic shared memory filled with 0xFF
    bytes (NaN in float16/32/64; -1 in integers: the one buffer serves every dtype)."""
    shared = _sim._get_kernel_context()._shared
    for array in list(shared._allocations.values()):
        _poison(array)
    shared._dynshared.fill(-1)


def install():
    _sim.BlockManager.run = _block_run
    _sim_api.FakeCUDAShared.array = _shared_array
    _sim_api.FakeCUDALocal.array = _local_array
