"""Host time to build one kernel launch's parameters, without a GPU (kernels/fast_launch.py).

    python -m benchmarks.launch_params

Session 19 replaced fast_launch's tuple of NumPy scalars, which CuPy's ``Function.__call__``
then wrapped one by one, with one ``struct.pack_into`` into a ctypes buffer that also holds the
driver's ``extra`` array. This times, per launch (median of 7 blocks of 20,000):

- before: the tuple of NumPy scalars (``flatten`` as it was at 6c4a07e, kept here only to be
  timed); CuPy's per-parameter wrapping that followed it is not included (it needs a GPU), so
  the saving measured here is a lower bound of the real one;
- packed: ``_Loaded.pack``: a fresh buffer, the plain numbers, one ``pack_into``;
- whole launch: ``fast_launch.launch`` with CuPy's module stubbed (device, stream, driver call:
  Python functions that return at once): the cache look-ups, dims and packing, the driver's
  own time excluded.

for pool_cuda's max_fwd (3 arrays + 12 scalars, benchmarks/launch_overhead.py's kernel) and a
kernel of 10 two-dimensional arrays and 2 scalars, with the arrays as NumPy arrays (their
address through ``backend.address``) and as stand-ins shaped like CuPy arrays (``data.ptr``).
"""

import sys
import types

import numpy as np

from benchmarks.launch_overhead import BLOCKS, _per_launch_us
from gpudl import backend

CALLS = 20000


def flatten_before(layout_, args):
    """The parameters as fast_launch built them before session 19 (a tuple of NumPy scalars);
    ``layout_`` as it was: an int per array, the NumPy scalar type per scalar."""
    flat = []
    for kind, arg in zip(layout_, args):
        if isinstance(kind, int):
            flat += [np.uint64(0), np.uint64(0), np.int64(arg.size),
                     np.int64(arg.dtype.itemsize), np.uint64(backend.address(arg))]
            flat += [np.int64(n) for n in arg.shape]
            flat += [np.int64(s) for s in arg.strides]
        else:
            flat.append(kind(arg))
    return tuple(flat)


class _CupyLike:
    """A NumPy array's fields as a CuPy array shows them (its address at ``data.ptr``)."""
    __slots__ = ("size", "dtype", "shape", "strides", "data")

    def __init__(self, array):
        self.size, self.dtype, self.shape, self.strides = (array.size, array.dtype, array.shape,
                                                           array.strides)
        self.data = types.SimpleNamespace(ptr=array.__array_interface__["data"][0])


def _cases():
    from gpudl.kernels import pool_cuda
    x, y, arg = np.zeros((1, 2, 2), np.float32), np.zeros((1, 1, 1), np.float32), \
        np.zeros((1, 1, 1), np.uint8)
    ints = tuple(np.int32(v) for v in (2, 2, 2, 2, 0, 0, 1, 1))
    ints += tuple(np.int64(v) for v in pool_cuda._magic(1) + pool_cuda._magic(1))
    yield ("max_fwd: 3 arrays + 12 scalars", pool_cuda._signature("max_fwd", np.float32, np.uint8),
           (x, y, arg), ints)
    arrays = tuple(np.zeros((4, 8), np.float32) for _ in range(10))
    yield ("10 arrays (2-d) + 2 scalars",
           "void(" + "float32[:, ::1], " * 10 + "int32, int64)", arrays, (np.int32(3), 7))


def main():
    from gpudl.kernels import fast_launch
    from numba.core import sigutils, types as nb
    from numba.np.numpy_support import as_dtype

    stub = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: 0),
        driver=types.SimpleNamespace(launchKernel=lambda *call: None),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0)))
    sys.modules["cupy"] = stub
    print(f"host time per launch to build the parameters (us, median of {BLOCKS} x {CALLS}; "
          "CPU only, driver call excluded)")
    print("| kernel | arrays as | before: NumPy-scalar tuple | packed: pack_into + extra | "
          "whole fast_launch.launch, driver stubbed |\n|---|---|---|---|---|")
    for label, signature, arrays, scalars in _cases():
        wanted, _ = sigutils.normalize_signature(signature)
        before_layout = tuple(t.ndim if isinstance(t, nb.Array) else as_dtype(t).type
                              for t in wanted)
        layout = fast_launch.layout(signature)
        loaded = fast_launch._Loaded(types.SimpleNamespace(ptr=0), layout)
        fast_launch._loaded[(label, signature, 0)] = loaded
        for kind, given in (("NumPy", arrays), ("CuPy-like", tuple(map(_CupyLike, arrays)))):
            args = given + scalars
            before = _per_launch_us(lambda: flatten_before(before_layout, args), CALLS)
            packed = _per_launch_us(lambda: loaded.pack(args), CALLS)
            whole = _per_launch_us(lambda: fast_launch.launch(label, signature, 1, 32, args),
                                   CALLS)
            print(f"| {label} | {kind} | {before:.2f} | {packed:.2f} | {whole:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
