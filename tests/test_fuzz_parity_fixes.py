"""Regression tests for what the property tests of test_fuzz_torch_parity.py found: each case
computed a wrong dtype or value (or refused what torch computes) before its fix, checked here
against torch."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read
from fuzz_parity import assert_same, assert_same_behaviour, pair

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------- numbers beside tensors
@pytest.mark.parametrize("op", ["eq", "lt", "and", "xor", "or"])
def test_small_integer_tensor_with_an_out_of_range_int_wraps_it_as_torch(op):
    values = np.array([255, 1, 0, 254], np.uint8)
    fns = {"eq": lambda a: a == -1, "lt": lambda a: a < -1, "and": lambda a: a & -1,
           "xor": lambda a: a ^ -2, "or": lambda a: a | 256}
    g, t, _, _ = pair(values)
    assert_same(fns[op](g), fns[op](t))


@pytest.mark.parametrize("count", [-3, 2, 70])
def test_bool_tensor_shifted_by_an_int_is_int64_as_torch(count):
    g, t, _, _ = pair(np.array([True, False, True]))
    assert_same(g << count, t << count)
    assert_same(g >> count, t >> count)


def test_int64_tensor_compared_with_a_float_compares_in_float32_as_torch():
    g, t, _, _ = pair(np.array([16777217, 3], np.int64))
    assert_same(g == 16777216.0, t == 16777216.0)
    assert_same(g > 16777216.0, t > 16777216.0)


# ----------------------------------------------------------------- add/sub with alpha
@pytest.mark.parametrize("a,b,alpha", [
    (np.array([True, False]), True, 2),                       # bool + bool: stays bool
    (np.array(3, np.uint8), np.array(True), 2),               # 0-d bool beside 0-d uint8
    (np.array(1.5, np.float16), np.array(3, np.int64), 2.5),  # 0-d int64 beside 0-d float16
    (np.array([1, 2], np.int8), np.array(True), 3),
])
def test_alpha_scales_in_the_result_dtype_as_torch(a, b, alpha):
    ga, ta, _, _ = pair(a)
    gb, tb = (b, b) if isinstance(b, bool) else pair(b)[:2]
    assert_same(gd.add(ga, gb, alpha=alpha), torch.add(ta, tb, alpha=alpha))


# ----------------------------------------------------------------- integer division
@pytest.mark.parametrize("op", ["floor_divide", "remainder"])
def test_integer_division_by_zero_of_an_empty_tensor_is_empty_as_torch(op):
    g, t, _, _ = pair(np.zeros((0, 3), np.int64))
    gz, tz, _, _ = pair(np.array([0, 1, 2], np.int64))
    assert_same(getattr(gd, op)(g, 0), getattr(torch, op)(t, 0))
    assert_same(getattr(gd, op)(g, gz), getattr(torch, op)(t, tz))
    with pytest.raises(RuntimeError, match="division by zero"):
        getattr(gd, op)(gd.ones(2, dtype=gd.int64), 0)


# ----------------------------------------------------------------- reductions
ZERO_D_CALLS = {"mean": lambda x: x.mean(), "prod": lambda x: x.prod(),
                "std": lambda x: x.std(correction=0), "softmax": lambda x: x.softmax(0)}


@pytest.mark.parametrize("op", sorted(ZERO_D_CALLS))
def test_reduction_of_a_0d_bfloat16_tensor_is_0d(op):
    g, t, _, _ = pair(np.array(1.5, np.float32).astype(gd.bfloat16))
    assert_same(ZERO_D_CALLS[op](g), ZERO_D_CALLS[op](t))


@pytest.mark.parametrize("op", ["max", "min", "sort", "argmax", "cumsum", "cumprod", "median",
                                "softmax", "prod", "topk"])
def test_dim_1_of_a_0d_tensor_is_refused_as_torch(op):
    def call(x, dim):
        return x.topk(1, dim) if op == "topk" else getattr(x, op)(dim)
    g, t, _, _ = pair(np.array(2.0, np.float32))
    with pytest.raises(IndexError):
        call(t, 1)
    with pytest.raises(IndexError, match="dim 1 is out of range"):
        call(g, 1)
    assert_same(call(g, -1), call(t, -1))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "bool"])
def test_sum_and_cumsum_keep_an_integral_dtype_given_as_torch(dtype):
    g, t, _, _ = pair(np.array([[100, 100, -3], [7, 1, 0]], np.int64))
    for op in (lambda x, L: x.sum(dtype=getattr(L, dtype)),
               lambda x, L: x.sum(1, dtype=getattr(L, dtype)),
               lambda x, L: L.sum(x, (0, 1), keepdim=True, dtype=getattr(L, dtype))):
        assert_same(op(g, gd), op(t, torch))
    if dtype != "bool":                                  # torch has no bool cumsum
        assert_same(g.cumsum(1, dtype=getattr(gd, dtype)),
                    t.cumsum(1, dtype=getattr(torch, dtype)))


@pytest.mark.parametrize("op", ["any", "all"])
def test_any_and_all_of_uint8_are_uint8_as_torch(op):
    g, t, _, _ = pair(np.array([[0, 3], [5, 2]], np.uint8))
    assert_same(getattr(g, op)(), getattr(t, op)())
    assert_same(getattr(gd, op)(g, 1, keepdim=True), getattr(torch, op)(t, 1, keepdim=True))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_takes_dtype_as_torch(op):
    g, t, _, _ = pair(np.array([[0, 3], [1, 0]], np.int64))
    assert_same(getattr(gd, op)(g, 1, dtype=gd.float64),
                getattr(torch, op)(t, 1, dtype=torch.float64))
    assert_same(getattr(g, op)(0, gd.float16), getattr(t, op)(0, torch.float16))


# ----------------------------------------------------------------- in place on expanded tensors
OVERLAPPING_EDITS = {   # the edits torch refuses (its fill_, masked_fill_, index_put_ write)
    "add_": lambda x, L: x.add_(1), "mul_": lambda x, L: x.mul_(2), "exp_": lambda x, L: x.exp_(),
    "copy_": lambda x, L: x.copy_(L.zeros(2, 3)), "clamp_": lambda x, L: x.clamp_(0, 1),
    "div_": lambda x, L: x.div_(2), "sigmoid_": lambda x, L: x.sigmoid_(),
}


@pytest.mark.parametrize("op", sorted(OVERLAPPING_EDITS))
def test_in_place_edit_of_an_expanded_tensor_is_refused_as_torch(op):
    # without a graph too: on CuPy (no read-only views) the edit would race silently
    g, t, gv, tv = pair(np.array([[1.0, 2.0, 3.0]], np.float32), ("expand", (2, 3)))
    with pytest.raises(RuntimeError, match="single memory location"):
        OVERLAPPING_EDITS[op](tv, torch)
    with pytest.raises(RuntimeError, match=f"{op}: .*single memory location"):
        OVERLAPPING_EDITS[op](gv, gd)
    assert_same(g, t)                              # nothing written


def test_in_place_edit_of_an_expand_that_repeats_nothing_works():
    g, t, gv, tv = pair(np.array([[1.0], [2.0]], np.float32), ("expand", (2, 1)))
    assert_same(gv.add_(1), tv.add_(1))
    assert_same(g, t)


def test_in_place_edit_of_an_empty_tensor_works_as_torch():
    # NumPy gives a 0-size array zero strides: no element shares memory with another
    g, t, _, _ = pair(np.zeros((2, 0, 3), np.float32))
    assert_same(g.add_(1), t.add_(1))
    g[...] = 2.0
    t[...] = 2.0
    assert_same(g, t)


# ----------------------------------------------------------------- indexing
def test_empty_list_index_selects_nothing_as_torch():
    g, t, _, _ = pair(np.arange(6.0).reshape(2, 3))
    for index in ([], (slice(None), []), ([], 0)):
        assert_same(g[index], t[index])
    g[[]] = 5.0
    t[[]] = 5.0
    g[0, []] = 1.0
    t[0, []] = 1.0
    assert_same(g, t)


# ----------------------------------------------------------------- small integer dtypes wrap
UINT8_EDITS = {
    "sub_ self": lambda u, L: u.sub_(u.clone()),
    "add_ -3": lambda u, L: u.add_(-3),
    "add_ 300": lambda u, L: u.add_(300),
    "add_ int8": lambda u, L: u.add_(L.tensor([-1, 2, 3], dtype=L.int8)),
    "mul_ int8": lambda u, L: u.mul_(L.tensor([-1, 2, 3], dtype=L.int8)),
    "clamp_ -2": lambda u, L: u.clamp_(-2, 100),
    "clamp_ int32": lambda u, L: u.clamp_(min=L.tensor([-5, 7, 300], dtype=L.int32)),
    "fill_ -3": lambda u, L: u.fill_(-3),
    "setitem -1": lambda u, L: u.__setitem__(0, -1) or u,
    "clamp -2": lambda u, L: L.clamp(u, min=-2),
}


@pytest.mark.parametrize("edit", sorted(UINT8_EDITS))
def test_uint8_edits_wrap_numbers_and_operands_as_torch(edit):
    # NumPy refused these (OverflowError for uint8 - 1, UFuncTypeError for uint8 += int8)
    g, t, _, _ = pair(np.array([1, 200, 7], np.uint8))
    assert_same(UINT8_EDITS[edit](g, gd), UINT8_EDITS[edit](t, torch))


STORED_NUMBERS = {      # torch refuses a stored int out of range; uint8 takes down to -255
    "where": lambda x, L, v: L.where(L.tensor([True, False, True]), x, v),
    "masked_fill": lambda x, L, v: x.masked_fill(L.tensor([True, False, True]), v),
    "fill_": lambda x, L, v: x.fill_(v),
    "full": lambda x, L, v: L.full((2,), v, dtype=x.dtype),
    "clamp": lambda x, L, v: L.clamp(x, min=v),
    "copy_": lambda x, L, v: x.copy_(L.tensor(v)),
    "index_fill_": lambda x, L, v: x.index_fill_(0, L.tensor([1]), v),
}


@pytest.mark.parametrize("dtype,value", [("uint8", -1), ("uint8", -255), ("uint8", -256),
                                         ("uint8", 300), ("int8", 200), ("int8", -128)])
@pytest.mark.parametrize("op", sorted(STORED_NUMBERS))
def test_stored_int_out_of_range_wraps_or_is_refused_as_torch(op, dtype, value):
    g, t, _, _ = pair(np.array([1, 200 if dtype == "uint8" else 100, 7], dtype))
    try:
        want = STORED_NUMBERS[op](t, torch, value)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="without overflow"):
            STORED_NUMBERS[op](g, gd, value)
        return
    assert_same(STORED_NUMBERS[op](g, gd, value), want)


@pytest.mark.parametrize("op", ["sub_", "sub", "add_ alpha", "float sub_"])
def test_subtracting_a_uint8_tensor_from_a_wider_one_promotes_first_as_torch(op):
    # alpha * other was computed in other's dtype: int64 5 - uint8 3 gave 5 + uint8(-3) = 258
    calls = {"sub_": lambda a, b, L: a.sub_(b), "sub": lambda a, b, L: L.sub(a, b, alpha=2),
             "add_ alpha": lambda a, b, L: a.add_(b, alpha=-2),
             "float sub_": lambda a, b, L: a.float().sub_(b)}
    ga, ta, _, _ = pair(np.array([5, -7], np.int64))
    gb, tb, _, _ = pair(np.array([3, 250], np.uint8))
    assert_same(calls[op](ga, gb, gd), calls[op](ta, tb, torch))


# ----------------------------------------------------------------- std of a constant slice
def test_std_of_constant_rows_is_0_with_torchs_zero_gradient():
    # the float32 mean of three equal values missed them by an ulp for about 15% of values:
    # the std was ~1e-7, not 0, and its gradient O(1), not torch's 0
    values = np.random.default_rng(5).standard_normal(200).astype(np.float32) * 3
    g, t, _, _ = pair(np.repeat(values[:, None], 3, axis=1), requires_grad=True)
    upstream = np.random.default_rng(6).standard_normal(200).astype(np.float32)
    outs = []
    for x, L in ((g, gd), (t, torch)):
        std = x.std(1)
        std.backward(L.tensor(upstream))
        outs.append((std, x.grad))
    assert_same(outs[0], outs[1])
    assert float(np.abs(g.grad.numpy()).max()) == 0.0


# ----------------------------------------------------------------- cat of skipped empty tensors
def test_cat_keeps_a_skipped_1d_empty_tensor_in_the_graph_as_torch():
    # the skipped tensor was dropped before the op: the result of cat([empty leaf, int tensor])
    # needed no grad, and the empty leaf got no gradient
    outs = []
    for L in (gd, torch):
        empty = L.zeros(0, requires_grad=True)
        block = L.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        first = L.cat([empty, L.tensor([1, 2])])
        first.sum().backward()
        second = L.cat([empty, block, empty], 1)
        (second * second).sum().backward()
        outs.append((first.detach(), second.detach(), empty.grad, block.grad))
    assert_same(outs[0], outs[1])


# ----------------------------------------------------------------- found by the property tests
def test_bool_add_with_an_int_alpha_stays_bool_as_torch():
    # the int alpha was taken for an integer result and refused in a bool tensor
    for other, alpha in (([True, True], 2), ([False, True], 0)):
        g, t, _, _ = pair(np.array([True, False]))
        go, to, _, _ = pair(np.array(other))
        assert_same(g.add_(go, alpha=alpha), t.add_(to, alpha=alpha))


@pytest.mark.parametrize("base", [True, False])
def test_a_bool_number_to_an_integer_tensor_power_as_torch(base):
    # NumPy refused True ** int8 tensor with negative entries (an integer power, as 1 ** -3)
    g, t, _, _ = pair(np.array([-3, -1, 0, 2], np.int8))
    assert_same(base ** g, base ** t)


@pytest.mark.parametrize("exponent", [True, False])
def test_bool_tensor_to_a_bool_power_is_bool_as_torch(exponent):
    g, t, _, _ = pair(np.array([True, False]))       # NumPy's bool ** bool is int8
    assert_same(g ** exponent, t ** exponent)
    assert_same(g.clone().pow_(exponent), t.clone().pow_(exponent))


@pytest.mark.parametrize("op", ["div_trunc", "fmod"])
def test_trunc_division_and_fmod_wrap_an_int_as_torch(op):
    calls = {"div_trunc": lambda x, L, v: L.div(x, v, rounding_mode="trunc"),
             "fmod": lambda x, L, v: L.fmod(x, v)}
    g, t, _, _ = pair(np.array([5, 200], np.uint8))
    assert_same(calls[op](g, gd, -2), calls[op](t, torch, -2))     # NumPy: OverflowError
    g, t, _, _ = pair(np.array([5, -7], np.int8))
    assert_same(calls[op](g, gd, 300), calls[op](t, torch, 300))


ADDC = {
    "addcmul f16 with bools": lambda L: L.addcmul(
        L.ones(2, dtype=L.float16), L.tensor([True, False]), L.tensor([True, True]), value=-1.5),
    "addcmul bf16 operands": lambda L: L.addcmul(
        L.ones(2, dtype=L.float16), L.tensor([1.5, 2.0], dtype=L.bfloat16),
        L.tensor([1.1, 2.3], dtype=L.bfloat16), value=1.3),
    "addcmul int, float value": lambda L: L.addcmul(L.ones(2, dtype=L.int64), L.tensor([1, 2]),
                                                    L.tensor([1, 2]), value=-1.7),
    "addcdiv ints": lambda L: L.addcdiv(L.ones(2), L.tensor([1, 2]), L.tensor([1, 2])),
}


@pytest.mark.parametrize("case", sorted(ADDC))
def test_addcmul_and_addcdiv_compute_in_the_common_dtype_as_torch(case):
    # value * tensor1 promoted a bool tensor1 to float32 (an f16 result became f32), bf16
    # products were rounded before the f32 sum, an int result took a float value to f32, and
    # integer addcdiv computed where torch refuses
    assert_same_behaviour(lambda L: ADDC[case](L), (), ())


@pytest.mark.parametrize("call", ["full_like", "masked_fill", "fill_ above", "fill_ below"])
def test_stored_float_out_of_an_integer_range_is_refused_as_torch(call):
    calls = {"full_like": lambda x, L: L.full_like(x, -1.5),
             "masked_fill": lambda x, L: x.masked_fill(L.tensor([True, False]), -0.5),
             "fill_ above": lambda x, L: x.fill_(255.5), "fill_ below": lambda x, L: x.fill_(-0.5)}
    g, t, _, _ = pair(np.array([1, 200], np.uint8))
    assert_same_behaviour(lambda L, x: calls[call](x, L), (g,), (t,))
    assert_same(g.fill_(3.7), t.fill_(3.7))                   # in range: truncated


def test_chunk_of_an_empty_dim_gives_chunks_empty_pieces_as_torch():
    g, t, _, _ = pair(np.zeros((2, 0), np.float32))
    assert_same(g.chunk(3, 1), t.chunk(3, 1))
    with pytest.raises(RuntimeError, match="chunks"):
        g.chunk(0)                                             # was ZeroDivisionError


def test_unflatten_infers_minus_one_from_the_dim_even_when_empty_as_torch():
    g, t, _, _ = pair(np.zeros((0, 3), np.float32))
    assert_same(g.unflatten(0, (1, -1)), t.unflatten(0, (1, -1)))
    assert_same_behaviour(lambda L, x: x.unflatten(0, (0, -1)), (g,), (t,))


# ----------------------------------------------------------------- negative indices
@pytest.mark.parametrize("name, fn", [
    ("gather", lambda T, x, i: x.gather(1, i.reshape(2, 1))),
    ("scatter", lambda T, x, i: x.scatter(1, i.reshape(2, 1), 1.0)),
    ("scatter_add", lambda T, x, i: x.scatter_add(1, i.reshape(2, 1), x[:, :1])),
    ("scatter_reduce", lambda T, x, i: x.scatter_reduce(1, i.reshape(2, 1), x[:, :1], "amax")),
    ("index_select", lambda T, x, i: x.index_select(1, i)),
    ("index_add", lambda T, x, i: x.index_add(1, i, x[:, :2])),
    ("index_copy", lambda T, x, i: x.index_copy(1, i, x[:, :2])),
    ("index_fill", lambda T, x, i: x.index_fill(1, i, 7.0)),
    ("take", lambda T, x, i: T.take(x, i)),
    ("put", lambda T, x, i: x.put(i, x[0, :2])),
    ("take_along_dim", lambda T, x, i: T.take_along_dim(x, i.reshape(2, 1), 1)),
    ("take_along_dim flat", lambda T, x, i: T.take_along_dim(x, i)),
])
@pytest.mark.parametrize("index", [[-1, 0], [-3, 1], [-4, 0]])
def test_negative_indices_counted_from_the_end_only_where_torch_counts_them(name, fn, index):
    # gather, scatter*, index_select/add/copy refuse a negative index; index_fill, take, put
    # and take_along_dim along a dim count it from the end (gpudl took [-size, size) in all)
    g, t, _, _ = pair(np.random.default_rng().standard_normal((2, 3)))
    ig, it = gd.tensor(index), torch.tensor(index)
    if name == "take_along_dim" and index[0] < -3:
        # torch's CPU kernel takes any index modulo the size (3 and -4 read element 0 and 2);
        # gpudl refuses one outside [-size, size)
        with pytest.raises(IndexError, match=r"take_along_dim: index -4 out of range"):
            call_then_read(fn, gd, g, ig)       # on cuda: at the next device read
        return
    assert_same_behaviour(fn, (g, ig), (t, it))


@pytest.mark.parametrize("args", [(0, 3, True), (True,), (False, True), (0, 4, 2), (0.0, 3)])
def test_arange_of_bools_and_ints_is_int64_as_torch(args):
    assert_same(gd.arange(*args), torch.arange(*args))


@pytest.mark.parametrize("name", ["nansum", "nanmean"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, True)])
def test_nansum_and_nanmean_take_a_dtype_as_torch(name, dtype, dim, keepdim):
    values = np.random.default_rng().standard_normal((3, 4)).astype(np.float16)
    values[0, 1] = np.nan
    g, t, _, _ = pair(values)
    kwargs = dict(dtype=getattr(gd, dtype)), dict(dtype=getattr(torch, dtype))
    args = () if dim is None else (dim, keepdim)
    assert_same(getattr(gd, name)(g, *args, **kwargs[0]),
                getattr(torch, name)(t, *args, **kwargs[1]))
    assert_same(getattr(g, name)(*args, **kwargs[0]), getattr(t, name)(*args, **kwargs[1]))
