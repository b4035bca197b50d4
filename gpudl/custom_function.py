"""torch.autograd.Function for users: custom ops written with Tensor operations.

A subclass defines static ``forward(ctx, *args)`` and ``backward(ctx, *grad_outputs)`` that take
and return Tensors, as in PyTorch (or torch 2's ``forward(*args)`` plus
``setup_context(ctx, inputs, output)``), and is called through ``apply``. gpudl's own ops are
``autograd.ArrayFunction``s working on raw arrays; here each subclass's forward and backward are
wrapped once, when the class is made, into array-level ones, so the engine (the walk, the
version checks of saved tensors, graph capture and replay) runs a custom op as one of its own.
forward and backward run without recording, as in torch. With ``create_graph=True``
(gpudl.higher_order) the backward runs recording instead, on gradient Tensors in the graph, and
``ctx.saved_tensors`` gives the saved inputs and outputs at their places in the graph, so the
gradients it returns can be differentiated again (torch's double backward of a custom Function).
"""

import functools

from . import autograd, backend


def _tensor(array):
    """A Tensor (not requiring grad) holding ``array``; other values as they are."""
    if isinstance(array, backend.ARRAY_TYPES):
        return autograd._Tensor._make(array, False, None, 0, None)
    return array


def _array(value):
    """The array of a Tensor; other values (None, numbers) as they are."""
    return value._data if isinstance(value, autograd._Tensor) else value


def _arrays(result):
    if isinstance(result, (tuple, list)):
        return tuple(_array(r) for r in result)
    return _array(result)


class FunctionCtx(autograd.Context):
    """The ``ctx`` a custom Function's forward and backward see: it takes and gives Tensors, and
    keeps their arrays (where the engine's version checks and freeing find them)."""

    saved_arrays = ()
    graph_saved = None      # during a create_graph walk: the saved tensors in the graph

    def save_for_backward(self, *tensors):
        self.saved_arrays = tuple(_array(t) for t in tensors)

    @property
    def saved_tensors(self):
        if self.graph_saved is not None:
            return self.graph_saved
        return tuple(_tensor(a) for a in self.saved_arrays)

    def mark_dirty(self, *tensors):
        super().mark_dirty(*(_array(t) for t in tensors))

    def mark_non_differentiable(self, *tensors):
        super().mark_non_differentiable(*(_array(t) for t in tensors))


def _array_forward(forward, setup_context):
    @functools.wraps(forward)
    def run(ctx, *args):
        ctx.__class__ = FunctionCtx          # made by apply as the engine's Context
        inputs = tuple(_tensor(a) for a in args)
        with autograd.no_grad():
            if setup_context is None:
                return _arrays(forward(ctx, *inputs))
            output = forward(*inputs)
            setup_context(ctx, inputs, output)
        return _arrays(output)
    return run


def _array_backward(backward):
    @functools.wraps(backward)
    def run(ctx, *grads):
        with autograd.no_grad():
            return _arrays(backward(ctx, *(None if g is None else _tensor(g) for g in grads)))
    return run


class Function(autograd.ArrayFunction):
    """torch.autograd.Function: subclass it with static ``forward`` and ``backward`` written
    with Tensor operations, then call ``MyFunction.apply(*args)``.

    ``ctx.save_for_backward(*tensors)`` / ``ctx.saved_tensors``, ``ctx.needs_input_grad``,
    ``ctx.mark_dirty``, ``ctx.mark_non_differentiable`` and ``ctx.set_materialize_grads`` work
    as in torch; backward returns one gradient (or None) per forward argument. A saved tensor
    edited in place before backward makes backward raise, as in torch.

    Example:
        >>> class Exp(gd.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         y = x.exp()
        ...         ctx.save_for_backward(y)
        ...         return y
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         y, = ctx.saved_tensors
        ...         return grad * y
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "forward" in own or "setup_context" in own:
            setup_context = getattr(cls, "setup_context", None)
            forward = getattr(cls, "_tensor_forward", None) if "forward" not in own \
                else own["forward"].__get__(None, cls)
            cls._tensor_forward = staticmethod(forward)
            cls.forward = staticmethod(_array_forward(forward, setup_context))
        if "backward" in own:
            cls._tensor_backward = staticmethod(own["backward"].__get__(None, cls))
            cls.backward = staticmethod(_array_backward(cls._tensor_backward))

    @classmethod
    def graph_backward(cls, saved, *grads):
        """The backward of ``create_graph=True`` (gpudl.higher_order): the user's backward,
        recording, with ``saved_tensors`` at their places in the graph (``saved``: a
        higher_order.Saved) and ``grads`` Tensors in it."""
        ctx = saved.ctx
        places = {id(array): (role, i)
                  for _, _, role, i, array in saved.node.saved_versions or ()}

        def in_graph(array):
            role, i = places.get(id(array), (None, None))
            if role is None:
                return _tensor(array)           # kept, but neither an input nor an output
            return saved.input(i, array) if role == "input" else saved.output(i, array)
        ctx.graph_saved = tuple(in_graph(a) for a in ctx.saved_arrays)
        try:
            with autograd.enable_grad():
                return cls._tensor_backward(ctx, *grads)
        finally:
            ctx.graph_saved = None
