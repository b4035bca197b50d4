"""``gd.cuda``: torch.cuda's queries, answered by the backend."""

from . import backend
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
