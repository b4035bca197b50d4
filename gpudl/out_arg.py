"""torch's ``out=`` keyword, for every public function torch gives it to, in one place.

``with_out(fn)`` returns ``fn`` taking ``out=`` as torch's: ``out=None`` is the plain call (the
only work added to it is that test); otherwise the result is computed by ``fn`` (which knows
nothing of ``out``) and written into ``out`` (a Tensor, or a tuple of them where ``fn`` returns
a tuple), which the call returns. As torch:

- a result is cast into ``out``'s dtype when torch's casting allows it (never to a lower kind:
  floating -> integer, integer -> bool), else RuntimeError "result type Float can't be cast to
  the desired output type Long"; the functions of EXACT_DTYPE take only the result's own
  dtype, as torch; ``out`` on another device is refused;
- an ``out`` of another shape is resized, with torch's UserWarning when it had elements;
- under grad mode, a result that would need autograd (an input requires grad) or an ``out``
  that requires grad is refused ("... don't support automatic differentiation");
- an ``out`` that partly overlaps an input is refused (exactly an input is fine: the result is
  computed before anything is written);
- the write is an in-place edit: ``out``'s version counter moves and its views see the values.
Creation functions (``zeros``, ``arange``, ``rand``, ...) take ``out``'s dtype and device when
none is given, as torch does. Every check runs before anything is written.
"""

import functools
import warnings

from . import backend, dtypes
from .autograd import is_grad_enabled, no_grad
from .tensor import Tensor

# torch's functions with out= (its _VariableFunctions signatures and docstrings, torch 2.13)
# that gpudl has; the lists stay names, so `import gpudl` loads no more for them
TOP_LEVEL = frozenset((
    "abs", "absolute", "acos", "acosh", "add", "addbmm", "addcdiv", "addcmul", "addmm",
    "addmv", "addr", "all", "amax", "amin", "aminmax", "angle", "any", "arange", "arccos",
    "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "argmax", "argmin",
    "argsort", "asin", "asinh", "atan", "atan2", "atanh", "baddbmm", "bernoulli",
    "bitwise_and", "bitwise_left_shift", "bitwise_not", "bitwise_or", "bitwise_right_shift",
    "bitwise_xor", "bmm", "bucketize", "cat", "ceil", "chain_matmul", "cholesky",
    "cholesky_inverse", "cholesky_solve", "clamp", "clamp_max", "clamp_min", "clip",
    "column_stack", "concat", "concatenate", "conj_physical", "copysign", "cos", "cosh",
    "cross", "cummax", "cummin", "cumprod", "cumsum", "deg2rad", "diag", "diff", "digamma",
    "div", "divide", "dot", "dstack", "empty", "eq", "erf", "erfc", "erfinv", "exp", "exp2",
    "expm1", "eye", "fix", "float_power", "floor", "floor_divide", "fmax", "fmin", "fmod",
    "frac", "frexp", "frobenius_norm", "full", "gather", "gcd", "ge", "ger", "greater",
    "greater_equal", "gt", "hardshrink", "heaviside", "histc", "histogram", "hstack",
    "hypot", "i0", "igamma", "igammac", "index_add", "index_copy", "index_reduce",
    "index_select", "inverse", "isin", "isneginf", "isposinf", "kron", "kthvalue",
    "lcm", "ldexp", "le", "lerp", "less", "less_equal", "lgamma", "linspace", "log",
    "log10", "log1p", "log2", "log_softmax", "logaddexp", "logaddexp2", "logcumsumexp",
    "logical_and", "logical_not", "logical_or", "logical_xor", "logit", "logspace",
    "logsumexp", "lt", "lu_solve", "lu_unpack", "masked_select", "matmul", "matrix_power",
    "max", "maximum", "mean", "median", "min", "minimum", "mm", "mode", "msort", "mul",
    "multinomial", "multiply", "mv", "mvlgamma", "nan_to_num", "nanmean", "nanmedian",
    "nanquantile", "nansum", "ne", "neg", "negative", "nextafter", "nonzero",
    "nonzero_static", "norm", "normal", "not_equal", "nuclear_norm", "ones", "outer",
    "polygamma", "pow", "prod", "qr", "quantile", "rad2deg", "rand", "randint", "randn",
    "randperm", "range", "reciprocal", "remainder", "renorm", "round", "row_stack", "rsqrt",
    "scatter", "scatter_add", "scatter_reduce", "searchsorted", "sgn", "sigmoid", "sign",
    "signbit", "sin", "sinc", "sinh", "slice_scatter", "slogdet", "softmax", "sort", "sqrt",
    "square", "stack", "std", "sub", "subtract", "sum", "svd", "take", "take_along_dim",
    "tan", "tanh", "tensordot", "threshold", "topk", "triangular_solve", "tril", "triu",
    "true_divide", "trunc", "var", "vdot", "vstack", "where", "xlogy", "zeros"))
LINALG = frozenset((
    "cholesky", "cholesky_ex", "cond", "cross", "det", "eig", "eigh", "eigvals", "eigvalsh",
    "householder_product", "inv", "inv_ex", "ldl_factor", "ldl_factor_ex", "ldl_solve",
    "lstsq", "lu", "lu_factor", "lu_factor_ex", "lu_solve", "matrix_norm",
    "matrix_power", "matrix_rank", "multi_dot", "norm", "pinv", "qr", "slogdet", "solve",
    "solve_ex", "solve_triangular", "svd", "svdvals", "tensorinv", "tensorsolve", "vecdot",
    "vector_norm"))
SPECIAL = frozenset((
    "airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "chebyshev_polynomial_t",
    "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w", "digamma",
    "entr", "erf", "erfc", "erfcx", "erfinv", "exp2", "expit", "expm1", "gammainc",
    "gammaincc", "gammaln", "hermite_polynomial_h", "hermite_polynomial_he", "i0", "i0e",
    "i1", "i1e", "laguerre_polynomial_l", "legendre_polynomial_p", "log1p", "log_ndtr",
    "logit", "logsumexp", "modified_bessel_i0", "modified_bessel_i1", "modified_bessel_k0",
    "modified_bessel_k1", "multigammaln", "ndtr", "ndtri", "polygamma", "psi", "round",
    "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
    "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v", "shifted_chebyshev_polynomial_w", "sinc",
    "spherical_bessel_j0", "xlog1py", "xlogy", "zeta"))
NN_FUNCTIONAL = frozenset(("normalize",))

# the functions torch writes only into an out of the result's own dtype (no cast; found by
# calling torch 2.13 on OpInfo samples with a float64 out for a float32 result)
EXACT_DTYPE = frozenset((
    "abs", "absolute", "addbmm", "addmm", "addmv", "amax", "amin", "aminmax", "argmax", "argmin",
    "baddbmm", "bmm", "ceil", "chain_matmul", "conj_physical", "cross", "cummax", "cummin",
    "det", "diag", "diff", "dot", "fix", "floor", "frac", "frexp", "frobenius_norm", "gather",
    "hardshrink", "heaviside", "histc", "histogram", "index_add", "index_copy", "index_reduce",
    "index_select", "inverse", "kthvalue", "log_softmax", "logcumsumexp", "lu_solve",
    "lu_unpack", "masked_select", "matmul", "matrix_power", "median", "mm",
    "mode", "msort", "mv", "nan_to_num", "nanmedian", "nanquantile", "neg", "negative", "norm",
    "nuclear_norm", "qr", "quantile", "renorm", "round", "scatter", "scatter_add",
    "scatter_reduce", "sgn", "sign", "slice_scatter", "slogdet", "softmax", "sort", "svd",
    "take", "take_along_dim",
    "tensordot", "topk", "triangular_solve", "tril", "triu", "trunc", "vdot", "where",
    "linalg.cholesky", "linalg.cholesky_ex", "linalg.cross", "linalg.det", "linalg.eigh",
    "linalg.eigvalsh", "linalg.inv", "linalg.inv_ex", "linalg.ldl_factor",
    "linalg.ldl_factor_ex", "linalg.ldl_solve", "linalg.lu", "linalg.lu_factor",
    "linalg.lu_factor_ex", "linalg.lu_solve", "linalg.matrix_norm", "linalg.multi_dot",
    "linalg.norm", "linalg.qr", "linalg.slogdet", "linalg.solve", "linalg.solve_ex",
    "linalg.solve_triangular", "linalg.svd", "linalg.svdvals", "linalg.vecdot",
    "linalg.vector_norm", "special.round", "special.log_softmax"))

# torch draws these into out's dtype, whatever it is (0s and 1s into an int out)
SAMPLED_INTO_OUT = frozenset(("bernoulli",))
# the reductions torch computes in out's dtype (their dtype= argument) when none is given
DTYPE_FROM_OUT = frozenset(("cumprod", "cumsum", "prod", "sum"))
# max and min: exact for their (values, indices) forms, casting for max(input, other)
EXACT_WHEN_TUPLE = frozenset(("max", "min"))

# the functions whose dtype and device default to out's (torch's factory functions)
CREATION = frozenset((
    "arange", "empty", "eye", "full", "linspace", "logspace", "ones", "rand", "randint",
    "randn", "randperm", "range", "zeros"))


def with_out(fn, name=None, prefix=""):
    """``fn`` taking torch's ``out=`` keyword (see the module docstring); ``prefix`` is its
    namespace's ("linalg.", ...)."""
    name = name or fn.__name__
    creation = not prefix and name in CREATION
    reduction = not prefix and name in DTYPE_FROM_OUT
    exact = prefix + name in EXACT_DTYPE or (
        not prefix and name in EXACT_WHEN_TUPLE and "tuple")

    def call(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        return call_with_out(fn, prefix + name, (creation, reduction, exact), args,
                             kwargs, out)
    functools.update_wrapper(call, fn)
    call.__wrapped_without_out__ = fn
    return call


def wrap_names(namespace, names, prefix=""):
    """Give each function ``namespace[name]`` (a module's globals) the ``out=`` keyword."""
    wrapped = {}                # id(function) -> its wrapper: aliases stay one object
    for name in sorted(names):
        function = namespace[name]
        if hasattr(function, "__wrapped_without_out__"):      # imported already wrapped
            continue
        if id(function) not in wrapped:
            wrapped[id(function)] = with_out(function, name, prefix)
        namespace[name] = wrapped[id(function)]


def _scalar_type(dtype):
    """torch's ScalarType name of a dtype (Float, Long, ...), as its messages print it."""
    names = {dtypes.float32: "Float", dtypes.float64: "Double", dtypes.float16: "Half",
             dtypes.bfloat16: "BFloat16", dtypes.int64: "Long", dtypes.int32: "Int",
             dtypes.int16: "Short", dtypes.int8: "Char", dtypes.uint8: "Byte",
             dtypes.bool_: "Bool"}
    return names.get(dtype, str(dtype))


def _no_autograd(name):
    return RuntimeError(f"{name}(): functions with out=... arguments don't support automatic "
                        "differentiation, but one of the arguments requires grad.")


def _tensors_in(values):
    """The tensors among ``values`` and inside their lists and tuples (one level)."""
    for value in values:
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, Tensor))


def call_with_out(fn, name, flags, args, kwargs, out):
    """``fn(*args, **kwargs)`` written into ``out``; returns ``out``. ``flags``: whether fn is
    a creation function, a reduction taking out's dtype, and whether out's dtype must be the
    result's (True, or "tuple": when the result is a tuple)."""
    creation, reduction, exact = flags
    several = isinstance(out, (tuple, list))
    outs = tuple(out) if several else (out,)
    for tensor in outs:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name}(): argument 'out' must be Tensor or a tuple of Tensors, "
                            f"not {type(tensor).__name__}")
    if creation:
        kwargs.setdefault("dtype", outs[0].dtype)
        kwargs.setdefault("device", outs[0].device)
    if reduction:
        kwargs.setdefault("dtype", outs[0].dtype)
    if exact == "tuple":
        exact = several
    grad = is_grad_enabled()
    if grad and any(tensor.requires_grad for tensor in outs):
        raise _no_autograd(name)
    result = fn(*args, **kwargs)
    results = tuple(result) if isinstance(result, tuple) else (result,)
    if several != isinstance(result, tuple) or len(outs) != len(results):
        expected = f"a tuple of {len(results)} Tensors" if isinstance(result, tuple) else \
            "a Tensor"
        got = f"a tuple of {len(outs)}" if several else "a Tensor"
        raise TypeError(f"{name}(): argument 'out' must be {expected}, got {got}")
    if grad and any(isinstance(r, Tensor) and r.requires_grad for r in results):
        raise _no_autograd(name)
    inputs = tuple(_tensors_in(args + tuple(kwargs.values())))
    for tensor, value in zip(outs, results):
        _check(name, tensor, value, inputs, exact)
    with no_grad():
        for tensor, value in zip(outs, results):
            version = tensor._version_counter[0]
            _write(tensor, value)
            tensor._version_counter[0] = version + 1    # one edit, as torch counts it
    if not several:
        return out
    return type(result)(*outs) if hasattr(result, "_fields") else outs


def _check(name, out, value, inputs, exact):
    """Refuse (before anything is written) what torch refuses of this out for this value."""
    value_dtype = value.dtype if isinstance(value, Tensor) else None
    if exact and value_dtype is not None and value_dtype != out.dtype:
        raise RuntimeError(f"{name}(): Expected out tensor to have dtype {value_dtype}, but got "
                           f"{out.dtype} instead")
    if value_dtype is not None and dtypes.category(value_dtype) > dtypes.category(out.dtype) \
            and name not in SAMPLED_INTO_OUT:
        raise RuntimeError(f"{name}(): result type {_scalar_type(value_dtype)} can't be "
                           f"cast to the desired output type {_scalar_type(out.dtype)}")
    if isinstance(value, Tensor) and value.device != out.device:
        raise RuntimeError(f"{name}(): Expected out tensor to have device {value.device}, but "
                           f"got {out.device} instead")
    xp = backend.get_array_module(out._data)
    for tensor in inputs:
        if tensor is out or _same_memory(tensor._data, out._data):
            continue
        if xp.may_share_memory(tensor._data, out._data):
            raise RuntimeError(f"{name}(): unsupported operation: some elements of the input "
                               "tensor and the written-to tensor refer to a single memory "
                               "location. Please clone() the tensor before performing the "
                               "operation.")


def _pointer(array):
    return array.ctypes.data if hasattr(array, "ctypes") else array.data.ptr


def _same_memory(a, b):
    return (a.shape == b.shape and a.strides == b.strides and type(a) is type(b)
            and _pointer(a) == _pointer(b))


def _write(out, value):
    """Resize ``out`` to ``value``'s shape (torch's warning if it had elements) and copy."""
    shape = tuple(value.shape) if isinstance(value, Tensor) else ()
    if tuple(out.shape) != shape:
        if out.numel():
            warnings.warn(
                f"An output with one or more elements was resized since it had shape "
                f"{list(out.shape)}, which does not match the required output shape "
                f"{list(shape)}. This behavior is deprecated, and in a future PyTorch release "
                "outputs will not be resized unless they have zero elements. You can explicitly "
                "reuse an out tensor t by resizing it, inplace, to zero elements with "
                "t.resize_(0).", UserWarning, stacklevel=4)
        out.resize_(shape)
    out.copy_(value.detach() if isinstance(value, Tensor) else value)
