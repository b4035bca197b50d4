"""Higher-order gradients: the backward walk of ``create_graph=True``.

The plain walk (gpudl.autograd) runs each node's ``backward`` on raw arrays, outside any graph.
With ``create_graph=True`` the gradients flowing back are Tensors instead, and each node runs its
*graph backward*: the same derivative written with Tensor ops, run with grad mode on, so the
gradients it returns are recorded like any other result and can be differentiated again.
Graph backwards are registered per Function class (``graph_backward``) by
gpudl.ops.graph_backward, graph_backward_shape, graph_backward_nn and graph_backward_math
(the table-driven elementwise maths and gd.special, strided views, scatters), imported at the
first such walk (the plain path never loads them), and by nn.backward_hooks for its identity
nodes. A graph backward reads what forward kept on its ctx and asks
``Saved.input``/``Saved.output`` for each array it differentiates through: a Tensor holding
that array's values at the array's place in the original graph (torch's SavedVariable), so the
derivative of the gradient flows back through it to the original inputs.

A users' custom Function (gpudl.custom_function) brings its own: its backward, written with
Tensor ops, run with grad mode on. A walk whose graph holds a Function without a graph backward
raises NotImplementedError naming it before any backward runs.
"""

import numbers

import numpy as np

from . import autograd
from .autograd import ArrayFunction
from .tensor import Tensor

_graph_backwards = {}     # Function class -> graph_backward(saved, *output grads)
_limits = {}              # Function class -> unsupported(ctx): what of its calls it cannot do


def graph_backward(*functions, unsupported=None):
    """Decorator: register ``f(saved, *grads)`` as the graph backward of each of ``functions``.
    ``saved`` is a ``Saved``; ``grads`` hold one Tensor per output (zeros for an output no
    gradient reached); ``f`` returns one gradient Tensor (or None) per forward argument.
    ``unsupported(ctx)``, when given, names what ``f`` cannot differentiate in that call (None
    when it can), so the walk refuses it before running anything."""
    def register(f):
        for function in functions:
            _graph_backwards[function] = f
            if unsupported is not None:
                _limits[function] = unsupported
        return f
    return register


def _graph_backward_of(function):
    """The graph backward of ``function``: registered, or a custom Function's own (its user's
    backward run on Tensors in the graph: gpudl.custom_function), else None."""
    return _graph_backwards.get(function) or getattr(function, "graph_backward", None)


def _load_graph_backwards():
    """Import the op modules' graph backwards (they register as they load; once)."""
    from .ops import graph_backward, graph_backward_nn, graph_backward_shape  # noqa: F401
    from .ops import graph_backward_math  # noqa: F401  (create-graph-2)
    from .ops import graph_backward_linalg  # noqa: F401  (create-graph-3)


class Saved:
    """A recorded node as its graph backward sees it: its ``ctx`` and ``needs_input_grad``, and
    its kept arrays as Tensors in the graph (``input``, ``output``)."""

    __slots__ = ("node", "ctx", "needs_input_grad")

    def __init__(self, node):
        self.node = node
        self.ctx = node.ctx
        self.needs_input_grad = node.ctx.needs_input_grad

    def input(self, i, value):
        """Forward argument ``i`` as a Tensor holding ``value`` (what forward kept of it, or any
        array whose use in the formula has the same derivative, e.g. logits shifted by a
        constant under a softmax), through which gradients reach that argument. A number, None,
        or an argument that needs no gradient comes back as a constant."""
        edge = self.node.edges[i]
        if edge is not None and isinstance(value, np.generic):
            value = np.asarray(value)       # a 0-d input's value that NumPy made a scalar
        if value is None or isinstance(value, (numbers.Number, np.generic)):
            return value
        if edge is None:
            return Tensor._make(value, False, None, 0, None)
        if isinstance(edge, Tensor):                    # a leaf
            return edge if edge._data is value else _SameGradient.apply(edge, value)
        node, index = edge
        shape = node.out_meta[index][0]
        if value.shape != shape:
            raise RuntimeError(f"{self.node!r}: the value given for input {i} has shape "
                               f"{value.shape}, the input has {shape}")
        return Tensor._make(value, True, node, index, None)

    def output(self, i, value):
        """Output ``i`` of this node (holding ``value``, its array) as a Tensor in the graph."""
        shape = self.node.out_meta[i][0]
        if value.shape != shape:
            raise RuntimeError(f"{self.node!r}: the value given for output {i} has shape "
                               f"{value.shape}, the output has {shape}")
        return Tensor._make(value, True, self.node, i, None)

    def output_shape(self, i):
        return self.node.out_meta[i][0]


class _SameGradient(ArrayFunction):
    """``values`` in place of the leaf ``a`` (same shape), the gradient passed to ``a``."""

    @staticmethod
    def forward(ctx, a, values):
        return values

    @staticmethod
    def backward(ctx, g):
        return g, None


@graph_backward(_SameGradient)
def _same_gradient(saved, g):
    return g, None


# ----------------------------------------------------------------- the walk
def backward(tensor, grad, retain_graph):
    """Tensor.backward(create_graph=True): accumulate into the ``.grad`` of every leaf, keeping
    the gradients' graph (the first gradient cloned, later ones added out of place, as torch)."""
    seed = _seed(tensor, grad, "backward")
    with autograd.graph_task():
        held, _ = _walk([(tensor, seed)], None, retain_graph)
        for leaf, g in held.items():
            accumulate(leaf, _leaf_hooked(leaf, g))
            autograd._run_hooks(leaf)


def gradients_of(outputs, grad_outputs, inputs, retain_graph):
    """autograd.grad(create_graph=True): the gradient Tensor reaching each of ``inputs``, or
    None."""
    seeds = [(t, _seed(t, g, f"grad: element {i} of outputs"))
             for i, (t, g) in enumerate(zip(outputs, grad_outputs))]
    with autograd.graph_task():
        held, found = _walk(seeds, inputs, retain_graph)
        leaf_slots = autograd.input_slots(inputs)[0]
        for leaf, g in held.items():
            for i in leaf_slots.get(id(leaf), ()):
                found[i] = _sum(found[i], _leaf_hooked(leaf, g))
    return found


def accumulate(tensor, g):
    """``tensor.grad`` += ``g``, recorded: torch keeps the graph of a create_graph gradient."""
    with autograd.enable_grad():
        tensor.grad = g.clone() if tensor.grad is None else tensor.grad + g


def _seed(tensor, grad, what):
    array = autograd._seed_gradient(tensor, grad, what)  # checks tensor, shape and device
    if isinstance(grad, Tensor):                         # its graph kept, in the tensor's dtype
        return grad if grad.dtype == tensor.dtype else grad.astype(tensor.dtype)
    return Tensor._make(array, False, None, 0, tensor._device)


def _walk(seeds, inputs, retain_graph):
    """Run the graph backwards from ``seeds`` [(tensor, gradient Tensor)]: to every leaf
    (``inputs`` None) or only through the nodes leading to ``inputs``. Returns ({leaf: summed
    gradient}, [the gradient of each non-leaf input, or None])."""
    if autograd._capture is not None and autograd._capture.active():
        raise RuntimeError("create_graph=True cannot be captured in a graph (a replay would "
                           "not build the gradients' graph again)")
    pending, held = {}, {}
    for t, g in seeds:
        t._current()
        if t.grad_fn is None:
            held[t] = _sum(held.get(t), g)
        else:
            slot = pending.setdefault(t.grad_fn, {})
            slot[t._out_index] = _sum(slot.get(t._out_index), g)
    order = autograd._topological_order(*pending) if pending else []
    found = None
    if inputs is not None:
        leaf_slots, node_slots = autograd.input_slots(inputs)
        found = [None] * len(inputs)
        leads = autograd.nodes_leading_to(order, leaf_slots, node_slots)
        held = {t: g for t, g in held.items() if id(t) in leaf_slots}
    _refuse_unsupported([n for n in order if inputs is None or n in leads])
    with autograd.enable_grad():
        for node in order:
            grads_in = pending.pop(node, None)
            if grads_in is None:
                continue
            _run_tensor_hooks(node, grads_in)
            if inputs is not None:
                for index, g in grads_in.items():
                    for i in node_slots.get((node, index), ()):
                        found[i] = _sum(found[i], g)
                if node not in leads:
                    continue
            _run_node(node, grads_in, pending, held, retain_graph,
                      None if inputs is None else leaf_slots)
    return held, found


def _refuse_unsupported(nodes):
    _load_graph_backwards()
    for node in nodes:
        name = node.function.__name__ if _graph_backward_of(node.function) is None else None
        if name is None and node.function in _limits and node.ctx is not None:
            name = _limits[node.function](node.ctx)
        if name is not None:
            raise NotImplementedError(
                f"create_graph=True: {name} has no differentiable backward yet; use "
                "create_graph=False, or ops that have one (README: higher-order gradients)")


def _run_node(node, grads_in, pending, held, retain_graph, leaf_slots):
    """``node``'s graph backward on its summed output gradients: gradients for nodes go to
    ``pending``, those for leaves (of ``leaf_slots`` when given) to ``held``."""
    autograd.check_usable(node)
    extras = node.extras
    if extras is not None:          # node pre-hooks, saved arrays to unpack (autograd.graph)
        extras.before(node, grads_in, True)
    grads_out = [grads_in[i] if i in grads_in
                 else Tensor._make(xp.zeros(shape, dtype), False, None, 0, None)
                 for i, (shape, dtype, xp) in enumerate(node.out_meta)]
    input_grads = autograd.one_per_input(
        node, _graph_backward_of(node.function)(Saved(node), *grads_out),
        f"the graph backward of {node.function.__name__}")
    if extras is not None:
        input_grads = extras.after(node, input_grads, grads_in, retain_graph, True)
    if not retain_graph and node.saved_versions is not None:
        node.ctx, node.saved_versions, node.freed = None, (), True     # as autograd._run_node
    for i, (edge, g) in enumerate(zip(node.edges, input_grads)):
        if edge is None or g is None:
            continue
        shape, dtype = autograd.edge_meta(edge)
        if g.shape != tuple(shape):
            raise RuntimeError(
                f"the graph backward of {node.function.__name__} returned a gradient of shape "
                f"{g.shape} for input {i}, whose shape is {tuple(shape)}")
        g = g if g.dtype == dtype else g.astype(dtype)
        if isinstance(edge, tuple):
            slot = pending.setdefault(edge[0], {})
            slot[edge[1]] = _sum(slot.get(edge[1]), g)
        elif leaf_slots is None or id(edge) in leaf_slots:
            held[edge] = _sum(held.get(edge), g)


def _sum(total, g):
    return g if total is None else total + g


def _run_tensor_hooks(node, grads_in):
    """A non-leaf's hooks (Tensor.register_hook) on its gradient Tensor, then its retain_grad()
    accumulation."""
    if node.hooks is not None:
        for i, hooks in node.hooks.items():
            if i in grads_in:
                grads_in[i] = _hooked(hooks, grads_in[i])
    if node.retained:
        for i, t in node.retained.items():
            if i in grads_in:
                accumulate(t, grads_in[i])


def _leaf_hooked(leaf, g):
    hooks = autograd._leaf_hooks.get(id(leaf))
    return _hooked(hooks, g) if hooks else g


def _hooked(hooks, g):
    for hook in list(hooks):
        result = autograd.checked_hook_result(hook, hook(g), g.shape)
        if result is not None:
            g = result if result.dtype == g.dtype else result.astype(g.dtype)
    return g
