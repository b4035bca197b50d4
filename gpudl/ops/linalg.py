"""Matrix products (batched and broadcast, as numpy.matmul), through BLAS / cuBLAS."""

import math

import numpy as np

from ..autograd import Function
from ._util import sum_to


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        # 1-D operands are promoted to matrices for the products, then squeezed back
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
                       + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if na:
            ga = g2 @ b2.swapaxes(-1, -2)
            ga = sum_to(ga, a2.shape) if ga.shape != a2.shape else ga
            ga = ga.reshape(a.shape)
        if nb:
            gb = a2.swapaxes(-1, -2) @ g2
            gb = sum_to(gb, b2.shape) if gb.shape != b2.shape else gb
            gb = gb.reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x @ w.T + b in one node: the layer every model calls most."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        y = x @ w.T
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad
        gx = g @ w if nx else None
        gw = gb = None
        rows = math.prod(g.shape[:-1])       # not -1: reshape cannot infer it with 0 features
        if nw:
            gw = g.reshape(rows, g.shape[-1]).T @ x.reshape(rows, x.shape[-1])
        if nb:
            gb = g.reshape(rows, g.shape[-1]).sum(axis=0)
        return gx, gw, gb
