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
