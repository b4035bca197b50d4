"""Matrix products (batched and broadcast, as numpy.matmul), through BLAS / cuBLAS."""

import math

import numpy as np

from .. import backend, backends, capture_blas, cpu_matmul
from ..autograd import ArrayFunction
from ._util import in_float32, quiet as _quiet, sum_to, summed, xp_of


def _matmul(a, b):
    if not backend.is_device_array(a):
        return cpu_matmul.matmul(a, b)
    if backend.capture_guard is not None and a.dtype in capture_blas.DTYPES:
        # a CUDA graph captures: CuPy refuses cuBLAS then
        return capture_blas.matmul(a, b)
    _follow_tf32_flag(a)
    return a @ b


def _affine(x, w, b):
    y = _matmul(x, w.T)
    if b is not None:
        y += b
    return y


def _follow_tf32_flag(a):
    """float32 GEMMs on CuPy obey gd.backends.cuda.matmul.allow_tf32 through cuBLAS's mode."""
    if backend.is_device_array(a) and a.dtype == np.float32:
        backends.set_cublas_math_mode()


class MatMul(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return in_float32(_matmul, a, b)

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
            ga = in_float32(_matmul, g2, b2.swapaxes(-1, -2))
            ga = sum_to(ga, a2.shape) if ga.shape != a2.shape else ga
            ga = ga.reshape(a.shape)
        if nb:
            gb = in_float32(_matmul, a2.swapaxes(-1, -2), g2)
            gb = sum_to(gb, b2.shape) if gb.shape != b2.shape else gb
            gb = gb.reshape(b.shape)
        return ga, gb


class Linear(ArrayFunction):
    """y = x @ w.T + b in one node: the layer every model calls most."""

    fresh_gradients = True      # gx, gw: new products; gb: a new sum (autograd._accumulate)

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return in_float32(_affine, x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad
        gx = in_float32(_matmul, g, w) if nx else None
        gw = gb = None
        rows = math.prod(g.shape[:-1])       # not -1: reshape cannot infer it with 0 features
        if nw:
            gw = in_float32(_matmul, g.reshape(rows, g.shape[-1]).T, x.reshape(rows, x.shape[-1]))
        if nb:
            gb = summed(g.reshape(rows, g.shape[-1]), 0, False)
        return gx, gw, gb


class Einsum(ArrayFunction):
    """numpy.einsum with an explicit equation (``"ij,jk->ik"``: no ellipsis, no repeated
    subscript within one operand). The gradient of each operand is another einsum: the output
    gradient with the other operands, summed back over the operand's own subscripts."""

    @staticmethod
    def forward(ctx, equation, *operands):
        ctx.save_for_backward(*operands)
        ctx.equation = equation
        einsum = xp_of(operands[0]).einsum
        _follow_tf32_flag(operands[0])          # CuPy's einsum contracts through cuBLAS
        return in_float32(lambda *arrays: einsum(equation, *arrays), *operands)

    @staticmethod
    def backward(ctx, g):
        operands = ctx.saved_tensors
        inputs, output = ctx.equation.split("->")
        subs = inputs.split(",")
        xp = xp_of(g)
        _follow_tf32_flag(g)
        grads = [None]
        for i, (sub, a) in enumerate(zip(subs, operands)):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            equation, kept, others = gradient_equation(subs, output, i)
            ga = in_float32(lambda *arrays: xp.einsum(equation, *arrays), g,
                            *(operands[j] for j in others))
            # subscripts summed away in forward (only in this operand) come back by broadcasting
            ga = ga.reshape(tuple(n if c in kept else 1 for c, n in zip(sub, a.shape)))
            grads.append(xp.broadcast_to(ga, a.shape).astype(a.dtype, copy=True))
        return tuple(grads)


def gradient_equation(subs, output, i):
    """(equation, kept subscripts, other operands) of the einsum that gives operand ``i``'s
    gradient from the output gradient and the other operands (``subs``: each operand's
    subscripts)."""
    others = [j for j in range(len(subs)) if j != i]
    kept = "".join(c for c in subs[i] if c in output or any(c in subs[j] for j in others))
    return ",".join([output] + [subs[j] for j in others]) + "->" + kept, kept, others


class VectorNorm(ArrayFunction):
    """The ``ord``-norm of ``a`` over ``axes``: inf/-inf (max/min of |a|), 0 (count of
    non-zeros), or sum(|a|^ord)^(1/ord). At a zero norm the gradient is 0, as in torch."""

    @staticmethod
    def forward(ctx, a, ord, axes, keepdims):
        xp = xp_of(a)
        mag = abs(a)
        if ord == float("inf"):
            y = mag.max(axis=axes, keepdims=True)
        elif ord == float("-inf"):
            y = mag.min(axis=axes, keepdims=True)
        elif ord == 0:
            y = (mag != 0).sum(axis=axes, keepdims=True).astype(a.dtype)
        elif ord == 1:
            y = mag.sum(axis=axes, keepdims=True)
        elif ord == 2:
            y = xp.sqrt((mag * mag).sum(axis=axes, keepdims=True))
        else:
            y = (mag ** ord).sum(axis=axes, keepdims=True) ** (1.0 / ord)
        ctx.save_for_backward(a, y)
        ctx.conf = (ord, axes)
        return y if keepdims else y.reshape(tuple(n for i, n in enumerate(a.shape)
                                                  if i not in axes))

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        ord, axes = ctx.conf
        xp = xp_of(a)
        g = g.reshape(y.shape)
        sign = xp.sign(a)
        if ord in (float("inf"), float("-inf")):
            hits = abs(a) == y
            return g * sign * hits / hits.sum(axis=axes, keepdims=True), None, None, None
        if ord == 0:
            return xp.zeros_like(a), None, None, None
        if ord == 1:
            return g * sign, None, None, None
        safe = xp.where(y == 0, 1, y)
        with _quiet(xp):
            ga = a / safe if ord == 2 else sign * abs(a) ** (ord - 1) / safe ** (ord - 1)
        return g * xp.where(y == 0, 0, ga), None, None, None

