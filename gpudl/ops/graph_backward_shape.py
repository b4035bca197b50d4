"""Graph backwards (create_graph=True, see gpudl.higher_order) of the shape Functions and of
the ops that move or overwrite data: reshape, permute, expand, indexing, cat/stack, the linear
one-input ops (flip, roll, tril/triu, diag, cumsum), index_put and item assignment, in-place
writes through views (gpudl.inplace) and device copies.
"""

import numpy as np

from .. import backend, inplace
from ..higher_order import graph_backward
from ..tensor import _ToDevice
from . import reduce as R
from . import shape as S
from .graph_backward import Adjoint, masked, scattered, sum_to


@graph_backward(S.Reshape)
def _reshape(saved, g):
    return S.Reshape.apply(g, saved.ctx.shape), None


@graph_backward(S.Permute)
def _permute(saved, g):
    return S.Permute.apply(g, tuple(int(i) for i in np.argsort(saved.ctx.axes))), None


@graph_backward(S.Expand)
def _expand(saved, g):
    return sum_to(g, saved.ctx.shape), None


@graph_backward(S.GetItem)
def _getitem(saved, g):
    shape, _, index = saved.ctx.conf
    return scattered(g, shape, index), None


# linear one-input ops whose gradient map is their transpose -> the arguments after the input
_ADJOINT_ARGUMENTS = {
    S.Flip: lambda ctx: (ctx.axes,),
    S.Roll: lambda ctx: ctx.conf,
    S.Triangle: lambda ctx: ctx.conf,
    S.Diag: lambda ctx: (ctx.conf[1],),
    R.CumSum: lambda ctx: (ctx.axis,),
}


@graph_backward(*_ADJOINT_ARGUMENTS)
def _linear_op(saved, g):
    op = saved.node.function
    args = _ADJOINT_ARGUMENTS[op](saved.ctx)
    return (Adjoint.apply(g, op, saved.ctx, args),) + (None,) * len(args)


@graph_backward(S.Cat)
def _cat(saved, g):
    axis, sizes = saved.ctx.conf
    grads, start = [], 0
    for n in sizes:
        if n is None:                       # a skipped 1-D empty input: an empty gradient
            grads.append(g.reshape(-1)[0:0])
            continue
        grads.append(S.GetItem.apply(g, (slice(None),) * axis + (slice(start, start + n),)))
        start += n
    return (None, *grads)


@graph_backward(S.Stack)
def _stack(saved, g):
    axis = saved.ctx.axis
    return (None, *(S.GetItem.apply(g, (slice(None),) * axis + (k,))
                    for k in range(g.shape[axis])))


def _unwritten(shape, write):
    """A boolean mask of ``shape``: False where ``write(mask)`` assigns False, else True."""
    mask = np.ones(shape, bool)
    write(mask)
    return mask


@graph_backward(S.IndexPut)
def _index_put(saved, g):
    index, accumulate = saved.ctx.conf
    na, _, nv, _ = saved.needs_input_grad
    ga = gv = None
    if na:
        ga = g if accumulate else masked(g, _unwritten(g.shape, lambda m: m.__setitem__(
            _host(index), False)))
    if nv:
        gv = S.GetItem.apply(g, index)
    return ga, None, gv, None


@graph_backward(S.SetItem)
def _set_item(saved, g):
    first, index, values_shape = saved.ctx.conf
    na, _, _, nv = saved.needs_input_grad
    ga = gv = None
    if na:
        ga = masked(g, _unwritten(g.shape, lambda m: m[first].__setitem__(_host(index), False)))
    if nv:
        gv = sum_to(S.GetItem.apply(S.GetItem.apply(g, first), index), values_shape)
    return ga, None, None, gv


def _host(index):
    """An index with its arrays on the host (the masks here are NumPy arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(backend.to_numpy(p, "create_graph mask") if hasattr(p, "shape") else p
                  for p in parts)
    return parts if isinstance(index, tuple) else parts[0]


@graph_backward(inplace.CopySlices)
def _copy_slices(saved, g):
    steps = saved.ctx.steps
    outside = np.ones(g.shape, bool, order=saved.ctx.layout)   # the base's layout, as backward
    region = inplace.view_of_array(steps, outside)
    if not np.may_share_memory(region, outside):
        raise RuntimeError("CopySlicesBackward: the view's steps copy an array of the base's "
                           "shape instead of viewing it; cannot route the gradient")
    region[...] = False
    g_values = inplace.view_of_tensor(steps, g) if saved.needs_input_grad[2] else None
    return masked(g, outside), None, g_values


@graph_backward(inplace.Overwrite)
def _overwrite(saved, g):
    return None, (sum_to(g, saved.ctx.shape) if saved.needs_input_grad[1] else None)


@graph_backward(_ToDevice)
def _to_device(saved, g):
    return g.to(saved.ctx.device), None
