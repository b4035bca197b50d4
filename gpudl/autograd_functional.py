"""torch.autograd.functional: vjp, jvp, vhp, hvp, jacobian and hessian of a function of
Tensors, built on autograd.grad (with create_graph=True for the second derivatives, and for
jvp, which is reverse mode twice: see ``jvp``).

Reached as ``gpudl.autograd.functional``. As in torch, ``inputs`` is a Tensor or a tuple of
Tensors, and results mirror it (a Tensor for a Tensor, a tuple for a tuple); an input the
function does not use gets a zero gradient (``strict=True`` raises instead); results are
detached unless ``create_graph=True``, which keeps their graph back to ``inputs``.
``vectorize`` and a 'forward-mode' strategy are torch's speed choices: accepted under torch's
rules, computed in reverse mode (the same values).
"""

from . import autograd, backend
from .functions import stack
from .tensor import Tensor


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product of ``func`` at ``inputs``; ``v`` has
    the output's shape (may be None for a one-element output)."""
    return _product(func, inputs, v, create_graph, strict, "vjp")


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product of ``func`` at ``inputs``; ``v`` has
    the inputs' shapes (may be None for a single one-element input). Computed as torch's is,
    by the double-vjp trick (see ``jacobian_vector_product``)."""
    return _product(func, inputs, v, create_graph, strict, "jvp")


def _product(func, inputs, v, create_graph, strict, op):
    """(func(inputs), the product): v^T J for ``op`` "vjp" (``v`` shaped as the outputs, the
    product as the inputs), J v for "jvp" (the other way round)."""
    with autograd.enable_grad():
        inputs, single = _prepared(inputs, create_graph, op)
        outputs, single_out = _as_tuple(func(*inputs), op, "outputs of func")
        if op == "vjp":
            product = _grad(outputs, inputs, _vector(v, outputs, op), create_graph, strict, op)
        else:
            product = jacobian_vector_product(outputs, inputs, _vector(v, inputs, op),
                                              create_graph, strict, op)
    return _mirror(_result(outputs, create_graph), single_out), \
        _mirror(_result(product, create_graph), single if op == "vjp" else single_out)


def jacobian_vector_product(outputs, inputs, v, create_graph=False, strict=False, op="jvp"):
    """J v for the recorded ``outputs`` of ``inputs`` (one product per output; zeros where an
    output does not depend on them). u -> J^T u is linear in u, so the vjp of that map with
    cotangent v is J v: one walk with create_graph=True from the outputs with stand-in
    cotangents u (zeros that require grad), then one walk back from J^T u to u. It costs about
    three backward passes and needs a differentiable backward of every op on the way
    (create_graph); gpudl has no forward-mode engine."""
    dummies = tuple(_zeros_like(o).requires_grad_() for o in outputs)
    with autograd.enable_grad():
        first = _grad(outputs, inputs, dummies, True, strict, op)        # J^T u, in the graph
    used = [i for i, g in enumerate(first) if g.requires_grad]
    if not used:
        return _zeros(outputs)
    with autograd.enable_grad():
        return _grad([first[i] for i in used], dummies, [v[i] for i in used], create_graph,
                     False, op)


def _zeros_like(t):
    """A Tensor of zeros shaped as ``t`` (not requiring grad)."""
    return _zeros((t,))[0]


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H): ``func`` returns a one-element Tensor; ``v`` has the inputs'
    shapes (may be None for a single one-element input)."""
    with autograd.enable_grad():
        inputs, single = _prepared(inputs, True, "vhp")
        output = _scalar_output(func(*inputs), "vhp")
        v = _vector(v, inputs, "vhp")
        first = _grad((output,), inputs, None, True, strict, "vhp")
        used = [i for i, g in enumerate(first) if g.requires_grad]
        second = _grad([first[i] for i in used], inputs, [v[i] for i in used],
                       create_graph, strict, "vhp") if used else _zeros(inputs)
    return _result((output,), create_graph)[0], _mirror(_result(second, create_graph), single)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v). The Hessian of a twice-differentiable function is symmetric, so
    this is ``vhp``'s product (torch takes another route to the same values)."""
    return vhp(func, inputs, v, create_graph, strict)


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """d func(inputs) / d inputs, one row per output element (autograd.grad with one-hot
    gradients): for output i and input j, a Tensor of shape ``outputs[i].shape +
    inputs[j].shape``, nested as torch nests them (a Tensor when both are single)."""
    _check_strategy(vectorize, strategy, "jacobian", "strategy")
    with autograd.enable_grad():
        inputs, single = _prepared(inputs, create_graph, "jacobian")
        outputs, single_out = _as_tuple(func(*inputs), "jacobian", "outputs of func")
        blocks = []
        for out in outputs:
            rows = []
            xp = backend.get_array_module(out._data)
            for k in range(out.numel()):
                seed = xp.zeros(out.numel(), out.dtype)
                seed[k] = 1
                seed = Tensor._make(seed.reshape(out.shape), False, None, 0, out._device)
                rows.append(_grad((out,), inputs, (seed,), create_graph, strict, "jacobian"))
            blocks.append(tuple(_rows_to_block(out, inp, [row[j] for row in rows])
                                for j, inp in enumerate(inputs)))
    blocks = [_result(block, create_graph) for block in blocks]
    if single_out:
        return _mirror(blocks[0], single)
    return tuple(_mirror(block, single) for block in blocks)


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of ``func`` (returning a one-element Tensor): the jacobian of its gradient,
    shape ``inputs[i].shape + inputs[j].shape`` per pair, nested as torch nests it."""
    _check_strategy(vectorize, outer_jacobian_strategy, "hessian", "outer_jacobian_strategy")
    single = isinstance(inputs, Tensor)

    def gradient(*values):
        output = _scalar_output(func(*values), "hessian")
        grads = _grad((output,), values, None, True, strict, "hessian")
        return grads[0] if single else grads

    return jacobian(gradient, inputs, create_graph, strict)


def _check_strategy(vectorize, strategy, op, name):
    """torch's rules for ``vectorize`` and the strategy. Both are speed choices in torch (vmap,
    forward-mode AD) with the same values; gpudl computes every one in reverse mode, a row of
    the Jacobian per output element."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError(f"{op}: {name} must be 'forward-mode' or 'reverse-mode', got "
                         f"{strategy!r}")
    if strategy == "forward-mode" and not vectorize:
        raise ValueError(f"{op}: {name}='forward-mode' needs vectorize=True (as in torch)")


# ----------------------------------------------------------------- helpers
def _as_tuple(values, op, what):
    if isinstance(values, Tensor):
        return (values,), True
    if not isinstance(values, (tuple, list)) or not all(isinstance(t, Tensor) for t in values):
        raise TypeError(f"{op}: the {what} must be a Tensor or a tuple of Tensors, got "
                        f"{type(values).__name__}")
    return tuple(values), False


def _prepared(inputs, create_graph, op):
    """The inputs as tensors that require grad: a recorded copy of one that already does when
    the result keeps its graph (torch's view_as), else a detached one."""
    inputs, single = _as_tuple(inputs, op, "inputs")
    return tuple(t.clone() if create_graph and t.requires_grad
                 else t.detach().requires_grad_(True) for t in inputs), single


def _scalar_output(output, op):
    if not isinstance(output, Tensor) or output.numel() != 1:
        shape = output.shape if isinstance(output, Tensor) else type(output).__name__
        raise RuntimeError(f"{op}: the function must return a single Tensor with one "
                           f"element, got {shape}")
    return output


def _vector(v, like, op):
    if v is None:
        if len(like) != 1 or like[0].numel() != 1:
            raise RuntimeError(f"{op}: v can be omitted only for one single-element Tensor")
        return (None,)
    v, _ = _as_tuple(v, op, "v")
    if len(v) != len(like) or any(a.shape != b.shape for a, b in zip(v, like)):
        raise RuntimeError(f"{op}: v has shapes {[a.shape for a in v]}, expected "
                           f"{[b.shape for b in like]}")
    return v


def _grad(outputs, inputs, grad_outputs, create_graph, strict, op):
    """autograd.grad of the outputs that require grad; zeros for unused inputs, or a
    RuntimeError with ``strict``."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs or (None,) * len(outputs))
             if o.requires_grad]
    if not pairs:
        grads = (None,) * len(inputs)
    else:
        grads = autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs],
                              retain_graph=True, create_graph=create_graph, allow_unused=True)
    if strict and any(g is None for g in grads):
        raise RuntimeError(f"{op}: with strict=True, the output does not depend on input "
                           f"{next(i for i, g in enumerate(grads) if g is None)}")
    return tuple(g if g is not None else _zeros((t,))[0] for g, t in zip(grads, inputs))


def _zeros(inputs):
    return tuple(Tensor._make(backend.get_array_module(t._data).zeros_like(t._data), False,
                              None, 0, t._device) for t in inputs)


def _rows_to_block(out, inp, rows):
    return stack(rows, 0).reshape(*out.shape, *inp.shape)


def _result(tensors, create_graph):
    return tuple(t if create_graph else t.detach() for t in tensors)


def _mirror(values, single):
    return values[0] if single else tuple(values)
