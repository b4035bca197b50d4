"""torch's wider reductions and scans: cummax, cummin, logcumsumexp, nansum, nanmean,
nanmedian, quantile, nanquantile, aminmax, bincount, isin, unique_consecutive, cov, corrcoef,
trapezoid/trapz, cumulative_trapezoid, sum_to_size, and the in-place cumsum_, cumprod_, tril_,
triu_.

Running extremes and logcumsumexp are inclusive scans by doubling (log2(n) whole-array steps,
the same code on NumPy and CuPy); positions are picked on raw arrays and values read through
gather, so the picked elements get the gradient, as torch's do.
"""

import numbers
from collections import namedtuple

import numpy as np

from . import autograd, backend, dtypes, inplace
from .amp.autocast_mode import cast_inputs, state as _autocast
from .autograd import ArrayFunction
from .functions import require_tensors
from .ops import elementwise as E
from .ops._util import is_int, normalize_axis, quiet, xp_of
from .ops.sparse import DEFERRED_NOTE
from .tensor import Tensor, where
from .tensor_order import SharedByTies

Picked = namedtuple("Picked", ["values", "indices"])
MinMax = namedtuple("MinMax", ["min", "max"])


def inclusive_scan(combine, a, axis):
    """``combine`` (associative, elementwise) accumulated along ``axis``: out[j] combines a[0..j]
    (Hillis-Steele doubling: step s combines each element with the one s before it)."""
    out = a.copy()
    n, shift = a.shape[axis], 1
    while shift < n:
        later = (slice(None),) * axis + (slice(shift, None),)
        earlier = (slice(None),) * axis + (slice(None, n - shift),)
        out[later] = combine(out[later], out[earlier])
        shift *= 2
    return out


def _wrap(array, like):
    return Tensor._make(array, False, None, 0, like._device)


# ----------------------------------------------------------------- scans
def _running_extreme(op, input, dim, largest):
    require_tensors(op, input=input)
    axis = normalize_axis(dim, input.ndim, op)
    if input.ndim == 0:
        return Picked(input.clone(), _wrap(xp_of(input._data).zeros((), np.int64), input))
    data = input._data
    xp = xp_of(data)
    running = inclusive_scan(xp.maximum if largest else xp.minimum, data, axis)
    changed = data == running        # where the running extreme takes this element (ties too)
    if dtypes.is_floating(data.dtype):
        changed |= xp.isnan(data)     # NaN propagates; each NaN becomes the new index
    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    positions = xp.where(changed, xp.arange(data.shape[axis]).reshape(shape), -1)
    indices = inclusive_scan(xp.maximum, positions, axis).astype(np.int64, copy=False)
    return Picked(input.gather(axis, _wrap(indices, input)), _wrap(indices, input))


def cummax(input, dim):
    """``(values, indices)``: the running maximum along ``dim`` and where it was found (the
    latest of equal values; NaN propagates)."""
    return _running_extreme("cummax", input, dim, True)


def cummin(input, dim):
    """``(values, indices)``: the running minimum along ``dim``, as cummax."""
    return _running_extreme("cummin", input, dim, False)


class LogCumSumExp(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axis):
        xp = xp_of(a)
        with quiet(xp):
            out = inclusive_scan(xp.logaddexp, a, axis)
        ctx.conf = (a, out, axis)
        return out

    @staticmethod
    def backward(ctx, g):
        # d out_j / d a_i = exp(a_i - out_j) for i <= j: the gradient is a reversed
        # logcumsumexp of log|g| - out, taken apart by sign so that nothing overflows
        a, out, axis = ctx.conf
        xp = xp_of(g)
        with quiet(xp):
            def reversed_lse(weights):
                flipped = xp.flip(xp.log(weights) - out, axis)
                return xp.flip(inclusive_scan(xp.logaddexp, flipped, axis), axis)
            positive = xp.exp(a + reversed_lse(xp.maximum(g, 0)))
            negative = xp.exp(a + reversed_lse(xp.maximum(-g, 0)))
        return (positive - negative).astype(a.dtype, copy=False), None


def logcumsumexp(input, dim):
    """log(cumsum(exp(input))) along ``dim``, computed without overflow."""
    require_tensors("logcumsumexp", input=input)
    axis = normalize_axis(dim, input.ndim, "logcumsumexp")
    x = input._floating()
    return LogCumSumExp.apply(x, axis) if x.ndim else x.clone()


# ----------------------------------------------------------------- NaN-ignoring reductions
def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """The sum over ``dim`` (all by default) with NaN counted as zero, in ``dtype`` when given
    (the input cast to it first, as torch)."""
    require_tensors("nansum", input=input)
    if dtype is not None:
        input = input.to(dtype)
    if dtypes.is_floating(input.dtype):
        input = E.NanAsZero.apply(input)
    return input.sum(dim, keepdim)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """The mean over ``dim`` of the values that are not NaN (NaN where none is), in ``dtype``
    when given."""
    require_tensors("nanmean", input=input)
    if dtype is not None:
        input = input.to(dtype)
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"nanmean(): expected input to have floating point dtype but got "
                           f"{input.dtype}")
    counted = (~input.isnan()).sum(dim, keepdim)
    return nansum(input, dim, keepdim) / counted


def _nanmedian_position(data, axis, xp):
    """The sorted position of the lower median of the values that are not NaN (NaN sorts last;
    an all-NaN row picks its first NaN)."""
    if not dtypes.is_floating(data.dtype):
        return (data.shape[axis] - 1) // 2
    valid = (~xp.isnan(data)).sum(axis=axis, keepdims=True)
    return xp.maximum(valid - 1, 0) // 2


def nanmedian(input, dim=None, keepdim=False):
    """The lower median ignoring NaN: of all elements (a 0-d tensor), or along ``dim`` as
    ``(values, indices)``; NaN where a row holds only NaN."""
    require_tensors("nanmedian", input=input)
    if dim is None:
        if not input.numel():
            return input.median()
        flat = input.reshape(-1)
        picked = flat.detach()._pick("nanmedian", 0, False, _nanmedian_position)
        return SharedByTies.apply(flat, picked.values._data)
    return input._pick("nanmedian", dim, keepdim, _nanmedian_position)


_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _check_q(op, q, qs):
    """Refuse q outside [0, 1]: a number at once; a tensor's values at once on the cpu, at the
    next device read on the cuda device (a device-side check: no read per call)."""
    message = f"{op}() q values must be in the range [0, 1]"
    if not isinstance(q, Tensor):
        if q < 0 or q > 1:
            raise RuntimeError(message)
        return
    outside = ((qs < 0) | (qs > 1)).any()
    if backend.on_device(qs):
        backend.defer_check(outside, lambda value: not value,
                            lambda _: RuntimeError(message + DEFERRED_NOTE))
    elif outside:
        raise RuntimeError(message)


def _quantile(op, input, q, dim, keepdim, interpolation, ignore_nan):
    require_tensors(op, input=input)
    if _autocast.active:
        input, q = cast_inputs(op, input, q) if isinstance(q, Tensor) else (
            cast_inputs(op, input)[0], q)
    if input.dtype not in (dtypes.float32, dtypes.float64):
        raise RuntimeError(f"{op}() input tensor must be either float or double dtype, got "
                           f"{input.dtype}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"{op}() interpolation must be one of {', '.join(_INTERPOLATIONS)}. "
                         f"Got {interpolation!r}")
    xp = xp_of(input._data)
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise RuntimeError(f"{op}() q must be a scalar or 1D tensor, got shape {q.shape}")
        if q.dtype != input.dtype:
            raise RuntimeError(f"{op}() q tensor must be same dtype as the input tensor, got "
                               f"{q.dtype} and {input.dtype}")
        qs = q._data
    elif isinstance(q, (int, float)) and not isinstance(q, bool):
        qs = xp.asarray(q, input.dtype)
    else:
        raise TypeError(f"{op}() q must be a number or a Tensor, got {type(q).__name__}")
    if input.numel() == 0:
        raise RuntimeError(f"{op}() input tensor must be non-empty")
    _check_q(op, q, qs)
    if dim is None:
        source = input.reshape(-1)
        axis, kept_shape = 0, (1,) * input.ndim
    else:
        axis = normalize_axis(dim, input.ndim, op)
        source = input if input.ndim else input.reshape(1)
        kept_shape = tuple(1 if d == axis else n for d, n in enumerate(input.shape))
    ordered = source.sort(axis).values.movedim(axis, -1)        # (..., n), NaN last
    n = ordered.shape[-1]
    nans = xp.isnan(ordered._data).sum(axis=-1, keepdims=True)
    if ignore_nan:
        last = (n - nans - 1).astype(input.dtype)                 # -1 for an all-NaN row
    else:
        last = xp.where(nans > 0, 0, n - 1).astype(input.dtype)   # NaN rows: position n - 1
    ranks = qs.reshape(-1)[None, :] * last.reshape(-1, 1)         # (rows, len(q))
    rows = ordered.reshape(-1, n)
    fill_nan = (last < 0).reshape(-1, 1) | ((nans > 0) & (not ignore_nan)).reshape(-1, 1)
    ranks = xp.where(fill_nan, n - 1, xp.maximum(ranks, 0))
    below, above = xp.floor(ranks).astype(np.int64), xp.ceil(ranks).astype(np.int64)
    if interpolation == "nearest":
        below = above = xp.around(ranks).astype(np.int64)        # half to even, as torch
    elif interpolation == "lower":
        above = below
    elif interpolation == "higher":
        below = above
    low, high = rows.gather(1, _wrap(below, input)), rows.gather(1, _wrap(above, input))
    if interpolation == "midpoint":
        out = low + (high - low) * 0.5
    elif interpolation == "linear":       # the weight from q itself: q gets its gradient
        q_row = q.reshape(1, -1) if isinstance(q, Tensor) else _wrap(qs.reshape(1, -1), input)
        weight = q_row * _wrap(last.reshape(-1, 1), input) - _wrap(below.astype(input.dtype),
                                                                   input)
        out = low.lerp(high, where(_wrap(fill_nan, input), 0.0, weight))
    else:
        out = low
    out = out.reshape(ordered.shape[:-1] + (-1,)).movedim(-1, 0)    # (len(q), reduced...)
    if keepdim:
        out = out.reshape((out.shape[0],) + kept_shape)
    return out if isinstance(q, Tensor) and q.ndim else out.squeeze(0)


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """The ``q``-th quantiles (a number, or a 1-D tensor: its dim first) of ``input``
    (flattened) or along ``dim``, interpolating between the two nearest sorted values
    (``interpolation``: linear, lower, higher, midpoint, nearest); NaN where a row holds NaN."""
    return _quantile("quantile", input, q, dim, keepdim, interpolation, False)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """quantile of the values that are not NaN (NaN where a row holds only NaN)."""
    return _quantile("nanquantile", input, q, dim, keepdim, interpolation, True)


def aminmax(input, *, dim=None, keepdim=False):
    """``(min, max)`` over ``dim`` (all by default), ties sharing the gradient as amin/amax."""
    require_tensors("aminmax", input=input)
    if input.numel() == 0 and (dim is None or input.shape[normalize_axis(dim, input.ndim,
                                                                         "aminmax")] == 0):
        raise RuntimeError(f"aminmax(): cannot compute aminmax over an empty dimension as the "
                           f"operation has no identity (shape {input.shape})")
    if dim is None:
        low, high = input.amin(), input.amax()
        if keepdim:
            low, high = (t.reshape((1,) * input.ndim) for t in (low, high))
        return MinMax(low, high)
    if input.ndim == 0:
        normalize_axis(dim, 0, "aminmax")
        return MinMax(input.clone(), input.clone())
    return MinMax(input.amin(dim, keepdim), input.amax(dim, keepdim))


# ----------------------------------------------------------------- counting and membership
def bincount(input, weights=None, minlength=0):
    """How often each value 0..max occurs in the non-negative 1-D int ``input`` (at least
    ``minlength`` bins), or the sums of ``weights`` per value (float weights keep their dtype,
    others give float64). The size depends on the data: reads the device on cuda."""
    require_tensors("bincount", input=input)
    if input.ndim != 1 or input.dtype.kind not in "iu":
        raise RuntimeError(f"bincount only supports 1-d non-negative integral inputs, got "
                           f"{input.dtype} of shape {input.shape}")
    if not is_int(minlength) or minlength < 0:
        raise RuntimeError(f"bincount: minlength should be >= 0, got {minlength!r}")
    data = input._data
    xp = xp_of(data)
    if weights is not None:
        require_tensors("bincount", weights=weights)
        if weights.shape != input.shape:
            raise RuntimeError(f"bincount: weights should be 1-d and have the same length as "
                               f"input, got shapes {weights.shape} and {input.shape}")
    top = int(backend.host_value(data.max(), "bincount (the size)")) if data.size else -1
    low = int(backend.host_value(data.min(), "bincount (a negative value)")) if data.size else 0
    if low < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs, got a "
                           f"negative value {low}")
    if weights is None:
        counts = xp.zeros(max(top + 1, minlength), np.int64)
        backend.scatter_add(counts, data.astype(np.int64), xp.ones(data.size, np.int64))
        return _wrap(counts, input)
    dtype = weights.dtype if weights.dtype in (dtypes.float32, dtypes.float64) else np.float64
    counts = xp.zeros(max(top + 1, minlength), dtype)
    backend.scatter_add(counts, data.astype(np.int64), weights._data.astype(dtype))
    return _wrap(counts, input)


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """Bool tensor of elements' shape: whether each element occurs in ``test_elements``
    (either may be a number), negated with ``invert``."""
    if not isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):
        raise TypeError("isin: elements or test_elements must be a Tensor")
    for name, value in (("elements", elements), ("test_elements", test_elements)):
        if not isinstance(value, (Tensor, numbers.Number, np.bool_)):
            raise TypeError(f"isin: {name} must be a Tensor or a number, got "
                            f"{type(value).__name__}")
    like = elements if isinstance(elements, Tensor) else test_elements
    xp = backend.xp_for(like._device)
    a, b = (x._data if isinstance(x, Tensor) else xp.asarray(x) for x in (elements,
                                                                          test_elements))
    if a.dtype != b.dtype:
        common = dtypes.promote_types(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    found = xp.isin(a, b, invert=invert)
    return _wrap(xp.asarray(found), like)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """The elements (or slices along ``dim``) with each run of equal neighbours kept once; with
    ``return_inverse`` the run each element went to, with ``return_counts`` each run's length.
    The size depends on the data: reads the device on cuda."""
    require_tensors("unique_consecutive", input=input)
    data = input._data
    xp = xp_of(data)
    if dim is None:
        rows, inverse_shape = data.reshape(-1, 1), data.shape
    else:
        axis = normalize_axis(dim, input.ndim, "unique_consecutive")
        others = int(np.prod(data.shape)) // data.shape[axis] if data.shape[axis] else 0
        rows = xp.moveaxis(data, axis, 0).reshape(data.shape[axis], others)
        inverse_shape = (data.shape[axis],)
    starts = xp.ones(rows.shape[0], bool)
    starts[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    backend.count_read(starts, "unique_consecutive (a data-dependent size)")
    kept = xp.nonzero(starts)[0]
    if dim is None:
        values = data.reshape(-1)[kept]
    else:
        values = xp.take(data, kept, axis=axis)
    out = [_wrap(values, input)]
    if return_inverse:
        out.append(_wrap((xp.cumsum(starts) - 1).astype(np.int64).reshape(inverse_shape), input))
    if return_counts:
        ends = xp.concatenate([kept[1:], xp.asarray([rows.shape[0]], kept.dtype)])
        out.append(_wrap((ends - kept).astype(np.int64), input))
    return out[0] if len(out) == 1 else tuple(out)


# ----------------------------------------------------------------- covariance
def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance matrix of the variables in the rows of ``input`` (observations in its
    columns; a 1-D input is one variable, giving a 0-d tensor), weighted by the integer
    frequencies ``fweights`` and the observation weights ``aweights``."""
    require_tensors("cov", input=input)
    if input.ndim > 2:
        raise ValueError(f"cov(): expected input to have two or fewer dimensions but got an "
                         f"input with {input.ndim} dimensions")
    x = input.reshape(1, -1) if input.ndim < 2 else input
    x = x._floating()
    observations = x.shape[1]
    weights = None
    for name, w in (("fweights", fweights), ("aweights", aweights)):
        if w is None:
            continue
        require_tensors("cov", **{name: w})
        if w.ndim > 1 or w.numel() != observations:
            raise ValueError(f"cov(): expected {name} to have one dimension of size "
                             f"{observations} but got shape {w.shape}")
        if name == "fweights" and w.dtype.kind not in "iu":
            raise ValueError(f"cov(): expected fweights to have integral dtype but got "
                             f"{w.dtype}")
        if name == "aweights" and not dtypes.is_floating(w.dtype):
            raise ValueError(f"cov(): expected aweights to have floating point dtype but got "
                             f"{w.dtype}")
        if bool((w < 0).any()):
            raise ValueError(f"cov(): {name} cannot be negative")
        w = w.reshape(-1)
        weights = w if weights is None else weights * w
    if weights is None:
        total = x.new_full((), observations)
        mean = x.mean(1, keepdim=True)
        norm = total - correction
    else:                 # the weights' own dtype, as torch (float32 weights sum in float32)
        total = weights.sum()
        mean = (x * weights).sum(1, keepdim=True) / total
        norm = total - (correction * (weights * aweights).sum() / total
                        if aweights is not None else correction)
    norm = where(norm <= 0, norm.new_zeros(()), norm)
    centred = x - mean
    product = (centred * weights if weights is not None else centred) @ centred.T
    return (product / norm).squeeze()            # one variable: a 0-d tensor, as torch


def corrcoef(input):
    """The Pearson correlation coefficients of the variables in the rows of ``input``, clipped
    to [-1, 1]."""
    c = cov(input)
    if c.ndim == 0:
        return c / c
    spread = c.diagonal().sqrt()
    c = c / spread.reshape(-1, 1) / spread.reshape(1, -1)
    return c.clamp(-1, 1)


# ----------------------------------------------------------------- integration
def _spacing(op, y, x, dx, axis):
    """The step widths along ``axis``: a number, or diff(x) shaped to broadcast with y's."""
    if x is None:
        return 1 if dx is None else dx
    if dx is not None:
        raise TypeError(f"{op}: pass x or dx, not both")
    if not isinstance(x, Tensor):
        return x
    if x.ndim == 1:
        if x.shape[0] != y.shape[axis]:
            raise RuntimeError(f"{op}: there must be one `x` value for each sample point, got "
                               f"{x.shape[0]} x values and {y.shape[axis]} samples along dim "
                               f"{axis}")
        shape = [1] * y.ndim
        shape[axis] = x.shape[0] - 1 if x.shape[0] else 0
        return x.diff().reshape(shape)
    return x.diff(dim=axis - y.ndim)


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """The trapezoidal-rule integral of ``y`` along ``dim``, at sample points ``x`` (a tensor)
    or spaced ``dx`` apart (1 by default)."""
    require_tensors("trapezoid", y=y)
    axis = normalize_axis(dim, y.ndim, "trapezoid")
    if y.shape[axis] == 0:
        return y.sum(dim) * 0.0 if dtypes.category(y.dtype) < 2 else y.sum(dim)
    spacing = _spacing("trapezoid", y, x, dx, axis)
    if not isinstance(spacing, Tensor):
        ends = y.select(axis, 0) + y.select(axis, -1)
        return (y.sum(axis) - ends * 0.5) * spacing
    n = y.shape[axis]
    pairs = y.narrow(axis, 1, n - 1) + y.narrow(axis, 0, n - 1)
    return (pairs * spacing).sum(axis) / 2


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """The running trapezoidal integral of ``y`` along ``dim`` (one element fewer)."""
    require_tensors("cumulative_trapezoid", y=y)
    axis = normalize_axis(dim, y.ndim, "cumulative_trapezoid")
    n = y.shape[axis]
    spacing = _spacing("cumulative_trapezoid", y, x, dx, axis)
    if n == 0:
        return y._floating().narrow(axis, 0, 0)
    pairs = (y.narrow(axis, 1, n - 1) + y.narrow(axis, 0, n - 1))
    return (pairs * spacing / 2).cumsum(axis)


def trapz(y, x=None, *, dx=None, dim=-1):
    """trapezoid (torch's older name)."""
    return trapezoid(y, x, dx=dx, dim=dim)


def sum_to_size(self, *size):
    """``self`` summed down to ``size`` (to which it must expand): the inverse of expand."""
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    if len(size) > self.ndim or any(
            n != 1 and n != m for n, m in zip(size, self.shape[self.ndim - len(size):])):
        raise RuntimeError(f"sum_to_size: size {list(size)} is not expandable to size "
                           f"{list(self.shape)}")
    lead = self.ndim - len(size)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(size)
                                      if n == 1 and self.shape[lead + i] != 1)
    out = self.sum(axes, keepdim=True) if axes else self
    return out.reshape(size)


# ----------------------------------------------------------------- in place
def _in_place(name):
    def edit(self, *args, **kwargs):
        return inplace.apply(self, name + "_", lambda t: getattr(t, name)(*args, **kwargs))
    edit.__name__ = name + "_"
    edit.__doc__ = f"{name} in place."
    return autograd.recorded("inplace")(edit)


for _function in (cummax, cummin, logcumsumexp, nansum, nanmean, nanmedian, quantile,
                  nanquantile, aminmax, isin, bincount, cov, corrcoef, sum_to_size):
    setattr(Tensor, _function.__name__, _function)
for _name in ("cumsum", "cumprod", "tril", "triu"):
    setattr(Tensor, _name + "_", _in_place(_name))
Tensor.unique_consecutive = unique_consecutive
del _name, _function
