"""dtypes: NumPy dtype objects under PyTorch's names (``gd.float32 == np.float32`` holds).

``bfloat16`` is ``ml_dtypes.bfloat16`` (the NumPy extension JAX uses). NumPy files it under kind
``'V'``, not ``'f'``: ask ``is_floating(dtype)``, never ``dtype.kind == 'f'``, whether a dtype is a
floating type.
"""

import functools

import ml_dtypes
import numpy as np

bfloat16 = np.dtype(ml_dtypes.bfloat16)
float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
uint8 = np.dtype("uint8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

DEFAULT_FLOAT = float32
SUPPORTED = (bfloat16, float16, float32, float64, int8, uint8, int16, int32, int64, bool_)
_SUPPORTED_SET = frozenset(SUPPORTED)


def as_dtype(dtype, where="dtype"):
    """Normalise a dtype argument (gd/np dtype, type or string; torch dtypes too) or refuse it."""
    if dtype is None:
        return None
    if isinstance(dtype, np.dtype) and dtype in _SUPPORTED_SET:
        return dtype            # the common case, without str() and a scan (2.4 -> 0.1 us)
    # a tensor or an array (not a type such as np.float64): NumPy would take its .dtype
    if hasattr(dtype, "ndim") and not isinstance(dtype, (type, np.dtype)):
        raise TypeError(f"{where}: expected a dtype, got a {type(dtype).__name__}")
    text = str(dtype)
    if text.startswith("torch."):
        dtype = text[len("torch."):]
    try:
        result = np.dtype(dtype)
    except TypeError:
        result = None
    if result is None or result not in SUPPORTED:
        raise TypeError(f"{where}: unsupported dtype {text!r}; expected one of "
                        + ", ".join(d.name for d in SUPPORTED))
    return result


def is_floating(dtype):
    return dtype.kind == "f" or dtype == bfloat16


# computed in float32 and rounded back, as torch does; sets: ``dtype in`` one costs a hash, a
# tuple an __eq__ per element (hot paths ask)
LOW_PRECISION = frozenset((float16, bfloat16))
BFLOAT16 = frozenset((bfloat16,))


def bfloat16_to_float32(a):
    """bfloat16 array ``a`` (NumPy or CuPy) widened exactly to float32 through its bits: the
    kernels' code runs on CuPy, whose bfloat16 (CuPy 14, through ml_dtypes) has no casts or
    arithmetic of its own."""
    return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(xp, a):
    """float32 array ``a`` rounded to bfloat16 through its bits (to nearest, ties to even; NaN
    stays a quiet NaN of its sign), as ml_dtypes' cast does."""
    # ascontiguousarray makes a 0-d array (or a NumPy scalar) 1-d: its shape is put back
    bits = xp.ascontiguousarray(a, np.float32).view(np.uint32).reshape(np.shape(a))
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    return xp.where(nan, (bits >> 16) | np.uint32(0x40), rounded).astype(np.uint16) \
        .view(bfloat16)


def compute_dtype(dtype):
    """The dtype arithmetic on ``dtype`` runs in: float32 for float16/bfloat16, else itself."""
    return float32 if dtype in LOW_PRECISION else dtype


def promote_types(a, b):
    """torch's promotion of two tensor dtypes. NumPy differs where a floating type meets an
    integer or bool (torch keeps the floating type: float32 with int64 is float32, NumPy's
    float64) and around bfloat16 (with float16 it is float32)."""
    if a == b:
        return a
    a_floating, b_floating = is_floating(a), is_floating(b)
    if a_floating != b_floating:
        return a if a_floating else b
    if bfloat16 in (a, b):
        other = b if a == bfloat16 else a
        return float32 if other == float16 else other
    return np.promote_types(a, b)


def category(dtype):
    """0 for bool, 1 for the integer types, 2 for the floating types (torch's promotion)."""
    return 2 if is_floating(dtype) else 0 if dtype == bool_ else 1


def result_type(a, b, *more):
    """torch's result dtype of an op on tensors ``a``, ``b`` (and ``more``): 0-d tensors beside
    tensors with dimensions take part only when their category (bool < integer < floating) is
    higher, so float32 + a 0-d float64 tensor stays float32 and int32 + a 0-d int64 tensor
    int32."""
    if more:
        tensors = (a, b, *more)
        dims = [t.dtype for t in tensors if t.ndim]
        zero_d = [t.dtype for t in tensors if not t.ndim]
        if not dims or not zero_d:
            return functools.reduce(promote_types, dims or zero_d)
        dims, zero_d = (functools.reduce(promote_types, d) for d in (dims, zero_d))
        return promote_types(dims, zero_d) if category(zero_d) > category(dims) else dims
    if (a.ndim == 0) == (b.ndim == 0):
        return promote_types(a.dtype, b.dtype)
    dims, zero_d = (a, b) if b.ndim == 0 else (b, a)
    if category(zero_d.dtype) > category(dims.dtype):
        return promote_types(dims.dtype, zero_d.dtype)
    return dims.dtype


def infer_dtype(data):
    """The dtype torch.tensor would give Python data: the highest kind among its elements, bool
    (all bools), int64 or float32 (empty data too)."""
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        return data.dtype if data.dtype in SUPPORTED else None
    return (DEFAULT_FLOAT, bool_, int64, DEFAULT_FLOAT)[_highest_category(data) + 1]


def _highest_category(data):
    """value_category() of the highest kind among the elements of nested lists; -1 when empty."""
    if isinstance(data, (list, tuple)):
        return max((_highest_category(d) for d in data), default=-1)
    return value_category(data)


def value_category(value):
    """category() of a Python number, an array or a tensor (by its dtype); -1 for None."""
    if value is None:
        return -1
    if isinstance(value, (bool, np.bool_)):
        return 0
    if isinstance(value, (int, np.integer)):
        return 1
    dtype = getattr(value, "dtype", None)
    return category(dtype) if isinstance(dtype, np.dtype) and dtype in SUPPORTED else 2
