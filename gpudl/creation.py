"""Tensor factories: gd.tensor, zeros, ones, full, arange, randn, ... (torch's signatures)."""

import numbers

import numpy as np

from . import autograd, backend, dtypes, random
from .tensor import Tensor
from .tensor_math import wrapped
from .tensor_shape import shape_arg


def as_array(data, dtype, device, op):
    """(array, device) for ``data`` converted like torch.tensor would, on ``device``."""
    dtype = dtypes.as_dtype(dtype, op)
    if isinstance(data, Tensor):
        source_device = data._device
        data = data._data
    else:
        source_device = "cuda" if backend.is_device_array(data) else None
        if _is_torch_bfloat16(data):
            data = _torch_bfloat16(data)
        elif isinstance(data, (list, tuple)):
            data = _unwrap_nested(data)
    device = device or source_device or backend.FACTORY_DEVICE or backend.DEFAULT_DEVICE
    if backend.is_device_array(data):
        array = data
    else:
        if isinstance(data, str) or (not hasattr(data, "__len__") and not isinstance(
                data, (int, float, bool, complex, np.generic, np.ndarray))):
            raise TypeError(f"{op}: cannot make a tensor from {type(data).__name__}")
        inferred = dtype or dtypes.infer_dtype(data)
        try:
            array = np.asarray(data)
        except ValueError:
            array = np.empty(0, object)
        if array.dtype == object:
            raise ValueError(f"{op}: data is ragged or holds non-numbers; got {data!r:.80}")
        if inferred is None:
            raise TypeError(f"{op}: unsupported dtype {array.dtype}")
        dtype = inferred
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    return backend.to_device_array(array, device), device


def _is_torch_bfloat16(x):
    return str(getattr(x, "dtype", "")) == "torch.bfloat16"


def _torch_bfloat16(tensor):
    """A torch bfloat16 tensor as a NumPy bfloat16 array sharing its memory (on the cpu):
    torch's .numpy() and NumPy's DLPack both refuse bfloat16, so the bits are viewed as int16
    and back."""
    import torch
    return tensor.detach().cpu().view(torch.int16).numpy().view(dtypes.bfloat16)


def _unwrap_nested(data):
    return [_unwrap_nested(d) if isinstance(d, (list, tuple)) else
            (d.numpy() if isinstance(d, Tensor) else d) for d in data]


def tensor(data, dtype=None, requires_grad=False, device=None):
    """A new tensor holding a copy of ``data`` (list, scalar, NumPy/CuPy array or Tensor)."""
    device = backend.check_device(device, "tensor") if device is not None else None
    array, device = as_array(data, dtype, device, "tensor")
    source = data._data if isinstance(data, Tensor) else data
    if array is source or (isinstance(array, np.ndarray) and isinstance(source, np.ndarray)
                           and np.shares_memory(array, source)):
        array = array.copy()          # gd.tensor always copies, as torch.tensor does
    out = Tensor._make(array, False, None, 0, device)
    return out.requires_grad_(True) if requires_grad else out


def _size(op, size):
    size = shape_arg(op, size)
    if any(n < 0 for n in size):
        raise ValueError(f"{op}: size must be non-negative, got {size}")
    return size


def _sizes(op, size, size_kw):
    """The positional sizes, or torch's keyword form ``zeros(size=(2, 3))``."""
    if not size_kw:
        return size
    if set(size_kw) != {"size"}:
        raise TypeError(f"{op}() got an unexpected keyword argument "
                        f"{next(k for k in size_kw if k != 'size')!r}")
    if size:
        raise TypeError(f"{op}: pass the size as ints or as size=, not both (got {size} and "
                        f"size={size_kw['size']!r})")
    return (size_kw["size"],)


def _factory(op, fill, size, dtype, device, requires_grad):
    size = _size(op, size)
    dtype = dtypes.as_dtype(dtype, op) or dtypes.DEFAULT_FLOAT
    device = backend.check_device(device, op)
    backend.check_dtype_on_device(dtype, device, op)
    array = fill(backend.xp_for(device), size, dtype, device)
    if autograd._capture is not None and autograd._capture.active() \
            and not op.startswith("rand"):
        autograd._capture.constant(array)    # the same values on every replay
    out = Tensor._make(array, False, None, 0, device)
    return out.requires_grad_(True) if requires_grad else out


def zeros(*size, dtype=None, device=None, requires_grad=False, **size_kw):
    size = _sizes("zeros", size, size_kw)
    return _factory("zeros", lambda xp, s, d, _: xp.zeros(s, d), size, dtype, device,
                    requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False, **size_kw):
    size = _sizes("ones", size, size_kw)
    return _factory("ones", lambda xp, s, d, _: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False, **size_kw):
    size = _sizes("empty", size, size_kw)
    return _factory("empty", lambda xp, s, d, _: xp.empty(s, d), size, dtype, device,
                    requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if not isinstance(fill_value, (numbers.Number, np.bool_)) and not (
            isinstance(fill_value, Tensor) and fill_value.numel() == 1):
        raise TypeError(f"full: fill_value must be a number or a one-element tensor, got "
                        f"{type(fill_value).__name__}")
    if dtype is None:
        dtype = dtypes.infer_dtype(fill_value) if not isinstance(fill_value, Tensor) \
            else fill_value.dtype
    value = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    return _factory("full", lambda xp, s, d, _: xp.full(s, wrapped(value, d), d), (size,), dtype,
                    device, requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False, **size_kw):
    """Standard normal samples from the device's generator (see manual_seed), or from
    ``generator`` (a gd.Generator)."""
    size = _sizes("randn", size, size_kw)
    return _factory("randn", lambda xp, s, d, dev: random.normal(s, d, dev, generator), size,
                    dtype, device, requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False, **size_kw):
    """Uniform samples in [0, 1), from the device's generator or ``generator``."""
    size = _sizes("rand", size, size_kw)
    return _factory("rand", lambda xp, s, d, dev: random.uniform(s, d, dev, source=generator),
                    size, dtype, device, requires_grad)


def randint(low, high=None, size=(), *, generator=None, dtype=None, device=None):
    """Integers drawn uniformly from [low, high): ``randint(high, size)`` or
    ``randint(low, high, size)``, as torch."""
    if isinstance(high, (tuple, list)):         # torch.randint(high, size)
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    return _factory("randint", lambda xp, s, d, dev: random.integers(
        low, high, s, dev, generator).astype(d), (size,), dtype or dtypes.int64, device, False)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, device=None,
                 requires_grad=False):
    """Integers in [low, high) with the shape (and by default dtype, device) of input:
    ``randint_like(input, high)`` or ``randint_like(input, low, high)``, as torch."""
    if high is None:
        low, high = 0, low
    dtype, device = _like_input("randint_like", input, dtype, device)
    out = randint(low, high, input.shape, generator=generator, dtype=dtype, device=device)
    return out.requires_grad_(True) if requires_grad else out


def randperm(n, *, generator=None, dtype=None, device=None):
    if n < 0:
        raise ValueError(f"randperm: n must be non-negative, got {n}")
    return _factory("randperm", lambda xp, s, d, dev: random.permutation(
        n, dev, generator).astype(d), (n,), dtype or dtypes.int64, device, False)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError(f"arange: end {end} lies on the wrong side of start {start} for step "
                         f"{step}")
    dtype = dtypes.as_dtype(dtype, "arange")
    if dtype is None:
        integral = all(dtypes.value_category(v) <= 1 for v in (start, end, step))   # bools too
        dtype = dtypes.int64 if integral else dtypes.DEFAULT_FLOAT
    start, end, step = _truncated_for(dtype, start, end, step)
    if step == 0:
        raise ValueError("arange: step must be nonzero once truncated to the integer dtype")
    values = np.arange(start, end, step, dtype=np.float64 if dtypes.is_floating(dtype) else None)
    return tensor(values.astype(dtype), device=device, requires_grad=requires_grad)


def _truncated_for(dtype, *bounds):
    """The bounds of a range as torch takes them for an integer ``dtype``: truncated to ints
    first (arange(0.5, 3.7, 1.5, dtype=int64) is arange(0, 3, 1)); unchanged otherwise."""
    if dtypes.is_floating(dtype) or dtype == dtypes.bool_:
        return bounds
    return tuple(int(b) for b in bounds)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    dtype = dtypes.as_dtype(dtype) or dtypes.DEFAULT_FLOAT
    start, end = (v.item() if isinstance(v, Tensor) else v for v in (start, end))
    values = np.linspace(*_truncated_for(dtype, start, end), steps).astype(dtype)
    return tensor(values, device=device, requires_grad=requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return tensor(np.eye(n, m, dtype=dtypes.as_dtype(dtype) or dtypes.DEFAULT_FLOAT),
                  device=device, requires_grad=requires_grad)


def _like_input(op, input, dtype, device):
    """(dtype, device) for a *_like factory: input's where not given (``is None``: a tensor
    given as dtype must reach as_dtype's refusal, not a truth test)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    return (input.dtype if dtype is None else dtype,
            input.device if device is None else device)


def _like(factory):
    def like(input, dtype=None, device=None, requires_grad=False):
        dtype, device = _like_input(like.__name__, input, dtype, device)
        return factory(*input.shape, dtype=dtype, device=device, requires_grad=requires_grad)
    like.__name__ = factory.__name__ + "_like"
    like.__doc__ = f"{factory.__name__} with the shape (and by default dtype, device) of input."
    return like


zeros_like, ones_like, empty_like = _like(zeros), _like(ones), _like(empty)
randn_like, rand_like = _like(randn), _like(rand)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False):
    dtype, device = _like_input("full_like", input, dtype, device)
    return full(input.shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def from_dlpack(x):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, JAX)."""
    if isinstance(x, Tensor):
        return x
    if not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: {type(x).__name__} does not implement the DLPack protocol")
    device_type = int(x.__dlpack_device__()[0])
    if device_type == 1:                      # kDLCPU
        array = _torch_bfloat16(x) if _is_torch_bfloat16(x) else np.from_dlpack(x)
        device = "cpu"
    elif device_type == 2 and backend.cuda_available() and not backend.SIMULATOR:   # kDLCUDA
        array, device = backend.xp_for("cuda").from_dlpack(x), "cuda"
    else:
        raise RuntimeError(f"from_dlpack: DLPack device type {device_type} is not usable here "
                           f"(this process runs on {backend.DEFAULT_DEVICE})")
    return Tensor._make(array, False, None, 0, device)


def from_numpy(ndarray):
    """A cpu tensor sharing memory with a NumPy array (edits show through both ways), as
    ``torch.from_numpy``; ``.to('cuda')`` copies it to the GPU."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(ndarray).__name__}")
    if ndarray.dtype not in dtypes.SUPPORTED:
        raise TypeError(f"from_numpy: unsupported dtype {ndarray.dtype}; expected one of "
                        + ", ".join(d.name for d in dtypes.SUPPORTED))
    return Tensor._make(ndarray, False, None, 0, "cpu")


def _legacy_constructor(name, dtype):
    def construct(*args, device=None):
        # torch.FloatTensor(2, 3) is uninitialised storage of that size; FloatTensor(data) copies
        args = args or (0,)
        if all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                        for a in args):
            return zeros(*args, dtype=dtype, device=device)
        if len(args) != 1:
            raise TypeError(f"{name}: expected sizes (ints) or one sequence of data, got {args!r}")
        return tensor(args[0], dtype=dtype, device=device)
    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (f"torch.{name}: ``{name}(*sizes)`` (zero-filled here) or "
                         f"``{name}(data)``, dtype {dtype.name}.")
    return construct


FloatTensor = _legacy_constructor("FloatTensor", dtypes.float32)
DoubleTensor = _legacy_constructor("DoubleTensor", dtypes.float64)
LongTensor = _legacy_constructor("LongTensor", dtypes.int64)
IntTensor = _legacy_constructor("IntTensor", dtypes.int32)
BoolTensor = _legacy_constructor("BoolTensor", dtypes.bool_)


def logspace(start, end, steps, base=10.0, dtype=None, device=None, requires_grad=False):
    """``steps`` values base ** x for x evenly spaced from ``start`` to ``end``."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise TypeError(f"logspace: steps must be an int, got {steps!r}")
    if steps < 0:
        raise ValueError(f"logspace: steps must be non-negative, got {steps!r}")
    dtype = dtypes.as_dtype(dtype, "logspace") or dtypes.DEFAULT_FLOAT
    start, end = (v.item() if isinstance(v, Tensor) else v for v in (start, end))
    values = np.logspace(*_truncated_for(dtype, start, end), steps, base=base)
    return tensor(values.astype(dtype), device=device, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor without a copy where it can be (a Tensor already of that dtype and
    device is returned itself, a NumPy array on the cpu is shared as ``from_numpy``); else a
    copy, as ``tensor``."""
    target_device = backend.check_device(device, "as_tensor") if device is not None else None
    dtype = dtypes.as_dtype(dtype, "as_tensor")
    if isinstance(data, Tensor):
        return data.to(dtype=dtype, device=target_device)
    # `dtype in (None, x)` would not do: NumPy takes None for float64 in dtype comparisons
    same_dtype = dtype is None or dtype == getattr(data, "dtype", None)
    if isinstance(data, np.ndarray) and data.dtype in dtypes.SUPPORTED \
            and target_device in (None, "cpu") and same_dtype:
        return from_numpy(data)
    if backend.is_device_array(data) and target_device in (None, "cuda") and same_dtype:
        return Tensor._make(data, False, None, 0, "cuda")
    return tensor(data, dtype=dtype, device=target_device)


def _new(factory):
    """Tensor.new_zeros & co: ``factory(*size)`` with this tensor's dtype and device unless
    given."""
    def new(self, *size, dtype=None, device=None, requires_grad=False):
        return factory(*size, dtype=dtype or self.dtype, device=device or self._device,
                       requires_grad=requires_grad)
    new.__name__ = f"new_{factory.__name__}"
    new.__doc__ = f"``gd.{factory.__name__}`` with this tensor's dtype and device unless given."
    return new


def _new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    """``gd.full`` with this tensor's dtype and device unless given."""
    return full(size, fill_value, dtype=dtype or self.dtype, device=device or self._device,
                requires_grad=requires_grad)


def _new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    """A copy of ``data`` as a tensor of this tensor's dtype and device unless given."""
    return tensor(data, dtype=dtype or self.dtype, device=device or self._device,
                  requires_grad=requires_grad)


Tensor.new_zeros, Tensor.new_ones, Tensor.new_empty = _new(zeros), _new(ones), _new(empty)
Tensor.new_full, Tensor.new_tensor = _new_full, _new_tensor
