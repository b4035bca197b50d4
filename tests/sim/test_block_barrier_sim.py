"""The simulator's blocks as tests/sim/sim_blocks.py runs them: a barrier-free kernel's threads
in turn on the launching thread, the others as greenlets on it that switch where one waits,
with the block barrier (in place of the simulator's busy poll) under the simulator's rules: every thread still
running must reach ``syncthreads()`` before any passes it, a thread that returned no longer
counts, and a thread that raises fails the launch with its thread and block named."""

import sys
import threading
import types

import greenlet
import numpy as np
import pytest

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

if backend.SIMULATOR:
    import sim_blocks
    # Module level on purpose: the simulator swaps the ``cuda`` global of a kernel's module.
    from numba import cuda

    @cuda.jit
    def _rotate_twice(x, out):
        """Each thread reads its right neighbour's value after a barrier, twice."""
        tile = cuda.shared.array(64, dtype=np.float32)
        t = cuda.threadIdx.x
        tile[t] = x[cuda.blockIdx.x * 64 + t]
        cuda.syncthreads()
        value = tile[(t + 1) % 64]
        cuda.syncthreads()
        tile[t] = value
        cuda.syncthreads()
        out[cuda.blockIdx.x * 64 + t] = tile[(t + 1) % 64]

    @cuda.jit
    def _neighbours_without_a_barrier(out):
        """A missing barrier: after one barrier, each thread writes its slot and reads its left
        neighbour's at once (written this phase by a thread earlier in thread order)."""
        tile = cuda.shared.array(32, dtype=np.float32)
        t = cuda.threadIdx.x
        cuda.syncthreads()
        tile[t] = t + 1.0
        out[cuda.blockIdx.x, t] = tile[(t + 31) % 32]         # no barrier between: a bug

    @cuda.jit
    def _half_return_early(out):
        """Threads 32.. return at once; the others meet at two barriers without them."""
        t = cuda.threadIdx.x
        if t >= 32:
            return
        out[t] = t
        cuda.syncthreads()
        right = out[(t + 1) % 32]
        cuda.syncthreads()
        out[t] += right

    @cuda.jit
    def _one_thread_raises(x):
        t = cuda.threadIdx.x
        cuda.syncthreads()
        if t == 5:
            x[1000] = 1.0                     # out of bounds: IndexError in the simulator
        cuda.syncthreads()
        x[t] = t


    @cuda.jit
    def _votes(out):
        """The barriers that also count, and or or a value over the block's threads."""
        t = cuda.threadIdx.x
        out[t, 0] = cuda.syncthreads_count(t % 3 == 0)
        out[t, 1] = cuda.syncthreads_and(t < 64)
        out[t, 2] = cuda.syncthreads_or(t == 5)
        out[t, 3] = cuda.syncthreads_and(t != 5)

    _PARTS = 37            # a size only _sum_of_all_threads's shared array has (see below)
    _runs_on = []          # the OS thread and greenlet each simulated thread ran on (the
                           # simulator runs kernels as Python, so a kernel can note it)

    @cuda.jit(device=True)
    def _wait():
        cuda.syncthreads()

    @cuda.jit
    def _sum_of_all_threads(out):
        """Every thread writes its slot of a shared array, then sums the whole array (each
        must see all 32 slots: one array per block)."""
        part = cuda.shared.array(_PARTS, dtype=np.float64)
        t = cuda.threadIdx.x
        part[t] = t + 1
        cuda.syncthreads()
        total = 0.0
        for i in range(_PARTS):
            total += part[i]
        out[t] = total

    @cuda.jit
    def _elementwise(x, out):
        """No barrier: its blocks' threads run in turn on the launching thread."""
        _runs_on.append((threading.get_ident(), greenlet.getcurrent()))
        i = cuda.threadIdx.x + cuda.blockDim.x * cuda.threadIdx.y
        b = cuda.blockIdx.x
        out[b, i] = x[b, i] * 2 + i

    @cuda.jit
    def _waits_in_a_device_function(x, out):
        _runs_on.append((threading.get_ident(), greenlet.getcurrent()))
        t = cuda.threadIdx.x
        _wait()
        out[t] = x[(t + 1) % 32]


def test_a_kernel_without_barriers_runs_its_threads_in_turn_on_the_calling_thread():
    x = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    out = np.zeros_like(x)
    _runs_on.clear()
    _elementwise[2, (4, 3)](x, out)
    np.testing.assert_array_equal(out, x * 2 + np.arange(12))
    assert _runs_on == [(threading.get_ident(), greenlet.getcurrent())] * 24
    assert not hasattr(threading.current_thread(), "threadIdx")     # nothing left behind


def test_a_barrier_in_a_device_function_makes_the_threads_greenlets():
    x = np.arange(32, dtype=np.float32)
    out = np.zeros_like(x)
    _runs_on.clear()
    _waits_in_a_device_function[1, 32](x, out)
    np.testing.assert_array_equal(out, np.roll(x, -1))
    assert {ident for ident, _ in _runs_on} == {threading.get_ident()}
    assert len({green for _, green in _runs_on} - {greenlet.getcurrent()}) == 32
    assert not hasattr(threading.current_thread(), "threadIdx")     # nothing left behind


def test_every_thread_waits_at_each_barrier():
    x = np.arange(128, dtype=np.float32)
    out = np.zeros_like(x)
    _rotate_twice[2, 64](x, out)
    want = np.concatenate([np.roll(x[:64], -2), np.roll(x[64:], -2)])
    np.testing.assert_array_equal(out, want)


def test_a_missing_barrier_is_caught_whichever_thread_writes_first():
    """Passes alternate between thread order and its reverse, and blocks start the other way
    from their neighbours, so every thread's read of its left neighbour's same-phase write finds
    the poison in one of two blocks: in thread order only, threads 1..31 would read the value."""
    if sim_blocks.POISON != "nan":
        pytest.skip("needs the NaN poison (GPUDL_SIM_POISON unset)")
    out = np.zeros((2, 32), np.float32)
    _neighbours_without_a_barrier[2, 32](out)
    assert np.isnan(out).any(axis=0).all(), out


def test_threads_that_returned_no_longer_count():
    out = np.zeros(64, dtype=np.int64)
    _half_return_early[1, 64](out)
    t = np.arange(32)
    np.testing.assert_array_equal(out, np.r_[t + (t + 1) % 32, np.zeros(32)])


def test_barriers_that_vote_see_every_thread():
    out = np.zeros((64, 4), dtype=np.int64)
    _votes[1, 64](out)
    np.testing.assert_array_equal(out, np.tile([22, 1, 1, 0], (64, 1)))


def test_a_thread_that_raises_fails_the_launch_naming_it():
    x = np.zeros(32, dtype=np.float32)
    with pytest.raises(IndexError, match=r"tid=\[5, 0, 0\] ctaid=\[0, 0, 0\]"):
        _one_thread_raises[1, 32](x)
    assert not hasattr(threading.current_thread(), "threadIdx")     # nothing left behind
    out = np.zeros(64, dtype=np.int64)                              # nor in the next launch
    _half_return_early[1, 64](out)
    t = np.arange(32)
    np.testing.assert_array_equal(out, np.r_[t + (t + 1) % 32, np.zeros(32)])


@pytest.fixture
def shared_array_creations_meet(monkeypatch):
    """The simulator creates a block's shared array when a thread first asks for it. Here its
    ``np.empty`` for an array of _PARTS float64 returns a NaN array only once a second thread
    called it too, or after 2 s: the interleaving where two threads both find no array for the
    line yet, which the GIL makes rare but load made happen (session 23: a cross entropy loss
    1.4 % off in CI once in ~10 runs; with NaN poisoning, 2 in ~25 runs, commit de1a2fe). The
    greenlets of sim_blocks switch only at waits, so it is forced here on two OS threads."""
    real_empty = np.empty
    second = threading.Event()
    calls = []

    def meeting(shape, *args, **kwargs):
        out = real_empty(shape, *args, **kwargs)
        if shape != _PARTS or sys._getframe(1).f_code.co_name not in ("array", "_new"):
            return out
        calls.append(threading.get_ident())
        if len(calls) == 1:
            second.wait(2)
        else:
            second.set()
        out.fill(np.nan)
        return out
    monkeypatch.setattr(np, "empty", meeting)
    return calls


def test_threads_that_ask_for_a_shared_array_at_once_get_the_same(shared_array_creations_meet):
    """Two threads that both find the line's shared array not created yet still share one (the
    simulator's own get-then-set gave the second its own array: its writes were lost to the
    others and the others' to it)."""
    shared = types.SimpleNamespace(_allocations={})
    got = []

    def ask():
        got.append(sim_blocks._shared_array(shared, _PARTS, np.float64))   # one line for both
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shared_array_creations_meet) == 2        # the interleaving was forced
    assert got[0] is got[1] and list(shared._allocations.values()) == [got[0]]


def test_a_block_shares_one_shared_array():
    out = np.zeros(_PARTS)
    _sum_of_all_threads[1, _PARTS](out)
    np.testing.assert_array_equal(out, np.full(_PARTS, _PARTS * (_PARTS + 1) / 2))
