"""The simulator suite poisons what a kernel did not write (tests/sim/sim_blocks.py, unless
GPUDL_SIM_POISON=0): shared arrays before each block runs, local arrays when created, NaN in
floats and a large sentinel in integers, so a kernel that reads a shared or local slot no thread
wrote in that block (on a GPU: whatever the memory held) fails its comparison, even where the
slot is then multiplied by zero (0 * NaN is NaN)."""

import numpy as np
import pytest

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

if backend.SIMULATOR:
    import sim_blocks
    # Module level on purpose: the simulator swaps the ``cuda`` global of a kernel's module.
    from numba import cuda
    from numba import float32, int32

    @cuda.jit
    def _reads_one_unwritten_slot(x, out):
        """Threads 0..30 of 32 write their slot (no barrier: they run in turn) and each reads
        its own, scaled by zero: thread 31 reads slot 31, which nobody wrote."""
        tile = cuda.shared.array(32, dtype=float32)
        t = cuda.threadIdx.x
        if t < 31:
            tile[t] = x[t]
        out[t] = x[t] + 0.0 * tile[t]

    @cuda.jit
    def _reads_one_unwritten_slot_after_a_barrier(x, out):
        """As above, but each reads its right neighbour's slot: thread 30 reads slot 31."""
        tile = cuda.shared.array(32, dtype=float32)
        t = cuda.threadIdx.x
        if t < 31:
            tile[t] = x[t]
        cuda.syncthreads()
        out[t] = x[t] + 0.0 * tile[(t + 1) % 32]

    @cuda.jit
    def _block_zero_writes_the_slot_the_others_read(out):
        """Block 0 writes slot 0; every block reads it (the simulator keeps one shared array
        per line for the whole launch, so block 1 would see block 0's value)."""
        tile = cuda.shared.array(1, dtype=float32)
        if cuda.blockIdx.x == 0:
            tile[0] = 1.0
        out[cuda.blockIdx.x] = tile[0]

    @cuda.jit
    def _unwritten_local_and_integer_shared(out, index):
        acc = cuda.local.array(4, dtype=float32)
        slots = cuda.shared.array(2, dtype=int32)
        acc[0] = 1.0
        out[0] = acc[0] + acc[3]
        index[0] = slots[1]

    @cuda.jit
    def _reads_dynamic_shared(out):
        dyn = cuda.shared.array(0, dtype=float32)
        out[0] = dyn[5]


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setattr(sim_blocks, "POISON", "nan")


@pytest.mark.parametrize("kernel, reader", [("_reads_one_unwritten_slot", 31),
                                            ("_reads_one_unwritten_slot_after_a_barrier", 30)])
def test_a_read_of_an_unwritten_shared_slot_fails_the_comparison(poisoned, kernel, reader):
    x = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    out = np.zeros(32, np.float32)
    globals()[kernel][1, 32](x, out)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(out, x)          # what the kernel means to compute
    assert np.isnan(out[reader]) and np.count_nonzero(np.isnan(out)) == 1


def test_each_block_starts_with_poisoned_shared_memory(poisoned):
    out = np.zeros(3, np.float32)
    _block_zero_writes_the_slot_the_others_read[3, 1](out)
    assert out[0] == 1.0 and np.isnan(out[1:]).all()


def test_local_arrays_integer_slots_and_dynamic_shared_memory_are_poisoned(poisoned):
    out, index = np.zeros(1, np.float32), np.zeros(1, np.int32)
    _unwritten_local_and_integer_shared[1, 1](out, index)
    assert np.isnan(out[0]) and index[0] == -2 ** 30
    _reads_dynamic_shared[1, 1, 0, 64](out)
    assert np.isnan(out[0])


if backend.SIMULATOR:
    @cuda.jit
    def _max_over_a_tile_one_short(x, out):
        """The maximum over 32 slots of which thread 31 wrote none: a NaN there loses every
        ``v > m`` comparison, a large finite poison wins it."""
        tile = cuda.shared.array(32, dtype=float32)
        t = cuda.threadIdx.x
        if t < 31:
            tile[t] = x[t]
        cuda.syncthreads()
        if t == 0:
            m = tile[0]
            for i in range(1, 32):
                if tile[i] > m:
                    m = tile[i]
            out[0] = m


def test_a_finite_poison_catches_what_a_comparison_drops(monkeypatch):
    x = np.random.default_rng(1).standard_normal(32).astype(np.float32)
    out = np.zeros(1, np.float32)
    monkeypatch.setattr(sim_blocks, "POISON", "nan")
    _max_over_a_tile_one_short[1, 32](x, out)
    assert out[0] == x[:31].max()                   # NaN dropped: the read goes unseen
    monkeypatch.setattr(sim_blocks, "POISON", "1e30")
    _max_over_a_tile_one_short[1, 32](x, out)
    assert out[0] == np.float32(1e30)
