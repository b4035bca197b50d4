"""``gd.cuda``: torch.cuda's queries, answered by the backend."""

from . import backend
from . import cuda_amp as amp  # noqa: F401  (torch.cuda.amp's deprecated names)
from .cuda_graphs import (CUDAGraph, Stream, current_stream, graph, graph_pool_handle,  # noqa: F401
                          is_current_stream_capturing, stream)
from .graphed_callables import make_graphed_callables  # noqa: F401


def is_available():
    """True when tensors can live on the cuda device (a GPU, or Numba's simulator if chosen)."""
    return backend.cuda_available()


def synchronize():
    """Wait for every kernel queued on the current stream (a no-op on the CPU)."""
    backend.synchronize()


def device_count():
    return backend.device_count()


def sync_count():
    """How many device-to-host transfers and synchronisations gpudl has made so far: a training
    step on the CUDA path should add none (reads queue until the user asks for a value)."""
    return backend.sync_count()


# session 11, tensor-misc: the cuda generator's state
def get_rng_state(device="cuda"):
    """The cuda generator's state as a uint8 tensor (for set_rng_state)."""
    from .global_state import cuda_get_rng_state
    return cuda_get_rng_state(device)


def set_rng_state(new_state, device="cuda"):
    """Restore the cuda generator's state from get_rng_state: the same numbers follow."""
    from .global_state import cuda_set_rng_state
    cuda_set_rng_state(new_state, device)


# torch.cuda's seeding, memory and device queries
def manual_seed(seed):
    """Seed the cuda device's generators (the cpu's go on); nothing without the device."""
    from .random import manual_seed_cuda
    manual_seed_cuda(seed)


manual_seed_all = manual_seed      # one cuda device per process


def _pool():
    """CuPy's memory pool on a GPU; None elsewhere (the cpu, Numba's simulator)."""
    return backend._cupy.get_default_memory_pool() if backend._cupy is not None else None


def empty_cache():
    """Give the memory pool's unused blocks back to the driver (CuPy's ``free_all_blocks``,
    torch's caching-allocator release); nothing without a GPU."""
    pool = _pool()
    if pool is not None:
        pool.free_all_blocks()


def memory_allocated(device=None):
    """Bytes of GPU memory held by live arrays (CuPy's pool, ``used_bytes``); 0 without a GPU."""
    pool = _pool()
    return 0 if pool is None else int(pool.used_bytes())


def memory_reserved(device=None):
    """Bytes of GPU memory the pool holds, in use or cached (``total_bytes``); 0 without one."""
    pool = _pool()
    return 0 if pool is None else int(pool.total_bytes())


def current_device():
    """The index of the cuda device (gpudl uses one per process)."""
    _require("current_device")
    return 0


def get_device_name(device=None):
    """The GPU's name (``"NVIDIA H100 80GB HBM3"``); Numba's simulator calls itself so."""
    _require("get_device_name")
    if backend._cupy is None:
        return "Numba CUDA simulator"
    props = backend._cupy.cuda.runtime.getDeviceProperties(backend._cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else name


def _require(what):
    if not is_available():
        raise RuntimeError(f"cuda.{what}: the cuda device is not available in this process "
                           "(no usable GPU; see GPUDL_DEVICE in the README)")
