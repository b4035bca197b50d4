"""torch's elementwise maths (gpudl.math_ops, math_bits, math_inplace) against torch 2.13 on the
CPU: values and result dtypes over dtypes, edge values and broadcasting; gradients (kinks and
ties included); the in-place variants; errors."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read
from torch_gaps import skip_where_torch_lacks_the_derivative

torch = pytest.importorskip("torch")

EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, np.inf, -np.inf, np.nan]
DTYPES = {"float32": (np.float32, torch.float32), "float64": (np.float64, torch.float64),
          "float16": (np.float16, torch.float16), "int64": (np.int64, torch.int64),
          "int32": (np.int32, torch.int32), "int8": (np.int8, torch.int8),
          "uint8": (np.uint8, torch.uint8), "bool": (np.bool_, torch.bool)}
TOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}


def _values(rng, dtype, shape=(3, 4), edges=True):
    """Fresh random values of ``dtype`` (floats with the edge values spliced in)."""
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        low = 0 if np.dtype(dtype).kind == "u" else -9
        return rng.integers(low, 10, shape).astype(dtype)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    if edges:
        flat = x.reshape(-1)
        flat[:len(EDGES)] = rng.permutation(np.array(EDGES, dtype))[:flat.size]
    return x


def _np(t):
    """A torch tensor as NumPy (a ZeroTensor gradient, as torch gives copysign's, as zeros)."""
    return (torch.zeros_like(t) + t).detach().numpy()


def _run(lib, fn, *arrays, **kwargs):
    """``fn(lib, *tensors)`` with the arrays as ``lib``'s tensors (numbers as they are); the
    exception type if it raises."""
    wrap = torch.from_numpy if lib is torch else gd.tensor
    args = [wrap(np.array(a)) if isinstance(a, np.ndarray) else a for a in arrays]
    try:
        return fn(lib, *args, **kwargs)
    except Exception as exc:          # noqa: BLE001 (both libraries must refuse alike)
        return exc


def _agree(ours, theirs, tag):
    """Both raise, or both return the same values in the same dtype."""
    if isinstance(theirs, Exception):
        assert isinstance(ours, (TypeError, ValueError, RuntimeError)), (
            f"{tag}: torch raised {theirs!r}, gpudl returned / raised {ours!r}")
        return
    assert not isinstance(ours, Exception), f"{tag}: gpudl raised {ours!r}; torch {theirs}"
    for a, b in zip(ours, theirs) if isinstance(theirs, tuple) else [(ours, theirs)]:
        expected = b.numpy()
        assert a.numpy().dtype == expected.dtype, (tag, a.dtype, b.dtype)
        assert a.shape == tuple(b.shape), tag
        tol = TOL.get(expected.dtype.type, 0)
        np.testing.assert_allclose(a.numpy().astype(np.float64) if tol else a.numpy(),
                                   expected.astype(np.float64) if tol else expected,
                                   rtol=tol, atol=tol, equal_nan=True, err_msg=tag)


UNARY = ["tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "arcsin",
         "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "exp2", "log2", "log10", "sinc",
         "deg2rad", "rad2deg", "trunc", "fix", "frac", "sgn", "sign", "logit", "signbit",
         "isposinf", "isneginf", "isreal", "neg", "negative", "positive", "absolute",
         "bitwise_not"]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", UNARY)
def test_unary_values_and_dtypes_match_torch(name, dtype, rng):
    x = _values(rng, DTYPES[dtype][0])
    fn = lambda lib, t: getattr(lib, name)(t)                        # noqa: E731
    _agree(_run(gd, fn, x), _run(torch, fn, x), f"{name}({dtype})")
    method = lambda lib, t: getattr(t, name)()                        # noqa: E731
    _agree(_run(gd, method, x), _run(torch, method, x), f"Tensor.{name}({dtype})")


DOMAIN = {"asin": (-0.9, 0.9), "acos": (-0.9, 0.9), "atanh": (-0.9, 0.9),
          "acosh": (1.1, 3.0), "log2": (0.1, 3.0), "log10": (0.1, 3.0), "logit": (0.05, 0.95)}


@pytest.mark.parametrize("name", ["tan", "sinh", "cosh", "asin", "acos", "atan", "asinh",
                                  "acosh", "atanh", "exp2", "log2", "log10", "sinc", "deg2rad",
                                  "rad2deg", "trunc", "frac", "sgn", "logit", "absolute",
                                  "negative"])
def test_unary_gradients_match_torch(name, rng):
    low, high = DOMAIN.get(name, (-2.0, 2.0))
    x = rng.uniform(low, high, (3, 5))
    if name == "sinc":
        x[0, 0] = 0.0                                     # torch's gradient there: 0
    ours, theirs = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    w = rng.standard_normal(x.shape)
    (getattr(gd, name)(ours) * gd.tensor(w)).sum().backward()
    (getattr(torch, name)(theirs) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), _np(theirs.grad), rtol=1e-10, atol=1e-12)


def test_unary_gradients_at_singular_points_match_torch():
    cases = {"acosh": [1.0, 0.5, 2.0], "asin": [1.0, -1.0, 2.0], "atanh": [1.0, 2.0, 0.0],
             "log2": [0.0, -1.0, 1.0], "logit": [0.0, 1.0, -0.5, 1.5, 0.5],
             "sinc": [0.0, 1.0, -2.5]}
    for name, values in cases.items():
        ours, theirs = gd.tensor(values, requires_grad=True), torch.tensor(
            values, dtype=torch.float64, requires_grad=True)
        getattr(gd, name)(ours.double()).sum().backward()
        getattr(torch, name)(theirs).sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-6,
                                   equal_nan=True, err_msg=name)


def test_logit_with_eps_clamps_and_zeroes_the_gradient_outside(rng):
    x = np.concatenate([rng.uniform(-0.5, 1.5, 8), [0.1, 0.9, 0.0, 1.0]])
    ours, theirs = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = gd.logit(ours, eps=0.1), torch.logit(theirs, eps=0.1)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


BINARY = {
    "atan2": None, "arctan2": None, "hypot": None, "copysign": 1.5, "fmod": 1.5,
    "remainder": 1.5, "logaddexp": None, "logaddexp2": None, "xlogy": 2.0, "float_power": 2,
    "nextafter": None, "fmax": None, "fmin": None, "ldexp": None, "heaviside": None,
    "add": 2, "sub": 2.5, "subtract": 2, "mul": 3, "multiply": 0.5, "div": 2, "divide": 3,
    "true_divide": 2, "rsub": 1.5, "gcd": None, "lcm": None,
    "bitwise_and": 3, "bitwise_or": 3, "bitwise_xor": 3, "bitwise_left_shift": 2,
    "bitwise_right_shift": 1, "eq": 0.5, "ne": 0, "lt": 1, "le": 1.0, "gt": 0, "ge": 0,
    "greater": 1, "greater_equal": 0.5, "less": 1, "less_equal": 0, "not_equal": 0,
}
PAIRS = [("float32", "float32"), ("float64", "float32"), ("int64", "float32"),
         ("int64", "int64"), ("int32", "int8"), ("uint8", "int64"), ("bool", "bool"),
         ("float16", "float16"), ("float16", "float32"), ("bool", "int32")]


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_values_and_dtypes_match_torch(name, pair, rng):
    """Broadcast (3, 1) with (4,); then a Python number as other, where torch takes one; and
    a number as input (torch refuses most)."""
    a = _values(rng, DTYPES[pair[0]][0], (3, 1))
    b = _values(rng, DTYPES[pair[1]][0], (4,))
    if name in ("fmod", "remainder", "div", "divide") and pair[1] not in ("float32", "float16"):
        b = np.where(b == 0, 1, b).astype(b.dtype)      # torch's integer division by zero raises
    fn = lambda lib, x, y: getattr(lib, name)(x, y)                   # noqa: E731
    _agree(_run(gd, fn, a, b), _run(torch, fn, a, b), f"{name}{pair}")
    number = BINARY[name] if BINARY[name] is not None else 2.0
    _agree(_run(gd, fn, a, number), _run(torch, fn, a, number), f"{name}({pair[0]}, {number})")
    _agree(_run(gd, fn, number, b), _run(torch, fn, number, b), f"{name}({number}, {pair[1]})")
    if name not in ("rsub", "remainder"):
        method = lambda lib, x, y: getattr(x, name)(y)                # noqa: E731
        _agree(_run(gd, method, a, b), _run(torch, method, a, b), f"Tensor.{name}{pair}")


GRADIENT_POINTS = {
    # (a, b) with the points where torch's conventions decide: ties, zeros, nan
    "fmax": ([1.0, 2.0, 3.0, np.nan, np.nan], [1.0, 1.0, 5.0, 2.0, np.nan]),
    "fmin": ([1.0, 2.0, 3.0, np.nan, np.nan], [1.0, 1.0, 5.0, 2.0, np.nan]),
    "hypot": ([0.0, 3.0, -1.0], [0.0, 4.0, 2.0]),
    "atan2": ([0.0, 1.0, -2.0], [0.0, 0.0, 3.0]),
    "copysign": ([0.0, -0.0, 2.0, -3.0], [1.0, -1.0, -0.0, 0.0]),
    "fmod": ([5.0, -5.0, 5.5], [3.0, 3.0, -2.0]),
    "xlogy": ([0.0, 0.0, 2.0, 0.0], [0.0, 2.0, 3.0, np.nan]),
    "logaddexp": ([0.0, 1.0, -3.0], [0.0, -2.0, 5.0]),
    "logaddexp2": ([0.0, 1.0, -3.0], [0.0, -2.0, 5.0]),
    "float_power": ([0.0, 2.0, 1.5], [0.0, 3.0, -2.0]),
    "nextafter": ([0.0, 1.0], [1.0, 0.0]),
    "ldexp": ([1.0, 3.0], [2.0, -1.0]),
}


@pytest.mark.parametrize("name", list(GRADIENT_POINTS))
def test_binary_gradients_match_torch_at_random_and_kink_points(name, rng):
    a_edges, b_edges = (np.array(v) for v in GRADIENT_POINTS[name])
    a = np.concatenate([rng.uniform(0.2, 2.0, 6) * rng.choice([-1, 1], 6), a_edges])
    b = np.concatenate([rng.uniform(0.2, 2.0, 6) * rng.choice([-1, 1], 6), b_edges])
    if name in ("fmax", "fmin"):
        b[:3] = a[:3]                                    # ties
    shape_b = (a.size,) if name != "hypot" else (1, a.size)
    ours = [gd.tensor(a, requires_grad=True), gd.tensor(b.reshape(shape_b), requires_grad=True)]
    theirs = [torch.tensor(a, requires_grad=True),
              torch.tensor(b.reshape(shape_b), requires_grad=True)]
    w = rng.standard_normal(np.broadcast_shapes(a.shape, shape_b))
    (getattr(gd, name)(*ours) * gd.tensor(w)).sum().backward()
    with skip_where_torch_lacks_the_derivative():
        (getattr(torch, name)(*theirs) * torch.tensor(w)).sum().backward()
    for k, (x, tx) in enumerate(zip(ours, theirs)):
        got = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
        np.testing.assert_allclose(got, _np(tx.grad), rtol=1e-10, atol=1e-12,
                                   equal_nan=True, err_msg=f"{name} operand {k}")


def test_heaviside_has_no_gradient_and_torch_values(rng):
    x = _values(rng, np.float64, (6,))
    values = rng.standard_normal((1,))
    _agree(gd.heaviside(gd.tensor(x), gd.tensor(values)),
           torch.heaviside(torch.tensor(x), torch.tensor(values)), "heaviside")
    with pytest.raises(RuntimeError, match="derivative"):
        gd.heaviside(gd.tensor(x, requires_grad=True), gd.tensor(values)).sum().backward()


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_frexp_matches_torch(dtype, rng):
    x = _values(rng, DTYPES[dtype][0], (4, 5))
    x[0, 0] = 1e-40 if dtype != "float16" else 1e-6           # a subnormal
    ours, theirs = gd.frexp(gd.tensor(x)), torch.frexp(torch.from_numpy(x))
    _agree(tuple(ours), tuple(theirs), "frexp")
    assert ours.mantissa is ours[0] and gd.tensor(x).frexp().exponent.dtype == gd.int32
    with pytest.raises(TypeError, match="floating"):
        gd.frexp(gd.tensor([1, 2]))


def test_add_sub_rsub_with_alpha_match_torch(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    ia, ib = rng.integers(-5, 5, (3, 4)), rng.integers(-5, 5, 4)
    for fn in (lambda m, x, y: m.add(x, y, alpha=2.5), lambda m, x, y: m.sub(x, y, alpha=-3),
               lambda m, x, y: m.rsub(x, y, alpha=0.5), lambda m, x, y: x.add(y, alpha=2),
               lambda m, x, y: x.sub(y, alpha=2), lambda m, x, y: m.add(x, 1.5, alpha=2),
               lambda m, x, y: m.subtract(x, y, alpha=-1)):
        _agree(_run(gd, fn, a, b), _run(torch, fn, a, b), "float alpha")
        _agree(_run(gd, fn, ia, ib), _run(torch, fn, ia, ib), "int alpha")
    bools = rng.random(4) > 0.5
    add_bools = lambda m, x, y: m.add(x, y, alpha=2)                  # noqa: E731
    _agree(_run(gd, add_bools, bools, bools), _run(torch, add_bools, bools, bools), "bool")
    with pytest.raises(RuntimeError, match="alpha"):
        gd.add(gd.tensor(ia), gd.tensor(ib), alpha=1.5)
    x, y = gd.tensor(a, requires_grad=True), gd.tensor(b, requires_grad=True)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (gd.add(x, y, alpha=-2.5).sum() + gd.rsub(x, y, alpha=3).sum()).backward()
    (torch.add(tx, ty, alpha=-2.5).sum() + torch.rsub(tx, ty, alpha=3).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy())


@pytest.mark.parametrize("mode", ["trunc", "floor"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int8", "uint8", "float16"])
def test_div_rounding_modes_match_torch(mode, dtype, rng):
    a = _values(rng, DTYPES[dtype][0], (3, 4))
    b = _values(rng, DTYPES[dtype][0], (4,))
    if DTYPES[dtype][0] in (np.int64, np.int8, np.uint8):
        b = np.where(b == 0, 3, b).astype(b.dtype)
    for other in (b, 3, -2.5):
        fn = lambda m, x, y: m.div(x, y, rounding_mode=mode)          # noqa: E731
        _agree(_run(gd, fn, a, other), _run(torch, fn, a, other), f"div {mode} {dtype}")
        method = lambda m, x, y: x.div(y, rounding_mode=mode)         # noqa: E731
        _agree(_run(gd, method, a, other), _run(torch, method, a, other), f"{mode} {dtype}")


def test_div_rounding_mode_gradients_are_zero_and_errors_as_torch(rng):
    a = gd.tensor(rng.standard_normal(5), requires_grad=True)
    gd.div(a, 0.7, rounding_mode="floor").sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.zeros(5))
    with pytest.raises(ValueError, match="rounding_mode"):
        gd.div(a, 2, rounding_mode="round")
    with pytest.raises(RuntimeError, match="division by zero"):
        call_then_read(gd.div, gd.tensor([4, 5]), gd.tensor([1, 0]), rounding_mode="trunc")
    with pytest.raises(TypeError, match="bool"):
        gd.div(gd.tensor([True]), gd.tensor([True]), rounding_mode="trunc")


def test_shifts_past_the_width_follow_torch():
    for dtype in ("int8", "int64", "uint8", "int32"):
        a = np.array([1, -8, 5, 127, 0], dtype=DTYPES[dtype][0]) if dtype != "uint8" else \
            np.array([1, 8, 5, 255, 0], dtype=np.uint8)
        counts = np.array([0, 3, 9, 70, -1], dtype=DTYPES[dtype][0] if dtype != "uint8"
                          else np.int64)
        for name in ("bitwise_left_shift", "bitwise_right_shift"):
            fn = lambda m, x, y: getattr(m, name)(x, y)               # noqa: E731
            _agree(_run(gd, fn, a, counts), _run(torch, fn, a, counts), f"{name} {dtype}")
            for count in (0, 3, 9, 70, -1):
                _agree(_run(gd, fn, a, count), _run(torch, fn, a, count), f"{name} {count}")
        _agree(_run(gd, lambda m, x: x << 2, a), _run(torch, lambda m, x: x << 2, a), "<<")
        _agree(_run(gd, lambda m, x: 2 >> x, np.abs(a) % 5),
               _run(torch, lambda m, x: 2 >> x, np.abs(a) % 5), ">>")


def test_invert_is_bitwise_not_of_integers():
    np.testing.assert_array_equal((~gd.tensor([3, -4, 0])).numpy(), [-4, 3, -1])
    with pytest.raises(TypeError, match="bitwise_not"):
        ~gd.tensor([1.0])


def test_tensor_predicates_match_torch(rng):
    x = rng.standard_normal((2, 3))
    for value in ([0.0], [2.5], [[True]], [0]):
        assert gd.is_nonzero(gd.tensor(value)) == torch.is_nonzero(torch.tensor(value))
    for bad in (x, np.zeros(0)):
        with pytest.raises(RuntimeError, match="ambiguous"):
            gd.is_nonzero(gd.tensor(bad))
    assert gd.is_same_size(gd.tensor(x), gd.tensor(x.T.copy().T)) is True
    assert gd.tensor(x).is_same_size(gd.tensor(x.T.copy())) is False
    for dtype in DTYPES.values():
        assert gd.is_signed(gd.tensor(x.astype(dtype[0]))) == torch.is_signed(
            torch.tensor(x).to(dtype[1]))


def test_clone_detach_and_activation_functions_at_top_level(rng):
    x = rng.standard_normal((3, 4))
    leaf, tleaf = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    copy = gd.clone(leaf)
    assert copy.grad_fn is not None and gd.detach(leaf).grad_fn is None
    assert not gd.detach(leaf).requires_grad
    weight = np.array([0.25])
    cases = [lambda m, t: m.threshold(t, 0.1, -2.0), lambda m, t: m.hardshrink(t, 0.7),
             lambda m, t: t.hardshrink(), lambda m, t: m.celu(t, 0.5), lambda m, t: m.selu(t),
             lambda m, t: m.rrelu(t), lambda m, t: m.prelu(t, m.tensor(weight)),
             lambda m, t: t.prelu(m.tensor(weight))]
    for k, fn in enumerate(cases):
        ours, theirs = fn(gd, leaf), fn(torch, tleaf)
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12,
                                   err_msg=str(k))


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["atan2", "hypot", "logaddexp", "logaddexp2", "nextafter",
                                  "fmax", "fmin", "ldexp", "gcd", "lcm", "heaviside"])
def test_tensor_only_arguments_are_refused_by_name(name):
    t = gd.tensor([1.0, 2.0])
    second = "values" if name == "heaviside" else "other"
    with pytest.raises(TypeError, match=f"argument '{second}'"):
        getattr(gd, name)(t, 2.0)
    with pytest.raises(TypeError, match="argument 'input'"):
        getattr(gd, name)(2.0, t)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "atan2", "copysign", "eq",
                                  "bitwise_and", "tan", "frexp", "logit", "fmod"])
def test_out_receives_the_result(name):
    """torch's out= (gpudl.out_arg; tests/test_out_argument.py checks it against torch)."""
    t = gd.tensor([1.0, 2.0]) if name == "frexp" else gd.tensor([1, 2])
    args = (t,) if name in ("tan", "frexp", "logit") else (t, t)
    expected = getattr(gd, name)(*args)
    if name == "frexp":
        out = (gd.empty(0), gd.empty(0, dtype=gd.int32))
        got = gd.frexp(*args, out=out)
        assert got[0] is out[0] and got[1] is out[1]
        assert np.array_equal(out[0].numpy(), expected[0].numpy())
        return
    out = gd.empty(0, dtype=expected.dtype)
    assert getattr(gd, name)(*args, out=out) is out
    assert np.array_equal(out.numpy(), expected.numpy(), equal_nan=True)


def test_wrong_operand_types_name_the_argument():
    t = gd.tensor([1.0])
    for call, argument in ((lambda: gd.add(t, "a"), "other"), (lambda: gd.mul([1], t), "input"),
                           (lambda: gd.eq(t, None), "other"), (lambda: gd.tan([1.0]), "input"),
                           (lambda: gd.copysign(t, "x"), "other"),
                           (lambda: gd.logit(t, eps="0.1"), "eps"),
                           (lambda: gd.add(t, t, alpha="2"), "alpha"),
                           (lambda: gd.add(2, 3), "other"), (lambda: gd.xlogy(2, 3.0), "other"),
                           (lambda: gd.float_power(2, 3), "exponent")):
        with pytest.raises(TypeError, match=argument):
            call()


def test_refused_calls_change_nothing():
    t = gd.tensor([1, 2, 3])
    before = t._version_counter[0]
    for call in (lambda: t.sin_(), lambda: t.div_(2), lambda: t.float_power_(2),
                 lambda: t.bitwise_left_shift_(1.5)):
        with pytest.raises((RuntimeError, TypeError)):
            call()
    np.testing.assert_array_equal(t.numpy(), [1, 2, 3])
    assert t._version_counter[0] == before


# ----------------------------------------------------------------- in place
IN_PLACE = {   # method -> extra arguments (numpy arrays become tensors)
    "abs_": (), "absolute_": (), "negative_": (), "sin_": (), "cos_": (), "tan_": (),
    "sinh_": (), "cosh_": (), "asin_": (), "acos_": (), "atan_": (), "asinh_": (),
    "acosh_": (), "atanh_": (), "arcsin_": (), "arccos_": (), "arctan_": (), "arcsinh_": (),
    "arccosh_": (), "arctanh_": (), "exp2_": (), "log_": (), "log2_": (), "log10_": (),
    "log1p_": (), "expm1_": (), "sqrt_": (), "rsqrt_": (), "floor_": (), "ceil_": (),
    "round_": (), "trunc_": (), "fix_": (), "frac_": (), "sign_": (), "sgn_": (),
    "reciprocal_": (), "square_": (), "erf_": (), "sinc_": (), "deg2rad_": (), "rad2deg_": (),
    "logit_": (), "pow_": (2,), "clamp_min_": (-0.5,), "clamp_max_": (0.5,), "clip_": (-1, 1),
    "remainder_": (0.7,), "floor_divide_": (0.7,), "fmod_": (0.7,), "hypot_": ("b",),
    "copysign_": ("b",), "xlogy_": ("b",), "heaviside_": ("b",), "nextafter_": ("b",),
    "atan2_": ("b",), "arctan2_": ("b",), "ldexp_": ("b",), "subtract_": ("b",),
    "multiply_": ("b",), "divide_": ("b",), "true_divide_": ("b",), "float_power_": (2.5,),
    "eq_": (0.5,), "ne_": ("b",), "lt_": ("b",), "le_": (0,), "gt_": ("b",), "ge_": (0,),
    "greater_": ("b",), "greater_equal_": ("b",), "less_": (0,), "less_equal_": ("b",),
    "not_equal_": ("b",), "logical_not_": (), "logical_and_": ("b",), "logical_or_": ("b",),
    "logical_xor_": ("b",),
}
INT_IN_PLACE = {"gcd_": ("b",), "lcm_": ("b",), "bitwise_not_": (), "bitwise_and_": ("b",),
                "bitwise_or_": ("b",), "bitwise_xor_": ("b",), "bitwise_left_shift_": (2,),
                "bitwise_right_shift_": ("b",), "abs_": (), "sign_": (), "floor_": (),
                "remainder_": (3,), "fmod_": (-3,), "floor_divide_": (2,), "eq_": ("b",),
                "sin_": ()}


def _in_place_case(lib, name, x, b, args, requires_grad=False, **kwargs):
    tensor = (lambda a: torch.tensor(a, requires_grad=requires_grad)) if lib is torch else \
        (lambda a: gd.tensor(a, requires_grad=requires_grad))
    leaf = tensor(x)
    other = [tensor(b) if a == "b" else a for a in args]
    target = leaf * 1 if requires_grad else leaf
    try:
        out = getattr(target, name)(*other, **kwargs)
    except Exception as exc:           # noqa: BLE001
        return exc, leaf, other
    return out, leaf, other


@pytest.mark.parametrize("name", list(IN_PLACE))
def test_in_place_variants_match_torch(name, rng):
    x = rng.uniform(0.1, 0.9, (3, 4)) * rng.choice([-1, 1], (3, 4))
    if name in ("acosh_", "arccosh_"):
        x = np.abs(x) + 1.0
    if name in ("logit_", "sqrt_", "rsqrt_", "log_", "log2_", "log10_"):
        x = np.abs(x)
    b = rng.uniform(0.1, 0.9, (4,))
    dtype = np.float64
    # values and version counter, off the graph
    out, leaf, _ = _in_place_case(gd, name, x.astype(dtype), b, IN_PLACE[name])
    theirs, tleaf, _ = _in_place_case(torch, name, x.astype(dtype), b, IN_PLACE[name])
    _agree(out, theirs, name)
    assert out is leaf and leaf._version_counter[0] == 1
    # on a leaf that requires grad: refused, unchanged
    _, leaf, _ = _in_place_case(gd, name, x, b, IN_PLACE[name])
    grad_leaf = gd.tensor(x, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(grad_leaf, name)(*[gd.tensor(b) if a == "b" else a for a in IN_PLACE[name]])
    np.testing.assert_array_equal(grad_leaf.detach().numpy(), x)
    # in the graph: the gradients of both operands match those of torch's out-of-place op
    # (torch has no derivative for some in-place forms, asinh_ and atanh_ among them)
    out, leaf, others = _in_place_case(gd, name, x, b, IN_PLACE[name], requires_grad=True)
    theirs, tleaf, tothers = _in_place_case(torch, name[:-1], x, b, IN_PLACE[name],
                                            requires_grad=True)
    w = rng.standard_normal(x.shape)
    if not theirs.requires_grad:                       # comparisons
        return
    try:
        (theirs * torch.tensor(w)).sum().backward()
    except NotImplementedError as error:   # a derivative torch declares missing (torch 2.11:
        pytest.skip(f"torch {torch.__version__}: {error}")   # nextafter's), not one it lacks
    except RuntimeError:                               # floor_divide, heaviside
        with pytest.raises(RuntimeError):
            (out * gd.tensor(w)).sum().backward()
        return
    (out * gd.tensor(w)).sum().backward()
    for k, (ours, tours) in enumerate(zip([leaf, *others], [tleaf, *tothers])):
        if not isinstance(tours, torch.Tensor):
            continue
        expected = np.zeros(x.shape if k == 0 else b.shape) if tours.grad is None \
            else _np(tours.grad)
        got = np.zeros(expected.shape) if ours.grad is None else ours.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, equal_nan=True,
                                   err_msg=f"{name} operand {k}")


@pytest.mark.parametrize("name", list(INT_IN_PLACE))
def test_integer_in_place_variants_match_torch(name, rng):
    x, b = rng.integers(-9, 10, (3, 4)), rng.integers(1, 5, (4,))
    ours, _, _ = _in_place_case(gd, name, x, b, INT_IN_PLACE[name])
    theirs, _, _ = _in_place_case(torch, name, x, b, INT_IN_PLACE[name])
    _agree(ours, theirs, name)


def test_in_place_on_a_view_updates_the_base_and_its_gradient(rng):
    x = rng.uniform(-0.9, 0.9, (4, 3))
    leaf, tleaf = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    for lib, start in ((gd, leaf), (torch, tleaf)):
        base = start * 2
        base[1:3].atan_()
        base[:, 0].fmod_(lib.tensor(0.3, dtype=lib.float64))
        base.div_(lib.tensor(x[0] + 2), rounding_mode="floor")
        base.sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy(), rtol=1e-12)


def test_div_in_place_with_a_rounding_mode_matches_torch(rng):
    x = rng.integers(-20, 20, (5,))
    for mode in ("trunc", "floor", None):
        ours, theirs = gd.tensor(x.astype(np.float32)), torch.tensor(x, dtype=torch.float32)
        ours.div_(3, rounding_mode=mode)
        theirs.div_(3, rounding_mode=mode)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy())
    ours, theirs = gd.tensor(x), torch.tensor(x)
    ours.divide_(-3, rounding_mode="trunc")
    theirs.divide_(-3, rounding_mode="trunc")
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_comparison_in_place_keeps_the_tensor_in_the_graph():
    leaf = gd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = leaf * 1
    y.eq_(2.0)
    np.testing.assert_array_equal(y.numpy(), [0.0, 1.0, 0.0])
    assert y.requires_grad and y.grad_fn is not None and y._version_counter[0] == 1


@pytest.mark.parametrize("name", ["tan", "sinh", "asin", "atanh", "exp2", "log10", "sinc",
                                  "trunc", "frac", "logit", "atan2", "hypot", "copysign",
                                  "fmod", "logaddexp", "xlogy", "fmax", "nextafter"])
def test_bfloat16_keeps_its_dtype_and_torch_values(name, rng):
    x = rng.uniform(-2.5, 2.5, 6).astype(np.float32)
    if name in ("asin", "atanh", "logit"):
        x = np.abs(x) / 3
    args = (x,) if name in UNARY else (x, x[::-1].copy())
    ours = getattr(gd, name)(*(gd.tensor(a).to(gd.bfloat16) for a in args))
    theirs = getattr(torch, name)(*(torch.tensor(a).bfloat16() for a in args))
    assert str(ours.dtype) == "bfloat16"
    np.testing.assert_allclose(ours.float().numpy(), theirs.float().numpy(), rtol=1e-2,
                               atol=1e-2, equal_nan=True)
