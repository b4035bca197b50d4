"""Core ops against PyTorch in float64 (values and gradients) and by finite differences."""

import numpy as np
import pytest

import gpudl as gd
from gpudl.testing import gradcheck
from oracle import check_against_torch, torch


def r(rng, *shape):
    return rng.standard_normal(shape)


def pos(rng, *shape):
    return rng.uniform(0.5, 2.0, shape)


BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
    ("pow", lambda a, b: a ** b),
]
BROADCAST = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3)),
             ((5, 1, 1), (1, 4, 3))]


@pytest.mark.parametrize("name,fn", BINARY)
@pytest.mark.parametrize("sa,sb", BROADCAST)
def test_binary_broadcast(rng, name, fn, sa, sb):
    a, b = pos(rng, *sa), pos(rng, *sb)
    check_against_torch(fn, fn, a, b)
    gradcheck(fn, [gd.tensor(a, requires_grad=True), gd.tensor(b, requires_grad=True)])


@pytest.mark.parametrize("name,fn", BINARY)
def test_binary_with_python_scalars(rng, name, fn):
    a = pos(rng, 3, 2)
    check_against_torch(lambda x: fn(x, 1.7), lambda x: fn(x, 1.7), a)
    check_against_torch(lambda x: fn(2.5, x), lambda x: fn(2.5, x), a)


def test_numpy_scalar_on_the_left_stays_a_tensor(rng):
    x = gd.tensor(r(rng, 3).astype(np.float32))
    y = np.float32(2.0) * x
    assert isinstance(y, gd.Tensor) and y.dtype == gd.float32


UNARY = [
    ("exp", lambda t: t.exp(), lambda t: t.exp(), r),
    ("log", lambda t: t.log(), lambda t: t.log(), pos),
    ("sqrt", lambda t: t.sqrt(), lambda t: t.sqrt(), pos),
    ("tanh", lambda t: t.tanh(), lambda t: t.tanh(), r),
    ("sigmoid", lambda t: t.sigmoid(), lambda t: t.sigmoid(), r),
    ("relu", lambda t: t.relu(), lambda t: t.relu(), r),
    ("abs", lambda t: abs(t), lambda t: abs(t), r),
    ("neg", lambda t: -t, lambda t: -t, r),
    ("clip", lambda t: t.clip(-0.5, 0.7), lambda t: t.clamp(-0.5, 0.7), r),
    ("clip_min", lambda t: t.clip(min=0.1), lambda t: t.clamp(min=0.1), r),
    ("square", lambda t: t.square(), lambda t: t.square(), r),
    ("softmax", lambda t: t.softmax(1), lambda t: t.softmax(1), r),
    ("log_softmax", lambda t: t.log_softmax(-1), lambda t: t.log_softmax(-1), r),
]


@pytest.mark.parametrize("name,gfn,tfn,make", UNARY)
def test_unary(rng, name, gfn, tfn, make):
    a = make(rng, 4, 5)
    check_against_torch(gfn, tfn, a)
    gradcheck(gfn, [gd.tensor(a, requires_grad=True)])


def test_unary_on_non_contiguous_input(rng):
    a = r(rng, 5, 4).T          # a transposed (non-contiguous) view
    assert not a.flags.c_contiguous
    check_against_torch(lambda t: (t.exp() * t).sum(0), lambda t: (t.exp() * t).sum(0), a)


def test_sigmoid_and_softmax_stay_finite_for_huge_logits():
    x = gd.tensor([[1000.0, -1000.0, 0.0], [-3e4, 3e4, 1.0]], requires_grad=True)
    s = x.softmax(-1)
    ls = x.log_softmax(-1)
    sg = x.sigmoid()
    (s.sum() + ls[:, 0].sum() + sg.sum()).backward()
    for t in (s, ls, sg, x.grad):
        assert np.isfinite(t.numpy()).all()
    np.testing.assert_allclose(s.numpy()[0], [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(ls.numpy()[1, 0], -6e4, rtol=1e-6)


REDUCTIONS = [
    ("sum_all", lambda t: t.sum(), lambda t: t.sum()),
    ("sum_dim", lambda t: t.sum(1), lambda t: t.sum(1)),
    ("sum_dims_keep", lambda t: t.sum((0, 2), keepdim=True), lambda t: t.sum((0, 2), keepdim=True)),
    ("mean_all", lambda t: t.mean(), lambda t: t.mean()),
    ("mean_neg_dim", lambda t: t.mean(-1), lambda t: t.mean(-1)),
    ("mean_axis_kw", lambda t: t.mean(axis=0, keepdims=True), lambda t: t.mean(0, keepdim=True)),
    ("var", lambda t: t.var(1), lambda t: t.var(1)),
    ("var_biased", lambda t: t.var(0, unbiased=False), lambda t: t.var(0, unbiased=False)),
    ("var_correction", lambda t: t.var((1, 2), correction=2), lambda t: t.var((1, 2), correction=2)),
    ("std", lambda t: t.std(), lambda t: t.std()),
    ("std_keep", lambda t: t.std(2, keepdim=True), lambda t: t.std(2, keepdim=True)),
    ("max_all", lambda t: t.max(), lambda t: t.max()),
    ("min_all", lambda t: t.min(), lambda t: t.min()),
    ("max_dim", lambda t: t.max(1), lambda t: t.max(1)),
    ("min_dim_keep", lambda t: t.min(-1, keepdim=True), lambda t: t.min(-1, keepdim=True)),
]


@pytest.mark.parametrize("name,gfn,tfn", REDUCTIONS)
def test_reductions(rng, name, gfn, tfn):
    a = r(rng, 3, 4, 5)
    y = check_against_torch(gfn, tfn, a)
    if isinstance(y, tuple):
        assert y.indices.dtype == gd.int64
        gradcheck(lambda t: gfn(t).values, [gd.tensor(a, requires_grad=True)])
    else:
        gradcheck(gfn, [gd.tensor(a, requires_grad=True)])


def test_max_ties_share_gradient_like_torch_amax():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    check_against_torch(lambda t: t.max(), lambda t: t.amax(), a)


def test_max_with_nan_returns_nan():
    x = gd.tensor([1.0, float("nan"), 3.0])
    assert np.isnan(x.max().item())
    assert x.max(0).indices.item() == 1


def test_argmax_argmin(rng):
    a = r(rng, 4, 6)
    t = torch.tensor(a)
    x = gd.tensor(a)
    assert x.argmax().item() == t.argmax().item()
    np.testing.assert_array_equal(x.argmax(1).numpy(), t.argmax(1).numpy())
    np.testing.assert_array_equal(x.argmin(0, keepdim=True).numpy(), t.argmin(0, keepdim=True))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 2)),
                                   ((3, 4), (4,)), ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2)),
                                   ((0, 3), (3, 2))])
def test_matmul(rng, sa, sb):
    a, b = r(rng, *sa), r(rng, *sb)
    check_against_torch(lambda x, y: x @ y, lambda x, y: x @ y, a, b)
    if 0 not in sa:
        gradcheck(lambda x, y: x @ y, [gd.tensor(a, requires_grad=True),
                                       gd.tensor(b, requires_grad=True)])


def test_matmul_transposed_operand(rng):
    a, b = r(rng, 5, 3), r(rng, 5, 4)
    check_against_torch(lambda x, y: x.T @ y, lambda x, y: x.T @ y, a, b)


SHAPES = [
    ("reshape", lambda t: t.reshape(4, -1), lambda t: t.reshape(4, -1)),
    ("view_tuple", lambda t: t.view((2, 2, 6)), lambda t: t.view((2, 2, 6))),
    ("flatten", lambda t: t.flatten(1), lambda t: t.flatten(1)),
    ("squeeze", lambda t: t.reshape(1, 24, 1).squeeze(), lambda t: t.reshape(1, 24, 1).squeeze()),
    ("squeeze_dim", lambda t: t.reshape(1, 24, 1).squeeze(-1),
     lambda t: t.reshape(1, 24, 1).squeeze(-1)),
    ("unsqueeze", lambda t: t.unsqueeze(1), lambda t: t.unsqueeze(1)),
    ("transpose", lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2)),
    ("permute", lambda t: t.permute(2, 0, 1), lambda t: t.permute(2, 0, 1)),
    ("T", lambda t: t.reshape(6, 4).T, lambda t: t.reshape(6, 4).T),
    ("expand", lambda t: t[:, :1].expand(5, 2, 3, 4), lambda t: t[:, :1].expand(5, 2, 3, 4)),
    ("expand_keep", lambda t: t[:1].expand(4, -1, -1), lambda t: t[:1].expand(4, -1, -1)),
    ("repeat", lambda t: t.repeat(2, 1, 3), lambda t: t.repeat(2, 1, 3)),
    ("repeat_new_dim", lambda t: t[0].repeat(2, 2, 1), lambda t: t[0].repeat(2, 2, 1)),
    ("split", lambda t: t.split(2, dim=2), lambda t: t.split(2, dim=2)),
    ("split_sections", lambda t: t.split([1, 2], dim=1), lambda t: t.split([1, 2], dim=1)),
    ("chunk", lambda t: t.chunk(2, 0), lambda t: t.chunk(2, 0)),
    ("unbind", lambda t: t.unbind(-2), lambda t: t.unbind(-2)),
]


@pytest.mark.parametrize("name,gfn,tfn", SHAPES)
def test_shape_ops(rng, name, gfn, tfn):
    a = r(rng, 2, 3, 4)
    check_against_torch(gfn, tfn, a)
    gradcheck(gfn, [gd.tensor(a, requires_grad=True)])


INDEX = [
    ("int", lambda t: t[1]),
    ("negative", lambda t: t[-1, -2]),
    ("slices", lambda t: t[1:3, ::2]),
    ("none_ellipsis", lambda t: t[None, ..., 1]),
    ("int_array", lambda t: t[np.array([0, 2, 2, 1])]),
    ("repeated_pairs", lambda t: t[np.array([0, 0, 2]), np.array([1, 1, 3])]),
    ("bool_mask", lambda t: t[t > 0]),
    ("mixed", lambda t: t[1:, np.array([3, 0, 3])]),
]


@pytest.mark.parametrize("name,fn", INDEX)
def test_indexing(rng, name, fn):
    a = r(rng, 3, 5)
    def gfn(t):
        return fn(t) if name != "bool_mask" else t[gd.tensor(a > 0)]
    def tfn(t):
        return fn(t) if name != "bool_mask" else t[torch.tensor(a > 0)]
    check_against_torch(gfn, tfn, a)
    gradcheck(gfn, [gd.tensor(a, requires_grad=True)])


def test_repeated_index_accumulates_gradient():
    x = gd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[gd.tensor([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])
    x.grad = None
    x[[1, 1]].sum().backward()                  # a Python list indexes like an array
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 2.0, 0.0])


def test_cat_stack_where(rng):
    a, b, c = r(rng, 2, 3), r(rng, 4, 3), r(rng, 2, 3)
    check_against_torch(lambda x, y: gd.cat([x, y]), lambda x, y: torch.cat([x, y]), a, b)
    check_against_torch(lambda x, z: gd.cat((x, z), dim=-1), lambda x, z: torch.cat((x, z), -1),
                        a, c)
    check_against_torch(lambda x, z: gd.stack([x, z], 1), lambda x, z: torch.stack([x, z], 1),
                        a, c)
    mask = a > 0
    check_against_torch(lambda x, z: gd.where(gd.tensor(mask), x, z),
                        lambda x, z: torch.where(torch.tensor(mask), x, z), a, c)
    check_against_torch(lambda x: gd.where(gd.tensor(mask), x, 0.0),
                        lambda x: torch.where(torch.tensor(mask), x, 0.0), a)
    check_against_torch(lambda x: x.masked_fill(gd.tensor(mask), -1.0),
                        lambda x: x.masked_fill(torch.tensor(mask), -1.0), a)
    for fn in (lambda x, y: gd.cat([x, y]), lambda x, y: gd.stack([x, x, y[:2]]),
               lambda x, y: gd.where(x > 0, x, y[:2] * 2)):
        gradcheck(fn, [gd.tensor(a, requires_grad=True), gd.tensor(b, requires_grad=True)])


def test_elementwise_maximum_and_max_of_two(rng):
    a, b = r(rng, 3, 4), r(rng, 4)
    check_against_torch(lambda x, y: x.maximum(y), lambda x, y: torch.maximum(x, y), a, b)
    check_against_torch(lambda x, y: gd.max(x, y), lambda x, y: torch.max(x, y), a, b)
    check_against_torch(lambda x, y: gd.min(x, y), lambda x, y: torch.min(x, y), a, b)


def test_composite_expression_gradcheck(rng):
    def f(x, w, b):
        h = (x @ w + b).tanh()
        return (h.softmax(-1) * h.sigmoid()).mean(0).log() / (1 + h.var())
    gradcheck(f, [gd.tensor(r(rng, 5, 3), requires_grad=True),
                  gd.tensor(r(rng, 3, 4), requires_grad=True),
                  gd.tensor(r(rng, 4), requires_grad=True)])


def test_float32_stays_float32(rng):
    x = gd.tensor(r(rng, 3, 4).astype(np.float32), requires_grad=True)
    w = gd.tensor(r(rng, 4, 2).astype(np.float32), requires_grad=True)
    y = ((x @ w).relu() * 0.5 + 1).exp().mean()
    assert y.dtype == gd.float32
    y.backward()
    assert x.grad.dtype == gd.float32 and w.grad.dtype == gd.float32


def test_int_tensor_arithmetic_promotes_like_torch():
    i = gd.tensor([1, 2, 3])
    assert i.dtype == gd.int64
    assert (i + 1).dtype == gd.int64
    assert (i * 1.5).dtype == gd.float32
    assert (i / 2).dtype == gd.float32
    assert i.float().mean().item() == 2.0


from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       op=st.sampled_from(BINARY), seed=st.integers(0, 2 ** 32 - 1))
def test_broadcasting_property(shapes, op, seed):
    """Any pair of broadcastable shapes: values and reduced-back gradients match torch."""
    rng = np.random.default_rng(seed)
    a, b = (rng.uniform(0.5, 2.0, s) for s in shapes.input_shapes)
    check_against_torch(op[1], op[1], a, b)


PROMOTION_DTYPES = ["float16", "float32", "float64", "int32", "int64", "uint8", "bool"]


def _array(rng, dtype, shape):
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        return rng.integers(1, 9, shape).astype(dtype)
    return rng.uniform(0.5, 2.0, shape).astype(dtype)


@pytest.mark.parametrize("a_dtype", PROMOTION_DTYPES)
@pytest.mark.parametrize("b_dtype", PROMOTION_DTYPES)
@pytest.mark.parametrize("b_shape", [(3,), ()], ids=["tensor", "0-d"])
def test_tensor_tensor_promotion_matches_torch(rng, a_dtype, b_dtype, b_shape):
    """torch's promotion, not NumPy's: float32 with int64 stays float32, float16 with int32
    float16, and a 0-d operand of the same category does not widen (float32 + a 0-d float64
    is float32, int32 + a 0-d int64 int32)."""
    a, b = _array(rng, a_dtype, (2, 3)), _array(rng, b_dtype, b_shape)
    for op in (lambda x, y: x + y, lambda x, y: x * y, lambda x, y: x / y,
               lambda x, y: gd.where(gd.tensor(a > 1), x, y) if isinstance(x, gd.Tensor)
               else torch.where(torch.tensor(a > 1), x, y)):
        try:
            expected = op(torch.tensor(a), torch.tensor(b))
        except RuntimeError:            # bool - bool and the like
            continue
        got = op(gd.tensor(a), gd.tensor(b))
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_allclose(got.numpy().astype(np.float64),
                                   expected.numpy().astype(np.float64), rtol=1e-3)


def test_where_and_clamp_with_python_numbers_match_torch(rng):
    cond = gd.tensor(rng.random(4) > 0.5)
    tcond = torch.tensor(cond.numpy())
    ints = rng.integers(-5, 6, 4)
    for a, b in [(1.0, 0), (1, 0), (True, False)]:
        got, expected = gd.where(cond, a, b), torch.where(tcond, a, b)
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    got = gd.where(cond, gd.tensor(ints), 0.5)
    expected = torch.where(tcond, torch.tensor(ints), 0.5)
    assert got.dtype == gd.float32 and expected.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    # an int tensor clamped to float bounds gives floats, not bounds truncated to ints
    got, expected = gd.tensor(ints).clamp(-2.5, 2.5), torch.tensor(ints).clamp(-2.5, 2.5)
    assert got.dtype == gd.float32 and expected.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected.numpy())




INTS_FIRST = [   # name -> the index, from an int index tensor i and a bool mask m (6 long)
    ("int_slice_array", lambda i, m: (1, slice(None), i)),
    ("array_slice_int", lambda i, m: (i[:2], slice(None), 1)),
    ("none_int_slice_array", lambda i, m: (None, -1, slice(None), i)),
    ("int_ellipsis_array", lambda i, m: (0, Ellipsis, i)),
    ("int_slice_2d_array", lambda i, m: (2, slice(None), i.reshape(2, 2))),
    ("int_slice_mask", lambda i, m: (1, slice(None), m)),
    ("0d_tensor_slice_array", lambda i, m: (i[1], slice(None), i)),
]


@pytest.mark.parametrize("name,index", INTS_FIRST)
def test_ints_select_before_index_arrays_as_torch(rng, name, index):
    """torch applies ints before index arrays: x[1, :, idx] of a (4, 5, 6) tensor is (5, len(idx))
    (NumPy gives (len(idx), 5)); reads, gradients and writes follow torch."""
    a, idx, mask = r(rng, 4, 5, 6), np.array([3, 0, 5, 0]), rng.random(6) > 0.5
    gd_index = index(gd.tensor(idx), gd.tensor(mask))
    torch_index = index(torch.tensor(idx), torch.tensor(mask))
    check_against_torch(lambda t: t[gd_index], lambda t: t[torch_index], a)
    # writes through repeated indices are undefined (torch's index_put_, CuPy): distinct ones
    idx = np.array([3, 0, 5, 1])
    gd_index = index(gd.tensor(idx), gd.tensor(mask))
    torch_index = index(torch.tensor(idx), torch.tensor(mask))
    x, tx = gd.tensor(a), torch.tensor(a)
    values = rng.standard_normal(tuple(tx[torch_index].shape))
    x[gd_index] = gd.tensor(values)
    tx[torch_index] = torch.tensor(values)
    np.testing.assert_array_equal(x.numpy(), tx.numpy())


def test_pow_gradients_at_zero_and_negative_bases_match_torch():
    """a ** b at a = 0, b = 0 has d/da 0 (not 0 * inf = nan); d/db is nan for a < 0 (log of a
    negative base), 0 where a == 0 and b >= 0, as torch computes them."""
    special = np.array([0.0, -1.0, 2.0, -2.5, 0.5, 3.0])
    a, b = (m.ravel() for m in np.meshgrid(special, special))
    ga, gb = gd.tensor(a, requires_grad=True), gd.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with np.errstate(all="ignore"):
        (ga ** gb).sum().backward()
        (ga ** 0).sum().backward()
    (ta ** tb).sum().backward()
    (ta ** 0).sum().backward()
    np.testing.assert_allclose(ga.grad.numpy(), ta.grad.numpy(), equal_nan=True)
    np.testing.assert_allclose(gb.grad.numpy(), tb.grad.numpy(), equal_nan=True)


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32", "float64"])
def test_floor_division_and_remainder_follow_torch_signs(rng, dtype):
    """// rounds toward minus infinity and % takes the divisor's sign (Python's and torch's
    rules), for tensors and numbers on either side; gd had neither operator."""
    a = rng.integers(-9, 10, (3, 4)).astype(dtype)
    b = (rng.integers(1, 5, (4,)) * rng.choice([-1, 1], 4)).astype(dtype)
    ga, gb, ta, tb = gd.tensor(a), gd.tensor(b), torch.tensor(a), torch.tensor(b)
    pairs = [(ga // gb, ta // tb), (ga % gb, ta % tb), (ga // -3, ta // -3), (ga % 2.5, ta % 2.5),
             (7 // gb, 7 // tb), (-7 % gb, -7 % tb), (gd.floor_divide(ga, gb), ta // tb),
             (gd.remainder(ga, 3), torch.remainder(ta, 3))]
    for got, expected in pairs:
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_remainder_gradients_and_integer_division_by_zero_match_torch(rng):
    a, b = r(rng, 3, 4) * 5, r(rng, 4) + 3
    check_against_torch(lambda x, y: x % y, lambda x, y: x % y, a, b)
    for op in (lambda x: x // 0, lambda x: x % 0):
        with pytest.raises(RuntimeError):
            op(torch.tensor([1, 2]))
        with pytest.raises(RuntimeError, match="division by zero"):   # on a GPU: at the read
            op(gd.tensor([1, 2])).numpy()
        with pytest.raises(RuntimeError, match="division by zero"):
            (gd.tensor([1, 2]) % gd.tensor([1, 0])).numpy()
    y = gd.tensor(a, requires_grad=True) // 2.0
    with pytest.raises(RuntimeError, match="floor_divide"):      # as torch: no derivative
        y.sum().backward()


def test_reduction_dims_as_torch(rng):
    """dim=() reduces every dim for sum/mean/var/std/amax (torch's rule; it reduced none);
    argmax/argmin/max/min/cumsum take one int dim (argmax(dim=(0, 1)) silently reduced dim 0
    only); any/all take dim and keepdim; argmax along a non-empty dim of an empty tensor is
    empty (it raised)."""
    a = rng.standard_normal((3, 4, 5))
    x, tx = gd.tensor(a), torch.tensor(a)
    for op in ("sum", "mean", "var", "std", "amax"):
        for keepdim in (False, True):
            got = getattr(x, op)(dim=(), keepdim=keepdim)
            expected = getattr(tx, op)(dim=(), keepdim=keepdim)
            assert got.shape == tuple(expected.shape)
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-10)
    for op in ("argmax", "argmin", "max", "min", "cumsum"):
        for dims in ((0, 1), [1]):
            with pytest.raises(TypeError):
                getattr(tx, op)(dims)
            with pytest.raises(TypeError, match="dim must be an int"):
                getattr(x, op)(dims)
    mask, tmask = x > 0.5, tx > 0.5
    for op in ("any", "all"):
        for dim in (1, -1, (0, 2)):
            for keepdim in (False, True):
                got = getattr(mask, op)(dim, keepdim=keepdim)
                expected = getattr(tmask, op)(dim, keepdim=keepdim)
                np.testing.assert_array_equal(got.numpy(), expected.numpy())
    empty, tempty = gd.zeros(0, 3), torch.zeros(0, 3)
    for op in ("argmax", "argmin"):
        assert getattr(empty, op)(1).shape == tuple(getattr(tempty, op)(1).shape) == (0,)
        with pytest.raises(IndexError):
            getattr(tempty, op)(0)
        with pytest.raises(ValueError):
            getattr(empty, op)(0)


def test_comparisons_and_mask_logic_promote_as_torch(rng):
    """float32 == a 0-d float64 tensor compares in float32 (NumPy compared in float64, so a
    value that rounds to t[2] in float32 matched nothing); ^ and reflected & | ^ work on masks."""
    a = rng.standard_normal(6).astype(np.float32)
    x, tx = gd.tensor(a), torch.tensor(a)
    near = float(a[2]) * (1 + 1e-12)            # rounds to a[2] in float32
    for other, tother in ((gd.tensor(near, dtype=gd.float64),
                           torch.tensor(near, dtype=torch.float64)),
                          (gd.tensor(a.astype(np.float64) + 1e-9), torch.tensor(a.astype(
                              np.float64) + 1e-9))):
        for op in (lambda p, q: p == q, lambda p, q: p < q, lambda p, q: p >= q):
            np.testing.assert_array_equal(op(x, other).numpy(), op(tx, tother).numpy())
    m, tm = gd.tensor(a > 0), torch.tensor(a > 0)
    n, tn = gd.tensor(a < 0.5), torch.tensor(a < 0.5)
    for op in (lambda p, q: p ^ q, lambda p, q: True & p, lambda p, q: False | p,
               lambda p, q: True ^ p, lambda p, q: p & q | q):
        np.testing.assert_array_equal(op(m, n).numpy(), op(tm, tn).numpy())


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8"])
def test_sign_of_an_integer_tensor_and_masked_fill_keep_torchs_values_and_dtype(rng, dtype):
    """sign() of an integer tensor returned the tensor itself ([-3, 0, 2], not [-1, 0, 1]);
    masked_fill of an integer tensor with 2.7 gave floats (torch casts the value: 2)."""
    a = rng.integers(-9, 10, 12).astype(dtype)
    x, tx = gd.tensor(a), torch.tensor(a)
    for got, expected in ((x.sign(), tx.sign()), (x.masked_fill(x > 0, 2.7),
                                                  tx.masked_fill(tx > 0, 2.7))):
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_min_and_descending_order_of_unsigned_and_bool_tensors_match_torch(rng):
    """minimum/min(a, b) were -max(-a, -b) and descending sorts sorted the negation: on uint8
    the negation wraps and 0 stays smallest (min(0, 5) was 5, 0 sorted first in descending
    order); bool min raised."""
    a, b = rng.integers(0, 256, (4, 6)).astype(np.uint8), rng.integers(0, 256, 6).astype(np.uint8)
    a[:, 0], b[1] = 0, 0                        # the one value whose uint8 negation is not larger
    x, y, tx, ty = gd.tensor(a), gd.tensor(b), torch.tensor(a), torch.tensor(b)
    pairs = [(x.minimum(y), tx.minimum(ty)), (gd.min(x, y), torch.min(tx, ty)),
             (x.sort(1, descending=True).values, tx.sort(1, descending=True).values),
             (x.topk(3, 1).values, tx.topk(3, 1).values),
             (gd.tensor(a > 99).minimum(gd.tensor(b > 50)),
              torch.tensor(a > 99).minimum(torch.tensor(b > 50)))]
    for got, expected in pairs:
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    f, g = r(rng, 3, 4), r(rng, 4)
    check_against_torch(lambda p, q: p.minimum(q), lambda p, q: p.minimum(q), f, g)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "bool"])
def test_sum_of_small_integer_and_bool_tensors_is_int64_and_sign_of_bool_is_bool(rng, dtype):
    """sum() of a uint8 tensor was uint64 (NumPy's rule; torch: int64); sign() of a bool
    tensor was float32 (torch: bool)."""
    a = rng.integers(0, 100, (3, 4)).astype(dtype)
    x, tx = gd.tensor(a), torch.tensor(a)
    for got, expected in ((x.sum(), tx.sum()), (x.sum(1), tx.sum(1)), (x.sign(), tx.sign())):
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_std_gradient_of_a_constant_slice_is_zero_as_torch(rng):
    """std() was var().sqrt(): at a constant slice (std 0) the gradient was 0 * inf = nan for
    every element; torch gives 0 there, and the usual gradient elsewhere."""
    a = r(rng, 3, 4)
    a[1] = 2.5                                   # a constant row
    for kwargs in ({"dim": 1}, {"dim": 1, "correction": 0}, {"dim": (0, 1), "keepdim": True},
                   {}):
        check_against_torch(lambda t: t.std(**kwargs), lambda t: t.std(**kwargs), a)
    check_against_torch(lambda t: t.std(), lambda t: t.std(), np.full(5, -1.5))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16"])
def test_small_integer_arithmetic_with_out_of_range_numbers_wraps_as_torch(rng, dtype):
    """uint8_tensor - 3 raised NumPy's OverflowError (-3 is out of range for uint8); torch's
    integer arithmetic wraps. A negative int exponent is still refused, as torch does."""
    a = rng.integers(0, 100, 6).astype(dtype)
    x, tx = gd.tensor(a), torch.tensor(a)
    for op in (lambda t: t - 3, lambda t: t + 300, lambda t: t * -7, lambda t: 5 - t,
               lambda t: t // -3, lambda t: t % -3, lambda t: -200 + t):
        got, expected = op(x), op(tx)
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    with pytest.raises(RuntimeError):
        tx ** -3
    with pytest.raises(RuntimeError, match="negative integer powers"):
        x ** -3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axes", [((3, 70), (1,)), ((2, 5, 33), (1, 2)),
                                         ((4, 9), None), ((6,), (0,)), ((2, 0, 3), (2,))])
def test_array_mean_is_numpys_mean_bit_for_bit(shape, axes, dtype, rng):
    """array_mean (LayerNorm, var, mean on NumPy) gives numpy.mean's very numbers, over values
    of very different magnitudes, kept dims or not."""
    from gpudl.ops._util import array_mean
    x = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(dtype)
    for keepdims in (True, False):
        want = x.mean(axis=axes, keepdims=keepdims)
        got = array_mean(x, axes, keepdims)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)
