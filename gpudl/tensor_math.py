"""Tensor arithmetic, comparisons, elementwise maths and reductions (a mixin of Tensor).

Each method is a thin call into a Function of ``gpudl.ops``; the maths lives there.
"""

import numbers
from collections import namedtuple

import ml_dtypes
import numpy as np

from .amp.autocast_mode import cast_inputs, state as _autocast
from .dtypes import is_floating
from . import backend, dtypes
from . import tensor as T          # Tensor itself; resolved at call time (tensor.py imports us)
from .ops import elementwise as E
from .ops import elementwise_math as M
from .ops import linalg, reduce as R
from .autograd import recorded
from .ops._util import normalize_axes, normalize_axis

MaxMin = namedtuple("MaxMin", ["values", "indices"])


def _reduce_args(op, dim, keepdim, axis, keepdims):
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: pass dim or axis, not both")
        dim = axis
    return dim, bool(keepdim if keepdims is None else keepdims)


def _reduced_axes(dim, ndim, op):
    """The axes a reduction over ``dim`` reduces: all for None and, as in torch, for ``()``."""
    return normalize_axes(None if isinstance(dim, (tuple, list)) and not dim else dim, ndim, op)


class MathMixin:
    """Operators and maths methods; ``self`` is a Tensor."""

    __slots__ = ()

    def __add__(self, other):
        return _binary(E.Add, "add", self, other)

    def __radd__(self, other):
        return _binary(E.Add, "add", other, self)

    def __sub__(self, other):
        return _binary(E.Sub, "sub", *_no_bool("sub", self, other))

    def __rsub__(self, other):
        return _binary(E.Sub, "sub", *_no_bool("sub", other, self))

    def __mul__(self, other):
        return _binary(E.Mul, "mul", self, other)

    def __rmul__(self, other):
        return _binary(E.Mul, "mul", other, self)

    def __truediv__(self, other):
        return _binary(E.Div, "div", self, other, true_division=True)

    def __rtruediv__(self, other):
        return _binary(E.Div, "div", other, self, true_division=True)

    def __floordiv__(self, other):
        return _binary(E.FloorDivide, "floor_divide", self, other)

    def __rfloordiv__(self, other):
        return _binary(E.FloorDivide, "floor_divide", other, self)

    def __mod__(self, other):
        return _binary(E.Remainder, "remainder", self, other)

    def __rmod__(self, other):
        return _binary(E.Remainder, "remainder", other, self)

    def __pow__(self, other):
        return _binary(E.Pow, "pow", self, other)

    def __rpow__(self, other):
        return _binary(E.Pow, "pow", other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        if self.dtype == dtypes.bool_:
            raise TypeError("neg: negation of a bool tensor is not supported; use ~ instead")
        return E.Neg.apply(self)

    def __abs__(self):
        return E.Abs.apply(self)

    def __pos__(self):
        return self

    add, sub, mul, div, pow = __add__, __sub__, __mul__, __truediv__, __pow__
    floor_divide, remainder = __floordiv__, __mod__
    abs, neg = __abs__, __neg__

    # comparisons: no gradient, bool results
    @recorded("compute")        # outside the autograd Functions: a CPU graph records the call
    def _compare(self, other, op):
        if isinstance(other, T.Tensor) and self._device != other._device \
                and _is_cpu_number(self):
            return self.to(other._device)._compare(other, op)
        mine, raw = self._data, T._raw(other, self)     # on self's device, or refused
        if isinstance(other, T.Tensor) and other.dtype != self.dtype:
            # in torch's promoted dtype: float32 == a 0-d float64 compares in float32
            dtype = dtypes.result_type(self, other)
            mine, raw = mine.astype(dtype, copy=False), raw.astype(dtype, copy=False)
        elif isinstance(other, _NUMBERS):
            # torch's too: int64 == 2.5 compares in float32, bool << 3 shifts an int64, and an
            # int out of range of a small integer dtype wraps into it (uint8 == -1 is == 255)
            dtype = _with_number(mine.dtype, other)
            mine, raw = mine.astype(dtype, copy=False), _cast(raw, dtype, dtype.kind in "iu")
        return T.Tensor._make(op(mine, raw), False, None, 0, self._device)

    __eq__ = lambda self, other: self._compare(other, lambda a, b: a == b)  # noqa: E731
    __ne__ = lambda self, other: self._compare(other, lambda a, b: a != b)  # noqa: E731
    __lt__ = lambda self, other: self._compare(other, lambda a, b: a < b)  # noqa: E731
    __le__ = lambda self, other: self._compare(other, lambda a, b: a <= b)  # noqa: E731
    __gt__ = lambda self, other: self._compare(other, lambda a, b: a > b)  # noqa: E731
    __ge__ = lambda self, other: self._compare(other, lambda a, b: a >= b)  # noqa: E731
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    @recorded("compute")
    def __invert__(self):
        if is_floating(self.dtype):       # integers: bitwise not; bools: logical not
            raise TypeError(f"~ (bitwise_not) is defined for integer and bool tensors, got "
                            f"{self.dtype}")
        return T.Tensor._make(~self._data, False, None, 0, self._device)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b)

    def __xor__(self, other):
        return self._compare(other, lambda a, b: a ^ b)

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    @recorded("compute")
    def any(self, dim=None, keepdim=False):
        """Whether any element (along ``dim``: an int or a tuple; all dims by default) is
        nonzero."""
        out = self._data.any(axis=normalize_axes(dim, self.ndim, "any"), keepdims=bool(keepdim))
        return T.Tensor._make(_as_uint8_like(out, self), False, None, 0, self._device)

    @recorded("compute")
    def all(self, dim=None, keepdim=False):
        """Whether every element (along ``dim``, as ``any``) is nonzero."""
        out = self._data.all(axis=normalize_axes(dim, self.ndim, "all"), keepdims=bool(keepdim))
        return T.Tensor._make(_as_uint8_like(out, self), False, None, 0, self._device)

    def isnan(self):
        return self._compare(None, lambda a, _: backend.get_array_module(a).isnan(a))

    # ----------------------------------------------------------------- unary maths
    def exp(self):
        self = _autocast_one("exp", self)
        return E.Exp.apply(self._floating())

    def log(self):
        self = _autocast_one("log", self)
        return E.Log.apply(self._floating())

    def sqrt(self):
        return E.Sqrt.apply(self._floating())

    def tanh(self):
        return E.Tanh.apply(self._floating())

    def sigmoid(self):
        return E.Sigmoid.apply(self._floating())

    def relu(self):
        return E.Relu.apply(self)

    def square(self):
        x = self.astype(dtypes.int64) if self.dtype == dtypes.bool_ else self   # as torch
        return x * x

    def clip(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clip: at least one of 'min' or 'max' must not be None")
        lo, hi = _bound(min, self), _bound(max, self)
        tensors = [bound for bound in (lo, hi) if isinstance(bound, T.Tensor)]
        x = self    # tensor bounds: one promotion of all (a 0-d self ranks below the bounds)
        if tensors:
            x = x.astype(dtypes.result_type(self, *tensors))
        for bound in (lo, hi):          # an int tensor clamped to 0.5 gives floats, as torch
            if bound is not None and not isinstance(bound, T.Tensor):
                x = x.astype(_result_dtype(x, bound))
        lo, hi = (_cast(wrapped(bound, x.dtype), x.dtype) for bound in (lo, hi))
        return E.Clip.apply(x, lo, hi)

    clamp = clip

    def maximum(self, other):
        return _binary(E.Maximum, "maximum", self, other)

    def where(self, condition, other):
        """``where(condition, self, other)``: torch's Tensor.where."""
        return where(condition, self, other)

    def masked_fill(self, mask, value):
        if getattr(mask, "dtype", None) != dtypes.bool_:
            raise TypeError(f"masked_fill: mask must be a bool tensor, got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if isinstance(value, T.Tensor) and value.ndim != 0:
            raise ValueError(f"masked_fill: value must be a Python number or a 0-d tensor, got "
                             f"a tensor of shape {value.shape}")
        if isinstance(value, complex):            # torch: not convertible to a real dtype
            raise RuntimeError(f"masked_fill: value {value!r} is complex; the tensor is "
                               f"{self.dtype}")
        filled = where(mask, _as_dtype_tensor(value, self.dtype, self), self)   # self's dtype
        return filled if filled.is_contiguous() else filled.contiguous()    # as torch's

    def minimum(self, other):
        """Elementwise min with a tensor or number; ties share the gradient evenly."""
        return _binary(E.Minimum, "minimum", self, other)

    def clamp_min(self, min):
        """max(self, min): ``clamp(min=min)``."""
        return self.clip(min=min)

    def clamp_max(self, max):
        """min(self, max): ``clamp(max=max)``."""
        return self.clip(max=max)

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, mat2):
        """Matrix product of two 2-D tensors: (n, m) @ (m, p) -> (n, p)."""
        _need_dims("mm", 2, self, mat2)
        return matmul(self, mat2)

    def bmm(self, mat2):
        """Batched matrix product: (b, n, m) @ (b, m, p) -> (b, n, p)."""
        _need_dims("bmm", 3, self, mat2)
        if self.shape[0] != mat2.shape[0]:
            raise ValueError(f"bmm: batch sizes differ: {self.shape} and {mat2.shape}")
        return matmul(self, mat2)

    def outer(self, vec2):
        """Outer product of two 1-D tensors: (n,), (m,) -> (n, m)."""
        _need_dims("outer", 1, self, vec2)
        return self.reshape(-1, 1) * vec2.reshape(1, -1)

    def addmm(self, mat1, mat2, *, beta=1, alpha=1):
        """beta * self + alpha * (mat1 @ mat2); self broadcasts to the product's shape."""
        _need_tensors("addmm", mat1=mat1, mat2=mat2)
        if _autocast.active:
            self, mat1, mat2 = cast_inputs("addmm", self, mat1, mat2)
        return _add_product(self, mat1.mm(mat2), beta, alpha)

    def _floating(self):
        return self if is_floating(self.dtype) else self.astype(dtypes.DEFAULT_FLOAT)

    # ----------------------------------------------------------------- reductions
    def sum(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=None):
        if dim is None and axis is None and dtype is None and keepdims is None and \
                not _autocast.active and self._data.dtype.kind not in "bui":
            # the usual loss.sum(): what the general path below works out, without its calls
            return R.Sum.apply(self, tuple(range(self._data.ndim)), bool(keepdim))
        dim, keepdim = _reduce_args("sum", dim, keepdim, axis, keepdims)
        x = _reduction_input("sum", self, dtype)
        return R.Sum.apply(x, _reduced_axes(dim, self.ndim, "sum"), keepdim)

    def mean(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=None):
        dim, keepdim = _reduce_args("mean", dim, keepdim, axis, keepdims)
        if dtype is not None:                     # torch: the input is cast first
            if not is_floating(dtypes.as_dtype(dtype, "mean")):
                raise RuntimeError(f"mean: dtype must be a floating dtype, got "
                                   f"{dtypes.as_dtype(dtype, 'mean')}")
        self = _cast_to(self, dtype)
        return R.Mean.apply(self._floating(), _reduced_axes(dim, self.ndim, "mean"), keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None,
            keepdims=None):
        return self._spread(R.Var, "var", dim, unbiased, keepdim, correction, axis, keepdims)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None,
            keepdims=None):
        return self._spread(R.Std, "std", dim, unbiased, keepdim, correction, axis, keepdims)

    def _spread(self, function, op, dim, unbiased, keepdim, correction, axis, keepdims):
        if isinstance(dim, bool):                 # torch.var(x, True): the unbiased overload
            dim, unbiased = None, dim if unbiased is None else unbiased
        dim, keepdim = _reduce_args(op, dim, keepdim, axis, keepdims)
        if unbiased is not None and correction is not None:
            raise TypeError(f"{op}: pass unbiased or correction, not both")
        correction = (1 if unbiased is None else int(bool(unbiased))) if correction is None \
            else correction
        return function.apply(self._floating(), _reduced_axes(dim, self.ndim, op), correction,
                              keepdim)

    def _extreme(self, op, dim, keepdim, axis, keepdims, largest):
        if isinstance(dim, T.Tensor):             # torch.max(a, b): elementwise
            if keepdim is not False or axis is not None or keepdims is not None:
                raise TypeError(f"{op}(input, other) is elementwise: it takes no keepdim or "
                                f"axis, got keepdim={keepdim!r}")
            return _binary(E.Maximum if largest else E.Minimum, op, self, dim)
        dim, keepdim = _reduce_args(op, dim, keepdim, axis, keepdims)
        if self._data.size == 0 and (dim is None or self.shape[dim] == 0):
            raise ValueError(f"{op}: cannot reduce an empty tensor of shape {self.shape}")
        if dim is None:
            return R.Extreme.apply(self, None, keepdim, largest)
        axis = normalize_axis(dim, self.ndim, op)
        if self.ndim == 0:                        # torch: a 0-d tensor is its own max along dim 0
            index = T.Tensor._make(backend.xp_for(self._device).zeros((), np.int64), False,
                                   None, 0, self._device)
            return MaxMin(self.clone(), index)
        return MaxMin(*R.Extreme.apply(self, axis, keepdim, largest))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme("max", dim, keepdim, axis, keepdims, True)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme("min", dim, keepdim, axis, keepdims, False)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmax", dim, keepdim, axis, keepdims)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmin", dim, keepdim, axis, keepdims)

    @recorded("compute")
    def _arg(self, op, dim, keepdim, axis, keepdims):
        dim, keepdim = _reduce_args(op, dim, keepdim, axis, keepdims)
        if self._data.size == 0 and (dim is None or self.shape[
                normalize_axis(dim, self.ndim, op)] == 0):   # another dim empty: empty result
            raise ValueError(f"{op}: cannot reduce an empty tensor of shape {self.shape}")
        if dim is None:
            flat = getattr(self._data.reshape(-1), op)()
            out = flat.reshape((1,) * self.ndim) if keepdim else flat
        else:
            out = getattr(self._data, op)(axis=normalize_axis(dim, self.ndim, op), keepdims=keepdim)
        return T.Tensor._make(out.astype(np.int64), False, None, 0, self._device)

    def amax(self, dim=(), keepdim=False):
        """Max over ``dim`` (an int, a tuple; all dims by default), values only; ties share
        the gradient evenly."""
        return self._amax("amax", dim, keepdim, True)

    def amin(self, dim=(), keepdim=False):
        """Min over ``dim``, as ``amax``."""
        return self._amax("amin", dim, keepdim, False)

    def _amax(self, op, dim, keepdim, largest):
        axes = _reduced_axes(dim, self.ndim, op)
        if any(self.shape[a] == 0 for a in axes) or (self.ndim == 0 and self._data.size == 0):
            raise ValueError(f"{op}: cannot reduce an empty dimension of shape {self.shape}")
        return R.Amax.apply(self, axes, bool(keepdim), largest)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        """Product over one dim (or all); integer tensors give int64, as torch."""
        x = _reduction_input("prod", self, dtype)
        axis = None if dim is None else normalize_axis(dim, self.ndim, "prod")
        return R.Prod.apply(x, axis if self.ndim else None, bool(keepdim) and axis is not None)

    def cumsum(self, dim, *, dtype=None):
        """Running sum along ``dim``; integer tensors give int64."""
        axis = normalize_axis(dim, self.ndim, "cumsum")
        x = _reduction_input("cumsum", self, dtype)
        return R.CumSum.apply(x, axis) if self.ndim else x.clone()

    def cumprod(self, dim, *, dtype=None):
        """Running product along ``dim``; the gradient is exact where elements are zero."""
        axis = normalize_axis(dim, self.ndim, "cumprod")
        x = _reduction_input("cumprod", self, dtype)
        return R.CumProd.apply(x, axis) if self.ndim else x.clone()

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(self))) over ``dim``, computed without overflow."""
        x = _autocast_one("logsumexp", self)._floating()
        axes = _reduced_axes(dim, self.ndim, "logsumexp")
        # the largest FINITE value: an element at +inf must not move the shift to 0, where
        # exp of a large finite element overflows and its gradient turns 0 * inf = nan
        # (torch: exp(x - inf) = 0)
        xd = x.detach()
        xd = where(xd.isfinite(), xd, float("-inf"))
        shift = xd.amax(axes, keepdim=True) if x.numel() else xd.sum(axes, keepdim=True)
        shift = where(shift.isfinite(), shift, 0.0)
        total = (x - shift).exp().sum(axes, keepdim=keepdim).log()
        # the last op makes a new tensor, not a view (a squeezed result refused detach_())
        return total + (shift if keepdim or not axes else shift.squeeze(axes))

    def isfinite(self):
        return self._compare(None, lambda a, _: backend.get_array_module(a).isfinite(a))

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """torch.norm: a number ``p`` (None: 2) or 'fro' over at most two dims is
        ``vector_norm`` over ``dim`` (all dims by default); 'nuc', or 'fro' over more dims, is
        ``matrix_norm`` over ``dim`` (all dims by default: a 2-D input)."""
        from .linalg import matrix_norm, vector_norm
        if not isinstance(p, str):
            return vector_norm(self, 2 if p is None else p, dim, keepdim, dtype=dtype)
        if p == "fro" and (dim is None or isinstance(dim, numbers.Integral) or len(dim) <= 2):
            return vector_norm(self, 2, dim, keepdim, dtype=dtype)
        dims = tuple(range(self.ndim)) if dim is None else dim
        return matrix_norm(self, p, dims, keepdim, dtype=dtype)

    def diff(self, n=1, dim=-1, prepend=None, append=None):
        """The ``n``-th forward difference along ``dim``, after joining prepend/append."""
        from .functions import cat
        axis = normalize_axis(dim, self.ndim, "diff")
        if n < 0 or self.ndim == 0:
            raise ValueError(f"diff: needs n >= 0 and at least one dim, got n={n}, shape "
                             f"{self.shape}")
        if n == 0:
            return self
        x = cat([t for t in (prepend, self, append) if t is not None], axis) \
            if prepend is not None or append is not None else self
        for _ in range(n):
            length = max(x.shape[axis] - 1, 0)
            head = x.narrow(axis, min(1, x.shape[axis]), length)
            tail = x.narrow(axis, 0, length)
            x = head != tail if x.dtype == dtypes.bool_ else head - tail
        return x

    def softmax(self, dim=-1, dtype=None, *, axis=None):
        dim = dim if axis is None else axis
        self = _autocast_one("softmax", _cast_to(self, dtype))
        return R.Softmax.apply(self._floating(), normalize_axis(dim, self.ndim, "softmax"))

    def log_softmax(self, dim=-1, dtype=None, *, axis=None):
        dim = dim if axis is None else axis
        self = _autocast_one("log_softmax", _cast_to(self, dtype))
        return R.LogSoftmax.apply(self._floating(), normalize_axis(dim, self.ndim, "log_softmax"))

    def lerp(self, end, weight):
        """``self + weight * (end - self)`` (torch.lerp, in its two halves: a weight of 1 gives
        ``end`` exactly); ``end`` a tensor of self's dtype, ``weight`` a number or a tensor."""
        if (isinstance(weight, T.Tensor) and weight.ndim == 0 and weight.dtype != self.dtype
                and is_floating(weight.dtype) and is_floating(self.dtype)):
            weight = weight.astype(self.dtype)      # a 0-d weight of another float: as torch
        for name, value in (("end", end), ("weight", weight)):
            if isinstance(value, T.Tensor) and value.dtype != self.dtype:
                raise RuntimeError(f"lerp: expected {name} of dtype {self.dtype}, got "
                                   f"{value.dtype}")
        if not is_floating(self.dtype):
            raise TypeError(f"lerp: expected a floating point tensor, got {self.dtype}")
        if not isinstance(end, T.Tensor):
            raise TypeError(f"lerp: end must be a Tensor, got {type(end).__name__}")
        if not isinstance(weight, (T.Tensor, int, float)):
            raise TypeError(f"lerp: weight must be a number or a Tensor, got "
                            f"{type(weight).__name__}")
        if self.dtype in dtypes.LOW_PRECISION:      # float32 steps, one rounding (as torch)
            wide = weight.float() if isinstance(weight, T.Tensor) else weight
            return self.float().lerp(end.float(), wide).to(self.dtype)
        step = end - self
        if not isinstance(weight, T.Tensor):
            return self + weight * step if abs(weight) < 0.5 else end - step * (1 - weight)
        return where(weight.abs() < 0.5, self + weight * step, end - step * (1 - weight))

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf`` (by default the
        dtype's largest and lowest finite values; ``nan=None`` means 0, as torch); integer
        tensors come back as copies."""
        if not is_floating(self.dtype):
            return self.clone()
        largest = float(ml_dtypes.finfo(self.dtype).max)
        out = where(self.isnan(), 0.0 if nan is None else nan, self)
        out = where(out == np.inf, largest if posinf is None else posinf, out)
        return where(out == -np.inf, -largest if neginf is None else neginf, out)

    def baddbmm(self, batch1, batch2, *, beta=1, alpha=1):
        """beta * self + alpha * (batch1 @ batch2), batched; self broadcasts to the product."""
        _need_tensors("baddbmm", batch1=batch1, batch2=batch2)
        if _autocast.active:
            self, batch1, batch2 = cast_inputs("baddbmm", self, batch1, batch2)
        return _add_product(self, batch1.bmm(batch2), beta, alpha)

    def addbmm(self, batch1, batch2, *, beta=1, alpha=1):
        """beta * self + alpha * (the sum over the batch of batch1[i] @ batch2[i])."""
        _need_tensors("addbmm", batch1=batch1, batch2=batch2)
        if _autocast.active:
            self, batch1, batch2 = cast_inputs("addbmm", self, batch1, batch2)
        _need_dims("addbmm", 3, batch1, batch2)
        batch, n, m = batch1.shape
        if batch2.shape[:2] != (batch, m):
            raise ValueError(f"addbmm: batch1 {batch1.shape} and batch2 {batch2.shape} do not "
                             "multiply batch by batch")
        # the sum of the products is one product: (n, batch*m) @ (batch*m, p)
        product = batch1.permute(1, 0, 2).reshape(n, batch * m).mm(
            batch2.reshape(batch * m, batch2.shape[2]))
        return _add_product(self, product, beta, alpha)



def _unary_method(name):
    """Tensor.<name>() of E.UNARY's table (a closure: ``x.cos(2)`` must not pass a name)."""
    def unary(self):
        self = _autocast_one(name, self)
        if self.dtype.kind in "biu" and name in ("sign", "floor", "ceil"):   # integers stay
            return self.clone() if name != "sign" or self.dtype.kind == "b" else T.Tensor._make(
                backend.get_array_module(self._data).sign(self._data), False, None, 0,
                self._device)
        return E.Unary.apply(self._floating(), name)
    unary.__name__, unary.__qualname__ = name, f"Tensor.{name}"
    unary.__doc__ = f"Elementwise {name}, as torch.{name}."
    return unary


for _name in E.UNARY:                     # sin, cos, erf, log1p, ... from one table (round below)
    setattr(MathMixin, _name, _unary_method(_name))
del _name


def _round(self, decimals=0):
    """Round half to even, to ``decimals`` places (negative: tens, hundreds, ...) as torch."""
    if decimals == 0:
        return E.Unary.apply(self._floating(), "round") if self.dtype.kind not in "iu" \
            else self.clone()
    scale = 10.0 ** decimals
    return (self._floating() * scale).round() / scale


MathMixin.round = _round


def _need_tensors(op, **arguments):
    """TypeError naming the first of ``arguments`` that is not a Tensor."""
    for name, value in arguments.items():
        if not isinstance(value, T.Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")


def _need_dims(op, ndim, *tensors):
    for t in tensors:
        if not isinstance(t, T.Tensor) or t.ndim != ndim:
            raise ValueError(f"{op}: expected {ndim}-D tensors, got shapes "
                             f"{[getattr(x, 'shape', type(x).__name__) for x in tensors]}")


def _bound(bound, like):
    """A clamp bound: None, a Python scalar, or a Tensor (which then receives a gradient)."""
    if bound is None or isinstance(bound, (int, float, T.Tensor)):
        return bound
    return T.Tensor._make(T._raw(bound, like), False, None, 0, like._device)


def _as_operand(value, like):
    """Wrap a non-Tensor operand. Python scalars, NumPy scalars and 0-d NumPy arrays are weakly
    typed, as torch treats them: Python numbers here, so float32 * np.float64(2) stays float32
    (NumPy would promote: np.float64 is a strong float64 for NumPy though a Python float)."""
    if isinstance(value, T.Tensor):
        return value
    if isinstance(value, np.generic) or (type(value) is np.ndarray and value.ndim == 0):
        value = value.item()                  # np.float64 -> float, np.int32 -> int, ...
    if isinstance(value, (int, float)):
        return value
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"expected a tensor, a real number or an array as operand, got "
                        f"{type(value).__name__}")
    raw = T._raw(value, like)
    if raw.dtype not in dtypes.SUPPORTED:
        raise TypeError(f"expected a tensor, a real number or an array of a supported dtype, "
                        f"got {type(value).__name__} of dtype {raw.dtype}")
    if raw.dtype == np.float64 and is_floating(like.dtype):
        raw = raw.astype(like.dtype)     # a float64 NumPy array does not upcast a float32 tensor
    return T.Tensor._make(raw, False, None, 0, like._device)


def _no_bool(op, a, b):
    """``(a, b)``, refused as torch refuses a bool operand of ``op``."""
    if dtypes.value_category(a) == 0 or dtypes.value_category(b) == 0:
        raise RuntimeError(f"{op}: subtraction with a bool tensor or a bool is not supported; "
                           "to invert a mask use ~ (or logical_not)")
    return a, b


def _result_dtype(a, b):
    """torch's result dtype of an op on ``a`` and ``b``, Tensors or Python numbers: a number
    (weakly typed) changes a tensor's dtype only when its category (bool < integer < floating)
    is higher, to the default float or int64; two numbers give bool, int64 or the default float."""
    if isinstance(a, T.Tensor):
        if isinstance(b, T.Tensor):
            a_dtype, b_dtype = a._data.dtype, b._data.dtype
            return a_dtype if a_dtype == b_dtype else dtypes.result_type(a, b)
        return _with_number(a._data.dtype, b)
    if isinstance(b, T.Tensor):
        return _with_number(b._data.dtype, a)
    return _NUMBER_DTYPES[max(dtypes.value_category(a), dtypes.value_category(b))]


_NUMBER_DTYPES = (dtypes.bool_, dtypes.int64, dtypes.DEFAULT_FLOAT)   # by category
_NUMBERS = (int, float, np.number, np.bool_)      # bool is an int


def _with_number(dtype, number):
    """The dtype of a tensor of ``dtype`` combined with a Python number."""
    if type(number) is float and dtype.kind == "f":          # the common case first
        return dtype
    category = dtypes.value_category(number)
    return dtype if category <= dtypes.category(dtype) else _NUMBER_DTYPES[category]


def _cast(value, dtype, wrap=False):
    """A Tensor cast to ``dtype``; with ``wrap`` (``dtype`` an integer type), a Python int out
    of range of a small integer ``dtype`` wrapped into it, as torch's integer arithmetic wraps
    (uint8 - 3 is uint8 + 253; NumPy raises OverflowError); other numbers as they are."""
    if isinstance(value, T.Tensor):
        return value if value._data.dtype == dtype else value.astype(dtype)
    if wrap and type(value) is int and dtype.itemsize < 8:
        bounds = np.iinfo(dtype)
        if not bounds.min <= value <= bounds.max:
            return np.array(value).astype(dtype)[()]
    return value


def scaled(op, other, alpha, like):
    """``alpha * other`` for ``like + alpha * other`` (add, sub and their in-place forms),
    computed in the result dtype as torch: other is cast to it first, so neither a bool or 0-d
    other nor a narrow one wrapping alone changes the sum (int64 - uint8 is no int64 + uint8(-b)).
    A floating alpha with an integral result is refused; a bool result takes alpha as a truth
    value."""
    if alpha == 1:
        return other
    dtype = _result_dtype(like, other)
    if dtypes.category(dtype) < 2 and dtypes.value_category(alpha) == 2:
        raise RuntimeError(f"{op}: for integral input tensors, argument alpha must not be a "
                           f"floating point number, got alpha={alpha!r}")
    if isinstance(other, T.Tensor) and other.dtype != dtype:
        other = other.to(dtype)
    if dtype == dtypes.bool_:
        return other * bool(alpha) if isinstance(other, T.Tensor) else bool(other and alpha)
    return other * alpha


def wrapped(value, dtype):
    """``value`` to store in a tensor of ``dtype`` (fill, item assignment, where, clamp bounds):
    a Python number checked as torch checks a stored one, refused out of the dtype's range
    except that an unsigned dtype also takes an int down to -max, wrapped (uint8: -3 is 253,
    -256 and -0.5 are refused); anything else as it is."""
    if type(value) not in (int, float) or dtype.kind not in "iu":
        return value
    bounds = np.iinfo(dtype)
    # a float is truncated into the dtype: refused below its min (any negative for unsigned)
    low = bounds.min if type(value) is float or dtype.kind == "i" else -bounds.max
    if not low <= value <= bounds.max:
        raise RuntimeError(f"value {value} cannot be converted to type {dtype} without "
                           "overflow")
    return np.array(value).astype(dtype)[()] if type(value) is int and value < 0 else value


def _autocast_one(op, tensor):
    """``tensor`` cast by ``op``'s autocast policy (itself when autocast is off)."""
    return cast_inputs(op, tensor)[0] if _autocast.active else tensor


_WRAPPING = (E.Add, E.Sub, E.Mul, E.FloorDivide, E.Remainder, M.TruncDivide, M.Fmod)


def _binary(function, name, a, b, true_division=False):
    if not _autocast.active and _plain_float_operands(a, b):
        return _apply_binary(function, name, a, b)     # nothing to promote, cast or wrap
    like = a if isinstance(a, T.Tensor) else b
    if _autocast.active and name == "pow":
        a, b = cast_inputs(name, a, b)
    a, b = _as_operand(a, like), _as_operand(b, like)
    dtype = _result_dtype(a, b)
    if true_division and not is_floating(dtype):
        dtype = dtypes.DEFAULT_FLOAT           # int / int divides truly, as in torch
    if dtype in dtypes.LOW_PRECISION and function in _SCALAR_OPMATH:
        scaled = _low_precision_by_scalar(function, a, b, dtype)
        if scaled is not None:
            return scaled
    wrap = dtype.kind in "iu" and function in _WRAPPING     # modular, as torch's
    a, b = _cast(a, dtype, wrap), _cast(b, dtype, wrap)
    if like.dtype in dtypes.BFLOAT16 or (isinstance(a, T.Tensor) and a.dtype in dtypes.BFLOAT16):
        return _bfloat16_binary(function, a, b)
    return _apply_binary(function, name, a, b)


def _plain_float_operands(a, b):
    """Whether ``a`` and ``b`` are two tensors of one float16/32/64 dtype, or a float32/64
    tensor and a Python float (either order): a model's usual operands, for which _binary's
    promotion, casts and wrapping change nothing (bfloat16's dtype kind is not "f"; float16
    with a number goes through _low_precision_by_scalar)."""
    if isinstance(a, T.Tensor):
        dtype = a._data.dtype
        if isinstance(b, T.Tensor):
            return dtype.kind == "f" and b._data.dtype == dtype
        return type(b) is float and dtype.kind == "f" and dtype.itemsize > 2
    return (type(a) is float and isinstance(b, T.Tensor) and b._data.dtype.kind == "f"
            and b._data.dtype.itemsize > 2)


_SCALAR_OPMATH = (E.Mul, E.Div)


def _low_precision_by_scalar(function, a, b, dtype):
    """torch's mul/div of a float16/bfloat16 tensor (of the result's ``dtype``) by a scalar (a
    number, or a 0-d tensor of another dtype, which does not set the result's): computed in
    float32 with the scalar unrounded, the result rounded once. NumPy and the casts would round
    the scalar to ``dtype`` first: ``x * (1/3)`` off by up to 2**-9 relative in bfloat16, the
    same way for every element. None when the operands are not such a pair: as torch's, add
    and sub keep the rounded scalar, and so do a 0-d tensor times or divided by a tensor (torch
    takes only a second operand unrounded; ``number * x`` is its ``x * number``)."""
    if isinstance(a, T.Tensor) and a._data.dtype == dtype:
        scalar = b
    elif function is E.Mul and isinstance(b, T.Tensor) and b._data.dtype == dtype:
        scalar = a
    else:
        return None
    if isinstance(scalar, T.Tensor):
        if scalar is a or scalar.ndim or scalar.dtype == dtype or scalar.dtype.kind not in "fiuV":
            return None
    elif not isinstance(scalar, (int, float)):
        return None
    return function.apply(*(x.astype(dtypes.float32) if isinstance(x, T.Tensor) else x
                            for x in (a, b))).astype(dtype)


def _apply_binary(function, name, a, b):
    try:
        return function.apply(a, b)
    except ValueError as exc:
        if "broadcast" not in str(exc):
            raise
        raise ValueError(f"{name}: shapes {np.shape(_data(a))} and {np.shape(_data(b))} are not "
                         "broadcastable") from None


def _as_dtype_tensor(value, dtype, like):
    """A Tensor cast to ``dtype``, or a Python number as a 0-d tensor of ``dtype`` on ``like``'s
    device."""
    if isinstance(value, T.Tensor):
        return value.astype(dtype)
    # a fill, not asarray: no host-to-device copy, which a CUDA graph capture refuses
    array = backend.xp_for(like._device).full((), wrapped(value, dtype), dtype=dtype)
    return T.Tensor._make(array, False, None, 0, like._device)


def _bfloat16_binary(function, a, b):
    """``function(a, b)`` with a bfloat16 tensor among them, promoted as torch does where NumPy
    differs (NumPy takes bfloat16 with a Python float to float32, with an integer array to
    float64, and refuses float16): a bfloat16 result is computed in float32 and rounded."""
    tensors = [x for x in (a, b) if isinstance(x, T.Tensor)]
    result = tensors[0].dtype if len(tensors) == 1 else dtypes.promote_types(a.dtype, b.dtype)
    if result != dtypes.bfloat16:
        return function.apply(*(x.astype(result) if isinstance(x, T.Tensor) else x
                                for x in (a, b)))
    if len(tensors) == 2 and a.dtype == b.dtype:
        return function.apply(a, b)            # ml_dtypes' own loops round each result
    return function.apply(*(x.astype(dtypes.float32) if isinstance(x, T.Tensor) else x
                            for x in (a, b))).astype(result)


def _data(x):
    return x._data if isinstance(x, T.Tensor) else x


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D promotion, batched and broadcast leading dims."""
    if _autocast.active:
        a, b = cast_inputs("matmul", a, b)
    return product(a, b)


def _cast_to(x, dtype):
    """x cast to ``dtype`` first, as torch's reductions with dtype= (None: x itself)."""
    return x if dtype is None else x.to(dtype=dtype)


def _as_uint8_like(truth, x):
    """The bool result ``truth`` of any/all of ``x``, as uint8 when ``x`` is: torch's rule."""
    return truth.astype(np.uint8) if x.dtype == np.uint8 else truth


def _reduction_input(op, x, dtype):
    """What sum / prod / cumsum / cumprod reduce, as torch: x cast to ``dtype`` when given,
    else (after autocast) integers and bools widened to int64."""
    x = _autocast_one(op, _cast_to(x, dtype))
    return x.astype(dtypes.int64) if x.dtype.kind in "bui" and dtype is None else x


def product(a, b):
    """``matmul`` without its autocast cast, for ops with a policy of their own (dot, mv)."""
    if not isinstance(a, T.Tensor) and not isinstance(b, T.Tensor):
        raise TypeError(f"matmul: expected Tensors, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    like = a if isinstance(a, T.Tensor) else b
    a, b = _as_operand(a, like), _as_operand(b, like)
    if not isinstance(a, T.Tensor) or not isinstance(b, T.Tensor) or a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands must have at least one dimension, got shapes "
                         f"{np.shape(_data(a))} and {np.shape(_data(b))}")
    shape_a, shape_b = a._data.shape, b._data.shape      # once: Tensor.shape is a property
    inner_b = shape_b[0] if len(shape_b) == 1 else shape_b[-2]
    if shape_a[-1] != inner_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                         f"({shape_a[-1]} != {inner_b})")
    if len(shape_a) > 2 or len(shape_b) > 2:
        check_batch_dims("matmul", a, b)
    if a._data.dtype != b._data.dtype:
        # torch refuses (int64 @ float32 too); NumPy would silently compute in float64
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, got "
                           f"{a.dtype} and {b.dtype}; convert one, e.g. with .to({a.dtype})")
    return linalg.MatMul.apply(a, b)


def check_batch_dims(op, a, b):
    """ValueError unless the batch dims of ``a`` and ``b`` (all but the last two) broadcast."""
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dimensions of shapes {a.shape} and {b.shape} are not "
                         "broadcastable") from None


def where(condition, input=None, other=None):
    """Elements of ``input`` where ``condition`` holds, else of ``other`` (broadcast); with
    ``condition`` alone, the indices where it holds, ``condition.nonzero(as_tuple=True)``."""
    if input is None and other is None:
        if not isinstance(condition, T.Tensor):
            raise TypeError(f"where: condition must be a Tensor, got "
                            f"{type(condition).__name__}")
        return condition.nonzero(as_tuple=True)
    if input is None or other is None:
        raise TypeError("where: pass both input and other, or neither (got only "
                        f"{'other' if input is None else 'input'})")
    tensors = [t for t in (input, other, condition) if isinstance(t, T.Tensor)]
    if not tensors:
        raise TypeError("where: at least one argument must be a Tensor")
    # the device of the first tensor that is not a 0-d cpu one: torch takes those as numbers
    like = next((t for t in tensors if not _is_cpu_number(t)), tensors[0])
    cond = T._raw(condition, like)
    if getattr(cond, "dtype", None) != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got "
                        f"{getattr(cond, 'dtype', type(condition).__name__)}")
    input, other = (x.to(like._device) if isinstance(x, T.Tensor) and _is_cpu_number(x) else x
                    for x in (input, other))
    a, b = _as_operand(input, like), _as_operand(other, like)
    dtype = _result_dtype(a, b)
    # numbers become 0-d tensors of the result dtype: NumPy's where would widen it
    a, b = _as_dtype_tensor(a, dtype, like), _as_dtype_tensor(b, dtype, like)
    try:
        return E.Where.apply(cond, a, b)
    except ValueError as exc:
        raise ValueError(f"where: shapes {np.shape(cond)}, {np.shape(_data(a))} and "
                         f"{np.shape(_data(b))} are not broadcastable ({exc})") from None


def _is_cpu_number(tensor):
    """A 0-d cpu tensor: torch combines one with a tensor of any device, as a number."""
    return tensor.ndim == 0 and tensor._device == "cpu"


def _add_product(input, product, beta, alpha):
    """beta * input + alpha * product, input broadcast to the product's shape; with beta 0
    input is ignored (nan included), as torch does."""
    product = product if alpha == 1 else product * alpha
    if beta == 0:
        shape = np.broadcast_shapes(input.shape, product.shape)
        return product if shape == product.shape else product.expand(*shape)
    return (input if beta == 1 else input * beta) + product
