"""CUDA graphs with PyTorch's API: ``gd.cuda.CUDAGraph``, ``gd.cuda.graph``, streams.

On a GPU (CuPy), ``with gd.cuda.graph(g):`` captures everything the body queues on a side stream
(CuPy's stream capture; Numba kernels launch on CuPy's current stream, so they are captured
too) into a ``cupy.cuda.Graph``, and ``g.replay()`` launches it. Memory allocated during the
capture comes from a private ``cupy.cuda.MemoryPool`` that the graph object keeps, as PyTorch's
private graph pools: nothing outside the graph is ever handed that memory, so the graph's
intermediate and output arrays stay valid for every replay. (CuPy's stream-ordered
``MemoryAsyncPool`` is not used: under capture, cudaMallocAsync becomes an allocation node whose
memory, if still held after the capture, as static outputs and ``.grad`` arrays are, must be
freed before the graph may be launched again, and CuPy instantiates graphs without
auto-free-on-launch.) The private pool calls cudaMalloc while capturing, which CUDA allows in
relaxed capture mode, the default here (PyTorch's "global" would refuse it).

On the CPU (and under Numba's simulator) the same API runs: the capture records the body as a
call list and ``replay()`` re-runs it in place (gpudl.graph_recorder).

Either way a capture refuses, naming the op: a host read (``item``, ``numpy``, a
synchronisation), random numbers on the GPU, a scheduler step, an Adam/AdamW step that counts
on the host (GPU: ``capturable=True`` needed), and on the CPU tensors whose values it could not
replay. Replays check that the tensors the graph reads still hold the arrays it captured (a new
shape needs a new capture) and that the stepped optimizers' Python hyperparameters (a float
``lr`` a scheduler changed) are those captured, which a GPU graph keeps. Device-side checks
(class indices in range) queued while capturing are kept by a GPU graph, and each replay queues
a copy of the values it computed, read at the next device read as in eager steps.
"""

import gc
import threading

from . import autograd, backend
from .graph_recorder import Hook, Recorder, check_statics, eager, refuse
from .tensor import Tensor

_active = None          # the CUDAGraph being captured (one capture at a time)


def _guard(what, why="reads the device"):
    """backend.capture_guard while capturing: a host sync or read by the capturing thread
    refuses (other threads, a data loader's, go on)."""
    if _active is not None and _active._thread == threading.get_ident():
        refuse(what, why)


def is_current_stream_capturing():
    """True inside ``with gd.cuda.graph(g):`` (on the GPU: CuPy's current stream captures)."""
    if backend._cupy is not None:
        return bool(backend._cupy.cuda.get_current_stream().is_capturing())
    return _active is not None


class _Watcher(Hook):
    """``autograd._capture`` during a GPU capture: runs everything eagerly (into the graph) and
    notes the tensors from before the capture that the graph reads, for replay's check."""

    def __init__(self):
        super().__init__()
        self.statics, self.born = {}, set()

    def apply(self, cls, args):
        for a in args:
            if isinstance(a, Tensor) and id(a._data) not in self.born:
                self.statics[id(a)] = (a, a._data)
        result = eager(cls.apply, *args)
        for t in (result if isinstance(result, tuple) else (result,)):
            self.born.add(id(t._data))
        return result

    def backward(self, tensor, grad, retain_graph):
        return eager(autograd._backward, tensor, grad, retain_graph)

    def accumulate(self, tensor, g):
        if tensor.grad is None:
            return eager(autograd._accumulate, tensor, g)
        tensor.grad._data += g      # in place, as torch: replays keep accumulating into .grad

    def call(self, kind, method, target, args, kwargs):
        if kind == "refused":
            refuse(method.__qualname__, "changes Python state (the learning rate) that the "
                   "graph bakes in")
        if kind == "optimizer" and method.__name__ == "step":
            _check_capturable(target)
        self.note_step(kind, method, target)
        return method(target, *args, **kwargs)


def _check_not_capturing(where):
    if _active is not None:
        raise RuntimeError(f"{where}: another CUDA graph is being captured; captures cannot "
                           "nest")


def _numba_config():
    try:                                    # numba-cuda's own config (numba-cuda >= 0.2x)
        from numba.cuda.core import config
    except ImportError:
        from numba.core import config
    return config


def _check_capturable(optimizer):
    """An optimizer that counts its steps on the host (Adam's bias correction) would replay the
    count of the capture forever: it must keep it on the device (``capturable=True``)."""
    name = type(optimizer).__name__
    if ("capturable" in optimizer.defaults or name in ("Adam", "AdamW")) and not all(
            group.get("capturable", False) for group in optimizer.param_groups):
        refuse(f"{name}.step", "counts its steps on the host, so every replay would repeat the "
               "captured step's bias correction; construct it with capturable=True")


_MODES = ("global", "thread_local", "relaxed")   # in cudaStreamCaptureMode's order (0, 1, 2)


class CUDAGraph:
    """A captured graph (torch.cuda.CUDAGraph): fill it with ``gd.cuda.graph(g)``, run it with
    ``replay()``. The memory the capture allocated lives as long as this object."""

    def __init__(self, keep_graph=False):
        self._graph = None          # GPU: the cupy.cuda.Graph
        self._recording = None      # CPU: the graph_recorder.Recording
        self._pool = None           # GPU: the private cupy.cuda.MemoryPool; CPU: the pool's
                                    # recorded forwards (graph_recorder.Recorder's forward_of)
        self._statics = self._numbers = self._checks = ()
        self._state = None          # what capture_end needs

    def capture_begin(self, pool=None, capture_error_mode="relaxed"):
        """Start capturing on the current stream (use ``gd.cuda.graph``, which also moves to a
        side stream)."""
        global _active
        if capture_error_mode not in _MODES:
            raise ValueError(f"capture_begin: capture_error_mode must be one of {_MODES}, got "
                             f"{capture_error_mode!r}")
        _check_not_capturing("capture_begin")
        if self._graph is not None or self._recording is not None:
            raise RuntimeError("capture_begin: this CUDAGraph holds a capture already; call "
                               "reset() first or make a new CUDAGraph")
        cupy = backend._cupy
        if cupy is None:
            # graphs sharing a pool share their recorded forwards, so that a backward graph
            # can walk back through a forward captured in another graph of the pool, as a
            # GPU graph reads the memory its pool shares (make_graphed_callables does this)
            self._pool = pool._pool if isinstance(pool, _PoolHandle) else {}
            recorder = Recorder(self._pool)
            self._state = recorder
        else:
            self._pool = pool._pool if isinstance(pool, _PoolHandle) else cupy.cuda.MemoryPool()
            allocator = cupy.cuda.using_allocator(self._pool.malloc)
            stream = cupy.cuda.get_current_stream()
            recorder = _Watcher()
            config = _numba_config()
            # Numba synchronises the stream named in a CuPy array's __cuda_array_interface__
            # before each launch using it: illegal on a capturing stream, and needless when
            # every kernel queues on that same stream
            sync = config.CUDA_ARRAY_INTERFACE_SYNC
            allocator.__enter__()
            try:
                stream.begin_capture(_MODES.index(capture_error_mode))   # cudaStreamCaptureMode
            except BaseException:
                allocator.__exit__(None, None, None)
                raise
            config.CUDA_ARRAY_INTERFACE_SYNC = 0
            self._state = (allocator, stream, recorder, config, sync, len(backend._deferred))
        _active = self
        self._thread = threading.get_ident()
        backend.capture_guard = _guard
        autograd._capture = recorder

    def capture_end(self, failed=False):
        """Finish the capture (``failed``: the body raised; discard it)."""
        global _active
        state, self._state = self._state, None
        _active = None
        backend.capture_guard = None
        autograd._capture = None
        if isinstance(state, Recorder):
            state.restore()
            if not failed:
                self._recording = state.recording()
            return
        allocator, stream, watcher, config, sync, deferred = state
        # device-side checks queued while capturing hold values the capture never computed:
        # off the queue, kept for replay(), which queues a copy of each replay's values
        checks = backend._deferred[deferred:]
        del backend._deferred[deferred:]
        try:
            graph = stream.end_capture()
        except Exception:
            if not failed:
                raise
            graph = None        # the body's own error is the one to report
        finally:
            config.CUDA_ARRAY_INTERFACE_SYNC = sync
            allocator.__exit__(None, None, None)
        if not failed:
            self._graph, self._statics = graph, list(watcher.statics.values())
            self._numbers, self._checks = watcher.numbers, checks

    def replay(self):
        """Run the captured work again: on the GPU one graph launch on the current stream, on
        the CPU the recorded calls, reading and writing the captured arrays."""
        if self._recording is not None:
            self._recording.replay()
            return
        if self._graph is None:
            raise RuntimeError("CUDAGraph.replay: nothing captured yet; fill the graph with "
                               "`with gd.cuda.graph(g): ...` first")
        check_statics(self._statics, self._numbers)
        self._graph.launch(backend._cupy.cuda.get_current_stream())
        # each replay's device-side checks (class indices in range), read at the next device
        # read as in eager steps; copied (queued after the launch, no sync), since the next
        # replay overwrites the graph's arrays
        for value, passed, make_error in self._checks:
            backend.defer_check(value.copy(), passed, make_error)

    def reset(self):
        """Drop the capture (and, once nothing else holds them, its arrays)."""
        self._graph = self._recording = self._pool = None
        self._statics = self._numbers = self._checks = ()

    def pool(self):
        """A handle to this graph's memory pool, to share with a later capture (``pool=``)."""
        return _PoolHandle(self._pool)


class _PoolHandle:
    """What ``graph_pool_handle()`` and ``CUDAGraph.pool()`` return: a private memory pool (on
    the CPU the forwards recorded by the graphs of the pool)."""

    def __init__(self, pool=None):
        if pool is None:
            pool = backend._cupy.cuda.MemoryPool() if backend._cupy is not None else {}
        self._pool = pool


def graph_pool_handle():
    """A new private memory pool handle for ``graph(..., pool=...)`` shared by several graphs."""
    return _PoolHandle()


class graph:
    """``with gd.cuda.graph(g):`` captures the body into CUDAGraph ``g`` (torch.cuda.graph).

    On the GPU it waits for the current stream, then captures on ``stream`` (default a new
    side stream); run the body eagerly a few times first (warm-up: kernels compile, cuBLAS sets
    up, optimizer state exists), as PyTorch asks. The body's work does not run: ``g.replay()``
    runs it. On the CPU the body runs once to be recorded and its effects on older tensors are
    undone, so that too counts as no step.
    """

    def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="relaxed"):
        if not isinstance(cuda_graph, CUDAGraph):
            raise TypeError(f"graph: expected a gd.cuda.CUDAGraph, got "
                            f"{type(cuda_graph).__name__}")
        self.cuda_graph, self.pool = cuda_graph, pool
        self.capture_error_mode = capture_error_mode
        self.stream = stream if stream is not None else (
            Stream() if backend._cupy is not None else None)

    def __enter__(self):
        _check_not_capturing("graph")
        if backend._cupy is not None:
            backend.host_sync("graph (waits for the device before capturing)")
            backend._cupy.cuda.get_current_stream().synchronize()
            gc.collect()                # free what the warm-up left before memory is pooled
            self.stream.wait_stream(current_stream())
            self.stream.__enter__()
        try:
            self.cuda_graph.capture_begin(self.pool, self.capture_error_mode)
        except BaseException:
            if self.stream is not None:
                self.stream.__exit__(None, None, None)
            raise

    def __exit__(self, kind, value, traceback):
        try:
            self.cuda_graph.capture_end(failed=kind is not None)
        finally:
            if self.stream is not None:
                self.stream.__exit__(None, None, None)
        return False


class Stream:
    """A CUDA stream (torch.cuda.Stream): ``with stream:`` makes it current; on the CPU a
    stand-in whose waits and synchronisations do nothing."""

    def __init__(self, device=None, priority=0, _cupy_stream=None):
        cupy = backend._cupy
        self._stream = _cupy_stream if _cupy_stream is not None else (
            cupy.cuda.Stream(non_blocking=True) if cupy is not None else None)
        self._outer = []

    def wait_stream(self, other):
        """Later work queued here waits for what ``other`` has queued so far."""
        if self._stream is not None and other._stream is not None:
            self._stream.wait_event(other._stream.record())

    def synchronize(self):
        if self._stream is not None:
            backend.host_sync("Stream.synchronize")
            self._stream.synchronize()

    def __enter__(self):
        if self._stream is not None:
            self._outer.append(backend._cupy.cuda.get_current_stream())
            self._stream.use()
        return self

    def __exit__(self, *exc):
        if self._stream is not None:
            self._outer.pop().use()
        return False


def current_stream(device=None):
    """The stream work is queued on now."""
    cupy = backend._cupy
    return Stream(_cupy_stream=cupy.cuda.get_current_stream() if cupy is not None else None)


def stream(s):
    """``with gd.cuda.stream(s):`` queues the body's work on ``s`` (None: unchanged)."""
    return s if s is not None else _NoStream()


class _NoStream:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
