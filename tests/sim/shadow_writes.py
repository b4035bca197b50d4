"""Opt-in diagnostic pytest plugin for the simulator suite: which shared-array reads find a slot
no thread of the block wrote, whatever the value does afterwards (the poisoning in sim_blocks.py
only shows reads whose value reaches an output). Not run in CI (every shared access goes through
Python). Needs the poisoning on (the default). Usage:

    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda PYTHONPATH=$PWD:$PWD/tests/sim \\
        python -m pytest tests/sim/test_conv_sim.py -m simulator -p shadow_writes

prints (file, line, function): count of such reads at the end. Shared arrays are numpy arrays
that keep a mask of written slots, cleared before each block (sim_blocks' re-poisoning);
writes by indexing and by the cp.async emulation count; the dynamic shared memory
(``cuda.shared.array(0, ...)``) keeps one mask per dtype it is viewed as (the LSTM kernels: one).
Not seen: reads of views larger than 8 slots (a view that large is taken as a buffer taken
apart, ``qss[p]``, ``sh[a:b]``; ldmatrix's row reads are 4)."""

import collections
import sys

import numpy as np

reads = collections.Counter()


class Tracked(np.ndarray):
    """A shared array with ``written``, a boolean mask of the same shape (None: untracked)."""

    def __array_finalize__(self, obj):
        self.written = None

    def __setitem__(self, key, value):
        np.ndarray.__setitem__(self, key, value)
        if self.written is not None:
            self.written[key] = True

    def __getitem__(self, key):
        out = np.ndarray.__getitem__(self, key)
        w = self.written
        if isinstance(out, Tracked) and out.ndim > 0:
            if w is not None:
                out.written = w[key]            # a view: shares the mask
            if out.size > 8:
                return out
        if w is not None and not np.all(w[key]):
            f = sys._getframe(1)
            reads[(f.f_code.co_filename.split("/")[-1], f.f_lineno, f.f_code.co_name)] += 1
        return out


def _cp_async_wait(n):
    """kernels/_mma_emulation.py's, marking the words it lands as written."""
    from gpudl.kernels import _mma_emulation as emu
    committed = emu._groups()[1]
    while len(committed) > n:
        for dst, to, data in committed.pop(0):
            dst.reshape(-1).view(np.uint8)[to:to + data.size] = data
            if isinstance(dst, Tracked) and dst.written is not None:
                first, end = to // dst.itemsize, (to + data.size) // dst.itemsize
                dst.written.reshape(-1)[first:end] = True


def pytest_sessionstart(session):
    import sim_blocks
    from gpudl.kernels import _mma_emulation, mma
    real_new, real_poison = sim_blocks._new, sim_blocks._poison

    def new(shape, dtype):
        array = real_new(shape, dtype)
        if sys._getframe(1).f_code.co_name == "_shared_array":
            array = array.view(Tracked)
            array.written = np.zeros(array.shape, bool)
        return array

    def poison(array):
        real_poison(array)
        if isinstance(array, Tracked) and array.written is not None:
            array.written[...] = False
    real_dynamic, real_block = sim_blocks._dynamic_shared, sim_blocks._poison_block_shared

    def dynamic_shared(shared, dtype):          # one mask a launch for each dtype
        array = real_dynamic(shared, dtype).view(Tracked)
        masks = shared.__dict__.setdefault("gpudl_written", {})
        array.written = masks.setdefault(array.dtype, np.zeros(array.shape, bool))
        return array

    def poison_block_shared():
        real_block()
        shared = sim_blocks._sim._get_kernel_context()._shared
        for mask in getattr(shared, "gpudl_written", {}).values():
            mask[...] = False

    sim_blocks._new, sim_blocks._poison = new, poison
    sim_blocks._poison_block_shared = poison_block_shared
    sim_blocks._dynamic_shared = dynamic_shared
    _mma_emulation.cp_async_wait = mma.cp_async_wait = _cp_async_wait


def pytest_sessionfinish(session):
    print("\nshadow_writes: reads of shared slots no thread of the block wrote:", file=sys.stderr)
    for where, count in sorted(reads.items()):
        print(f"  {where}: {count}", file=sys.stderr)
