"""torch.special's functions that torch gives no gradient: the Bessel and Airy functions
(bessel_j0 ... airy_ai) and the orthogonal polynomials (chebyshev_polynomial_t ...
legendre_polynomial_p). Like torch's, their results never require grad (asking for a gradient
through them raises "does not require grad"), integer and bool inputs are computed in the
default float dtype, and float16/bfloat16 are refused. The values come from
``gpudl.special_bessel`` and ``gpudl.special_polynomials``, the same NumPy/CuPy expressions on
both devices.
"""

import numpy as np

from . import dtypes, special_bessel, special_polynomials
from .ops._util import xp_of
from .tensor import Tensor

COMPUTED = (np.dtype(np.float32), np.dtype(np.float64))


def _result(op, dtype):
    """``dtype`` with integers and bool in the default float dtype; torch's error for the
    floating dtypes its kernels lack."""
    dtype = np.dtype(dtype if dtypes.is_floating(dtype) else dtypes.DEFAULT_FLOAT)
    if dtype not in COMPUTED:
        raise NotImplementedError(f"special.{op}: not implemented for {dtype.name}; expected "
                                  "float32 or float64 (or an integer or bool tensor), as torch")
    return dtype


def _made(array, like):
    return Tensor._make(array, False, None, 0, like._device)


def _one_tensor(name, doc):
    function_of_array = getattr(special_bessel, name)

    def function(input):
        if not isinstance(input, Tensor):
            raise TypeError(f"special.{name}(): argument 'input' (position 1) must be Tensor, "
                            f"not {type(input).__name__}")
        dtype = _result(name, input.dtype)
        return _made(function_of_array(input._data.astype(dtype, copy=False)), input)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = (f"{doc}\n\n    Like torch.special.{name}: elementwise, integer inputs in "
                        "the default float dtype, no gradient (the result never requires "
                        "grad).\n\n    Example: ``gd.special." + name + "(gd.tensor([0.5, 2.0]))``")
    return function


BESSEL_DOCS = {
    "bessel_j0": "The Bessel function of the first kind of order 0, J0(input).",
    "bessel_j1": "The Bessel function of the first kind of order 1, J1(input).",
    "bessel_y0": "The Bessel function of the second kind of order 0, Y0(input) (-inf at 0, "
                 "NaN below).",
    "bessel_y1": "The Bessel function of the second kind of order 1, Y1(input) (-inf at 0, "
                 "NaN below).",
    "modified_bessel_i0": "The modified Bessel function of the first kind of order 0, I0.",
    "modified_bessel_i1": "The modified Bessel function of the first kind of order 1, I1.",
    "modified_bessel_k0": "The modified Bessel function of the second kind of order 0, K0 "
                          "(+inf at 0, NaN below).",
    "modified_bessel_k1": "The modified Bessel function of the second kind of order 1, K1 "
                          "(+inf at 0, NaN below).",
    "scaled_modified_bessel_k0": "exp(input) K0(input).",
    "scaled_modified_bessel_k1": "exp(input) K1(input).",
    "spherical_bessel_j0": "The spherical Bessel function of the first kind of order 0, "
                           "sin(input) / input.",
    "airy_ai": "The Airy function Ai(input).",
}
(bessel_j0, bessel_j1, bessel_y0, bessel_y1, modified_bessel_i0, modified_bessel_i1,
 modified_bessel_k0, modified_bessel_k1, scaled_modified_bessel_k0, scaled_modified_bessel_k1,
 spherical_bessel_j0, airy_ai) = (_one_tensor(name, doc) for name, doc in BESSEL_DOCS.items())


def _number(value, name, argument):
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return value
    raise TypeError(f"special.{name}(): argument '{argument}' must be a Tensor or a number, got "
                    f"{type(value).__name__}")


def _polynomial_operands(name, x, n):
    """x and n as arrays of the result's dtype on the tensor's device, and that tensor."""
    if not isinstance(x, Tensor) and not isinstance(n, Tensor):
        raise TypeError(f"special.{name}(): one of 'x' and 'n' must be a Tensor, got "
                        f"{type(x).__name__} and {type(n).__name__}")
    x_value, n_value = (v if isinstance(v, Tensor) else _number(v, name, arg)
                        for v, arg in ((x, "x"), (n, "n")))
    tensors = [v for v in (x_value, n_value) if isinstance(v, Tensor)]
    if len(tensors) == 2:
        if x._device != n._device:
            raise RuntimeError(f"special.{name}: expected x and n on the same device, got "
                               f"{x._device} and {n._device}")
        try:
            np.broadcast_shapes(x.shape, n.shape)
        except ValueError:
            raise RuntimeError(f"special.{name}: the shapes of x {tuple(x.shape)} and n "
                               f"{tuple(n.shape)} do not broadcast") from None
        dtype = dtypes.result_type(x, n)
    else:
        dtype = tensors[0].dtype
    dtype = _result(name, dtype)
    like = tensors[0]
    xp = xp_of(like._data)
    arrays = [v._data.astype(dtype, copy=False) if isinstance(v, Tensor)
              else xp.asarray(v, dtype=dtype) for v in (x_value, n_value)]
    return arrays, like


def _polynomial(name, doc):
    def function(x, n):
        (x_array, n_array), like = _polynomial_operands(name, x, n)
        return _made(special_polynomials.evaluate(name, x_array, n_array), like)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = (
        f"{doc}\n\n    Args:\n        x: a Tensor or a number.\n        n: the degree, a Tensor "
        "or a number (truncated to an integer as torch does; a negative degree gives 0).\n"
        "    One of them must be a Tensor; they broadcast together and the result has torch's "
        "promoted dtype (integers in the default float dtype). No gradient, as torch.\n\n"
        f"    Example: ``gd.special.{name}(gd.tensor([0.25, 0.5]), 3)``")
    return function


POLYNOMIAL_DOCS = {
    "chebyshev_polynomial_t": "The Chebyshev polynomial of the first kind T_n(x).",
    "chebyshev_polynomial_u": "The Chebyshev polynomial of the second kind U_n(x).",
    "chebyshev_polynomial_v": "The Chebyshev polynomial of the third kind V_n(x).",
    "chebyshev_polynomial_w": "The Chebyshev polynomial of the fourth kind W_n(x).",
    "shifted_chebyshev_polynomial_t": "T_n(2x - 1), Chebyshev's first kind on [0, 1].",
    "shifted_chebyshev_polynomial_u": "U_n(2x - 1), Chebyshev's second kind on [0, 1].",
    "shifted_chebyshev_polynomial_v": "V_n(2x - 1), Chebyshev's third kind on [0, 1].",
    "shifted_chebyshev_polynomial_w": "W_n(2x - 1), Chebyshev's fourth kind on [0, 1].",
    "hermite_polynomial_h": "The physicists' Hermite polynomial H_n(x) (NaN above degree 512 "
                            "in float64, 128 in float32, as torch).",
    "hermite_polynomial_he": "The probabilists' Hermite polynomial He_n(x) (NaN above degree "
                             "512 in float64, 128 in float32, as torch).",
    "laguerre_polynomial_l": "The Laguerre polynomial L_n(x).",
    "legendre_polynomial_p": "The Legendre polynomial P_n(x).",
}
(chebyshev_polynomial_t, chebyshev_polynomial_u, chebyshev_polynomial_v, chebyshev_polynomial_w,
 shifted_chebyshev_polynomial_t, shifted_chebyshev_polynomial_u, shifted_chebyshev_polynomial_v,
 shifted_chebyshev_polynomial_w, hermite_polynomial_h, hermite_polynomial_he,
 laguerre_polynomial_l, legendre_polynomial_p) = (
    _polynomial(name, doc) for name, doc in POLYNOMIAL_DOCS.items())
