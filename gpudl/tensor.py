"""Tensor: an array (NumPy or CuPy), its gradient, and the Function that made it.

Operators are thin calls into ``gpudl.ops``; the maths lives there, on raw arrays.
"""

import math
from collections import namedtuple

import numpy as np

from . import autograd, backend, dtypes
from .ops import elementwise as E
from .ops import linalg, reduce as R
from .ops import shape as S
from .ops._util import normalize_axes, normalize_axis

MaxMin = namedtuple("MaxMin", ["values", "indices"])


def _device_of(array):
    if backend.is_device_array(array):
        return "cuda"
    return backend.DEFAULT_DEVICE if backend.SIMULATOR else "cpu"


def _reduce_args(op, dim, keepdim, axis, keepdims):
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: pass dim or axis, not both")
        dim = axis
    return dim, bool(keepdim if keepdims is None else keepdims)


def _shape_arg(op, shape):
    """reshape(2, 3) and reshape((2, 3)) alike -> a tuple of ints."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"{op}: sizes must be ints, got {shape!r}")
    return tuple(int(n) for n in shape)


class Tensor:
    """An n-dimensional array with reverse-mode autograd (see API.md)."""

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_out_index", "_device",
                 "__weakref__")
    __array_ufunc__ = None          # NumPy defers to our reflected operators: np.float32(2) * t

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        from .creation import as_array
        device = backend.check_device(device, "Tensor") if device is not None else None
        array, device = as_array(data, dtype, device, "Tensor")
        self.data = array
        self._device = device
        self.grad = None
        self.grad_fn = None
        self._out_index = 0
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data, requires_grad, grad_fn, out_index, device):
        t = object.__new__(cls)
        if isinstance(data, np.generic):     # NumPy reductions return scalars; keep arrays
            data = np.asarray(data)
        t.data = data
        t.requires_grad = requires_grad
        t.grad = None
        t.grad_fn = grad_fn
        t._out_index = out_index
        t._device = device or _device_of(data)
        return t

    # ----------------------------------------------------------------- attributes
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: self._device)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self.grad_fn is None)
    is_cuda = property(lambda self: self._device == "cuda")
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))
    mT = property(lambda self: self.transpose(-2, -1))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[normalize_axis(dim, self.ndim, "size")]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __hash__(self):
        return id(self)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4,
                               prefix="tensor(")
        extra = []
        if self._device == "cuda":
            extra.append("device='cuda'")
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_):
            extra.append(f"dtype=gpudl.{self.dtype.name}")
        if self.grad_fn is not None:
            extra.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extra) + ")"

    # ----------------------------------------------------------------- conversion
    def numpy(self):
        """A NumPy array: copied from the GPU, sharing memory on the CPU (even with grad)."""
        return backend.to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        if self.data.size != 1:
            raise ValueError(
                f"item: only one-element tensors can be converted to a Python number, got shape "
                f"{self.shape}")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"bool: a tensor with {self.data.size} elements is ambiguous; use any() or all()")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors can be used as an index, got {self.dtype}")
        return int(self.item())

    def __dlpack__(self, *args, **kwargs):
        if self.requires_grad:
            raise RuntimeError("__dlpack__: cannot export a tensor that requires grad; "
                               "use tensor.detach()")
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    @property
    def __cuda_array_interface__(self):
        if not backend.is_device_array(self.data):
            raise AttributeError("__cuda_array_interface__: only tensors in GPU memory have one "
                                 f"(this tensor is on {self._device} in host memory)")
        return self.data.__cuda_array_interface__

    def detach(self):
        return Tensor._make(self.data, False, None, 0, self._device)

    def clone(self):
        return E.Clone.apply(self)

    def to(self, *args, dtype=None, device=None):
        """to(device), to(dtype), to(device, dtype) or to(other_tensor), as in torch."""
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            elif _is_device(a):
                device = a
            else:
                dtype = dtypes.as_dtype(a, "to")   # neither a device nor a dtype: TypeError
        out = self
        if dtype is not None:
            out = out.astype(dtype)
        if device is not None:
            device = backend.check_device(device, "to")
            if device != out._device:
                out = _ToDevice.apply(out, device)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda")

    def astype(self, dtype):
        dtype = dtypes.as_dtype(dtype, "astype")
        return self if dtype == self.dtype else E.Cast.apply(self, dtype)

    def float(self):
        return self.astype(dtypes.float32)

    def double(self):
        return self.astype(dtypes.float64)

    def half(self):
        return self.astype(dtypes.float16)

    def long(self):
        return self.astype(dtypes.int64)

    def int(self):
        return self.astype(dtypes.int32)

    def bool(self):
        return self.astype(dtypes.bool_)

    type_as = lambda self, other: self.astype(other.dtype)  # noqa: E731

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph=False):
        autograd.backward(self, gradient, retain_graph=bool(retain_graph))

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not dtypes.is_floating(self.dtype):
            raise RuntimeError(
                f"requires_grad: only floating point tensors can require gradients, got {self.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False): only leaf tensors can stop requiring grad; "
                               "use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on a non-leaf tensor after backward."""
        if self.grad_fn is None:
            return self
        node = self.grad_fn
        node.retained = node.retained or {}
        node.retained[self._out_index] = self
        return self

    # ----------------------------------------------------------------- in place (no graph)
    def _check_inplace(self, op):
        if self.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(
                f"{op}: a tensor that requires grad cannot be modified in place while grad is "
                "enabled; wrap the update in gpudl.no_grad()")

    def __setitem__(self, index, value):
        self._check_inplace("__setitem__")
        self.data[_index_arrays(index, self)] = _raw(value, self)

    def copy_(self, src):
        self._check_inplace("copy_")
        src = _raw(src, self)
        if np.shape(src) != self.shape and np.broadcast_shapes(np.shape(src), self.shape) != self.shape:
            raise ValueError(f"copy_: source of shape {np.shape(src)} does not broadcast to {self.shape}")
        self.data[...] = src
        return self

    def fill_(self, value):
        self._check_inplace("fill_")
        self.data[...] = _raw(value, self)
        return self

    def zero_(self):
        return self.fill_(0)

    def add_(self, other, alpha=1):
        self._check_inplace("add_")
        other = _raw(other, self)
        self.data += other if alpha == 1 else alpha * other
        return self

    def sub_(self, other, alpha=1):
        return self.add_(other, alpha=-alpha)

    def mul_(self, other):
        self._check_inplace("mul_")
        self.data *= _raw(other, self)
        return self

    def div_(self, other):
        self._check_inplace("div_")
        self.data /= _raw(other, self)
        return self

    def clamp_(self, min=None, max=None):
        self._check_inplace("clamp_")
        xp = backend.get_array_module(self.data)
        xp.clip(self.data, min, max, out=self.data)
        return self

    def uniform_(self, a=0.0, b=1.0):
        from . import random
        self._check_inplace("uniform_")
        self.data[...] = random.uniform(self.shape, self.dtype, self._device, a, b)
        return self

    def normal_(self, mean=0.0, std=1.0):
        from . import random
        self._check_inplace("normal_")
        self.data[...] = random.normal(self.shape, self.dtype, self._device) * std + mean
        return self

    # ----------------------------------------------------------------- arithmetic
    def __add__(self, other):
        return _binary(E.Add, "add", self, other)

    def __radd__(self, other):
        return _binary(E.Add, "add", other, self)

    def __sub__(self, other):
        return _binary(E.Sub, "sub", self, other)

    def __rsub__(self, other):
        return _binary(E.Sub, "sub", other, self)

    def __mul__(self, other):
        return _binary(E.Mul, "mul", self, other)

    def __rmul__(self, other):
        return _binary(E.Mul, "mul", other, self)

    def __truediv__(self, other):
        return _binary(E.Div, "div", self, other, true_division=True)

    def __rtruediv__(self, other):
        return _binary(E.Div, "div", other, self, true_division=True)

    def __pow__(self, other):
        return _binary(E.Pow, "pow", self, other)

    def __rpow__(self, other):
        return _binary(E.Pow, "pow", other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        return E.Neg.apply(self)

    def __abs__(self):
        return E.Abs.apply(self)

    def __pos__(self):
        return self

    add, sub, mul, div, pow = __add__, __sub__, __mul__, __truediv__, __pow__
    abs, neg = __abs__, __neg__

    # comparisons: no gradient, bool results
    def _compare(self, other, op):
        other = _raw(other, self)
        return Tensor._make(op(self.data, other), False, None, 0, self._device)

    __eq__ = lambda self, other: self._compare(other, lambda a, b: a == b)  # noqa: E731
    __ne__ = lambda self, other: self._compare(other, lambda a, b: a != b)  # noqa: E731
    __lt__ = lambda self, other: self._compare(other, lambda a, b: a < b)  # noqa: E731
    __le__ = lambda self, other: self._compare(other, lambda a, b: a <= b)  # noqa: E731
    __gt__ = lambda self, other: self._compare(other, lambda a, b: a > b)  # noqa: E731
    __ge__ = lambda self, other: self._compare(other, lambda a, b: a >= b)  # noqa: E731
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def __invert__(self):
        if self.dtype != dtypes.bool_:
            raise TypeError(f"~ is defined for bool tensors only, got {self.dtype}")
        return Tensor._make(~self.data, False, None, 0, self._device)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b)

    def any(self):
        return Tensor._make(self.data.any(), False, None, 0, self._device)

    def all(self):
        return Tensor._make(self.data.all(), False, None, 0, self._device)

    def isnan(self):
        return self._compare(None, lambda a, _: backend.get_array_module(a).isnan(a))

    # ----------------------------------------------------------------- unary maths
    def exp(self):
        return E.Exp.apply(self._floating())

    def log(self):
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
        return self * self

    def clip(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clip: at least one of 'min' or 'max' must not be None")
        return E.Clip.apply(self, _scalar_bound(min), _scalar_bound(max))

    clamp = clip

    def maximum(self, other):
        return _binary(E.Maximum, "maximum", self, other)

    def masked_fill(self, mask, value):
        return where(mask, value, self)

    def _floating(self):
        return self if self.dtype.kind == "f" else self.astype(dtypes.DEFAULT_FLOAT)

    # ----------------------------------------------------------------- reductions
    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _reduce_args("sum", dim, keepdim, axis, keepdims)
        return R.Sum.apply(self, normalize_axes(dim, self.ndim, "sum"), keepdim)

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        dim, keepdim = _reduce_args("mean", dim, keepdim, axis, keepdims)
        return R.Mean.apply(self._floating(), normalize_axes(dim, self.ndim, "mean"), keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None,
            keepdims=None):
        dim, keepdim = _reduce_args("var", dim, keepdim, axis, keepdims)
        if unbiased is not None and correction is not None:
            raise TypeError("var: pass unbiased or correction, not both")
        correction = (1 if unbiased is None else int(bool(unbiased))) if correction is None \
            else correction
        return R.Var.apply(self._floating(), normalize_axes(dim, self.ndim, "var"),
                           correction, keepdim)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None,
            keepdims=None):
        return self.var(dim, unbiased, keepdim, correction=correction, axis=axis,
                        keepdims=keepdims).sqrt()

    def _extreme(self, op, dim, keepdim, axis, keepdims, largest):
        if isinstance(dim, Tensor):             # torch.max(a, b): elementwise
            return _binary(E.Maximum, op, self, dim) if largest else -_binary(
                E.Maximum, op, -self, -dim)
        dim, keepdim = _reduce_args(op, dim, keepdim, axis, keepdims)
        if self.data.size == 0 and (dim is None or self.shape[dim] == 0):
            raise ValueError(f"{op}: cannot reduce an empty tensor of shape {self.shape}")
        if dim is None:
            return R.Extreme.apply(self, None, keepdim, largest)
        axis = normalize_axis(dim, self.ndim, op)
        return MaxMin(*R.Extreme.apply(self, axis, keepdim, largest))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme("max", dim, keepdim, axis, keepdims, True)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._extreme("min", dim, keepdim, axis, keepdims, False)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmax", dim, keepdim, axis, keepdims)

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmin", dim, keepdim, axis, keepdims)

    def _arg(self, op, dim, keepdim, axis, keepdims):
        dim, keepdim = _reduce_args(op, dim, keepdim, axis, keepdims)
        if self.data.size == 0:
            raise ValueError(f"{op}: cannot reduce an empty tensor of shape {self.shape}")
        if dim is None:
            flat = getattr(self.data.reshape(-1), op)()
            out = flat.reshape((1,) * self.ndim) if keepdim else flat
        else:
            out = getattr(self.data, op)(axis=normalize_axis(dim, self.ndim, op), keepdims=keepdim)
        return Tensor._make(out.astype(np.int64), False, None, 0, self._device)

    def softmax(self, dim=-1, *, axis=None):
        dim = dim if axis is None else axis
        return R.Softmax.apply(self._floating(), normalize_axis(dim, self.ndim, "softmax"))

    def log_softmax(self, dim=-1, *, axis=None):
        dim = dim if axis is None else axis
        return R.LogSoftmax.apply(self._floating(), normalize_axis(dim, self.ndim, "log_softmax"))

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape):
        shape = _shape_arg("reshape", shape)
        unknown = sum(1 for n in shape if n == -1)
        known = math.prod(n for n in shape if n != -1)
        if unknown > 1 or any(n < -1 for n in shape):
            bad = True
        elif unknown:
            bad = known == 0 or self.data.size % known != 0
        else:
            bad = known != self.data.size
        if bad:
            raise ValueError(f"reshape: shape {shape} is invalid for input of shape {self.shape} "
                             f"({self.data.size} elements)")
        return S.Reshape.apply(self, shape)

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start = normalize_axis(start_dim, self.ndim, "flatten")
        end = normalize_axis(end_dim, self.ndim, "flatten")
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def squeeze(self, dim=None):
        axes = normalize_axes(dim, self.ndim, "squeeze")
        keep = [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)]
        return self.reshape(tuple(keep)) if len(keep) != self.ndim else self

    def unsqueeze(self, dim):
        axis = normalize_axis(dim, self.ndim + 1, "unsqueeze")
        shape = self.shape
        return self.reshape(shape[:axis] + (1,) + shape[axis:])

    def permute(self, *dims):
        dims = _shape_arg("permute", dims)
        axes = normalize_axes(dims, self.ndim, "permute") if dims else ()
        if len(dims) != self.ndim or len(set(axes)) != self.ndim:
            raise ValueError(f"permute: dims {dims} are not a permutation of the {self.ndim} "
                             f"dimensions of a tensor of shape {self.shape}")
        axes = tuple(d % self.ndim for d in dims)
        return self if axes == tuple(range(self.ndim)) else S.Permute.apply(self, axes)

    def transpose(self, dim0, dim1):
        if self.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
            return self
        a = normalize_axis(dim0, self.ndim, "transpose")
        b = normalize_axis(dim1, self.ndim, "transpose")
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self.permute(*axes)

    swapaxes = transpose

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with <= 2 dimensions, got shape {self.shape}")
        return self.T

    def expand(self, *sizes):
        sizes = _shape_arg("expand", sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: the number of sizes {sizes} must be at least the number "
                             f"of dimensions of shape {self.shape}")
        shape = []
        for i, n in enumerate(sizes):
            own = self.shape[i - lead] if i >= lead else None
            if n == -1:
                if own is None:
                    raise ValueError(f"expand: -1 is not allowed in a new leading dimension {sizes}")
                n = own
            if own is not None and own != 1 and own != n:
                raise ValueError(f"expand: cannot expand shape {self.shape} to {sizes}: "
                                 f"dimension {i} has size {own}")
            shape.append(n)
        shape = tuple(shape)
        return self if shape == self.shape else S.Expand.apply(self, shape)

    def expand_as(self, other):
        return self.expand(*other.shape)

    def repeat(self, *repeats):
        repeats = _shape_arg("repeat", repeats)
        if len(repeats) < self.ndim:
            raise ValueError(f"repeat: {len(repeats)} repeats given for a tensor of shape "
                             f"{self.shape}; need at least {self.ndim}")
        shape = (1,) * (len(repeats) - self.ndim) + self.shape
        spread = self.reshape(tuple(x for n in shape for x in (1, n)))
        tiled = spread.expand(*(x for r, n in zip(repeats, shape) for x in (r, n)))
        return tiled.reshape(tuple(r * n for r, n in zip(repeats, shape)))

    def contiguous(self):
        return self

    def split(self, split_size_or_sections, dim=0):
        axis = normalize_axis(dim, self.ndim, "split")
        n = self.shape[axis]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step <= 0:
                raise ValueError(f"split: split_size must be positive, got {step}")
            sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sections {sizes} do not add up to size {n} of dim {dim}")
        out, start = [], 0
        for size in sizes:
            out.append(self[(slice(None),) * axis + (slice(start, start + size),)])
            start += size
        return tuple(out)

    def chunk(self, chunks, dim=0):
        n = self.shape[normalize_axis(dim, self.ndim, "chunk")]
        return self.split(max(-(-n // chunks), 1), dim)

    def __getitem__(self, index):
        return S.GetItem.apply(self, _index_arrays(index, self))


# --------------------------------------------------------------------- module-level helpers
class _ToDevice(autograd.Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.device = _device_of(a)
        return backend.to_device_array(a, device)

    @staticmethod
    def backward(ctx, g):
        return backend.to_device_array(g, ctx.device), None


def _is_device(value):
    """'cpu', 'cuda:0' or a torch.device-like object (whose ``type`` is a string)."""
    if isinstance(value, str):
        return value.split(":")[0].strip().lower() in backend.DEVICES
    return isinstance(getattr(value, "type", None), str)


def _raw(value, like):
    """The array (or Python scalar) to combine with tensor ``like``, on its device."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return backend.to_device_array(np.asarray(value) if not backend.is_device_array(value)
                                   else value, like._device)


def _index_arrays(index, like):
    if isinstance(index, tuple):
        return tuple(_index_arrays(i, like) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return _raw(np.asarray(index), like)
    return index


def _scalar_bound(bound):
    if isinstance(bound, Tensor):
        return bound.data
    return bound


def _as_operand(value, like):
    """Wrap a non-Tensor operand: Python scalars stay scalars (weakly typed, as in torch)."""
    if isinstance(value, Tensor) or isinstance(value, (int, float)):
        return value
    raw = _raw(value, like)
    if raw.dtype == np.float64 and like.dtype.kind == "f":
        raw = raw.astype(like.dtype)     # a float64 NumPy array does not upcast a float32 tensor
    return Tensor._make(raw, False, None, 0, like._device)


def _binary(function, name, a, b, true_division=False):
    like = a if isinstance(a, Tensor) else b
    a, b = _as_operand(a, like), _as_operand(b, like)
    if true_division or isinstance(a, float) or isinstance(b, float):
        # int tensors promote to the default float dtype, as in torch
        a = a._floating() if isinstance(a, Tensor) and a.dtype.kind in "iub" else a
        b = b._floating() if isinstance(b, Tensor) and b.dtype.kind in "iub" else b
    try:
        return function.apply(a, b)
    except ValueError as exc:
        if "broadcast" not in str(exc):
            raise
        raise ValueError(f"{name}: shapes {np.shape(_data(a))} and {np.shape(_data(b))} are not "
                         "broadcastable") from None


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D promotion, batched and broadcast leading dims."""
    like = a if isinstance(a, Tensor) else b
    a, b = _as_operand(a, like), _as_operand(b, like)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands must have at least one dimension, got shapes "
                         f"{np.shape(_data(a))} and {np.shape(_data(b))}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                         f"({a.shape[-1]} != {inner_b})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} are not "
                         "broadcastable") from None
    return linalg.MatMul.apply(a, b)


def where(condition, input, other):
    """Elements of ``input`` where ``condition`` holds, else of ``other`` (broadcast)."""
    like = next((t for t in (input, other, condition) if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError("where: at least one argument must be a Tensor")
    cond = _raw(condition, like)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got {cond.dtype}")
    a, b = _as_operand(input, like), _as_operand(other, like)
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    try:
        return E.Where.apply(cond, a, b)
    except ValueError as exc:
        raise ValueError(f"where: shapes {np.shape(cond)}, {np.shape(_data(a))} and "
                         f"{np.shape(_data(b))} are not broadcastable ({exc})") from None


autograd._Tensor = Tensor
