"""One kernel launch for the update of many parameters (torch's multi-tensor apply).

A fused per-parameter update is one CuPy ElementwiseKernel per parameter: 26 launches for the
AdamW step of a 2-layer transformer, each a node a CUDA graph replays and tens of microseconds of
host time in an eager step. Here the same update lines run over up to ``SLOTS`` tensors of one
dtype in one launch. The kernel takes a table of their addresses and sizes by value: a C struct
passed as a one-element NumPy structured array (CuPy passes such an array by value), so nothing
is copied to the device and a captured CUDA graph keeps the table in its kernel node. Each block
updates up to ``CHUNK`` elements of one tensor, the tensor found by scanning the table's
cumulative block counts.

The tensors must be C-contiguous arrays of the kernel's dtype (the callers fall back to the
per-parameter kernel otherwise); an update's arithmetic is the per-parameter kernel's, line for
line, so both give the same bits.
"""

import functools
from dataclasses import dataclass

import numpy as np

from . import backend

SLOTS = 32           # tensors per launch: the table is ~2 KB of the 4 KB of kernel parameters
CHUNK = 4096         # elements per block: 16 per thread
THREADS = 256


@dataclass(frozen=True)
class Update:
    """An update of every element of a set of same-shaped arrays, per tensor.

    ``arrays_in`` are bound per element as ``const T &name``, ``arrays_out`` as ``T &name``;
    ``pointers`` are further per-tensor addresses (``(type, name)``) that ``prologue`` may read,
    unbound per element. ``scalars`` are kernel parameters, the same for every tensor (CuPy's
    ``"T eps, float64 lr"`` syntax); ``tensor_scalars`` are numbers given per tensor (in the
    table, rounded to T on the host), bound as ``const T``. ``prologue`` runs once per thread
    before the element loop (it may define further per-tensor values), ``lines`` once per
    element, ``epilogue`` once per thread after the loop; ``block_in_tensor`` numbers a tensor's
    blocks from 0."""
    name: str
    arrays_in: tuple
    arrays_out: tuple
    scalars: str
    lines: tuple
    tensor_scalars: tuple = ()
    pointers: tuple = ()
    prologue: tuple = ()
    epilogue: tuple = ()

    @property
    def columns(self):
        """The table's address columns, in order: inputs, outputs, then ``pointers``."""
        return self.arrays_in + self.arrays_out + tuple(name for _, name in self.pointers)


@functools.cache
def table_dtype(columns, tensor_scalars, dtype):
    """The NumPy layout of the kernel's ``Table`` struct (C's: fields in order, each aligned) for
    ``dtype`` (T) tensors."""
    return np.dtype([("address", np.uint64, (columns, SLOTS)),
                     ("scalar", dtype, (max(tensor_scalars, 1), SLOTS)),
                     ("size", np.int64, (SLOTS,)),
                     ("block_end", np.uint32, (SLOTS,)),
                     ("count", np.uint32)], align=True)


def struct_source(columns, tensor_scalars, dtype):
    """The C declaration matching ``table_dtype(columns, tensor_scalars, dtype)`` (after the
    typedef of T), with a compile-time check of its size."""
    size = table_dtype(columns, tensor_scalars, dtype).itemsize
    return ("struct Table {\n"
            f"  unsigned long long address[{columns}][{SLOTS}];\n"
            f"  T scalar[{max(tensor_scalars, 1)}][{SLOTS}];\n"
            f"  long long size[{SLOTS}];\n"
            f"  unsigned int block_end[{SLOTS}];\n"
            "  unsigned int count;\n"
            "};\n"
            f'static_assert(sizeof(Table) == {size}, "the table\'s NumPy layout");\n')


@functools.cache
def source(update, dtype):
    """CUDA C of ``update`` for ``dtype`` (float32 or float64) tensors."""
    columns = update.columns
    scalar_params = ", " + update.scalars if update.scalars.strip() else ""
    bases = [f"T* _base_{name} = (T*)table.address[{k}][slot] + start;"
             for k, name in enumerate(update.arrays_in + update.arrays_out)]
    bases += [f"{ctype_}* {name} = ({ctype_}*)table.address[{k}][slot];"
              for k, (ctype_, name) in enumerate(update.pointers,
                                                 len(update.arrays_in + update.arrays_out))]
    given = [f"const T {name} = table.scalar[{k}][slot];"
             for k, name in enumerate(update.tensor_scalars)]
    bindings = [f"const T &{name} = _base_{name}[j];" for name in update.arrays_in]
    bindings += [f"T &{name} = _base_{name}[j];" for name in update.arrays_out]
    body = "\n    ".join(bindings + list(update.lines))
    setup = "\n  ".join(bases + given + list(update.prologue))
    return (f"typedef {_CTYPES[dtype]} T;\ntypedef float float32;\ntypedef double float64;\n"
            + struct_source(len(columns), len(update.tensor_scalars), dtype)
            + f'extern "C" __global__ void {update.name}(const Table table{scalar_params}) {{\n'
            "  unsigned int slot = 0;\n"
            "  while (slot + 1 < table.count && blockIdx.x >= table.block_end[slot]) ++slot;\n"
            "  const unsigned int block_in_tensor = blockIdx.x - "
            "(slot ? table.block_end[slot - 1] : 0);\n"
            f"  const long long start = (long long)block_in_tensor * {CHUNK};\n"
            f"  const int n = (int)min((long long){CHUNK}, table.size[slot] - start);\n"
            f"  {setup}\n"
            "  for (int j = threadIdx.x; j < n; j += blockDim.x) {\n"
            f"    {body}\n"
            "  }\n"
            + "".join(f"  {line}\n" for line in update.epilogue) + "}\n")


def blocks_of(size):
    """The blocks a tensor of ``size`` elements takes (an int, or an array of them)."""
    return -(-size // CHUNK)


_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def supports(dtype):
    return dtype in _CTYPES


# one thread per tensor adds one to its 0-d float32 step count (capturable optimizers)
STEP_INCREMENT = Update("gpudl_mt_step_increment", (), ("step",), "", ("step += 1;",))


def launch(update, tensors, scalars, tensor_scalars=None):
    """Run ``update`` over ``tensors`` (per tensor, the arrays of ``update.columns`` in order,
    all C-contiguous and of one dtype; the ``pointers`` columns may be of their own type) with
    the group ``scalars`` (values in the order of ``update.scalars``) and, per tensor,
    ``tensor_scalars`` (tuples of numbers). One launch per ``SLOTS`` tensors."""
    dtype = tensors[0][0].dtype
    kernel = backend.raw_kernel(source(update, dtype), update.name)
    arguments = _typed(update.scalars, scalars, dtype)
    layout = table_dtype(len(update.columns), len(update.tensor_scalars), dtype)
    sized = [(arrays, tensor_scalars[i] if tensor_scalars else ())
             for i, arrays in enumerate(tensors) if arrays[0].size]
    for first in range(0, len(sized), SLOTS):
        table, blocks = _table(layout, sized[first:first + SLOTS])
        kernel((blocks,), (THREADS,), (table, *arguments))


def _table(layout, tensors):
    """The one-element table of ``tensors`` ((arrays, numbers) per tensor) and its block count,
    filled a field at a time (per-item assignment into a structured array costs ~1 us each)."""
    table = np.zeros(1, layout)
    count = len(tensors)
    table["address"][0, :, :count] = np.array(
        [[backend.address(a) for a in arrays] for arrays, _ in tensors], np.uint64).T
    if tensors[0][1]:
        table["scalar"][0, :, :count] = np.array([numbers for _, numbers in tensors]).T
    sizes = np.array([arrays[0].size for arrays, _ in tensors], np.int64)
    block_end = np.cumsum(blocks_of(sizes))
    table["size"][0, :count] = sizes
    table["block_end"][0, :count] = block_end
    table["count"] = count
    return table, int(block_end[-1])


def _typed(declared, values, dtype):
    """``values`` as the NumPy scalars of the declared parameter types (T: ``dtype``): CuPy
    passes a raw kernel's scalars as their own type, without casting them."""
    types = [spec.split()[0] for spec in declared.split(",") if spec.strip()]
    if len(types) != len(values):
        raise ValueError(f"multi_tensor: {len(types)} scalars declared, {len(values)} given")
    return tuple((dtype.type if t == "T" else np.dtype(t).type)(v) for t, v in zip(types, values))


def batchable(*arrays):
    """Whether ``arrays`` (a tensor's row of a launch) can be updated by a multi-tensor launch:
    device arrays of one supported dtype and one shape, all C-contiguous."""
    first = arrays[0]
    return supports(first.dtype) and all(
        backend.is_device_array(a) and a.dtype == first.dtype and a.shape == first.shape
        and a.flags.c_contiguous for a in arrays)
