"""Reductions: sum, mean, max/min (values and indices), var/std, and softmax/log_softmax."""

import warnings

import numpy as np

from .. import backend
from ..dtypes import LOW_PRECISION
from ..autograd import ArrayFunction
from ..kernels import rows as row_kernels
from ._util import array_mean, in_float32, integral_dtype, masked_gradient, mean_of, quiet as _quiet, \
    row_major, summed, xp_of


def _expand_back(g, axes, keepdims, shape):
    """Give a reduced gradient back its reduced axes (as size 1) so it broadcasts over ``shape``.
    Leading axes need none (broadcasting adds them), nor do all axes, the usual loss.sum()."""
    if not keepdims and axes and axes != tuple(range(len(axes))):
        g = xp_of(g).expand_dims(g, axes)
    return g


def _broadcast_back(g, shape):
    """``broadcast_to(g, shape)``: a read-only view. For a NumPy 0-d ``g`` (a full reduction)
    the stride-0 view is built directly: NumPy's broadcast_to costs ~2 us, a tiny op's budget."""
    if type(g) is np.ndarray and g.ndim == 0:
        view = np.ndarray(shape, g.dtype, g, 0, (0,) * len(shape))
        view.flags.writeable = False
        return view
    return xp_of(g).broadcast_to(g, shape)


class Sum(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.conf = (a.shape, axes, keepdims)
        return summed(a, axes, keepdims)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdims = ctx.conf
        return _broadcast_back(_expand_back(g, axes, keepdims, shape), shape), None, None


class Mean(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.conf = (a.shape, axes, keepdims)
        return mean_of(a, axes, keepdims)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdims = ctx.conf
        count = 1
        for ax in axes:
            count *= shape[ax]
        g = _expand_back(g, axes, keepdims, shape)
        if backend.on_device(g) and g.dtype in (np.float32, np.float64) and g.size > 1:
            # the whole gradient in one kernel, C-contiguous: a consumer that needs it so (a
            # LayerNorm's backward, the transformer step's pooling) copies no broadcast view
            full = xp_of(g).empty(shape, g.dtype)
            return xp_of(g).divide(g, g.dtype.type(max(count, 1)), out=full), None, None
        return _broadcast_back(g / max(count, 1), shape), None, None


class Extreme(ArrayFunction):
    """max/min over all axes (``axis is None``; ties share the gradient evenly, as torch.amax)
    or along one axis (returns values and int64 indices; the gradient goes to the index)."""

    @staticmethod
    def forward(ctx, a, axis, keepdims, largest):
        xp = xp_of(a)
        if axis is None:
            y = a.max() if largest else a.min()
            ctx.save_for_backward(a, y)
            ctx.conf = (axis, keepdims)
            return y.reshape((1,) * a.ndim) if keepdims else y
        idx = a.argmax(axis=axis) if largest else a.argmin(axis=axis)
        # NaN wins, as in torch: argmax/argmin already point at the first NaN
        idx = xp.expand_dims(idx, axis)
        y = xp.take_along_axis(a, idx, axis=axis)
        ctx.save_for_backward(idx)
        ctx.conf = (axis, keepdims, a.shape)
        if not keepdims:
            y, idx = y.squeeze(axis), idx.squeeze(axis)
        return y, idx.astype(xp.int64)

    @staticmethod
    def backward(ctx, g, *unused):
        xp = xp_of(g)
        if ctx.conf[0] is None:
            a, y = ctx.saved_tensors
            hits = (a == y) | (xp.isnan(a) & xp.isnan(y))
            return masked_gradient(hits, g.reshape(()) / hits.sum()), None, None, None
        (idx,) = ctx.saved_tensors
        axis, keepdims, shape = ctx.conf
        if not keepdims:
            g = xp.expand_dims(g, axis)
        ga = xp.zeros(shape, g.dtype)
        xp.put_along_axis(ga, idx, g, axis=axis)
        return ga, None, None, None


class Var(ArrayFunction):
    """Variance over ``axes``; float16/bfloat16 in float32 throughout, rounded once at the end
    (as torch: centring and squaring in float16 left var ~1 ulp off)."""

    @staticmethod
    def forward(ctx, a, axes, correction, keepdims):
        return backend.cast(_variance(ctx, a, axes, correction, keepdims), a.dtype)

    @staticmethod
    def backward(ctx, g):
        (centered,) = ctx.saved_tensors
        axes, keepdims, denom = ctx.conf
        g = _expand_back(g, axes, keepdims, centered.shape)
        with _quiet(xp_of(g)):
            grad = g * (2 / denom if denom else float("nan")) * centered
        return backend.cast(grad, ctx.dtype), None, None, None


def _variance(ctx, a, axes, correction, keepdims):
    """The variance of ``a`` (float32 for float16/bfloat16 input), saving the centred values
    (in that dtype) and the reduction on ``ctx`` for Var.backward."""
    ctx.dtype = a.dtype
    wide = a.astype(np.float32) if a.dtype in LOW_PRECISION else a
    xp = xp_of(wide)
    centered = wide - array_mean(wide, axes)
    # once more: the mean rounded to the dtype can miss a constant slice's value by an ulp,
    # which left it a variance of ~ulp^2, not 0, and std's gradient O(1), not torch's 0
    with _quiet(xp):
        centered = centered - array_mean(centered, axes)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    denom = max(count - correction, 0)
    if denom == 0:                          # nan, as torch, which also says why
        warnings.warn("var/std: degrees of freedom is <= 0: the correction "
                      f"({correction}) is not below the number of elements reduced "
                      f"({count}); the result is nan", UserWarning)
    ctx.save_for_backward(centered)
    ctx.conf = (axes, keepdims, denom)
    with _quiet(xp):
        return summed(centered * centered, axes, keepdims) / denom


class Std(Var):
    """sqrt(var); as torch, the gradient is 0 where the std is 0 (a constant slice), not the
    0 * inf = nan that sqrt's own derivative would give."""

    @staticmethod
    def forward(ctx, a, axes, correction, keepdims):
        y = xp_of(a).sqrt(_variance(ctx, a, axes, correction, keepdims))
        ctx.std = y
        return backend.cast(y, a.dtype)

    @staticmethod
    def backward(ctx, g):
        y = ctx.std
        with _quiet(xp_of(g)):
            return Var.backward(ctx, xp_of(g).where(y == 0, 0, g / (2 * y)))


def softmax_array(a, axis):
    if axis == a.ndim - 1 and row_kernels.applies(row_kernels.SOFTMAX_MAX_SIZE, a):
        return row_kernels.softmax(a, log=False)
    xp = xp_of(a)
    if a.size == 0:
        return a.copy()
    with _quiet(xp):            # a row all -inf (fully masked) gives nan, as torch, silently
        shifted = a - a.max(axis=axis, keepdims=True)
        e = xp.exp(shifted)
        return e / e.sum(axis=axis, keepdims=True)


def log_softmax_array(a, axis):
    if axis == a.ndim - 1 and row_kernels.applies(row_kernels.SOFTMAX_MAX_SIZE, a):
        return row_kernels.softmax(a, log=True)
    xp = xp_of(a)
    if a.size == 0:
        return a.copy()
    with _quiet(xp):
        shifted = a - a.max(axis=axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axis):
        y = in_float32(softmax_array, a, axis)
        y = y if y.flags.c_contiguous else row_major(y)   # no call on the usual path
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        axis = ctx.axis
        if axis == y.ndim - 1 and row_kernels.applies(row_kernels.SOFTMAX_MAX_SIZE, y, g):
            return row_kernels.softmax_backward(g, y, log=False), None
        return in_float32(lambda g, y: y * (g - (g * y).sum(axis=axis, keepdims=True)), g, y), None


class LogSoftmax(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axis):
        y = in_float32(log_softmax_array, a, axis)
        y = y if y.flags.c_contiguous else row_major(y)   # no call on the usual path
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.axis == y.ndim - 1 and row_kernels.applies(row_kernels.SOFTMAX_MAX_SIZE, y,
                                                          g):
            return row_kernels.softmax_backward(g, y, log=True), None
        axis, exp = ctx.axis, xp_of(y).exp
        return in_float32(lambda g, y: g - exp(y) * g.sum(axis=axis, keepdims=True), g, y), None


class Amax(ArrayFunction):
    """max (``largest``) or min over ``axes``; ties share the gradient evenly, as torch.amax."""

    @staticmethod
    def forward(ctx, a, axes, keepdims, largest):
        y = a.max(axis=axes, keepdims=True) if largest else a.min(axis=axes, keepdims=True)
        ctx.save_for_backward(a, y)
        ctx.axes = axes
        return y if keepdims else y.reshape(tuple(n for i, n in enumerate(a.shape)
                                                  if i not in axes))

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        hits = (a == y)
        g = g.reshape(y.shape)
        return g * hits / hits.sum(axis=ctx.axes, keepdims=True), None, None, None


def _along(axis, start, stop):
    """The index of positions [start, stop) along ``axis``."""
    return (slice(None),) * axis + (slice(start, stop),)


def _exclusive_cumprod(a, axis, reverse=False):
    """prod of the elements before (after, with ``reverse``) each one along ``axis``."""
    xp = xp_of(a)
    if reverse:
        return xp.flip(_exclusive_cumprod(xp.flip(a, axis), axis), axis)
    ones = xp.ones_like(a[_along(axis, 0, 1)])
    head = a[_along(axis, 0, a.shape[axis] - 1)]
    return xp.concatenate([ones, xp.cumprod(head, axis=axis)], axis=axis)


class Prod(ArrayFunction):
    """Product over one axis (or all, ``axis=None``); the gradient is the product of the other
    elements, computed without dividing, so zeros are exact."""

    @staticmethod
    def forward(ctx, a, axis, keepdims):
        ctx.save_for_backward(a)
        ctx.conf = (axis, keepdims)
        return in_float32(lambda x: x.prod(axis=axis, keepdims=keepdims, dtype=x.dtype), a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        axis, keepdims = ctx.conf
        flat = a.reshape(-1) if axis is None else a
        ax = 0 if axis is None else axis
        if flat.shape[ax] == 0:
            return xp_of(a).zeros_like(a), None, None
        others = in_float32(lambda f: _exclusive_cumprod(f, ax) * _exclusive_cumprod(f, ax, True),
                            flat)
        if axis is None:
            return (g.reshape(()) * others).reshape(a.shape), None, None
        if not keepdims:
            g = xp_of(g).expand_dims(g, axis)
        return g * others, None, None


class CumSum(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return row_major(in_float32(
            lambda x: xp_of(x).cumsum(x, axis=axis, dtype=integral_dtype(x)), a))

    @staticmethod
    def backward(ctx, g):
        xp, axis = xp_of(g), ctx.axis
        return in_float32(lambda g: xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis), g), None


class CumProd(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axis):
        y = row_major(in_float32(lambda x: xp_of(x).cumprod(x, axis=axis), a))
        ctx.save_for_backward(a, y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        if a.shape[ctx.axis] == 0:
            return xp_of(a).zeros_like(a), None
        # in float32 for float16/bfloat16 (CuPy's scans have no bfloat16 arithmetic)
        return in_float32(lambda g, a, y: _cumprod_gradient(g, a, y, ctx.axis), g, a, y), None


def _cumprod_gradient(g, a, y, axis):
    """The gradient of y = cumprod(a) along ``axis`` (non-empty) for the output gradient g."""
    xp = xp_of(g)
    # the quick form: sum_{j >= k} g_j y_j / a_k; the choice reads the device, by design
    # (the general form costs a launch per position)
    if backend.host_value((a != 0).all(), "cumprod backward (zero check)"):
        return xp.flip(xp.cumsum(xp.flip(g * y, axis), axis=axis), axis) / a
    # d y_j / d a_k = prod_{i <= j, i != k} a_i for j >= k: the product before k times the
    # running product after it; summed over j >= k with a reversed cumulative sum
    before = _exclusive_cumprod(a, axis)
    ga = xp.zeros_like(y)
    n = a.shape[axis]
    for k in range(n):
        after = xp.concatenate([xp.ones_like(a[_along(axis, k, k + 1)]),
                                xp.cumprod(a[_along(axis, k + 1, n)], axis=axis)], axis=axis)
        total = (g[_along(axis, k, n)] * after).sum(axis=axis, keepdims=True)
        ga[_along(axis, k, k + 1)] = total * before[_along(axis, k, k + 1)]
    return ga
