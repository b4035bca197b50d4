"""Reverse-mode autograd: Function, the recorded graph, and the backward walk.

A differentiable op is a ``Function`` with ``forward(ctx, *args)`` and ``backward(ctx, *grads)``
working on raw arrays (NumPy or CuPy). ``Function.apply`` unwraps Tensor arguments, runs forward,
and, when any input needs a gradient, records a ``Node`` on the outputs. ``backward`` walks the
recorded nodes in reverse topological order with an explicit stack (an unrolled RNN makes graphs of
10,000+ nodes: no recursion), sums the gradients arriving at each output, and accumulates into the
``.grad`` of leaf tensors. Saved arrays are freed after the walk unless ``retain_graph=True``.
"""

import functools

import numpy as np

from . import backend, cpu_threads

_state = {"grad_enabled": True}
_Tensor = None  # set by gpudl.tensor at import (tensor.py sits below this module)


def is_grad_enabled():
    return _state["grad_enabled"]


class _GradMode:
    """Context manager and decorator that sets grad mode, restoring the previous mode on exit."""

    enabled = None

    def __enter__(self):
        self._previous = _state["grad_enabled"]
        _state["grad_enabled"] = self.enabled

    def __exit__(self, *exc):
        _state["grad_enabled"] = self._previous
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with type(self)():
                return func(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Disable graph recording: ``with gd.no_grad(): ...`` or ``@gd.no_grad()``."""
    enabled = False


class enable_grad(_GradMode):
    """Re-enable graph recording inside a ``no_grad`` block."""
    enabled = True


class Context:
    """What forward leaves for backward: ``save_for_backward(*arrays)`` plus any attributes."""

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class Node:
    """One recorded Function call: how to route output gradients back to its inputs.

    ``edges[i]`` is, for input i: ``None`` (no gradient needed), a leaf Tensor (accumulate into
    its ``.grad``), or ``(node, output_index)`` of the Function that produced it.
    """

    __slots__ = ("function", "ctx", "edges", "out_meta", "freed", "retained", "__weakref__")

    def __init__(self, function, ctx, edges, out_meta):
        self.function = function
        self.ctx = ctx
        self.edges = edges
        self.out_meta = out_meta      # [(shape, dtype, array module)] per output
        self.freed = False
        self.retained = None          # {output_index: Tensor} for retain_grad()

    def __repr__(self):
        return f"<{self.function.__name__}Backward>"


class Function:
    """Base class of differentiable ops. Subclasses define static ``forward`` and ``backward``."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        Tensor = _Tensor
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        record = _state["grad_enabled"] and any(
            isinstance(a, Tensor) and a.requires_grad for a in args)
        device = _common_device(cls, args)
        if device == "cpu":
            cpu_threads.count()     # follow the machine's load (see cpu_threads)
        ctx = Context()
        if record:
            ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        else:
            ctx.needs_input_grad = (False,) * len(args)
        out = cls.forward(ctx, *raw)
        multiple = isinstance(out, tuple)
        outs = out if multiple else (out,)
        if not record:
            results = tuple(Tensor._make(o, False, None, 0, device) for o in outs)
            return results if multiple else results[0]
        edges = tuple(_edge(a) if need else None for a, need in zip(args, ctx.needs_input_grad))
        meta = [(o.shape, o.dtype, backend.get_array_module(o)) for o in outs]
        node = Node(cls, ctx, edges, meta)
        results = tuple(
            Tensor._make(o, True, node, i, device) if _differentiable(o.dtype)
            else Tensor._make(o, False, None, 0, device)
            for i, o in enumerate(outs))
        return results if multiple else results[0]


def _differentiable(dtype):
    return dtype.kind in "fc"


def _edge(tensor):
    if tensor.grad_fn is None:
        return tensor                       # a leaf that requires grad
    return (tensor.grad_fn, tensor._out_index)


def _common_device(cls, args):
    device = None
    for a in args:
        if isinstance(a, _Tensor):
            if device is None:
                device = a.device
            elif a.device != device:
                raise RuntimeError(
                    f"{cls.__name__}: expected all tensors on the same device, "
                    f"got {device} and {a.device}")
    return device


def _topological_order(root):
    """Nodes reachable from ``root``, each after every node that feeds it a gradient."""
    order, seen = [], {root}
    stack = [(root, iter(root.edges))]
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
    order.reverse()
    return order


def backward(tensor, grad=None, retain_graph=False):
    """Accumulate d(tensor)/d(leaf) * grad into every leaf's ``.grad``."""
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward: tensor does not require grad and has no grad_fn "
            "(set requires_grad=True on an input, and call outside no_grad)")
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward: grad can be implicitly created only for scalar outputs, got a tensor "
                f"of shape {tuple(tensor.shape)}; pass grad= of that shape")
        grad = backend.get_array_module(tensor.data).ones_like(tensor.data)
    else:
        grad = grad.data if isinstance(grad, _Tensor) else grad
        if tuple(np.shape(grad)) != tuple(tensor.shape):
            raise RuntimeError(
                f"backward: grad has shape {tuple(np.shape(grad))} but the tensor has shape "
                f"{tuple(tensor.shape)}")
    if tensor.grad_fn is None:
        _accumulate(tensor, grad)
        return
    root = tensor.grad_fn
    pending = {root: {tensor._out_index: grad}}
    with no_grad():
        for node in _topological_order(root):
            grads_in = pending.pop(node, None)
            if grads_in is None:
                continue
            _run_node(node, grads_in, pending, retain_graph)


def _run_node(node, grads_in, pending, retain_graph):
    if node.freed:
        raise RuntimeError(
            f"backward: trying to backward through {node!r} a second time; its saved arrays "
            "were freed. Pass retain_graph=True to the first backward call")
    if node.retained:
        for i, t in node.retained.items():
            if i in grads_in:
                _accumulate(t, grads_in[i])
    grads_out = [_as_array(grads_in[i]) if i in grads_in else xp.zeros(shape, dtype)
                 for i, (shape, dtype, xp) in enumerate(node.out_meta)]
    input_grads = node.function.backward(node.ctx, *grads_out)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(node.edges):
        raise RuntimeError(
            f"{node.function.__name__}.backward returned {len(input_grads)} gradients, "
            f"expected {len(node.edges)} (one per forward argument)")
    if not retain_graph:
        node.ctx = None
        node.freed = True
    for i, (edge, g) in enumerate(zip(node.edges, input_grads)):
        if edge is None or g is None:
            continue
        if isinstance(edge, tuple):
            shape, dtype, _ = edge[0].out_meta[edge[1]]
            g = _checked(node, i, g, shape, dtype)
            slot = pending.setdefault(edge[0], {})
            slot[edge[1]] = slot[edge[1]] + g if edge[1] in slot else g
        else:
            _accumulate(edge, _checked(node, i, g, edge.data.shape, edge.data.dtype))


def _as_array(g):
    """0-d NumPy arithmetic returns scalars; backward functions always receive arrays."""
    return np.asarray(g) if isinstance(g, np.generic) else g


def _checked(node, i, g, shape, dtype):
    g = _as_array(g)
    if g.shape != shape:
        raise RuntimeError(
            f"{node.function.__name__}.backward returned a gradient of shape {g.shape} for input "
            f"{i}, whose shape is {shape}")
    return g if g.dtype == dtype else g.astype(dtype)


def _accumulate(tensor, g):
    if tensor.grad is None:
        # a copy: the same gradient array may reach several leaves, and users update grads in place
        tensor.grad = _Tensor._make(g.copy(), False, None, 0, tensor.device)
    else:
        tensor.grad.data = tensor.grad.data + g
