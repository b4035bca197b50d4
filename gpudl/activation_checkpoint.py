"""Activation checkpointing, as torch.utils.checkpoint: checkpoint(function, *args) runs
function without keeping its intermediate results and runs it again in the backward pass to
get its gradients, trading compute for memory; checkpoint_sequential does it segment by segment.

The recomputation is one custom Function whose inputs are the tensor arguments and the
parameters of function (a Module, a bound method of one, or Modules its closure holds), so its
gradients come back from backward() and from autograd.grad alike. A tensor requiring grad that
function reaches by another road is found when the backward pass runs again, and refused by
name, rather than left without its gradient.
"""

import warnings

from . import autograd, global_state
from .autograd import _Tensor, _topological_order
from .custom_function import Function
from .nn.container import Sequential
from .nn.module import Module


def _modules_of(function):
    """The Modules whose parameters function reads that can be seen from outside."""
    if isinstance(function, Module):
        return [function]
    owner = getattr(function, "__self__", None)
    if isinstance(owner, Module):
        return [owner]
    cells = getattr(function, "__closure__", None) or ()
    values = [cell.cell_contents for cell in cells if cell.cell_contents is not None] \
        if cells else []
    values += list(getattr(function, "keywords", {}).values()) + list(getattr(function, "args", ()))
    return [value for value in values if isinstance(value, Module)]


def _parameters_of(function):
    seen, found = set(), []
    for module in _modules_of(function):
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def _rng_states(tensors):
    on_cuda = any(t.device.type == "cuda" for t in tensors)
    return global_state.get_rng_state(), (global_state.cuda_get_rng_state() if on_cuda else None)


def _set_rng_states(states):
    cpu, cuda = states
    global_state.set_rng_state(cpu)
    if cuda is not None:
        global_state.cuda_set_rng_state(cuda)


def _leaves_requiring_grad(outputs):
    roots = [t.grad_fn for t in outputs if t.grad_fn is not None]
    if not roots:
        return []
    return [edge for node in _topological_order(*roots) for edge in node.edges
            if edge is not None and not isinstance(edge, tuple) and edge.requires_grad]


def _with_tensors(layout, tensors):
    """The arguments of ``layout`` (a value, or None where a tensor goes) with ``tensors`` in
    their places."""
    tensors = iter(tensors)
    return [next(tensors) if is_tensor else value for is_tensor, value in layout]


class _Recompute(Function):
    """forward(function, preserve_rng_state, layout, parameters, *tensors, *parameters)."""

    @staticmethod
    def forward(ctx, function, preserve_rng_state, layout, parameters, *tensors):
        num_args = len(tensors) - len(parameters)
        ctx.function, ctx.layout, ctx.parameters = function, layout, parameters
        ctx.rng_states = _rng_states(tensors) if preserve_rng_state else None
        ctx.save_for_backward(*tensors[:num_args])
        outputs = function(*_with_tensors(layout, tensors[:num_args]))
        ctx.single = isinstance(outputs, _Tensor)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        needs = ctx.needs_input_grad[4:]
        args = [a.detach().requires_grad_(need) for a, need in zip(ctx.saved_tensors, needs)]
        restore = _rng_states(args) if ctx.rng_states is not None else None
        if restore is not None:
            _set_rng_states(ctx.rng_states)
        try:
            with autograd.enable_grad():
                outputs = ctx.function(*_with_tensors(ctx.layout, args))
        finally:
            if restore is not None:
                _set_rng_states(restore)
        outputs = (outputs,) if ctx.single else tuple(outputs)
        declared = {id(t) for t in args + list(ctx.parameters)}
        for leaf in _leaves_requiring_grad(outputs):
            if id(leaf) not in declared:
                raise RuntimeError(
                    f"checkpoint: the function reads a tensor of shape {tuple(leaf.shape)} that "
                    "requires grad and is neither one of its arguments nor a parameter of the "
                    "Module passed as function; pass it as an argument so that its gradient "
                    "is computed")
        wanted = [t for t, need in zip(args + list(ctx.parameters), needs) if need]
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad and g is not None]
        found = iter(autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                   allow_unused=True) if pairs and wanted else
                     [None] * len(wanted))
        return (None,) * 4 + tuple(next(found) if need else None for need in needs)


def checkpoint(function, *args, use_reentrant=None, preserve_rng_state=True, context_fn=None,
               determinism_check="default", debug=False, early_stop=True, **kwargs):
    """torch.utils.checkpoint.checkpoint: function(*args, **kwargs) whose intermediate results
    are not kept but computed again in the backward pass (with the random state of the first
    run when preserve_rng_state). use_reentrant (torch's default True when not passed, with a
    warning) changes only this: without an argument that requires grad, the result has no
    gradient at all (the parameters' included), as torch's reentrant checkpoint.
    torch's context_fn and debug are not supported (refused when set); determinism_check and
    early_stop are accepted (gpudl always recomputes the whole function)."""
    if context_fn is not None or debug:
        raise NotImplementedError(f"checkpoint: context_fn and debug are not supported, got "
                                  f"context_fn={context_fn!r}, debug={debug!r}")
    if determinism_check not in ("default", "none"):
        raise ValueError(f"checkpoint: determinism_check must be 'default' or 'none', got "
                         f"{determinism_check!r}")
    if use_reentrant is None:
        warnings.warn("checkpoint: the use_reentrant parameter should be passed explicitly "
                      "(as torch warns); it defaults to True", UserWarning, stacklevel=2)
        use_reentrant = True
    if kwargs:
        if use_reentrant:
            raise ValueError("checkpoint: keyword arguments to function need "
                             f"use_reentrant=False, got {sorted(kwargs)}")
        bound = function
        function = lambda *a: bound(*a, **kwargs)   # noqa: E731  (its closure shows bound)
    if not autograd.is_grad_enabled():
        return function(*args)
    tensors = [a for a in args if isinstance(a, _Tensor)]
    if use_reentrant and not any(t.requires_grad for t in tensors):
        warnings.warn("None of the inputs have requires_grad=True. Gradients will be None",
                      UserWarning, stacklevel=2)
        with autograd.no_grad():
            return function(*args)
    layout = tuple((True, None) if isinstance(a, _Tensor) else (False, a) for a in args)
    parameters = tuple(_parameters_of(function))
    return _Recompute.apply(function, preserve_rng_state, layout, parameters, *tensors,
                            *parameters)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """torch.utils.checkpoint.checkpoint_sequential: the modules of ``functions`` (a Sequential
    or a list) in ``segments`` runs, each checkpointed but the last."""
    modules = list(functions.children()) if isinstance(functions, Module) else list(functions)
    if segments < 1:
        raise ValueError(f"checkpoint_sequential: segments must be >= 1, got {segments}")
    size = len(modules) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        segment = Sequential(*modules[start:end + 1])
        input = checkpoint(segment, input, use_reentrant=use_reentrant, **kwargs)
    for module in modules[end + 1:]:
        input = module(input)
    return input

