"""torch.autograd.graph: the recorded graph's nodes, hooks on them, and hooks on saved tensors.

``Node`` is the class of every ``tensor.grad_fn``: ``name()``, ``next_functions`` (one
``(node, output index)`` per argument: ``(None, 0)`` where no gradient is needed, an
``AccumulateGrad`` whose ``.variable`` is the leaf for a leaf requiring grad), ``metadata`` (a
dict for the user), ``register_prehook(fn(grad_outputs))`` and
``register_hook(fn(grad_inputs, grad_outputs))``, as torch's. ``grad_outputs`` holds one gradient
per output of the node (None for an output no gradient reached), ``grad_inputs`` one per argument
(None where none is needed or computed); a hook may return a tuple of the same length to replace
them (a None in it: no gradient goes that way). Node hooks run in ``backward`` and
``autograd.grad`` (the nodes that the walk runs), ``create_graph=True`` included (there the
gradients are Tensors in the graph), after the tensor hooks of the node's outputs. An
AccumulateGrad's pre-hook is a tensor hook on its leaf here, so it also runs in ``autograd.grad``,
where torch runs no AccumulateGrad.

``saved_tensors_hooks(pack_hook, unpack_hook)``: every node recorded in the block hands what it
keeps for backward to ``pack_hook`` (as a Tensor: the input or output tensor itself when it is
one of them), keeps what the hook returns instead, and calls ``unpack_hook`` on it just before the
node's backward runs, each time it runs (``retain_graph``), which must give back a Tensor of the
kept shape. Per thread; the innermost block wins; pack hooks run without recording. Unlike torch,
where an op packs exactly its saved tensors, a gpudl op packs every array it keeps as a ctx
attribute (gpudl.autograd._kept_arrays): derived arrays too (a softmax's or sigmoid's output, an
RNN's gate buffers, integer index arrays of pooling and gathers), so a pack hook may see arrays
that torch's would not and counts may differ; a custom Function packs its ``save_for_backward``
tensors, as torch's. ``save_on_cpu`` moves what is kept to host memory and back (a pass-through
on the cpu device).

``register_multi_grad_hook`` calls its ``fn`` when the walk that computed the gradients ends
(torch: as soon as the last of them is computed). A ``GradientEdge`` (from ``get_gradient_edge``)
may stand for an input or an output of ``autograd.grad``, as in torch.
"""

import collections
import contextlib
import threading
import weakref

from .. import autograd, backend
from ..autograd import Node, RemovableHandle, current_task

__all__ = ["Node", "GradientEdge", "get_gradient_edge", "increment_version",
           "saved_tensors_hooks", "save_on_cpu", "disable_saved_tensors_hooks",
           "register_multi_grad_hook", "allow_mutation_on_saved_tensors"]

_lock = threading.Lock()        # autograd.saved_hooks_open is shared by the threads
_accumulators = weakref.WeakValueDictionary()   # id(leaf) -> its AccumulateGrad while in use


def _Tensor():
    return autograd._Tensor


# ----------------------------------------------------------------- nodes
class AccumulateGrad(Node):
    """torch's AccumulateGrad: where a leaf's gradient ends (``variable``: the leaf). One object
    per leaf while referenced, as torch's."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        data = variable._data
        super().__init__(None, None, (), [(data.shape, data.dtype,
                                           backend.get_array_module(data))])
        self.variable = variable

    def __repr__(self):
        return "<AccumulateGrad>"

    def name(self):
        return "torch::autograd::AccumulateGrad"

    @property
    def next_functions(self):
        return ()

    def register_prehook(self, fn):
        """``fn((grad,))`` on the leaf's gradient before it is accumulated (a tensor hook on
        the leaf: it runs in ``autograd.grad`` too); may return ``(new_grad,)``."""
        _check_callable(fn, "register_prehook")

        def hook(g):
            result = _checked_result(fn, fn((g,)), (g,), ((g.shape, g.dtype),))
            return None if result is None else result[0]
        return self.variable.register_hook(hook)

    def register_hook(self, fn):
        """``fn((), (grad,))`` after the leaf's gradient was accumulated into ``.grad``
        (in ``backward``; its result is ignored, as torch's)."""
        _check_callable(fn, "register_hook")
        seen = []

        def keep(g):
            seen[:] = [g]

        def after(leaf):
            if seen:
                grad = seen.pop()
                fn((), (grad,))
        return _Handles((self.variable.register_hook(keep),
                         autograd.register_post_accumulate_grad_hook(self.variable, after)))


def accumulate_grad(leaf):
    """The AccumulateGrad of ``leaf`` (the same object while one is referenced)."""
    node = _accumulators.get(id(leaf))
    if node is None or node.variable is not leaf:
        node = _accumulators[id(leaf)] = AccumulateGrad(leaf)
    return node


def next_functions(node):
    """Node.next_functions: see the module docstring."""
    return tuple((None, 0) if edge is None else edge if edge.__class__ is tuple
                 else (accumulate_grad(edge), 0) for edge in node.edges)


class NodeExtras:
    """What a Node carries beyond the engine's needs: its hooks, its metadata, and the packed
    form of what it keeps (saved_tensors_hooks). The walks call ``before`` and ``after``."""

    __slots__ = ("hooks", "metadata", "unpack_hook", "packed_ctx", "packed_versions")

    def __init__(self):
        self.hooks = {}                 # "pre"/"post" -> [fn], RemovableHandle's registry
        self.metadata = {}
        self.unpack_hook = None         # set with the two below when forward's arrays are packed
        self.packed_ctx = None          # {ctx attribute: value with _Packed in array places}
        self.packed_versions = None     # node.saved_versions with _Packed in array places

    def before(self, node, grads_in, tensors):
        """Before ``node``'s backward: its pre-hooks on ``grads_in`` ({output index: gradient},
        arrays, or Tensors when ``tensors``), edited in place; then unpack what it keeps."""
        pre = self.hooks.get("pre")
        if pre:
            meta = [(shape, dtype) for shape, dtype, _ in node.out_meta]
            grads = tuple(_wrapped(grads_in.get(i), tensors) for i in range(len(meta)))
            for fn in list(pre):
                result = _checked_result(fn, fn(grads), grads, meta)
                if result is not None:
                    if any(g is None and r is not None for g, r in zip(grads, result)):
                        raise RuntimeError("can't replace a None gradient with a non-None value")
                    grads = result
            grads_in.clear()
            for i, g in enumerate(grads):
                if g is not None:
                    grads_in[i] = g if tensors else g._data
        if self.packed_ctx is not None:
            _unpack(node, self)

    def after(self, node, input_grads, grads_in, retain_graph, tensors):
        """After ``node``'s backward: its hooks on the gradients it returned (one per input);
        what it keeps packed again (``retain_graph``) or dropped. Returns the gradients."""
        post = self.hooks.get("post")
        if post:
            grad_outputs = tuple(_wrapped(grads_in.get(i), tensors)
                                 for i in range(len(node.out_meta)))
            grads = tuple(_wrapped(g, tensors) for g in input_grads)
            meta = [None if edge is None else autograd.edge_meta(edge) for edge in node.edges]
            for fn in list(post):
                result = _checked_result(fn, fn(grads, grad_outputs), grads, meta)
                grads = grads if result is None else result
            input_grads = tuple(g if g is None or tensors else g._data for g in grads)
        if self.packed_ctx is not None:
            if retain_graph:
                node.ctx.__dict__.update(self.packed_ctx)
                node.saved_versions = self.packed_versions
            else:
                self.packed_ctx = self.packed_versions = self.unpack_hook = None
        return input_grads


def extras_of(node):
    if node.extras is None:
        node.extras = NodeExtras()
    return node.extras


def register_node_hook(node, fn, pre):
    _check_callable(fn, "register_prehook" if pre else "register_hook")
    hooks = extras_of(node).hooks
    key = "pre" if pre else "post"
    hooks.setdefault(key, []).append(fn)
    return RemovableHandle(key, fn, hooks)


def _check_callable(fn, what):
    if not callable(fn):
        raise TypeError(f"{what}: hook must be callable, got {type(fn).__name__}")


def _wrapped(g, tensors):
    """A gradient as a hook sees it: a Tensor (not recording), or None."""
    if g is None or tensors:
        return g
    return _Tensor()._make(autograd._as_array(g), False, None, 0, None)


def _checked_result(fn, result, grads, meta):
    """What a node hook returned: None, or a tuple of ``len(grads)`` Tensors or Nones, each of
    the shape in ``meta`` ((shape, dtype), or None where any goes), cast to its dtype."""
    if result is None:
        return None
    name = getattr(fn, "__name__", repr(fn))
    if not isinstance(result, (tuple, list)):
        result = (result,)
    if len(result) != len(grads):
        raise RuntimeError(f"hook '{name}' has returned an incorrect number of values (got "
                           f"{len(result)}, but expected {len(grads)})")
    checked = []
    for i, (g, m) in enumerate(zip(result, meta)):
        if g is not None:
            if not isinstance(g, _Tensor()):
                raise TypeError(f"hook '{name}' returned a {type(g).__name__} at index {i}; "
                                "expected a Tensor or None")
            if m is not None:
                if g.shape != tuple(m[0]):
                    raise RuntimeError(f"hook '{name}' has changed the size of value {i}: "
                                       f"expected {tuple(m[0])}, got {g.shape}")
                if g.dtype != m[1]:
                    g = g.astype(m[1])
        checked.append(g)
    return tuple(checked)


class _Handles:
    """A handle over several: ``remove()`` removes them all (torch's _MultiHandle)."""

    def __init__(self, handles):
        self.handles = tuple(handles)

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# ----------------------------------------------------------------- saved tensors hooks
class _Packed:
    """A kept array's place while packed: the pack hook's result, the array's shape and dtype
    (for the version check's message)."""

    __slots__ = ("value", "shape", "dtype")

    def __init__(self, value, shape, dtype):
        self.value, self.shape, self.dtype = value, shape, dtype


def pack_saved(node, args, results):
    """Called by ArrayFunction.apply while a saved_tensors_hooks block is open (in any thread):
    pack every array ``node`` keeps with this thread's innermost pack hook."""
    stack = autograd._saved_hooks.stack
    if not stack:
        return                              # another thread's block
    pack_hook, unpack_hook = stack[-1]
    Tensor = _Tensor()
    holders = {}                            # id(array) -> the input or output Tensor holding it
    for _, _, role, i, array in node.saved_versions:
        holders.setdefault(id(array), (args if role == "input" else results)[i])
    first = {}                              # id(array) -> its first _Packed

    def packed(array):
        tensor = holders.get(id(array))
        if tensor is None:
            tensor = Tensor._make(array, False, None, 0, None)
        marker = _Packed(pack_hook(tensor), array.shape, array.dtype)
        first.setdefault(id(array), marker)
        return marker

    types = backend.ARRAY_TYPES
    ctx = node.ctx
    template = {}
    with autograd.no_grad():
        for key, value in ctx.__dict__.items():
            if key == "needs_input_grad":
                continue
            if isinstance(value, types):
                template[key] = packed(value)
            elif isinstance(value, dict):
                if any(isinstance(v, types) for v in value.values()):
                    template[key] = {k: packed(v) if isinstance(v, types) else v
                                     for k, v in value.items()}
            elif isinstance(value, (tuple, list)):
                if any(isinstance(v, types) for v in value):
                    items = [packed(v) if isinstance(v, types) else v for v in value]
                    template[key] = (type(value)(items) if type(value) in (tuple, list)
                                     else value._make(items))
    if not template:
        return
    extras = extras_of(node)
    ctx.__dict__.update(template)
    extras.packed_ctx = template
    extras.packed_versions = node.saved_versions = [
        (c, v, role, i, first.get(id(a), a)) for c, v, role, i, a in node.saved_versions]
    extras.unpack_hook = unpack_hook


def _unpack(node, extras):
    """Put back into ``node``'s ctx (and saved versions) what the unpack hook gives for each
    packed array."""
    Tensor = _Tensor()
    arrays = {}

    def unpacked(marker):
        if marker.__class__ is not _Packed:
            return marker
        array = arrays.get(id(marker))
        if array is None:
            tensor = extras.unpack_hook(marker.value)
            if not isinstance(tensor, Tensor):
                raise TypeError("Output of saved tensor unpack_hook expected to be a Tensor but "
                                f"got result of type {type(tensor).__name__}")
            if tensor.shape != tuple(marker.shape):
                raise RuntimeError(f"saved tensor unpack_hook returned a tensor of shape "
                                   f"{tensor.shape} for one of {node.name()}'s saved arrays, "
                                   f"which has shape {tuple(marker.shape)}")
            array = arrays[id(marker)] = backend.cast(tensor._data, marker.dtype)
        return array

    ctx = node.ctx
    for key, value in extras.packed_ctx.items():
        if isinstance(value, dict):
            ctx.__dict__[key] = {k: unpacked(v) for k, v in value.items()}
        elif isinstance(value, (tuple, list)):
            items = [unpacked(v) for v in value]
            ctx.__dict__[key] = (type(value)(items) if type(value) in (tuple, list)
                                 else value._make(items))
        else:
            ctx.__dict__[key] = unpacked(value)
    node.saved_versions = [(c, v, role, i, unpacked(a))
                           for c, v, role, i, a in extras.packed_versions]


class saved_tensors_hooks:
    """Context manager: ``pack_hook(tensor)`` on what each op recorded in the block keeps for
    backward, ``unpack_hook(packed)`` (returning a Tensor) before that op's backward (see the
    module docstring for what gpudl packs)."""

    def __init__(self, pack_hook, unpack_hook):
        if not callable(pack_hook) or not callable(unpack_hook):
            raise TypeError(f"saved_tensors_hooks: pack_hook and unpack_hook must be callable, "
                            f"got {type(pack_hook).__name__} and {type(unpack_hook).__name__}")
        self.pack_hook, self.unpack_hook = pack_hook, unpack_hook

    def __enter__(self):
        state = autograd._saved_hooks
        if state.disabled is not None:
            raise RuntimeError(state.disabled)
        state.stack.append((self.pack_hook, self.unpack_hook))
        with _lock:
            autograd.saved_hooks_open += 1
        return self

    def __exit__(self, *exc):
        autograd._saved_hooks.stack.pop()
        with _lock:
            autograd.saved_hooks_open -= 1
        return False


class save_on_cpu(saved_tensors_hooks):
    """Keep what backward needs in host memory (page-locked with ``pin_memory`` when a GPU is
    there), copied back to its device before each node's backward: device memory for host
    memory and copies, as torch's. On the cpu device it changes nothing."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        if not isinstance(device_type, str):
            raise TypeError(f"save_on_cpu: device_type must be a str, got "
                            f"{type(device_type).__name__}")

        def pack_to_cpu(tensor):
            device = tensor.device
            if device.type == "cpu":
                return device, tensor
            host = tensor.cpu()
            return device, host.pin_memory() if pin_memory else host

        def unpack_from_cpu(packed):
            device, tensor = packed
            return tensor.to(device, non_blocking=pin_memory)

        super().__init__(pack_to_cpu, unpack_from_cpu)


@contextlib.contextmanager
def disable_saved_tensors_hooks(error_message):
    """Within the block, opening a saved_tensors_hooks block raises RuntimeError with
    ``error_message`` (as does entering this one inside such a block, as torch)."""
    state = autograd._saved_hooks
    if state.stack:
        raise RuntimeError(error_message)
    previous, state.disabled = state.disabled, str(error_message)
    try:
        yield
    finally:
        state.disabled = previous


@contextlib.contextmanager
def allow_mutation_on_saved_tensors():
    """torch's allow_mutation_on_saved_tensors is not supported: refused when entered."""
    raise NotImplementedError("allow_mutation_on_saved_tensors is not supported by gpudl; "
                              "clone() a tensor before editing it in place")
    yield   # pragma: no cover


# ----------------------------------------------------------------- gradient edges, versions
GradientEdge = collections.namedtuple("GradientEdge", ["node", "output_nr", "ownership_token"],
                                      defaults=[None])
GradientEdge.__doc__ = ("Where a tensor's gradient enters the graph: (node, output_nr); may be "
                        "given as an input of autograd.grad.")


def get_gradient_edge(tensor):
    """The GradientEdge of ``tensor``: (its grad_fn, its output index), or (its AccumulateGrad,
    0) for a leaf."""
    if not isinstance(tensor, _Tensor()):
        raise TypeError(f"get_gradient_edge: expected a Tensor, got {type(tensor).__name__}")
    if not tensor.requires_grad:
        raise RuntimeError("It is not possible to get the gradient edge for a Tensor that does "
                           "not require gradients")
    tensor._current()
    if tensor.grad_fn is None:
        return GradientEdge(accumulate_grad(tensor), 0)
    return GradientEdge(tensor.grad_fn, tensor._out_index)


def edge_tensor(edge):
    """A Tensor standing for ``edge`` among autograd.grad's inputs or outputs: the leaf of an
    AccumulateGrad, else one at (node, output_nr) holding no memory of its own."""
    node, index = edge.node, edge.output_nr
    if isinstance(node, AccumulateGrad):
        return node.variable
    if not isinstance(node, Node) or not 0 <= index < len(node.out_meta):
        raise ValueError(f"grad: a GradientEdge needs a Node and one of its output indices, got "
                         f"{node!r} and {index!r}")
    shape, dtype, xp = node.out_meta[index]
    return _Tensor()._make(xp.broadcast_to(xp.zeros((), dtype), shape), True, node, index, None)


def increment_version(tensor):
    """Count one in-place edit of ``tensor`` (or of each tensor of an iterable) that autograd
    did not see: backward then refuses nodes that saved it before."""
    for t in (tensor,) if isinstance(tensor, _Tensor()) else tensor:
        t._bump_version()


# ----------------------------------------------------------------- multi-grad hooks
def register_multi_grad_hook(tensors, fn, *, mode="all"):
    """mode 'all': ``fn(grads)`` once per walk that computed the gradient of any of ``tensors``,
    ``grads`` a list with one per tensor (None for those the walk did not reach), called when
    the walk ends. mode 'any': ``fn(grad)`` with the first of their gradients a walk computes.
    Returns a handle whose ``remove()`` unregisters it."""
    if mode not in ("all", "any"):
        raise ValueError(f"Expects mode to be one of ('all', 'any') but got {mode}")
    if not callable(fn):
        raise TypeError(f"register_multi_grad_hook: fn must be callable, got "
                        f"{type(fn).__name__}")
    tensors = tuple(tensors)
    key = object()          # this registration's entry in each walk's state

    def task_state():
        task = current_task()
        if task is None:
            raise RuntimeError("register_multi_grad_hook: a hook ran outside a backward walk")
        if task.seen is None:
            task.seen = {}
        return task

    if mode == "any":
        def first(grad):
            task = task_state()
            if key not in task.seen:
                task.seen[key] = True
                fn(grad)
        return _Handles(t.register_hook(first) for t in tensors if t.requires_grad)

    def collect(i):
        def hook(grad):
            task = task_state()
            grads = task.seen.get(key)
            if grads is None:
                grads = task.seen[key] = [None] * len(tensors)
                task.at_end = (task.at_end or []) + [lambda: fn(grads)]
            grads[i] = grad
        return hook
    return _Handles(t.register_hook(collect(i)) for i, t in enumerate(tensors))
