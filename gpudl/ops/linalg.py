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


def matrix_shapes(shape_a, shape_b):
    """The shapes of matmul's operands as matrices (a 1-D a a row, a 1-D b a column) and of
    the product of those."""
    a2 = (1,) + shape_a if len(shape_a) == 1 else shape_a
    b2 = shape_b + (1,) if len(shape_b) == 1 else shape_b
    return a2, b2, np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])


class MatMul(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        # a only for b's gradient, b only for a's, as torch: an in-place edit of a frozen
        # operand must not stop backward to the other
        na, nb = ctx.needs_input_grad
        ctx.save_for_backward(a if nb else None, b if na else None)
        ctx.shapes = (a.shape, b.shape)
        return in_float32(_matmul, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        shape_a, shape_b = ctx.shapes
        # 1-D operands are promoted to matrices for the products, then squeezed back
        a2_shape, b2_shape, product = matrix_shapes(shape_a, shape_b)
        g2 = g.reshape(product)
        ga = gb = None
        if na:
            ga = in_float32(_matmul, g2, b.reshape(b2_shape).swapaxes(-1, -2))
            ga = sum_to(ga, a2_shape) if ga.shape != a2_shape else ga
            ga = ga.reshape(shape_a)
        if nb:
            gb = in_float32(_matmul, a.reshape(a2_shape).swapaxes(-1, -2), g2)
            gb = sum_to(gb, b2_shape) if gb.shape != b2_shape else gb
            gb = gb.reshape(shape_b)
        return ga, gb


class Linear(ArrayFunction):
    """y = x @ w.T + b in one node: the layer every model calls most."""

    new_gradients = True        # products and a column sum: .grad takes them without a copy

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return in_float32(_affine, x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return _linear_grads(ctx.needs_input_grad, g, x, w)


def _linear_grads(needs, g, x, w):
    """(gx, gw, gb) of y = x @ w.T + b for the output gradient ``g`` (None where ``needs``,
    per input, is False)."""
    nx, nw, nb = needs[:3]
    gx = in_float32(_matmul, g, w) if nx else None
    gw = gb = None
    rows = math.prod(g.shape[:-1])       # not -1: reshape cannot infer it with 0 features
    if nw:
        gw = in_float32(_matmul, g.reshape(rows, g.shape[-1]).T, x.reshape(rows, x.shape[-1]))
    if nb:
        gb = summed(g.reshape(rows, g.shape[-1]), 0, False)
    return gx, gw, gb


class LinearReLU(ArrayFunction):
    """relu(x @ w.T + b) in one node: the GEMM, then the bias add and the ReLU in one kernel
    on cuda (kernels/activation.bias_relu); backward the ReLU's mask, then Linear's."""

    new_gradients = True

    @staticmethod
    def forward(ctx, x, w, b):
        from ..kernels import activation
        y = activation.bias_relu(in_float32(_matmul, x, w.T), b)
        ctx.save_for_backward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, g):
        from ..kernels import activation
        x, w, y = ctx.saved_tensors
        return _linear_grads(ctx.needs_input_grad, activation.relu_backward(y, g), x, w)


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

