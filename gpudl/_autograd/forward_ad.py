"""torch.autograd.forward_ad: dual tensors, with tangents computed in reverse mode.

gpudl has no forward-mode engine. ``make_dual(primal, tangent)`` inside a ``dual_level`` returns
a tensor that records (an alias of ``primal``, or a detached copy requiring grad when
``primal`` does not: unlike torch, the dual then requires grad) and remembers its tangent.
``unpack_dual(t)`` gives the tangent of a computed ``t`` as the Jacobian-vector product of
``t`` with respect to the level's duals, by the double-vjp trick over the recorded graph
(autograd.functional.jacobian_vector_product: about three backward passes per call, the graph
kept, each op on the way needing a differentiable backward). So, unlike torch, the ops between
the duals and ``t`` must run with grad mode on, and a tangent is computed when asked for, not
with each op; the tangent comes back detached (torch's keeps a graph to what it depends on).
"""

import collections

from .. import autograd

__all__ = ["UnpackedDualTensor", "dual_level", "enter_dual_level", "exit_dual_level",
           "make_dual", "unpack_dual"]

UnpackedDualTensor = collections.namedtuple("UnpackedDualTensor", ["primal", "tangent"])
_levels = []        # per open level (innermost last): [(dual tensor, tangent)]


def enter_dual_level():
    """Open a new level (torch allows one at a time) and return its index."""
    if _levels:
        raise RuntimeError("enter_dual_level: nested forward mode AD levels are not "
                           "supported; exit the current one first")
    _levels.append([])
    return len(_levels) - 1


def exit_dual_level(*, level=None):
    """Close the current level: its duals' tangents are forgotten."""
    if not _levels or level not in (None, len(_levels) - 1):
        raise RuntimeError(f"exit_dual_level: level {level!r} is not the current level "
                           f"({len(_levels) - 1 if _levels else None})")
    _levels.pop()


class dual_level:
    """``with dual_level(): ...``: a forward-AD level for make_dual and unpack_dual."""

    def __enter__(self):
        return enter_dual_level()

    def __exit__(self, *exc):
        exit_dual_level()
        return False


def _duals(level, what):
    if not _levels or level not in (None, len(_levels) - 1):
        return None
    return _levels[-1]


def make_dual(tensor, tangent, *, level=None):
    """A tensor holding ``tensor``'s values whose tangent is ``tangent`` (same shape) at the
    current level."""
    Tensor = autograd._Tensor
    duals = _duals(level, "make_dual")
    if duals is None:
        raise RuntimeError("make_dual: to create a dual Tensor, you need to be inside a "
                           "dual_level() block")
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError(f"make_dual: expected Tensors, got {type(tensor).__name__} and "
                        f"{type(tangent).__name__}")
    if tangent.shape != tensor.shape:
        raise RuntimeError(f"make_dual: the tangent has shape {tangent.shape}, the primal "
                           f"{tensor.shape}; they must match")
    with autograd.enable_grad():
        dual = tensor.view_as(tensor) if tensor.requires_grad else \
            tensor.detach().requires_grad_()
    duals.append((dual, tangent.detach().astype(tensor.dtype)))
    return dual


def unpack_dual(tensor, *, level=None):
    """(primal, tangent) of ``tensor``: the tangent None when it depends on no dual of the
    level (the primal is ``tensor`` itself)."""
    from ..autograd_functional import jacobian_vector_product
    duals = _duals(level, "unpack_dual")
    if not duals or not tensor.requires_grad:
        return UnpackedDualTensor(tensor, None)
    for dual, tangent in duals:
        if dual is tensor:
            return UnpackedDualTensor(tensor, tangent)
    reached = _reached(tensor, duals)
    if not reached:
        return UnpackedDualTensor(tensor, None)
    product, = jacobian_vector_product((tensor,), [d for d, _ in reached],
                                       [t for _, t in reached], op="unpack_dual")
    return UnpackedDualTensor(tensor, product.detach())


def _reached(tensor, duals):
    """The (dual, tangent) pairs whose dual ``tensor``'s recorded graph reaches."""
    if tensor.grad_fn is None:
        return []
    edges = {(tensor.grad_fn, tensor._out_index)}
    leaves = set()
    for node in autograd._topological_order(tensor.grad_fn):
        for edge in node.edges:
            if edge.__class__ is tuple:
                edges.add(edge)
            elif edge is not None:
                leaves.add(id(edge))
    return [(d, t) for d, t in duals
            if (id(d) in leaves if d.grad_fn is None else (d.grad_fn, d._out_index) in edges)]
