"""torch.Tensor's remaining everyday methods and flags: the ``byte``/``char``/``short``
conversions, ``addmm_``/``baddbmm_``/``addbmm_``, the legacy ``new(...)``, ``resize_``/
``resize_as_``, ``as_strided``, the complex-number vocabulary for real tensors (``conj``,
``real``, ``angle``, ...: gpudl has no complex dtype), the layout and backend flags (all False
but ``is_cpu``/``is_cuda``: gpudl has one strided layout), the samplers ``log_normal_``,
``geometric_``, ``cauchy_``, ``histogram`` and ``nonzero_static``."""

import math

import numpy as np

from . import autograd, backend, creation, dtypes, random
from .autograd import ArrayFunction
from .functions import require_tensors
from .math_inplace import in_place
from .ops import strided as strided_ops
from .ops._util import is_int, xp_of
from .tensor import Tensor
from .tensor_shape import Size, shape_arg


class layout:
    """torch.layout: how a tensor's elements lie in memory. gpudl has one, ``gpudl.strided``."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"gpudl.{self.name}"

    def __reduce__(self):
        return "strided"


strided = layout("strided")


# ----------------------------------------------------------------- conversions, in-place BLAS
def _converter(dtype, name):
    def convert(self):
        return self.astype(dtype)
    convert.__name__, convert.__doc__ = name, f"``self.to({dtype})``, as torch's {name}()."
    return convert


Tensor.byte = _converter(dtypes.uint8, "byte")
Tensor.char = _converter(dtypes.int8, "char")
Tensor.short = _converter(dtypes.int16, "short")
for _name in ("addmm", "baddbmm", "addbmm"):
    setattr(Tensor, _name + "_", in_place(_name))
del _name


def new(self, *args, device=None):
    """The legacy constructor ``x.new(...)``: ints (or one Size) give an uninitialised tensor of
    those sizes, data (a list, number or array) a tensor of it; in x's dtype, on x's device
    unless ``device``. ``x.new()`` is an empty 1-D tensor."""
    device = device or self._device
    if not args:
        return creation.empty(0, dtype=self.dtype, device=device)
    if all(is_int(a) for a in args) or (len(args) == 1 and isinstance(args[0], Size)):
        return creation.empty(*args, dtype=self.dtype, device=device)
    if len(args) != 1:
        raise TypeError(f"new: expected sizes (ints) or one data argument, got "
                        f"{tuple(type(a).__name__ for a in args)}")
    return creation.tensor(args[0], dtype=self.dtype, device=device)


Tensor.new = new


# ----------------------------------------------------------------- resize_
@autograd.recorded("inplace")
def resize_(self, *sizes, memory_format=None):
    """Give this tensor ``sizes``, keeping its leading elements in flat (row-major) order: a
    smaller size keeps a prefix (a view of the same memory), a larger one new memory whose
    extra elements are uninitialised (zeros here). As torch, refused on a tensor that requires
    grad; gpudl also refuses a view of another tensor that would change its element count."""
    size = shape_arg("resize_", sizes)
    if any(n < 0 for n in size):
        raise RuntimeError(f"resize_: sizes must be non-negative, got {size}")
    if self._requires_grad:
        raise RuntimeError("resize_: cannot resize variables that require grad")
    count, data = math.prod(size), self._data
    if count != data.size and self._view is not None:
        raise RuntimeError(f"resize_: this tensor views another tensor's memory; gpudl resizes "
                           f"only tensors owning theirs (shape {tuple(self.shape)} to {size}); "
                           "clone() it first")
    xp = backend.get_array_module(data)
    flat = data.reshape(-1) if data.flags.c_contiguous else xp.ascontiguousarray(data).ravel()
    if count <= flat.size:
        self._data = flat[:count].reshape(size)
    else:
        grown = xp.zeros(count, data.dtype)
        grown[:flat.size] = flat
        self._data = grown.reshape(size)
    self._bump_version()
    return self


def resize_as_(self, the_template, memory_format=None):
    """``resize_`` to ``the_template``'s shape."""
    require_tensors("resize_as_", the_template=the_template)
    return self.resize_(tuple(the_template.shape))


Tensor.resize_, Tensor.resize_as_ = resize_, resize_as_


# ----------------------------------------------------------------- as_strided
def as_strided(input, size, stride, storage_offset=None):
    """A view of ``input``'s elements read with ``stride`` (in elements) from element
    ``storage_offset`` (0 by default), of shape ``size``: torch.as_strided on a contiguous
    tensor, whose own elements are the storage here. The gradient adds up at elements read
    more than once.

    Example: ``gd.arange(6.).as_strided((2, 2), (1, 2))`` is ``[[0, 2], [1, 3]]``."""
    require_tensors("as_strided", input=input)
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(is_int(n) and n >= 0 for n in size + stride):
        raise RuntimeError(f"as_strided: expected as many non-negative sizes as strides, got "
                           f"size {size} and stride {stride}")
    offset = 0 if storage_offset is None else storage_offset
    if not is_int(offset) or offset < 0:
        raise RuntimeError(f"as_strided: storage_offset must be a non-negative int, got {offset!r}")
    if not input._data.flags.c_contiguous:
        raise RuntimeError(f"as_strided: gpudl takes strides of a contiguous tensor only, got "
                           f"one of shape {tuple(input.shape)} with strides "
                           f"{input.stride()}; call .contiguous() first")
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)) if 0 not in size \
        else offset
    if needed > input.numel():
        raise RuntimeError(f"as_strided: sizes {list(size)}, strides {list(stride)} and storage "
                           f"offset {offset} need {needed} elements, out of bounds for the "
                           f"{input.numel()} elements of the tensor")
    itemsize = input._data.itemsize

    def take(a):
        flat = a.reshape(-1)[offset:]
        return xp_of(a).lib.stride_tricks.as_strided(
            flat, shape=size, strides=tuple(s * itemsize for s in stride))
    return strided_ops.StridedView.apply(input, take, True)


Tensor.as_strided = as_strided


# ----------------------------------------------------------------- real tensors' complex names
def _self(self):
    return self


def _false(self):
    return False


for _name in ("conj", "conj_physical", "resolve_conj", "resolve_neg", "share_memory_"):
    setattr(Tensor, _name, _self)
for _name in ("is_complex", "is_conj", "is_neg", "is_inference", "is_shared"):
    setattr(Tensor, _name, _false)
for _name in ("is_sparse", "is_sparse_csr", "is_quantized", "is_meta", "is_nested", "is_mkldnn",
              "is_xpu", "is_mps", "is_ipu", "is_hpu", "is_mtia", "is_maia", "is_vulkan",
              "is_xla", "is_ort"):
    setattr(Tensor, _name, property(_false))
del _name
Tensor.conj.__doc__ = "``self``: gpudl's dtypes are real (torch's conj of a real tensor)."
Tensor.is_inference.__doc__ = ("False: gpudl's inference_mode is no_grad and makes no inference "
                               "tensors.")
Tensor.layout = property(lambda self: strided, doc="``gpudl.strided``, gpudl's one layout.")
Tensor.real = property(_self, doc="``self``: a real tensor is its own real part.")
Tensor.name = property(lambda self: None, doc="None: gpudl has no named tensors.")
Tensor.output_nr = property(lambda self: self._out_index,
                            doc="Which output of its grad_fn this tensor is (0 for a leaf).")


def _imag(self):
    raise RuntimeError("imag is not implemented for tensors with non-complex dtypes.")


Tensor.imag = property(_imag, doc="Refused, as torch refuses it: gpudl's dtypes are real.")


def adjoint(self):
    """The conjugate transpose of the last two dims (``mH``; real dtypes: ``mT``)."""
    if self.ndim < 2:
        raise RuntimeError(f"tensor.adjoint() is only supported on matrices or batches of "
                           f"matrices. Got {self.ndim}-D tensor.")
    return self.mT


Tensor.adjoint = adjoint


class _Angle(ArrayFunction):
    """The argument of a real number: pi below zero, else 0 (nan stays nan); gradient 0."""

    @staticmethod
    def forward(ctx, a, dtype):
        xp = xp_of(a)
        out = xp.where(a < 0, math.pi, 0.0).astype(dtype)
        if dtypes.is_floating(a.dtype):
            out = xp.where(xp.isnan(a), a.astype(dtype), out)
        return out

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).zeros_like(g), None


def angle(input):
    """The elementwise argument (angle) of ``input``: pi for negative values, else 0; float
    inputs keep their dtype, integers and bools give the default float dtype (torch.angle)."""
    require_tensors("angle", input=input)
    dtype = input.dtype if dtypes.is_floating(input.dtype) else dtypes.DEFAULT_FLOAT
    return _Angle.apply(input, dtype)


Tensor.angle = angle


# ----------------------------------------------------------------- in-place samplers
def _sampler(name, check, draw, normal=False):
    """The Tensor method ``name``: ``check(*args)``, then ``draw(xp, u, *args)`` from float64
    uniform (or, with ``normal``, standard normal) samples ``u`` written into the tensor."""
    def sample(self, *args, generator=None, **kwargs):
        check(*args, **kwargs)
        source = random.normal if normal else random.uniform
        u = source(self.shape, np.float64, self._device, source=generator)
        values = draw(backend.get_array_module(u), u, *args, **kwargs)
        return self._fill_random(name, values.astype(self.dtype))
    sample.__name__ = name
    return autograd.recorded("inplace")(sample)


def _positive(op, name, value):
    if not value > 0:
        raise RuntimeError(f"{op} expects {name} > 0.0, but found {name}={value}")


def _log_normal_check(mean=1.0, std=2.0):
    _positive("log_normal_", "std", std)


def _cauchy_check(median=0.0, sigma=1.0):
    _positive("cauchy_", "sigma", sigma)


def _geometric_check(p):
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p}")


Tensor.log_normal_ = _sampler("log_normal_", _log_normal_check, lambda xp, z, mean=1.0, std=2.0:
                              xp.exp(mean + std * z), normal=True)
Tensor.log_normal_.__doc__ = ("Fill with exp(N(mean, std**2)) samples (mean=1, std=2 by "
                              "default), as torch's log_normal_.")
Tensor.cauchy_ = _sampler("cauchy_", _cauchy_check, lambda xp, u, median=0.0, sigma=1.0:
                          median + sigma * xp.tan(math.pi * (u - 0.5)))
Tensor.cauchy_.__doc__ = "Fill with Cauchy samples of ``median`` and scale ``sigma``."
Tensor.geometric_ = _sampler("geometric_", _geometric_check, lambda xp, u, p: xp.maximum(
    xp.ceil(xp.log1p(-u) / math.log1p(-p)), 1))
Tensor.geometric_.__doc__ = ("Fill with the number of Bernoulli(p) trials up to the first "
                             "success (1, 2, ...), as torch's geometric_.")
