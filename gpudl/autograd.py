"""Reverse-mode autograd: ArrayFunction, the recorded graph, and the backward walk.

A differentiable op of gpudl's is an ``ArrayFunction`` with ``forward(ctx, *args)`` and
``backward(ctx, *grads)`` working on raw arrays (NumPy or CuPy); users' custom ops subclass
``Function`` (gpudl.custom_function), written with Tensors as in torch and run as one of these.
``ArrayFunction.apply`` unwraps Tensor arguments, runs forward,
and, when any input needs a gradient, records a ``Node`` on the outputs. ``backward`` walks the
recorded nodes in reverse topological order with an explicit stack (an unrolled RNN makes graphs of
10,000+ nodes: no recursion), sums the gradients arriving at each output, and accumulates into the
``.grad`` of leaf tensors. Saved arrays are freed after the walk unless ``retain_graph=True``.
``create_graph=True`` (higher-order gradients) walks the same graph in gpudl.higher_order, with
gradient Tensors and each op's derivative written with Tensor ops.

Grad mode is per thread, as in PyTorch: ``no_grad`` in one thread (backward's own included) never
changes what another thread records, and every new thread starts with recording enabled.

In-place edits are detected through version counters. Every tensor holds a one-element list, its
version counter, shared with the tensors that view its memory (reshape, indexing, transpose,
expand, detach, ...); every in-place method bumps it. ``apply`` records the counter and version of
each input or output that forward kept for backward (found by identity or shared memory among the
ctx's attributes), and the backward walk refuses to run a node whose saved arrays were edited
since, with PyTorch's message. In-place ops on tensors in the graph, and the views that remember
their base for them, are gpudl.inplace's; ``grad`` and the tensor hooks walk the same graph.

The graph as torch.autograd.graph shows it (node names, ``next_functions``, node hooks, saved
tensors hooks, multi-grad hooks) is gpudl.autograd.graph's: a node carries its part in
``Node.extras`` (None for almost every node: the walks check it once per node).
"""

import contextlib
import copy
import functools
import os
import threading
import weakref

import numpy as np

from . import backend, cpu_threads, dtypes
from .sliced_gradient import SlicedGradient

_Tensor = None  # set by gpudl.tensor at import (tensor.py sits below this module)
_refuse_overlap = None  # gpudl.inplace.refuse_overlap, set by it at import (it imports us)
# id(leaf) -> [hook(leaf)]: called once per backward after the leaf's .grad holds all of that
# backward's contributions (DistributedDataParallel launches its all-reduce from them). Kept
# here, not on the Tensor, so tensors without hooks carry nothing; a finalizer drops the entry.
_post_accumulate_hooks = {}
# The hook of a CUDA graph capture or CPU replay (gpudl.graph_recorder) while one runs, else
# None: Function.apply, the backward walk, gradient accumulation and the methods decorated with
# ``recorded`` check it once and run unchanged when it is None or not active (another thread's,
# or its own plain calls).
_capture = None
# gpudl.autograd.graph, .forward_ad and .variable live in gpudl/_autograd: this module stays one
# file (kernel-count sites are named 'autograd.py:<function>') and the import system finds its
# submodules through __path__, loading each at first use
__path__ = [os.path.join(os.path.dirname(__file__), "_autograd")]


class _SavedHooks(threading.local):
    """torch.autograd.graph.saved_tensors_hooks of the current thread (gpudl.autograd.graph)."""

    def __init__(self):
        self.stack = []         # (pack_hook, unpack_hook) of the open blocks, innermost last
        self.disabled = None    # disable_saved_tensors_hooks's message while one is open


_saved_hooks = _SavedHooks()
# saved_tensors_hooks blocks open in any thread: ArrayFunction.apply reads only this (0: no
# packing, the common case) before asking gpudl.autograd.graph to pack what forward kept
saved_hooks_open = 0


class _Walks(threading.local):
    def __init__(self):
        self.stack = []         # a GraphTask per backward walk in progress, innermost last


_walks = _Walks()


class GraphTask:
    """One backward walk in progress (torch's graph task): register_multi_grad_hook's hooks
    find it with ``current_task()`` and leave calls for its end in ``at_end``."""

    __slots__ = ("at_end", "seen")

    def __init__(self):
        self.at_end = None      # [callable] run when the walk has finished without error
        self.seen = None        # {hook key: state} of the multi-grad hooks during this walk

    def finish(self):
        for call in self.at_end:
            call()


@contextlib.contextmanager
def graph_task():
    """A backward walk's GraphTask for the ``with`` block; its ``at_end`` calls run once the
    block has finished without error."""
    task = GraphTask()
    _walks.stack.append(task)
    try:
        yield task
    finally:
        _walks.stack.pop()
    if task.at_end is not None:
        task.finish()


def current_task():
    """The innermost backward walk in progress in this thread, or None."""
    stack = _walks.stack
    return stack[-1] if stack else None


class _GradState(threading.local):
    """Grad mode of the current thread; ``__init__`` runs once in every thread that reads it."""

    def __init__(self):
        self.enabled = True
        self.previous = []        # the modes that enclosing no_grad/enable_grad blocks restore
        self.inference = []       # per enclosing inference_mode block: whether it is on


_grad = _GradState()


def is_grad_enabled():
    return _grad.enabled


class _GradMode:
    """Context manager and decorator that sets grad mode, restoring the previous mode on exit.

    The previous mode is kept per thread (not on the instance), so one instance may be entered
    by several threads, or nested, safely.
    """

    enabled = None

    def __new__(cls, func=None):
        self = super().__new__(cls)
        return self(func) if callable(func) else self   # a bare @no_grad decorates func

    def __enter__(self):
        state = _grad
        state.previous.append(state.enabled)
        if self.enabled is not None:            # None: keep the current mode
            state.enabled = self.enabled

    def __exit__(self, *exc):
        state = _grad
        state.enabled = state.previous.pop()
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with copy.copy(self):               # a fresh guard per call (recursion, threads)
                return func(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Disable graph recording: ``with gd.no_grad(): ...`` or ``@gd.no_grad()``."""
    enabled = False


class inference_mode(_GradMode):
    """torch.inference_mode: here the same as ``no_grad`` (``mode=False`` changes nothing)."""
    enabled = False

    def __new__(cls, mode=True):
        if callable(mode):
            return super().__new__(cls, mode)
        self = super().__new__(cls)
        self.enabled = False if mode else None
        return self

    def __enter__(self):
        super().__enter__()
        _grad.inference.append(self.enabled is False)

    def __exit__(self, *exc):
        _grad.inference.pop()
        return super().__exit__(*exc)


def is_inference_mode_enabled():
    """Whether the innermost ``inference_mode`` block around this call is on (torch's)."""
    return bool(_grad.inference) and _grad.inference[-1]


class enable_grad(_GradMode):
    """Re-enable graph recording inside a ``no_grad`` block."""
    enabled = True


class set_grad_enabled:
    """torch.set_grad_enabled(mode): sets this thread's grad mode at once (a plain call), or for
    a ``with`` block, restoring the previous mode on exit."""

    def __init__(self, mode):
        self.previous = _grad.enabled
        _grad.enabled = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _grad.enabled = self.previous
        return False


class _Anomaly:
    """Anomaly detection, process-wide as torch's: the backward walk checks each node's input
    gradients for NaN (gpudl keeps no forward tracebacks)."""
    enabled = False


class set_detect_anomaly:
    """torch.autograd.set_detect_anomaly(mode): on at once (a plain call), or for a ``with``
    block, restoring the previous setting on exit. While on, a backward that returns NaN raises
    a RuntimeError naming its node (each gradient is read: slow, for debugging; on the cuda
    device one counted sync per gradient, gd.cuda.sync_count)."""

    def __init__(self, mode, check_nan=True):
        self.mode = bool(mode) and bool(check_nan)
        self.previous = _Anomaly.enabled
        _Anomaly.enabled = self.mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _Anomaly.enabled = self.previous
        return False

    def __call__(self, func):
        """As a decorator: the setting holds while ``func`` runs, not from decoration on."""
        _Anomaly.enabled = self.previous

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            previous, _Anomaly.enabled = _Anomaly.enabled, self.mode
            try:
                return func(*args, **kwargs)
            finally:
                _Anomaly.enabled = previous
        return wrapper


def detect_anomaly(check_nan=True):
    """torch.autograd.detect_anomaly(): ``with detect_anomaly(): ...`` (or as a decorator)."""
    return set_detect_anomaly(True, check_nan)


def is_anomaly_enabled():
    return _Anomaly.enabled


def _check_no_nan(node, input_grads):
    for i, g in enumerate(input_grads):
        if g is None:
            continue
        for array in g.arrays() if g.__class__ is SlicedGradient else (g,):
            if backend.host_value(backend.get_array_module(array).isnan(array).any(),
                                  "detect_anomaly (a NaN check)"):
                raise RuntimeError(f"Function '{node.function.__name__}Backward' returned nan "
                                   f"values in its {i}th output.")


class Context:
    """What forward leaves for backward: ``save_for_backward(*arrays)`` plus any attributes."""

    marks = None                # (dirty, non-differentiable) arrays, once forward marks some
    materialize_grads = True    # backward gets zeros (False: None) for outputs without gradient

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    def mark_dirty(self, *arrays):
        """forward edited these input arrays in place and returns them: their tensors are
        rebased as an in-place op's are (gpudl.inplace), as torch's ``ctx.mark_dirty``."""
        dirty, frozen = self.marks or ((), ())
        self.marks = (dirty + arrays, frozen)

    def mark_non_differentiable(self, *arrays):
        """These output arrays get tensors that do not require grad."""
        dirty, frozen = self.marks or ((), ())
        self.marks = (dirty, frozen + arrays)

    def set_materialize_grads(self, value):
        """False: backward receives None, not zeros, for an output no gradient reached."""
        self.materialize_grads = bool(value)


class Node:
    """One recorded Function call: how to route output gradients back to its inputs.

    ``edges[i]`` is, for input i: ``None`` (no gradient needed), a leaf Tensor (accumulate into
    its ``.grad``), or ``(node, output_index)`` of the Function that produced it.
    """

    __slots__ = ("function", "ctx", "edges", "out_meta", "freed", "retained", "hooks",
                 "saved_versions", "extras", "__weakref__")

    def __init__(self, function, ctx, edges, out_meta):
        self.function = function
        self.ctx = ctx
        self.edges = edges
        self.out_meta = out_meta      # [(shape, dtype, array module)] per output
        self.freed = False
        self.retained = None          # {output_index: Tensor} for retain_grad()
        self.hooks = None             # {output_index: [hook]} for Tensor.register_hook
        self.saved_versions = ()      # see _saved_versions: what forward kept, at which version
                                      # (None: forward kept no arrays)
        self.extras = None            # gpudl.autograd.graph's NodeExtras: node hooks, metadata,
                                      # packed saved arrays (the walks check it once per node)

    def __repr__(self):
        return f"<{self.function.__name__}Backward>"

    # torch.autograd.graph.Node's introspection and hooks (gpudl.autograd.graph)
    def name(self):
        """torch's name of this node: ``<Op>Backward0`` for gpudl's own ops (``MulBackward0``;
        gpudl's op names, which are mostly torch's), ``<Function>Backward`` for custom ones."""
        custom = getattr(self.function, "_tensor_backward", None) is not None
        return f"{self.function.__name__}Backward{'' if custom else '0'}"

    @property
    def next_functions(self):
        """One ``(node, output index)`` per argument of the op: ``(None, 0)`` for an argument
        that needs no gradient (non-tensor arguments included, as torch's scalars), an
        ``AccumulateGrad`` (``.variable`` the leaf) for a leaf requiring grad."""
        return _graph().next_functions(self)

    @property
    def metadata(self):
        """A dict kept with this node for the user (torch's ``Node.metadata``)."""
        return _graph().extras_of(self).metadata

    def register_prehook(self, fn):
        """``fn(grad_outputs)`` before this node's backward (see gpudl.autograd.graph)."""
        return _graph().register_node_hook(self, fn, pre=True)

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` after this node's backward (see
        gpudl.autograd.graph)."""
        return _graph().register_node_hook(self, fn, pre=False)


def _graph():
    """gpudl.autograd.graph, imported at first use (``import gpudl`` stays light)."""
    import importlib
    return importlib.import_module(__name__ + ".graph")


class ArrayFunction:
    """Base class of gpudl's differentiable ops: subclasses define static ``forward`` and
    ``backward`` on raw arrays (NumPy or CuPy), with no Tensor wrapping per call."""

    # True for ops whose backward takes a gradient as a SlicedGradient (pieces) as the walk has
    # it, else it is joined into one array first (gpudl/sliced_gradient.py)
    takes_sliced_gradients = False

    # True for ops whose output views argument 0's memory (indexing, reshape, permute, expand):
    # such an output remembers what it was taken from and how (Tensor._view, see
    # gpudl.inplace.view_origin), so in-place edits through it are recorded in its base's graph
    is_view = False

    # True for ops whose backward returns new arrays that nothing else holds, one per input
    # (fresh GEMM or reduction results, not g itself nor a view of it or of a saved array): a
    # leaf whose .grad is None then takes such a gradient as its .grad without a copy (as torch's
    # AccumulateGrad steals a gradient nothing else references), which saves a copy kernel per
    # parameter per step on the GPU. A tuple: per input. "cuda": on the cuda device only (an op
    # whose CPU path may return views of scratch buffers, as the CPU convolutions do).
    new_gradients = False

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        if _capture is not None and _capture.active():
            return _capture.apply(cls, args)
        raw, needs, device = _unwrap(cls, args)
        record = needs is not None and _grad.enabled
        if device == "cpu":
            cpu_threads.count()     # follow the machine's load (see cpu_threads)
        ctx = Context()
        ctx.needs_input_grad = needs if record else (False,) * len(args)
        out = cls.forward(ctx, *raw)
        if ctx.marks is not None:
            return _marked_results(cls, ctx, args, raw, needs, device, out, record)
        if isinstance(out, tuple):
            return _results(cls, ctx, args, raw, needs, device, out, record)
        make = _Tensor._make        # one output, the common case: no tuples, no comprehensions
        if record:
            node = Node(cls, ctx, _edges(args, needs),
                        [(out.shape, out.dtype, backend.get_array_module(out))])
            result = (make(out, True, node, 0, device) if _differentiable(out.dtype)
                      else make(out, False, None, 0, device))
        else:
            result = make(out, False, None, 0, device)
        shared = out.base is not None       # a view, or an input returned as it is
        if not shared:
            for r in raw:
                if out is r:
                    shared = True
                    break
        if shared:
            _share_view_counters(args, raw, (out,), (result,))
            # a view of argument 0 (not a reshape's copy: NumPy returns a view of a new array)
            if cls.is_view and result._version_counter is args[0]._version_counter:
                result._view = (cls, args, result._version_counter[0], _grad.enabled)
        if record:
            node.saved_versions = _saved_versions(ctx, args, raw, (out,), (result,))
            if saved_hooks_open and node.saved_versions is not None:
                _graph().pack_saved(node, args, (result,))
        return result


def _edges(args, needs):
    """Node.edges for the arguments: None where no gradient is needed, the tensor itself for a
    leaf, (its node, output index) for a computed tensor."""
    return tuple([(a if a.grad_fn is None else (a.grad_fn, a._out_index)) if need else None
                  for a, need in zip(args, needs)])


def _results(cls, ctx, args, raw, needs, device, outs, record):
    """Function.apply's Tensors for a forward that returned several arrays."""
    Tensor = _Tensor
    if not record:
        results = tuple(Tensor._make(o, False, None, 0, device) for o in outs)
        _share_view_counters(args, raw, outs, results)
        return results
    meta = [(o.shape, o.dtype, backend.get_array_module(o)) for o in outs]
    node = Node(cls, ctx, _edges(args, needs), meta)
    results = tuple([
        Tensor._make(o, True, node, i, device) if _differentiable(o.dtype)
        else Tensor._make(o, False, None, 0, device)
        for i, o in enumerate(outs)])
    _share_view_counters(args, raw, outs, results)
    node.saved_versions = _saved_versions(ctx, args, raw, outs, results)
    if saved_hooks_open and ctx.marks is None and node.saved_versions is not None:
        _graph().pack_saved(node, args, results)    # (_marked_results packs its own)
    return results


def _marked_results(cls, ctx, args, raw, needs, device, out, record):
    """Function.apply's result when forward called ctx.mark_dirty or mark_non_differentiable."""
    from . import inplace            # it imports Tensor, which imports this module
    outs = out if isinstance(out, tuple) else (out,)
    dirty, frozen = ctx.marks
    results = list(_results(cls, ctx, args, raw, needs, device, outs, record))
    node = next((r.grad_fn for r in results if r.grad_fn is not None), None)
    for i, o in enumerate(outs):
        if any(o is f for f in frozen):
            results[i]._requires_grad, results[i].grad_fn = False, None
    for array in dirty:
        j = next((j for j, r in enumerate(raw) if r is array and isinstance(args[j], _Tensor)),
                 None)
        k = next((k for k, o in enumerate(outs) if o is array), None)
        if j is None or k is None:
            raise RuntimeError(f"{cls.__name__}: ctx.mark_dirty takes input arrays that forward "
                               "edited in place and returns as outputs")
        tensor = args[j]
        if record:
            inplace._refuse(tensor, f"{cls.__name__} (ctx.mark_dirty)")
            inplace.took_values(tensor, results[k])
            if results[k].grad_fn is not None and results[k].grad_fn.saved_versions:
                results[k].grad_fn.saved_versions = [   # saved at the edited version
                    (c, c[0] if a is array else v, role, i, a)
                    for c, v, role, i, a in results[k].grad_fn.saved_versions]
        else:
            tensor._bump_version()
        results[k] = tensor
    if saved_hooks_open and node is not None and node.saved_versions is not None:
        _graph().pack_saved(node, args, results)
    return tuple(results) if isinstance(out, tuple) else results[0]


def _unwrap(cls, args):
    """(raw arguments, needs_input_grad or None when no input requires grad, device), in one
    pass over ``args`` (the per-op cost decides tiny workloads); mixed devices raise."""
    Tensor = _Tensor
    raw, needs, any_grad, device = [], [], False, None
    for a in args:
        if not isinstance(a, Tensor):
            raw.append(a)
            needs.append(False)
            continue
        if a._view is not None and a._view[2] != a._version_counter[0]:
            _refresh_view(a)        # its base was edited in place since: take its new history
        raw.append(a._data)
        needs.append(a._requires_grad)
        any_grad = any_grad or a._requires_grad
        if device is None:
            device = a._device
        elif a._device != device:
            raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, "
                               f"got {device} and {a._device}")
    return raw, (tuple(needs) if any_grad else None), device


def _overlaps(a, b):
    """True when arrays ``a`` and ``b`` may share memory. Two arrays that own their memory
    (``base`` None) and are not the same object never do, nor do NumPy views of two different
    such owners, while a non-empty view and its owner do; otherwise a bounds test (~0.5 us)."""
    if a is b:
        return True
    base_a, base_b = a.base, b.base
    if (base_a is None and base_b is None) or type(a) is not type(b):
        return False
    if type(a) is np.ndarray:
        owner_a = a if base_a is None else base_a
        owner_b = b if base_b is None else base_b
        if (type(owner_a) is np.ndarray and type(owner_b) is np.ndarray
                and owner_a.base is None and owner_b.base is None):
            if owner_a is not owner_b:
                return False
            if (base_a is None or base_b is None) and a.size and b.size:
                return True                 # a non-empty view lies inside its owner
    return bool(backend.get_array_module(a).may_share_memory(a, b))


def _share_view_counters(args, raw, outs, results):
    """An output that views an input's memory shares that input's version counter (as torch's
    views do), so an in-place edit through either is seen by the other's saved versions."""
    for o, t in zip(outs, results):
        base = o.base
        if base is None:
            for r in raw:
                if o is r:
                    break
            else:
                continue                             # a fresh array: the common case
        elif type(base) is np.ndarray and base.base is None and type(o) is np.ndarray:
            # a view of an array owning its memory: inputs in another such array's memory are
            # skipped without an overlap test (the test that _overlaps makes, inline)
            for a, r in zip(args, raw):
                if not isinstance(a, _Tensor):
                    continue
                owner = r if r.base is None else r.base
                if owner is not base and type(owner) is np.ndarray and owner.base is None:
                    continue
                if _overlaps(o, r):
                    t._version_counter = a._version_counter
                    break
            continue
        for a, r in zip(args, raw):
            if isinstance(a, _Tensor) and _overlaps(o, r):
                t._version_counter = a._version_counter
                break


def _refresh_view(view):
    """``view``'s base was edited in place since its grad_fn was set: see
    gpudl.inplace.refresh_view."""
    from .inplace import refresh_view        # it imports Tensor, which imports this module
    refresh_view(view)


def _kept_arrays(ctx):
    """The arrays ``ctx`` holds for backward: saved_tensors and attributes, one level into
    tuples, lists and dicts (RNNs keep a dict of buffers)."""
    kept = []
    types = backend.ARRAY_TYPES
    for key, value in ctx.__dict__.items():
        if key == "needs_input_grad":
            continue
        if isinstance(value, types):
            kept.append(value)
        elif isinstance(value, (tuple, list, dict)):
            for v in (value.values() if isinstance(value, dict) else value):
                if isinstance(v, types):
                    kept.append(v)
    return kept


def _saved_versions(ctx, args, raw, outs, results):
    """[(counter, version, role, index, array)] for every input or output tensor whose memory
    ``ctx`` keeps for backward: the same array object (the usual case), or one sharing memory
    with it (a view; two arrays that both own their memory never overlap)."""
    kept = _kept_arrays(ctx)
    if not kept:
        return None                 # nothing to free after backward: see _run_node
    saved = []
    for role, tensors, arrays in (("input", args, raw), ("output", results, outs)):
        for i in range(len(arrays)):
            t = tensors[i]
            if not isinstance(t, _Tensor):
                continue
            array = arrays[i]
            for k in kept:                  # the same object first: no overlap tests then
                if k is array:
                    break
            else:
                for k in kept:
                    if (k.base is not None or array.base is not None) and _overlaps(k, array):
                        break
                else:
                    continue
            counter = t._version_counter
            saved.append((counter, counter[0], role, i, array))
    return saved


def _differentiable(dtype):
    return dtype.kind in "fc" or dtype == dtypes.bfloat16


def _topological_order(root, *more_roots):
    """Nodes reachable from the roots, each after every node that feeds it a gradient."""
    order = None if more_roots else _chain(root)
    if order is not None:
        return order
    order, seen = [], set()
    for start in (root, *more_roots):
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(start.edges))]
        while stack:
            node, edges = stack[-1]
            for edge in edges:
                if isinstance(edge, tuple) and edge[0] not in seen:
                    seen.add(edge[0])
                    stack.append((edge[0], iter(edge[0].edges)))
                    break
            else:
                stack.pop()
                order.append(node)
    order.reverse()         # the reverse of a depth-first post-order: a topological order
    return order


def _chain(root):
    """The nodes from ``root`` when each has at most one node among its edges (a chain: the
    usual loss of a small model, ``f(x).sum()``), in walk order; None otherwise."""
    order, node = [root], root
    while True:
        following = None
        for edge in node.edges:
            if edge.__class__ is tuple:
                if following is None:
                    following = edge[0]
                elif edge[0] is not following:
                    return None
        if following is None:
            return order
        order.append(following)
        node = following


def backward(tensors, grad_tensors=None, retain_graph=False, *, grad=None):
    """Accumulate d(tensor)/d(leaf) * grad into every leaf's ``.grad``: torch.autograd.backward,
    for one tensor or a sequence of them (one walk from all, each with its gradient from
    ``grad_tensors``; None for a one-element tensor means 1). ``grad=`` is gpudl's older name
    of grad_tensors for one tensor."""
    if grad is not None:
        if grad_tensors is not None:
            raise TypeError("backward: pass grad_tensors or grad, not both")
        grad_tensors = grad
    if isinstance(tensors, _Tensor):        # its gradient may be a list or a number too
        tensors, grad_tensors, names = (tensors,), (grad_tensors,), ("backward",)
    else:
        tensors = tuple(tensors)
        grad_tensors = (None,) * len(tensors) if grad_tensors is None else (
            (grad_tensors,) if isinstance(grad_tensors, _Tensor) else tuple(grad_tensors))
        names = [f"backward: tensors[{i}]" for i in range(len(tensors))]
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"backward: got {len(grad_tensors)} grad_tensors for {len(tensors)} "
                           "tensors; expected one each")
    if not tensors:
        raise RuntimeError("backward: tensors is empty; expected at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, _Tensor):
            raise TypeError(f"backward: tensors[{i}] must be a Tensor, got {type(t).__name__}")
    seeds = [(t, _seed_of(t, g, name)) for t, g, name in zip(tensors, grad_tensors, names)]
    if _capture is not None and _capture.active():
        if len(seeds) > 1:
            raise RuntimeError(f"backward: a graph capture takes one tensor, got {len(seeds)}; "
                               "sum them into one")
        return _capture.backward(*seeds[0], retain_graph)
    _walk(seeds, retain_graph)


def _seed_of(tensor, grad, what="backward"):
    """The gradient array a backward() walk starts from at ``tensor``."""
    if not tensor.requires_grad:
        raise RuntimeError(
            f"{what}: tensor does not require grad and has no grad_fn "
            "(set requires_grad=True on an input, and call outside no_grad)")
    if grad is None:
        if tensor._data.size != 1:
            raise RuntimeError(
                f"{what}: grad can be implicitly created only for scalar outputs, got a tensor "
                f"of shape {tuple(tensor.shape)}; pass grad= of that shape")
        data = tensor._data
        return (np.array(1, data.dtype) if type(data) is np.ndarray and data.ndim == 0
                else backend.get_array_module(data).ones_like(data))    # ones_like: ~0.6 us
    return _gradient_array(tensor, grad, what)


def _backward(tensor, grad, retain_graph, order=None):
    """The walk from ``tensor`` with its gradient array ``grad`` (``order``: the nodes from
    _topological_order when known already)."""
    _walk([(tensor, grad)], retain_graph, order)


def _walk(seeds, retain_graph, order=None):
    """One walk from every (tensor, gradient array) of ``seeds``, accumulating into leaves."""
    pending, leaves = {}, []
    for tensor, grad in seeds:
        if tensor._view is not None and tensor._view[2] != tensor._version_counter[0]:
            _refresh_view(tensor)
        if tensor.grad_fn is None:
            leaves.append((tensor, grad))
            continue
        slot = pending.setdefault(tensor.grad_fn, {})
        index = tensor._out_index
        slot[index] = slot[index] + grad if index in slot else grad
    task = GraphTask()
    _walks.stack.append(task)
    try:
        if pending:
            _walk_nodes(pending, retain_graph, order)
        # the leaves among the seeds last: a walk that refuses a node leaves their .grad as it was
        for tensor, grad in leaves:
            _accumulate(tensor, _leaf_hooked(tensor, grad) if _leaf_hooks else grad)
            _run_hooks(tensor)
    finally:
        _walks.stack.pop()
    if task.at_end is not None:
        task.finish()


def _walk_nodes(pending, retain_graph, order):
    """_walk's node part: ``pending`` maps each seed node to {output index: gradient}."""
    order = order or _topological_order(*pending)
    hooked = _post_accumulate_hooks or _leaf_hooks
    waiting = _leaf_edge_counts(order) if hooked else None
    leaf = _hold_hooked_leaves(pending) if _leaf_hooks else None
    state = _grad                           # no_grad() for the walk, without its object
    state.previous.append(state.enabled)
    state.enabled = False
    try:
        for node in order:
            grads_in = pending.pop(node, None)
            if grads_in is not None:
                if node.hooks is not None or node.retained:
                    _tensor_hooks(node, grads_in, retain=True)
                _run_node(node, grads_in, pending, retain_graph, leaf)
            if waiting:
                _hooks_after(node, waiting, pending)
        for tensor, g in pending.items():       # leaves' sliced gradients, joined once each
            _accumulate(tensor, g)
    finally:
        state.enabled = state.previous.pop()


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """torch.autograd.grad: the gradients of ``outputs`` (weighted by ``grad_outputs``; None for
    a one-element output means 1) with respect to each of ``inputs`` (leaves or computed
    tensors), returned as a tuple instead of accumulated into ``.grad``. An input the outputs do
    not depend on raises, unless ``allow_unused`` (then None) or ``materialize_grads`` (zeros).
    ``create_graph=True``: the gradients are computed with Tensor ops and carry a graph of
    their own, to differentiate again (gpudl.higher_order); ``retain_graph`` defaults to it."""
    if is_grads_batched:
        raise NotImplementedError("grad: is_grads_batched=True is not supported")
    if _capture is not None and _capture.active():
        raise RuntimeError("grad: autograd.grad cannot be captured in a graph (a replay would "
                           "not compute it again); use backward()")
    if allow_unused is None:
        allow_unused = materialize_grads
    elif materialize_grads and not allow_unused:
        raise ValueError("grad: expected allow_unused to be True or not passed when "
                         "materialize_grads=True")
    single = isinstance(inputs, _Tensor) or _is_edge(inputs)
    outputs = (outputs,) if isinstance(outputs, _Tensor) or _is_edge(outputs) else tuple(outputs)
    inputs = (inputs,) if single else tuple(inputs)
    if any(_is_edge(t) for t in inputs + outputs):  # GradientEdges: stand-ins (autograd.graph)
        inputs, outputs = ([_graph().edge_tensor(t) if _is_edge(t) else t for t in tensors]
                           for tensors in (inputs, outputs))
        inputs, outputs = tuple(inputs), tuple(outputs)
    if grad_outputs is None or isinstance(grad_outputs, _Tensor):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: got {len(grad_outputs)} grad_outputs for {len(outputs)} "
                         "outputs")
    for i, t in enumerate(inputs):
        if not isinstance(t, _Tensor):
            raise TypeError(f"grad: inputs[{i}] must be a Tensor, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError(f"grad: one of the differentiated Tensors (inputs[{i}]) does "
                               "not require grad")
    retain_graph = create_graph if retain_graph is None else retain_graph
    if create_graph:
        from . import higher_order      # it imports Tensor, which imports this module
        found = higher_order.gradients_of(outputs, grad_outputs, inputs, bool(retain_graph))
    else:
        seeds = [(t, _seed_gradient(t, g, f"grad: element {i} of outputs"))
                 for i, (t, g) in enumerate(zip(outputs, grad_outputs))]
        found = _gradients_of(seeds, inputs, bool(retain_graph))
    results = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: the differentiated Tensor at index {i} appears to "
                                   "not have been used in the graph. Set allow_unused=True if "
                                   "this is the desired behavior")
            if materialize_grads:
                g = backend.get_array_module(t._data).zeros_like(t._data)
        if g is not None and not isinstance(g, _Tensor):
            g = _Tensor._make(g, False, None, 0, t._device)
        results.append(g)
    return tuple(results)


def _is_edge(value):
    """Whether ``value`` is a gpudl.autograd.graph.GradientEdge (a named tuple)."""
    return type(value).__name__ == "GradientEdge" and hasattr(value, "output_nr")


def _seed_gradient(tensor, grad, what):
    """The gradient array a walk starts from at ``tensor`` (``grad`` None: ones, for a
    one-element tensor only)."""
    if not isinstance(tensor, _Tensor) or not tensor.requires_grad:
        raise RuntimeError(f"{what} does not require grad and does not have a grad_fn")
    data = tensor._data
    if grad is None:
        if data.size != 1:
            raise RuntimeError(f"{what}: grad can be implicitly created only for scalar "
                               f"outputs, got shape {tuple(data.shape)}; pass its gradient")
        return backend.get_array_module(data).ones_like(data)
    return _gradient_array(tensor, grad, what)


def _gradient_array(tensor, grad, what):
    """The array of the gradient ``grad`` given for ``tensor`` (a Tensor, an array, a list or a
    number) after checking its shape: on the tensor's device (host data is copied there: CuPy
    takes no NumPy array) and in its dtype (torch casts a gradient to its tensor's dtype). A
    gradient Tensor on another device is refused, as torch refuses it."""
    if isinstance(grad, _Tensor):
        if grad._device != tensor._device:
            raise RuntimeError(f"{what}: the gradient is on {grad._device} but the tensor is on "
                               f"{tensor._device}; move it with .to('{tensor._device}')")
        array = grad._data
    else:
        array = grad if isinstance(grad, backend.ARRAY_TYPES) else np.asarray(grad)
    if tuple(array.shape) != tuple(tensor.shape):
        raise RuntimeError(f"{what}: grad has shape {tuple(array.shape)} but the tensor has "
                           f"shape {tuple(tensor.shape)}")
    if not isinstance(grad, _Tensor):
        array = backend.to_device_array(array, tensor._device)
    return backend.cast(array, tensor.dtype)


def input_slots(inputs):
    """({id(leaf): positions}, {(node, output index): positions}) of the tensors ``inputs``."""
    leaf_slots, node_slots = {}, {}
    for i, t in enumerate(inputs):
        if t.grad_fn is None:
            leaf_slots.setdefault(id(t), []).append(i)
        else:
            node_slots.setdefault((t.grad_fn, t._out_index), []).append(i)
    return leaf_slots, node_slots


def nodes_leading_to(order, leaf_slots, node_slots):
    """The nodes of ``order`` (a topological order) with a path to one of the inputs of
    ``input_slots``: the only ones a walk for those inputs needs to run."""
    leads = set()
    for node in reversed(order):        # each node after those it passes gradients to
        for edge in node.edges:
            if edge is None:
                continue
            if (edge in node_slots or edge[0] in leads) if isinstance(edge, tuple) \
                    else id(edge) in leaf_slots:
                leads.add(node)
                break
    return leads


def _gradients_of(seeds, inputs, retain_graph):
    """The walk of ``grad``: from each (tensor, gradient array) of ``seeds``, only through the
    nodes that lead to one of ``inputs``; the gradient array reaching each input (after its
    tensor hooks), or None. Nothing is accumulated into a leaf's ``.grad``; a walked tensor's
    retain_grad() fills its own, as in torch."""
    leaf_slots, node_slots = input_slots(inputs)
    found = [None] * len(inputs)

    def capture(positions, g):
        g = _as_array(g)
        for i in positions:
            found[i] = g if found[i] is None else found[i] + g

    pending, held = {}, {}
    for t, g in seeds:
        if t.grad_fn is None:
            held[t] = held[t] + g if t in held else g
        else:
            slot = pending.setdefault(t.grad_fn, {})
            slot[t._out_index] = slot[t._out_index] + g if t._out_index in slot else g
    roots = list(pending)
    order = _topological_order(*roots) if roots else []
    leads = nodes_leading_to(order, leaf_slots, node_slots)

    def leaf(t, g):
        if id(t) in leaf_slots:
            held[t] = held[t] + g if t in held else g

    state = _grad
    state.previous.append(state.enabled)
    state.enabled = False
    task = GraphTask()
    _walks.stack.append(task)
    try:
        for node in order:
            grads_in = pending.pop(node, None)
            if grads_in is None:
                continue
            if node.hooks is not None or node.retained:
                # retain_grad() fills .grad here too, as torch, where the walk runs the node
                _tensor_hooks(node, grads_in, retain=node in leads)
            for index, g in grads_in.items():
                if (node, index) in node_slots:
                    grads_in[index] = g = _as_array(g)      # one array for both uses
                    capture(node_slots[(node, index)], g)
            if node in leads:
                _run_node(node, grads_in, pending, retain_graph, leaf)
        for t, g in held.items():
            if id(t) in leaf_slots:
                capture(leaf_slots[id(t)], _leaf_hooked(t, g) if _leaf_hooks else g)
    finally:
        state.enabled = state.previous.pop()
        _walks.stack.pop()
    if task.at_end is not None:
        task.finish()
    return found


# ----------------------------------------------------------------- tensor hooks
# id(leaf) -> [hook(grad)]: Tensor.register_hook on a leaf, run on the leaf's summed gradient
# of one walk before it is accumulated (a non-leaf's hooks sit on its grad_fn: Node.hooks).
_leaf_hooks = {}


def register_hook(tensor, hook):
    """Tensor.register_hook: ``hook(grad)`` runs on the tensor's gradient in each backward (or
    grad) and may return a replacement of the same shape; returns a handle whose ``remove()``
    unregisters it."""
    if not callable(hook):
        raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
    if not tensor.requires_grad:
        raise RuntimeError("register_hook: cannot register a hook on a tensor that doesn't "
                           "require gradient")
    if tensor.grad_fn is None:
        key, hooks = id(tensor), _leaf_hooks
        if key not in hooks:
            weakref.finalize(tensor, hooks.pop, key, None)
    else:
        node = tensor.grad_fn
        node.hooks = node.hooks if node.hooks is not None else {}
        key, hooks = tensor._out_index, node.hooks
    hooks.setdefault(key, []).append(hook)
    return RemovableHandle(key, hook, hooks)


def _call_hooks(hooks, g, device):
    """``g`` after each hook in turn (a hook returning None leaves it as it is)."""
    g = _as_array(g)
    for hook in list(hooks):
        result = checked_hook_result(hook, hook(_Tensor._make(g, False, None, 0, device)),
                                     tuple(g.shape))
        if result is not None:
            g = result._data if result.dtype == g.dtype else result._data.astype(g.dtype)
    return g


def checked_hook_result(hook, result, shape):
    """What a tensor hook returned: None or a Tensor of the gradient's ``shape``."""
    if result is None:
        return None
    if not isinstance(result, _Tensor):
        raise TypeError(f"hook {getattr(hook, '__name__', hook)!r} returned a "
                        f"{type(result).__name__}; expected a Tensor or None")
    if result.shape != shape:
        raise RuntimeError(f"hook {getattr(hook, '__name__', hook)!r} has changed the size "
                           f"of value: {shape} -> {result.shape}")
    return result


def _tensor_hooks(node, grads_in, retain):
    """The hooks of ``node``'s outputs, then (``retain``) their retain_grad() accumulation."""
    for i, g in grads_in.items():
        grads_in[i] = _as_array(g)      # one array for the hooks, .grad and the node
    if node.hooks is not None:
        for i, hooks in node.hooks.items():
            if i in grads_in and hooks:
                device = "cuda" if backend.is_device_array(grads_in[i]) else None
                grads_in[i] = _call_hooks(hooks, grads_in[i], device)
    if retain and node.retained:
        for i, t in node.retained.items():
            if i in grads_in:
                _add_to_grad(t, grads_in[i])    # even after t.detach_(), as torch


def _leaf_hooked(tensor, g):
    hooks = _leaf_hooks.get(id(tensor))
    return _call_hooks(hooks, g, tensor._device) if hooks else g


def _hold_hooked_leaves(pending):
    """The walk's leaf sink while leaves have hooks: a hooked leaf's gradients are summed in
    ``pending`` (keyed by the leaf) until its last edge is walked (_hooks_after)."""
    def leaf(t, g):
        if id(t) in _leaf_hooks or g.__class__ is SlicedGradient:
            pending[t] = pending[t] + g if t in pending else g
        else:
            _accumulate(t, g)
    return leaf


# ----------------------------------------------------------------- post-accumulate grad hooks
class RemovableHandle:
    """What the ``register_*hook`` functions return: ``handle.remove()`` unregisters."""

    def __init__(self, key, hook, registry=None):
        self._key, self._hook = key, hook
        self._registry = _post_accumulate_hooks if registry is None else registry

    def remove(self):
        hooks = self._registry.get(self._key, [])
        if self._hook in hooks:
            hooks.remove(self._hook)
        if not hooks:           # no entry left: backward skips the hook bookkeeping entirely
            self._registry.pop(self._key, None)


def register_post_accumulate_grad_hook(tensor, hook):
    """Call ``hook(tensor)`` after each backward has accumulated into the leaf's ``.grad``."""
    if not callable(hook):
        raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got "
                        f"{type(hook).__name__}")
    if tensor.grad_fn is not None:
        raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors have an "
                           "accumulated .grad; this tensor has a grad_fn")
    if not tensor.requires_grad:
        raise RuntimeError("register_post_accumulate_grad_hook: cannot register a hook on a "
                           "tensor that does not require grad")
    key = id(tensor)
    if key not in _post_accumulate_hooks:
        _post_accumulate_hooks[key] = []
        weakref.finalize(tensor, _post_accumulate_hooks.pop, key, None)
    _post_accumulate_hooks[key].append(hook)
    return RemovableHandle(key, hook)


def _leaf_edge_counts(order):
    """{id(leaf with hooks): edges into it}: its hooks run once the last of them is walked."""
    counts = {}
    for node in order:
        for edge in node.edges:
            if edge is not None and not isinstance(edge, tuple) \
                    and (id(edge) in _post_accumulate_hooks or id(edge) in _leaf_hooks):
                counts[id(edge)] = counts.get(id(edge), 0) + 1
    return counts


def _hooks_after(node, waiting, pending):
    for edge in node.edges:
        if edge is None or isinstance(edge, tuple) or id(edge) not in waiting:
            continue
        waiting[id(edge)] -= 1
        if waiting[id(edge)] == 0:
            del waiting[id(edge)]
            held = pending.pop(edge, None)          # see _hold_hooked_leaves
            if held is not None:
                _accumulate(edge, _leaf_hooked(edge, held))
            if edge.grad is not None:
                _run_hooks(edge)


def _run_hooks(tensor):
    for hook in list(_post_accumulate_hooks.get(id(tensor), ())):
        hook(tensor)


def check_usable(node):
    """Raise, with torch's message, when ``node``'s saved arrays were freed by an earlier
    backward or edited in place since forward kept them."""
    if node.freed:
        raise RuntimeError(
            f"backward: trying to backward through {node!r} a second time; its saved arrays "
            "were freed. Pass retain_graph=True to the first backward call")
    for counter, version, role, i, array in node.saved_versions or ():
        if counter[0] != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{array.dtype} tensor of shape {tuple(array.shape)}], which "
                f"is {role} {i} of {node.function.__name__}Backward, is at version {counter[0]}; "
                f"expected version {version} instead. Hint: clone() the tensor before editing "
                "it in place, or edit it after backward")


def _run_node(node, grads_in, pending, retain_graph, leaf=None):
    """Run ``node``'s backward on its summed output gradients ``grads_in``: gradients for nodes
    go to ``pending``, those for leaves to ``leaf(tensor, g)`` (default: into ``.grad``)."""
    if node.freed:
        check_usable(node)
    for counter, version, _, _, _ in node.saved_versions or ():
        if counter[0] != version:
            check_usable(node)          # raises, naming the edited array
    extras = node.extras
    if extras is not None:          # node pre-hooks, saved arrays to unpack (autograd.graph)
        extras.before(node, grads_in, False)
    meta = node.out_meta
    pieces = node.function.takes_sliced_gradients
    if len(meta) == 1 and 0 in grads_in:        # one output, its gradient arrived
        g = grads_in[0]
        if g.__class__ not in _PLAIN_ARRAYS and not (pieces and g.__class__ is SlicedGradient):
            grads_in[0] = g = _as_array(g)      # (not to keep a sliced gradient's pieces)
        grads_out = (g,)
    else:
        for i, g in grads_in.items():
            if not (pieces and g.__class__ is SlicedGradient):
                grads_in[i] = _as_array(g)
        materialize = node.ctx is None or node.ctx.materialize_grads
        grads_out = [grads_in[i] if i in grads_in
                     else xp.zeros(shape, dtype) if materialize else None
                     for i, (shape, dtype, xp) in enumerate(meta)]
    input_grads = node.function.backward(node.ctx, *grads_out)
    if input_grads.__class__ is not tuple or len(input_grads) != len(node.edges):
        input_grads = one_per_input(node, input_grads, f"{node.function.__name__}.backward")
    if extras is not None:          # node hooks, saved arrays packed again (retain_graph)
        input_grads = extras.after(node, input_grads, grads_in, retain_graph, False)
    if _Anomaly.enabled:
        _check_no_nan(node, input_grads)
    if not retain_graph and node.saved_versions is not None:
        # free what forward kept; a node that kept no arrays (add, sum, reshape) stays usable,
        # as in torch, where only saved tensors are freed
        node.ctx = None
        node.saved_versions = ()
        node.freed = True
    for i, (edge, g) in enumerate(zip(node.edges, input_grads)):
        if edge is None or g is None:
            continue
        if isinstance(edge, tuple):
            shape, dtype, _ = edge[0].out_meta[edge[1]]
        else:
            shape, dtype = edge._data.shape, edge._data.dtype
        if (g.__class__ not in _PLAIN_OR_SLICED or g.shape != shape or g.dtype != dtype):
            g = _checked(node, i, g, shape, dtype)
        if isinstance(edge, tuple):
            slot = pending.setdefault(edge[0], {})
            slot[edge[1]] = slot[edge[1]] + g if edge[1] in slot else g
        elif leaf is not None:
            leaf(edge, g)
        elif g.__class__ is SlicedGradient:     # held: the walk joins a leaf's pieces once
            pending[edge] = pending[edge] + g if edge in pending else g
        else:
            owned = node.function.new_gradients
            _accumulate(edge, g, owned[i] if owned.__class__ is tuple else owned)


# The exact classes of plain arrays (NumPy's; CuPy's on a GPU, the strict simulator's device
# arrays): a gradient of one of them needs no _as_array, and one of the right shape and dtype
# no _checked (three Python calls per node and edge on the cuda device otherwise).
_PLAIN_ARRAYS = frozenset([np.ndarray] + [t for t in backend.ARRAY_TYPES] + (
    [backend.SimDeviceArray] if backend.SIM_DEVICE_ARRAYS else []))
_PLAIN_OR_SLICED = _PLAIN_ARRAYS | {SlicedGradient}


def one_per_input(node, input_grads, what):
    """What a backward (``what``) of ``node`` returned, as a tuple of one gradient per input."""
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(node.edges):
        raise RuntimeError(f"{what} returned {len(input_grads)} gradients, expected "
                           f"{len(node.edges)} (one per forward argument)")
    return input_grads


def edge_meta(edge):
    """(shape, dtype) of the tensor at a node's input ``edge`` (a leaf, or (node, index))."""
    if isinstance(edge, tuple):
        return edge[0].out_meta[edge[1]][:2]
    return edge._data.shape, edge._data.dtype


def _as_array(g):
    """0-d NumPy arithmetic returns scalars, and sliced gradients are pieces; backward
    functions always receive arrays."""
    if g.__class__ is SlicedGradient:
        return g.array()
    return np.asarray(g) if isinstance(g, np.generic) else g


def _checked(node, i, g, shape, dtype):
    g = _as_array(g)
    if g.shape != shape:
        raise RuntimeError(
            f"{node.function.__name__}.backward returned a gradient of shape {g.shape} for input "
            f"{i}, whose shape is {shape}")
    return backend.cast(g, dtype)        # float32 -> bfloat16 through the bits on CuPy


def _accumulate(tensor, g, owned=False):
    """Add ``g`` into leaf ``tensor``'s .grad (see _add_to_grad), unless it stopped requiring
    grad (detach_() or requires_grad_(False)) since the graph was recorded, as torch."""
    if tensor._requires_grad:
        _add_to_grad(tensor, g, owned)


def _add_to_grad(tensor, g, owned=False):
    """Add ``g`` into ``tensor``'s .grad, or make it the .grad: a copy, unless ``owned`` (an
    array nothing else holds, see ArrayFunction.new_gradients)."""
    if _capture is not None and _capture.active():
        return _capture.accumulate(tensor, _as_array(g), owned)
    # ._grad, not the .grad property: its getter warns for a non-leaf tensor, which
    # backward(inputs=...) fills (torch does so silently), and its setter's checks hold here (g
    # has the tensor's shape and dtype: _run_node and the seeds' checks saw to it)
    sliced = g.__class__ is SlicedGradient      # its array() is a new buffer
    if tensor._grad is None:
        if owned == "cuda":
            owned = backend.is_device_array(g)
        # a copy: the same gradient array may reach several leaves, and users update grads in place
        g = g.array() if sliced else g if owned else g.copy()
        tensor._grad = _Tensor._make(g, False, None, 0, tensor._device)
    else:
        old = tensor._grad._data
        total = (g + old).array() if sliced else old + g
        # NumPy's sum of 0-d arrays is a scalar, which .grad.zero_() could not write
        tensor._grad._data = total if total.__class__ is old.__class__ else \
            backend.get_array_module(old).asarray(total)


def recorded(kind):
    """Decorator of the methods a CPU graph capture records as one replayed call each: ``kind``
    "inplace" (a Tensor method writing its tensor), "optimizer" (Optimizer.step, zero_grad),
    "grads" (Module.zero_grad, clip_grad_norm_: the first argument's parameters' gradients),
    "compute" (a Tensor method making a new tensor without a Function: comparisons, argmax) or
    "refused" (cannot be replayed: raises during a capture)."""
    def decorate(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            if _capture is not None and _capture.active():
                return _capture.call(kind, method, self, args, kwargs)
            return method(self, *args, **kwargs)

        @functools.wraps(method)
        def write(self, *args, **kwargs):
            _refuse_overlap(self, write.__name__)     # (renamed by some callers)
            return run(self, *args, **kwargs)
        return write if kind == "inplace" else run
    return decorate


def gradcheck(func, inputs, **options):
    """torch.autograd.gradcheck: autograd's Jacobian of ``func(*inputs)`` against central finite
    differences (inputs in float64); see gpudl.gradcheck for the options."""
    from .gradcheck import gradcheck as check       # it imports Tensor, which imports us
    return check(func, inputs, **options)


def gradgradcheck(func, inputs, grad_outputs=None, **options):
    """torch.autograd.gradgradcheck: gradcheck of the first gradient of ``func`` (computed with
    create_graph=True); see gpudl.gradcheck for the options."""
    from .gradcheck import gradgradcheck as check   # it imports Tensor, which imports us
    return check(func, inputs, grad_outputs, **options)


def __getattr__(name):
    """``gpudl.autograd.functional`` (torch.autograd.functional) and ``Function`` (users' custom
    ops on Tensors, gpudl.custom_function), imported at first use."""
    if name == "functional":
        from . import autograd_functional
        return autograd_functional
    if name == "Function":
        from .custom_function import Function
        return Function
    if name in ("graph", "forward_ad", "variable", "Variable"):  # torch.autograd.graph, ...
        import importlib
        module = importlib.import_module(f"{__name__}.{name.lower()}")
        return module.Variable if name == "Variable" else module
    raise AttributeError(f"module 'gpudl.autograd' has no attribute {name!r}")
