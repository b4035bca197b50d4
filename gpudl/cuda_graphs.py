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
auto-free-on-launch.) The private pool calls cudaMalloc while capturing, which CUDA allows only
in relaxed capture mode: as PyTorch's allocator does, the pool's malloc swaps the thread's mode
to relaxed around it, so the capture can use PyTorch's default "global" mode.

On the CPU (and under Numba's simulator) the same API runs: the capture records the body as a
call list and ``replay()`` re-runs it in place (gpudl.graph_recorder).

Either way a capture refuses, naming the op: a host read (``item``, ``numpy``, a
synchronisation), random numbers on the GPU other than dropout's (whose device-side states
each replay advances: kernels/dropout_cuda.py), a scheduler step, an Adam/AdamW step that counts
on the host (GPU: ``capturable=True`` needed), and on the CPU tensors whose values it could not
replay. Replays check that the tensors the graph reads still hold the arrays it captured (a new
shape needs a new capture) and that the stepped optimizers' Python hyperparameters (a float
``lr`` a scheduler changed) are those captured, which a GPU graph keeps. Device-side checks
(class indices in range) queued while capturing are kept by a GPU graph, and each replay queues
a copy of the values it computed, read at the next device read as in eager steps.

The rest of torch.cuda.CUDAGraph's API is here with its rules: ``keep_graph`` and
``instantiate()``, ``enable_debug_mode()`` and ``debug_dump(path)`` (a DOT file),
``raw_cuda_graph()`` and ``raw_cuda_graph_exec()`` (CuPy's handles; none on the CPU path),
``get_graph_data()`` (gpudl.graph_debug), and ``graph``'s ``capture_error_mode``,
``check_input_liveness`` and ``enable_annotations``.
"""

import contextlib
import gc
import threading

from . import autograd, backend
from .graph_debug import Inspection, describe_backward, describe_call, describe_forward
from .graph_recorder import Hook, Recorder, check_statics, eager, refuse
from .tensor import Tensor

_active = None          # the CUDAGraph being captured (one capture at a time)


def _guard(what, why=None):
    """backend.capture_guard while capturing: a host sync or read by the capturing thread
    refuses, in every mode (it would wait on or read from the capturing stream). ``why`` None
    is a device sync (backend.host_sync): in "global" mode other threads' refuse too, as CUDA
    forbids them the unsafe calls; otherwise other threads (a data loader's) go on."""
    if _active is None:
        return
    if _active._thread == threading.get_ident():
        refuse(what, why or "reads the device")
    if why is None and _active._mode == "global":
        raise RuntimeError(
            f"{what}: waits for the device while another thread captures a CUDA graph in "
            "capture_error_mode='global', which forbids every thread such calls; capture with "
            "capture_error_mode='thread_local' or 'relaxed' to let other threads sync")


def is_current_stream_capturing():
    """True inside ``with gd.cuda.graph(g):`` (on the GPU: CuPy's current stream captures)."""
    if backend._cupy is not None:
        return bool(backend._cupy.cuda.get_current_stream().is_capturing())
    return _active is not None


class _Watcher(Hook):
    """``autograd._capture`` during a GPU capture: runs everything eagerly (into the graph) and
    notes the tensors from before the capture that the graph reads, for replay's check."""

    def __init__(self, check_liveness=False):
        super().__init__(check_liveness)
        self.born = set()
        self.nodes = []     # graph_debug.describe_* of each call, for debug_dump

    def apply(self, cls, args):
        for a in args:
            if isinstance(a, Tensor) and id(a._data) not in self.born:
                self.note_static(a, a._data)
        result = eager(cls.apply, *args)
        results = result if isinstance(result, tuple) else (result,)
        for t in results:
            self.born.add(id(t._data))
        self.nodes.append(describe_forward(cls, [getattr(a, "_data", a) for a in args],
                                           [t._data for t in results]))
        return result

    def backward(self, tensor, grad, retain_graph):
        order = [] if tensor.grad_fn is None else autograd._topological_order(tensor.grad_fn)
        self.nodes.append(describe_backward(order))
        return eager(autograd._backward, tensor, grad, retain_graph)

    def accumulate(self, tensor, g, owned=False):
        if tensor.grad is None:
            return eager(autograd._accumulate, tensor, g, owned)
        tensor.grad._data += g      # in place, as torch: replays keep accumulating into .grad

    def call(self, kind, method, target, args, kwargs):
        if kind == "refused":
            refuse(method.__qualname__, "changes Python state (the learning rate) that the "
                   "graph bakes in")
        if kind == "optimizer" and method.__name__ == "step":
            _check_capturable(target)
        self.note_step(kind, method, target)
        self.nodes.append(describe_call(method, target))
        return method(target, *args, **kwargs)


def _check_not_capturing(where):
    if _active is not None:
        raise RuntimeError(f"{where}: another CUDA graph is being captured; captures cannot "
                           "nest")


def _check_capturable(optimizer):
    """An optimizer that counts its steps on the host (Adam's bias correction) would replay the
    count of the capture forever: it must keep it on the device (``capturable=True``)."""
    name = type(optimizer).__name__
    if ("capturable" in optimizer.defaults or name in ("Adam", "AdamW")) and not all(
            group.get("capturable", False) for group in optimizer.param_groups):
        refuse(f"{name}.step", "counts its steps on the host, so every replay would repeat the "
               "captured step's bias correction; construct it with capturable=True")


_MODES = ("global", "thread_local", "relaxed")   # in cudaStreamCaptureMode's order (0, 1, 2)


def _check_mode(where, capture_error_mode):
    if not isinstance(capture_error_mode, str) or capture_error_mode not in _MODES:
        expected = ", ".join(map(repr, _MODES))
        raise ValueError(f"{where}: capture_error_mode must be one of {expected}, got "
                         f"{capture_error_mode!r}")


def _check_flag(where, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool, got {value!r} "
                        f"({type(value).__name__})")


def _driver():
    """cuda.bindings' driver API (numba-cuda's), which sets a thread's capture mode for CuPy
    too (per-thread driver state)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        raise RuntimeError("a 'global' or 'thread_local' capture needs the cuda.bindings "
                           "package (numba-cuda's) to let the graph allocate; install it, or "
                           "capture with capture_error_mode='relaxed'") from None
    return driver


@contextlib.contextmanager
def relaxed_capture_mode():
    """This thread's capture mode relaxed inside the block, as PyTorch's allocator does around
    cudaMalloc (cudaMallocMaybeCapturing): a "global" or "thread_local" capture forbids
    cudaMalloc."""
    driver = _driver()
    relaxed = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
    err, outer = driver.cuThreadExchangeStreamCaptureMode(relaxed)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"cuThreadExchangeStreamCaptureMode: {err!r}")
    try:
        yield
    finally:
        driver.cuThreadExchangeStreamCaptureMode(outer)


def _relaxed_malloc(malloc):
    """The private pool's malloc in ``relaxed_capture_mode``: a pool growing during a capture
    calls cudaMalloc. Refused at once without cuda.bindings, rather than at the first malloc."""
    _driver()

    def malloc_relaxed(size):
        with relaxed_capture_mode():
            return malloc(size)
    return malloc_relaxed


_exec_ids = iter(range(1, 1 << 32))     # a recorded graph's instantiations, numbered as CUDA's


class _GraphExec:
    """A cudaGraphExec_t that ``instantiate()`` made from a kept graph (CuPy's Graph owns the
    one it made at the end of the capture); destroyed with this object."""

    def __init__(self, raw_graph):
        self.runtime = backend._cupy.cuda.runtime
        self.handle = self.runtime.graphInstantiate(raw_graph)

    def launch(self, stream):
        self.runtime.graphLaunch(self.handle, stream.ptr)

    def __del__(self):
        try:
            self.runtime.graphExecDestroy(self.handle)
        except Exception:       # at interpreter exit CUDA may be gone: nothing left to free
            pass


class CUDAGraph(Inspection):
    """A captured graph (torch.cuda.CUDAGraph): fill it with ``gd.cuda.graph(g)``, run it with
    ``replay()``. The memory the capture allocated lives as long as this object.

    ``keep_graph`` as PyTorch's: False instantiates the graph at the end of the capture; True
    keeps the raw graph (``raw_cuda_graph()``, ``debug_dump``, ``get_graph_data``) and
    instantiates it at ``instantiate()``, or at the first ``replay()`` if that was not called.
    On the GPU, ``instantiate()`` makes a new cudaGraphExec_t from the raw graph, so changes made
    to it through ``raw_cuda_graph()`` take effect. On the CPU the graph is a recorded call list
    (gpudl.graph_recorder) with no CUDA handles: the same rules hold, instantiating only marks it
    ready.
    """

    def __init__(self, keep_graph=False):
        _check_flag("CUDAGraph", "keep_graph", keep_graph)
        self._keep_graph, self._debug = keep_graph, False
        self._graph = None          # GPU: the cupy.cuda.Graph
        self._recording = None      # CPU: the graph_recorder.Recording
        self._pool = None           # GPU: the private cupy.cuda.MemoryPool; CPU: the pool's
                                    # recorded forwards (graph_recorder.Recorder's forward_of)
        self._statics = self._numbers = self._checks = ()
        self._state = None          # what capture_end needs
        self._clear_instance()

    def _clear_instance(self):
        self._exec = None           # GPU with keep_graph: the _GraphExec of instantiate()
        self._exec_id = None        # the instantiation's number; None: not instantiated
        self._nodes = None          # GPU: the recorded description, where CuPy has no DOT print
        self._dumpable = False      # debug mode was on at the end of the capture, or keep_graph

    def capture_begin(self, pool=None, capture_error_mode="global", check_input_liveness=False):
        """Start capturing on the current stream (use ``gd.cuda.graph``, which also moves to a
        side stream). ``capture_error_mode`` and ``check_input_liveness`` as in ``graph``."""
        global _active
        _check_mode("capture_begin", capture_error_mode)
        _check_flag("capture_begin", "check_input_liveness", check_input_liveness)
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
            recorder = Recorder(self._pool, check_input_liveness)
            self._state = recorder
        else:
            memory = pool._pool if isinstance(pool, _PoolHandle) else cupy.cuda.MemoryPool()
            malloc = memory.malloc
            if capture_error_mode != "relaxed":
                malloc = _relaxed_malloc(malloc)
            allocator = cupy.cuda.using_allocator(malloc)
            stream = cupy.cuda.get_current_stream()
            recorder = _Watcher(check_input_liveness)
            allocator.__enter__()
            try:
                stream.begin_capture(_MODES.index(capture_error_mode))   # cudaStreamCaptureMode
            except BaseException:
                allocator.__exit__(None, None, None)
                raise
            self._pool = memory
            self._state = (allocator, stream, recorder, len(backend._deferred))
        _active = self
        self._thread, self._mode = threading.get_ident(), capture_error_mode
        backend.capture_guard = _guard
        autograd._capture = recorder

    def capture_end(self, failed=False):
        """Finish the capture (``failed``: the body raised; discard it). Without ``keep_graph``
        the graph is instantiated here."""
        global _active
        state, self._state = self._state, None
        _active = None
        backend.capture_guard = None
        autograd._capture = None
        if isinstance(state, Recorder):
            state.restore()
            if not failed:
                self._recording = state.recording()
                self._captured()
            return
        allocator, stream, watcher, deferred = state
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
            allocator.__exit__(None, None, None)
        if not failed:
            self._graph, self._statics = graph, list(watcher.statics.values())
            self._numbers, self._checks = watcher.numbers, checks
            self._captured(watcher.nodes)

    def _captured(self, nodes=None):
        self._nodes = nodes
        self._dumpable = self._debug or self._keep_graph
        if not self._keep_graph:
            self.instantiate()

    def instantiate(self):
        """Instantiate the captured graph (torch's rules): ``capture_end`` does it without
        ``keep_graph``; with it, call this before ``replay`` (else the first replay does), and
        again after changing the raw graph, which makes a new cudaGraphExec_t (the one
        ``raw_cuda_graph_exec()`` returned before is destroyed)."""
        if self._graph is None and self._recording is None:
            raise RuntimeError("CUDAGraph.instantiate: capture_end() must have been called "
                               "before calling instantiate (nothing captured yet)")
        if self._exec_id is not None and not self._keep_graph:
            raise RuntimeError("CUDAGraph.instantiate: the graph was instantiated at the end of "
                               "its capture; instantiate() is for graphs made with "
                               "keep_graph=True")
        if self._graph is not None and self._keep_graph:
            self._exec = _GraphExec(self._graph.graph)
        self._exec_id = next(_exec_ids)

    def replay(self):
        """Run the captured work again: on the GPU one graph launch on the current stream, on
        the CPU the recorded calls, reading and writing the captured arrays. A graph kept with
        ``keep_graph=True`` and not yet instantiated is instantiated first."""
        self._check_captured("replay")
        if self._exec_id is None:
            self.instantiate()
        if self._recording is not None:
            self._recording.replay()
            return
        check_statics(self._statics, self._numbers)
        stream = backend._cupy.cuda.get_current_stream()
        (self._exec or self._graph).launch(stream)
        # each replay's device-side checks (class indices in range), read at the next device
        # read as in eager steps; copied (queued after the launch, no sync), since the next
        # replay overwrites the graph's arrays
        for value, passed, make_error in self._checks:
            backend.defer_check(value.copy(), passed, make_error)

    def reset(self):
        """Drop the capture (and, once nothing else holds them, its arrays); ``keep_graph``
        and debug mode stay as they were."""
        self._graph = self._recording = self._pool = None
        self._statics = self._numbers = self._checks = ()
        self._clear_instance()

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

    ``capture_error_mode`` (PyTorch's default "global", "thread_local" or "relaxed") is CUDA's
    stream capture mode: which threads may make unsafe calls (a device sync, cudaMalloc) during
    the capture. The capturing thread never may sync (its reads are refused, naming the op, in
    every mode); "global" also refuses other threads' device syncs, "thread_local" and
    "relaxed" let them run. The graph's private pool allocates in every mode (its cudaMalloc
    runs relaxed, as PyTorch's allocator does).

    ``check_input_liveness=True`` (PyTorch's): the graph notes the tensors from before the
    capture that it reads, and a replay after one was deleted raises, saying where the capture
    read it and where it was deleted. (The graph keeps their arrays, so this is no use after
    free as in PyTorch, but the same bug: nothing the script holds can copy new values into the
    graph's input any more, and every replay would read the captured ones.)

    ``enable_annotations`` is accepted for PyTorch's signature: PyTorch's annotations are
    labels given with its private ``torch.cuda._graph_annotations.mark_kernels`` scopes and
    matched to CUPTI tools ids; gpudl has no such scopes, so there is nothing to record.
    """

    def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global",
                 enable_annotations=False, check_input_liveness=False):
        if not isinstance(cuda_graph, CUDAGraph):
            raise TypeError(f"graph: expected a gd.cuda.CUDAGraph, got "
                            f"{type(cuda_graph).__name__}")
        _check_mode("graph", capture_error_mode)
        _check_flag("graph", "enable_annotations", enable_annotations)
        _check_flag("graph", "check_input_liveness", check_input_liveness)
        self.cuda_graph, self.pool = cuda_graph, pool
        self.capture_error_mode = capture_error_mode
        self.enable_annotations = enable_annotations
        self.check_input_liveness = check_input_liveness
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
            self.cuda_graph.capture_begin(self.pool, self.capture_error_mode,
                                          self.check_input_liveness)
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
        if value is not None and self.capture_error_mode != "relaxed" \
                and "STREAMCAPTURE" in str(value).upper().replace("_", "") \
                and hasattr(value, "add_note"):         # Python >= 3.11
            value.add_note(
                f"gd.cuda.graph: CUDA refused a call as unsafe while capturing in "
                f"capture_error_mode={self.capture_error_mode!r} (a synchronisation, or a first "
                "use that loads a kernel or allocates outside the graph's pool): warm the body "
                "up with a few eager runs before capturing, as PyTorch asks, or capture with "
                "capture_error_mode='relaxed'")
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
