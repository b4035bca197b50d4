"""gpudl.func: torch.func's ``grad``, ``grad_and_value``, ``vjp``, ``jvp``, ``linearize``,
``jacrev``/``jacfwd``/``hessian``, ``vmap`` and ``functional_call``.

Built on gpudl's autograd rather than on function transforms: ``grad`` runs the function on
inputs that record (an alias of an input that already records, so ``grad(grad(f))`` and a
``backward`` through the result see the whole graph) and takes ``autograd.grad``; ``vmap``
runs the function once per element of the mapped dimension and stacks the results, which gives
torch's values (per-sample gradients with ``vmap(grad(loss), in_dims=(None, 0, 0))``, say) at
the cost of a Python loop. Arguments may be Tensors or lists, tuples and dicts of them
(a ``functional_call`` parameter dict, for one).
"""

import numbers

import numpy as np

from . import autograd, backend, dtypes, global_state
from .functions import stack
from .nn.utils.stateless import functional_call  # noqa: F401
from .tensor import Tensor

__all__ = ["functional_call", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp",
           "linearize", "vjp", "vmap"]


# ----------------------------------------------------------------- argument trees
def _leaves(tree):
    """The Tensors of ``tree`` (a Tensor, or lists/tuples/dicts of them), in order."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (list, tuple)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return []


def _map(fn, tree):
    """``tree`` with ``fn`` applied to each Tensor (other leaves kept)."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(fn, value) for value in tree)
    return tree


def _rebuild(tree, leaves):
    """``tree`` with its Tensors replaced, in order, by ``leaves`` (an iterator)."""
    return _map(lambda _: next(leaves), tree)


# ----------------------------------------------------------------- grad
def grad(func, argnums=0, has_aux=False):
    """A function returning the gradient of ``func``'s one-element output with respect to its
    argument(s) ``argnums`` (an int, or a tuple: a tuple of gradients), each shaped as that
    argument (a Tensor or a list/tuple/dict of them). ``has_aux``: ``func`` returns
    ``(output, aux)`` and the function ``(gradient, aux)``."""
    transformed = grad_and_value(func, argnums, has_aux)

    def gradient(*args, **kwargs):
        grads, value = transformed(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads
    return gradient


def grad_and_value(func, argnums=0, has_aux=False):
    """As ``grad``, returning ``(gradient, output)`` (``(gradient, (output, aux))`` with
    ``has_aux``)."""
    single = isinstance(argnums, numbers.Integral)
    positions = (argnums,) if single else tuple(argnums)

    def gradient_and_value(*args, **kwargs):
        for position in positions:
            if not -len(args) <= position < len(args):
                raise ValueError(f"grad: argnums {argnums!r} out of range for {len(args)} "
                                 "positional arguments")
        args = list(args)
        # an input that already records keeps its graph (nested grad, backward through us)
        keep_graph = any(t.requires_grad for p in positions for t in _leaves(args[p]))
        for position in positions:
            if not _leaves(args[position]):
                raise TypeError(f"grad: argument {position} holds no Tensor to differentiate")
            args[position] = _map(_recording, args[position])
        with autograd.enable_grad():
            result = func(*args, **kwargs)
            output, aux = result if has_aux else (result, None)
            if has_aux and not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError("grad: with has_aux=True, func must return (output, aux)")
            if not isinstance(output, Tensor) or output.numel() != 1:
                raise RuntimeError(f"grad: func must return a one-element Tensor, got "
                                   f"{_describe(output)}")
            inputs = [t for p in positions for t in _leaves(args[p])]
            found = (autograd.grad(output, inputs, create_graph=keep_graph,
                                   materialize_grads=True)
                     if output.requires_grad else [t.new_zeros(t.shape) for t in inputs])
        found = iter(found if keep_graph else [g.detach() for g in found])
        grads = tuple(_rebuild(args[p], found) for p in positions)
        if not keep_graph:
            output, aux = output.detach(), _map(Tensor.detach, aux)
        return (grads[0] if single else grads), ((output, aux) if has_aux else output)
    return gradient_and_value


def _recording(t):
    """``t`` as an input ``autograd.grad`` can differentiate with respect to."""
    if t.requires_grad:
        return t.view_as(t)               # a new node: gradients stop here, the graph goes on
    if not dtypes.is_floating(t.dtype):
        raise TypeError(f"grad: only floating point Tensors can be differentiated, got {t.dtype}")
    return t.detach().requires_grad_()


def _describe(value):
    return (f"a Tensor of shape {value.shape}" if isinstance(value, Tensor)
            else type(value).__name__)


# ----------------------------------------------------------------- vjp, jvp, linearize
def _traced(func, primals, has_aux, name):
    """(recording inputs, output, aux, keep_graph): ``func`` run on recording copies of
    ``primals`` (whose gradients keep their graph when a primal already records)."""
    keep_graph = any(t.requires_grad for t in _leaves(primals))
    inputs = [_map(_recording, p) for p in primals]
    with autograd.enable_grad():
        result = func(*inputs)
    if has_aux:
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"{name}: with has_aux=True, func must return (output, aux)")
        result, aux = result
        aux = aux if keep_graph else _map(Tensor.detach, aux)
    else:
        aux = None
    if not _leaves(result):
        raise TypeError(f"{name}: func must return Tensors, got {_describe(result)}")
    return inputs, result, aux, keep_graph


def _matching(values, like, name, what):
    """The Tensors of ``values``, one per Tensor of ``like`` and of its shape."""
    given, expected = _leaves(values), _leaves(like)
    if len(given) != len(expected) or any(a.shape != b.shape for a, b in zip(given, expected)):
        raise ValueError(f"{name}: {what} must match the shapes {[t.shape for t in expected]}, "
                         f"got {[t.shape for t in given]}")
    return given


def vjp(func, *primals, has_aux=False):
    """(``func(*primals)``, ``vjp_fn``): ``vjp_fn(cotangents)`` (shaped as the output) gives the
    vector-Jacobian product, a tuple with one gradient per primal, as torch.func.vjp; it may be
    called several times. ``has_aux``: ``(output, vjp_fn, aux)``."""
    from .autograd_functional import _grad
    inputs, output, aux, keep_graph = _traced(func, primals, has_aux, "vjp")

    def vjp_fn(cotangents, retain_graph=True, create_graph=None):
        create = keep_graph if create_graph is None else create_graph
        grads = _grad(_leaves(output), _leaves(inputs),
                      _matching(cotangents, output, "vjp_fn", "cotangents"), create, False,
                      "vjp_fn")
        found = iter(grads if create else [g.detach() for g in grads])
        return tuple(_rebuild(p, found) for p in inputs)
    result = output if keep_graph else _map(Tensor.detach, output)
    return (result, vjp_fn, aux) if has_aux else (result, vjp_fn)


def jvp(func, primals, tangents, *, strict=False, has_aux=False):
    """(``func(*primals)``, the Jacobian-vector product with ``tangents``), as torch.func.jvp.
    gpudl has no forward mode: the product is reverse mode twice (the double-vjp trick of
    autograd.functional.jacobian_vector_product, about three backward passes)."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError(f"jvp: expected primals and tangents to be tuples, got "
                        f"{type(primals).__name__} and {type(tangents).__name__}")
    return linearized(func, primals, has_aux, "jvp", strict)(tangents)


def linearize(func, *primals):
    """(``func(*primals)``, ``jvp_fn``): ``jvp_fn(*tangents)`` gives the Jacobian-vector
    product at ``primals``, as torch.func.linearize (each call walks the kept graph twice)."""
    run = linearized(func, primals, False, "linearize", False)
    output, _ = run(None)
    return output, lambda *tangents: run(tangents)[1]


def linearized(func, primals, has_aux, name, strict):
    """A function of tangents (None: none yet) giving (output, product[, aux]) of ``func`` at
    ``primals``, its graph kept between calls."""
    from .autograd_functional import jacobian_vector_product
    inputs, output, aux, keep_graph = _traced(func, primals, has_aux, name)
    result = output if keep_graph else _map(Tensor.detach, output)

    def run(tangents):
        product = None
        if tangents is not None:
            found = jacobian_vector_product(
                _leaves(output), _leaves(inputs),
                _matching(tangents, list(primals), name, "tangents"), keep_graph, strict, name)
            product = _rebuild(output, iter(found if keep_graph else
                                            [g.detach() for g in found]))
        return (result, product, aux) if has_aux else (result, product)
    return run


# ----------------------------------------------------------------- jacobians
def jacrev(func, argnums=0, has_aux=False):
    """A function returning the Jacobian of ``func`` with respect to argument(s) ``argnums``:
    for an output of shape O and an argument of shape I, a Tensor of shape O + I (nested by
    outputs, then by ``argnums`` when it is a tuple, as torch.func). ``has_aux``: ``func``
    returns ``(output, aux)`` and the function ``(jacobian, aux)``."""
    return _jacobian_transform(func, argnums, has_aux, "jacrev")


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """``jacrev``'s values (torch computes them in forward mode; gpudl in reverse mode)."""
    return _jacobian_transform(func, argnums, has_aux, "jacfwd")


def hessian(func, argnums=0):
    """A function returning the Hessian of ``func`` (a one-element output) with respect to
    argument ``argnums``: the Jacobian of its gradient."""
    return jacfwd(jacrev(func, argnums), argnums)


def _jacobian_transform(func, argnums, has_aux, name):
    from .autograd_functional import jacobian
    single = isinstance(argnums, numbers.Integral)
    positions = (argnums,) if single else tuple(argnums)

    def transformed(*args, **kwargs):
        for position in positions:
            if not -len(args) <= position < len(args) or not isinstance(args[position], Tensor):
                raise ValueError(f"{name}: argnums {argnums!r} must name Tensor arguments of "
                                 f"the {len(args)} given")
        aux = []

        def of_chosen(*chosen):
            values = list(args)
            for position, value in zip(positions, chosen):
                values[position] = value
            result = func(*values, **kwargs)
            if has_aux:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError(f"{name}: with has_aux=True, func must return "
                                    "(output, aux)")
                result, extra = result
                aux.append(extra)
            return result
        chosen = tuple(args[p] for p in positions)
        keep_graph = any(t.requires_grad for t in chosen)
        found = jacobian(of_chosen, chosen[0] if single else chosen, create_graph=keep_graph)
        if has_aux:
            return found, _map(Tensor.detach, aux[0]) if not keep_graph else aux[0]
        return found
    return transformed


# ----------------------------------------------------------------- vmap
def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` mapped over a dimension of its arguments: ``in_dims`` (an int or None for all,
    or one per positional argument) names each argument's mapped dimension (None: the same
    argument for every element); the results are stacked along ``out_dims`` (an int, or one
    per output). ``randomness``: "error" (a random op inside raises, as torch's default),
    "different" (each element its own draws) or "same" (every element the same draws)."""
    if randomness not in ("error", "different", "same"):
        raise ValueError(f"vmap: randomness must be 'error', 'different' or 'same', got "
                         f"{randomness!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"vmap: chunk_size must be a positive int or None, got {chunk_size!r}")

    def mapped(*args, **kwargs):
        dims = (in_dims,) * len(args) if not isinstance(in_dims, (tuple, list)) else in_dims
        if len(dims) != len(args):
            raise ValueError(f"vmap: in_dims has {len(dims)} entries for {len(args)} positional "
                             "arguments")
        size = _mapped_size(args, dims)
        state = _random_state() if randomness != "different" else None
        results = []
        for index in range(size):
            if randomness == "same":
                _set_random_state(state)
            sliced = [arg if dim is None else _map(lambda t, d=dim: t.select(d, index), arg)
                      for arg, dim in zip(args, dims)]
            results.append(func(*sliced, **kwargs))
            if randomness == "error" and _random_state() != state:
                raise RuntimeError("vmap: called random operation while in randomness error "
                                   "mode; pass randomness='different' or 'same'")
        return _stacked(results, out_dims)
    return mapped


def _mapped_size(args, dims):
    sizes = set()
    for position, (arg, dim) in enumerate(zip(args, dims)):
        if dim is None:
            continue
        if not isinstance(dim, numbers.Integral):
            raise ValueError(f"vmap: in_dims[{position}] must be an int or None, got {dim!r}")
        leaves = _leaves(arg)
        if not leaves:
            raise ValueError(f"vmap: in_dims[{position}]={dim} but argument {position} holds no "
                             "Tensor")
        for t in leaves:
            if not -t.ndim <= dim < t.ndim:
                raise ValueError(f"vmap: in_dims[{position}]={dim} is out of range for a Tensor "
                                 f"of shape {t.shape}")
            sizes.add(t.shape[dim])
    if not sizes:
        raise ValueError("vmap: at least one argument must be mapped (in_dims all None)")
    if len(sizes) != 1:
        raise ValueError(f"vmap: the mapped dimensions have different sizes {sorted(sizes)}")
    return sizes.pop()


def _stacked(results, out_dims):
    first = results[0]
    if isinstance(first, Tensor):
        dim = out_dims[0] if isinstance(out_dims, (tuple, list)) else out_dims
        return stack(results, dim)
    if isinstance(first, (tuple, list)):
        dims = out_dims if isinstance(out_dims, (tuple, list)) else (out_dims,) * len(first)
        return type(first)(_stacked([r[i] for r in results], dims[i])
                           for i in range(len(first)))
    if isinstance(first, dict):
        return {key: _stacked([r[key] for r in results], out_dims) for key in first}
    raise TypeError(f"vmap: func must return Tensors (or tuples, lists, dicts of them), got "
                    f"{type(first).__name__}")


def _random_state():
    """The generators' states (the cpu's, and the cuda device's where there is one), to see
    whether a call drew random numbers, or to draw the same again."""
    cpu = global_state.get_rng_state().numpy().tobytes()
    cuda = global_state.cuda_get_rng_state().numpy().tobytes() if backend.cuda_available() \
        else None
    return cpu, cuda


def _set_random_state(state):
    cpu, cuda = state
    global_state.set_rng_state(Tensor(np.frombuffer(cpu, np.uint8).copy(), dtype=np.uint8))
    if cuda is not None:
        global_state.cuda_set_rng_state(Tensor(np.frombuffer(cuda, np.uint8).copy(),
                                               dtype=np.uint8))
