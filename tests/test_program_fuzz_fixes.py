"""Regressions found by a differential fuzzer of short random programs (views, in-place edits,
hooks, retain_grad, detach_, backward) run in gpudl and torch: each case runs the same steps on
both libraries from the same fresh random leaves and compares values, flags and gradients."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpudl as gd  # noqa: E402


def _leaves(lib, arrays, requires_grad=True):
    return [lib.tensor(a.copy(), requires_grad=requires_grad) for a in arrays]


def _grads(leaves):
    return [None if t.grad is None else t.grad.detach().numpy() for t in leaves]


def _assert_same_grads(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g is None or w is None:      # no gradient, or one of zeros
            assert all(x is None or not np.any(x) for x in (g, w)), f"leaf {i}: {g} {w}"
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"leaf {i}")


# ----------------------------------------------------------------- identity views
# x.transpose(0, 0), x.t() of a 1-d, x.squeeze() with no size-1 dim, x.permute(0, 1) and
# x.expand(*x.shape) returned x itself: is_leaf, retain_grad and in-place edits then acted on x.
IDENTITY_VIEWS = {
    "transpose(1, 1)": lambda t: t.transpose(1, 1),
    "transpose(0, -1) of 1-d": lambda t: t[0].transpose(0, -1),
    "t() of 1-d": lambda t: t[0].t(),
    "squeeze()": lambda t: t.squeeze(),
    "squeeze(0)": lambda t: t.squeeze(0),
    "permute(0, 1)": lambda t: t.permute(0, 1),
    "expand(same)": lambda t: t.expand(*t.shape),
    "movedim(0, 0)": lambda t: t.movedim(0, 0),
    "T of 0-d": lambda t: t[0, 0].T,
}


@pytest.mark.parametrize("view", IDENTITY_VIEWS, ids=list(IDENTITY_VIEWS))
def test_identity_view_of_leaf_is_a_new_non_leaf_view(rng, view):
    array = rng.standard_normal((2, 3))
    flags = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        v = IDENTITY_VIEWS[view](x)
        flags.append((v is x, v.is_leaf, v.requires_grad, v.grad_fn is None))
        with pytest.raises(RuntimeError, match="leaf"):    # a view of a leaf: edits refused
            v.mul_(2)
    assert flags[1] == flags[0] == (False, False, True, False)


@pytest.mark.parametrize("view", IDENTITY_VIEWS, ids=list(IDENTITY_VIEWS))
def test_identity_view_of_result_edited_in_place(rng, view):
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((2, 3))]
    weights = rng.standard_normal((2, 3))
    results = []
    for lib in (torch, gd):
        x, w = _leaves(lib, arrays)
        y = x * 1.5
        v = IDENTITY_VIEWS[view](y)
        v.retain_grad()
        v.mul_(w[0, 0])                        # through the view: y's history changes too
        (y * lib.tensor(weights)).sum().backward()
        results.append((y.detach().numpy(), _grads([x, w]), v.grad))
    (t_y, t_grads, t_vgrad), (g_y, g_grads, g_vgrad) = results
    np.testing.assert_allclose(g_y, t_y, rtol=1e-12)
    _assert_same_grads(g_grads, t_grads)
    _assert_same_grads([None if g_vgrad is None else g_vgrad.numpy()],
                       [None if t_vgrad is None else t_vgrad.numpy()])


# ----------------------------------------------------------------- retain_grad
@pytest.mark.parametrize("make", ["leaf", "detached", "no_grad result"])
def test_retain_grad_refuses_a_tensor_that_does_not_require_grad(rng, make):
    array = rng.standard_normal(3)
    for lib in (torch, gd):
        x = lib.tensor(array.copy(), requires_grad=make != "leaf")
        if make == "detached":
            x = (x * 2).detach()
        elif make == "no_grad result":
            with lib.no_grad():
                x = x * 2
        with pytest.raises(RuntimeError, match="requires_grad=False"):
            x.retain_grad()


# ----------------------------------------------------------------- leaves detached since
@pytest.mark.parametrize("how", ["detach_", "requires_grad_(False)"])
def test_backward_skips_a_leaf_detached_after_the_graph_was_recorded(rng, how):
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal(3)]
    grads = []
    for lib in (torch, gd):
        x, b = _leaves(lib, arrays)
        loss = (x * b).tanh().sum()
        x.detach_() if how == "detach_" else x.requires_grad_(False)
        loss.backward()
        assert x.grad is None and not x.requires_grad
        grads.append(_grads([b]))
    _assert_same_grads(grads[1], grads[0])


# ----------------------------------------------------------------- outputs nothing reads back
# sin's derivative reads its input, x ** 2's too (the output only for a tensor exponent's
# gradient): editing the output in place must not stop backward, as in torch.
EDITED_OUTPUTS = {
    "sin": lambda lib, x, e: x.sin(),
    "erf": lambda lib, x, e: x.erf(),
    "log1p": lambda lib, x, e: (x.abs() + 0.5).log1p(),
    "pow 2": lambda lib, x, e: x ** 2,
    "pow 3.0": lambda lib, x, e: x.pow(3.0),
    "sinh": lambda lib, x, e: lib.sinh(x),
}


@pytest.mark.parametrize("op", EDITED_OUTPUTS, ids=list(EDITED_OUTPUTS))
@pytest.mark.parametrize("edit", ["mul_ under no_grad", "setitem", "tanh_"])
def test_output_not_read_by_backward_may_be_edited(rng, op, edit):
    arrays = [rng.standard_normal(4), rng.standard_normal(4)]
    results = []
    for lib in (torch, gd):
        x, e = _leaves(lib, arrays)
        y = EDITED_OUTPUTS[op](lib, x, e)
        if edit == "mul_ under no_grad":
            with lib.no_grad():
                y.mul_(3)
        elif edit == "setitem":
            y[1:3] = e[:2] * 2
        else:
            y.tanh_()
        (y * y).sum().backward()
        results.append((y.detach().numpy(), _grads([x, e])))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    _assert_same_grads(results[1][1], results[0][1])


@pytest.mark.parametrize("op", ["expm1", "reciprocal", "rsqrt", "tan", "exp2"])
def test_output_read_by_backward_edited_still_raises(rng, op):
    array = rng.random(3) + 0.5
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        y = getattr(lib, op)(x)
        with lib.no_grad():
            y.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_tensor_exponent_keeps_the_output_for_its_gradient(rng):
    arrays = [rng.random(3) + 0.5, rng.standard_normal(3)]
    for lib in (torch, gd):
        a, b = _leaves(lib, arrays)
        y = a ** b
        with lib.no_grad():
            y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


# ----------------------------------------------------------------- values with leading 1-dims
SETITEMS = {
    "2-d mask, value (1, n)": ((1, 4), lambda lib: lib.tensor(np.array([[True, False, True,
                                                                           True]])), (1, 3)),
    "1-d mask, value (1, 1)": ((5,), lambda lib: lib.tensor(np.array([True, False, True, False,
                                                                        True])), (1, 1)),
    "int list, value (1, 1, 3)": ((2, 3), lambda lib: [1, 0], (1, 1, 3)),
    "slice, value (1, 1, 3)": ((4, 3), lambda lib: slice(1, 3), (1, 1, 3)),
}


@pytest.mark.parametrize("case", SETITEMS, ids=list(SETITEMS))
def test_setitem_value_with_leading_size_one_dims(rng, case):
    shape, index, value_shape = SETITEMS[case]
    arrays = [rng.standard_normal(shape), rng.standard_normal(value_shape)]
    weights = rng.standard_normal(shape)
    results = []
    for lib in (torch, gd):
        x, v = _leaves(lib, arrays)
        y = x * 1.0
        y[index(lib)] = v * 2
        (y * lib.tensor(weights)).sum().backward()
        results.append((y.detach().numpy(), _grads([x, v])))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    _assert_same_grads(results[1][1], results[0][1])


# ----------------------------------------------------------------- masked gradients
# where, maximum/minimum, clamp, hardtanh and max() multiplied the upstream gradient by their
# mask: an inf or nan gradient (log of a 0 downstream) became nan in the input they did not pick
MASKED = {
    "where": lambda lib, a, b: lib.where(a > 0, a, b),
    "maximum": lambda lib, a, b: lib.maximum(a, b),
    "minimum": lambda lib, a, b: lib.minimum(a, b),
    "maximum tie": lambda lib, a, b: lib.maximum(a, a * 1) + b * 0,
    "clamp(min=tensor)": lambda lib, a, b: a.clamp(min=b),
    "clamp(max=tensor)": lambda lib, a, b: a.clamp(max=b),
    "clamp(numbers)": lambda lib, a, b: a.clamp(-0.5, 0.5),
    "hardtanh": lambda lib, a, b: lib.nn.functional.hardtanh(a),
    "masked_fill": lambda lib, a, b: a.masked_fill(a > 0.5, 0.0),
    "max()": lambda lib, a, b: a.max().expand(4),
    "min()": lambda lib, a, b: a.min().expand(4),
}


@pytest.mark.parametrize("op", MASKED, ids=list(MASKED))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_gradient_keeps_an_infinite_or_nan_upstream_out_of_what_was_not_picked(
        rng, op, dtype):
    arrays = [rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)]
    arrays[1][2] = arrays[0][2]                      # a tie for maximum, minimum and clamp
    upstream = np.array([np.inf, np.nan, -np.inf, 1.5], dtype)
    grads = []
    for lib in (torch, gd):
        a, b = _leaves(lib, arrays)
        MASKED[op](lib, a, b).backward(lib.tensor(upstream.copy()))
        grads.append(_grads([a, b]))
    for g, w in zip(grads[1], grads[0]):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_array_equal(g, w)     # nan, inf and 0 where torch has them


def test_log_of_a_masked_value_leaves_the_unpicked_input_finite(rng):
    arrays = [np.abs(rng.standard_normal(5)) + 0.5, rng.standard_normal(5)]
    for lib in (torch, gd):
        a, b = _leaves(lib, arrays)
        picked = lib.where(b > 0, a, lib.zeros_like(a))
        picked.log().sum().backward()       # d log / d picked is inf where picked is 0
        expected = np.where(arrays[1] > 0, 1 / arrays[0], 0)
        np.testing.assert_allclose(a.grad.numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------- fresh results, not views
# repeat of size-1 dims (and tile) returned a view of its input: a later in-place edit of the
# input changed the "copy"
REPEATS = {"(1,) repeat(3)": ((1,), lambda t: t.repeat(3)),
           "(3,) repeat(1)": ((3,), lambda t: t.repeat(1)),
           "(1, 3) repeat(2, 1)": ((1, 3), lambda t: t.repeat(2, 1)),
           "(2, 1) repeat(1, 1, 1)": ((2, 1), lambda t: t.repeat(1, 1, 1)),
           "(1, 1) tile((2,))": ((1, 1), lambda t: t.tile((2,))),
           "(3,) tile((1,))": ((3,), lambda t: t.tile((1,)))}


@pytest.mark.parametrize("case", REPEATS, ids=list(REPEATS))
def test_repeat_and_tile_copy_even_when_nothing_is_repeated(rng, case):
    shape, op = REPEATS[case]
    array = rng.standard_normal(shape)
    results = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        y = x * 1.0
        r = op(y)
        y.mul_(3)                   # an edit of the input after the copy
        (r * r).sum().backward()
        results.append((r.detach().numpy(), _grads([x])))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    _assert_same_grads(results[1][1], results[0][1])


@pytest.mark.parametrize("op", ["logsumexp", "median", "kthvalue", "mode"])
def test_reductions_along_a_dim_return_new_tensors_that_detach_in_place(rng, op):
    array = rng.standard_normal((3, 4))
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        r = {"logsumexp": lambda: x.logsumexp(1), "median": lambda: x.median(1)[0],
             "kthvalue": lambda: x.kthvalue(2, 1)[0], "mode": lambda: x.mode(1)[0]}[op]()
        r.detach_()                 # refused for a view: these are not views in torch
        assert not r.requires_grad and r.is_leaf


INDEXES = {"x[1:, [0, 0], None]": lambda t: t[1:, [0, 0], None],
           "x[:, [2, 0]]": lambda t: t[:, [2, 0]],
           "x[None, :, [1]]": lambda t: t[None, :, [1]],
           "x[[0, 2], 1:]": lambda t: t[[0, 2], 1:]}


@pytest.mark.parametrize("index", INDEXES, ids=list(INDEXES))
def test_advanced_index_result_is_row_major_so_view_works(rng, index):
    array = rng.standard_normal((3, 3))
    results = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        y = INDEXES[index](x)
        assert y.is_contiguous()
        flat = y.view(-1)
        (flat * lib.tensor(np.arange(flat.shape[0], dtype=np.float64))).sum().backward()
        results.append((flat.detach().numpy(), _grads([x])))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    _assert_same_grads(results[1][1], results[0][1])


# ----------------------------------------------------------------- retain_grad under grad()
def test_autograd_grad_fills_retained_grads_on_its_path(rng):
    arrays = [rng.standard_normal(3), rng.standard_normal(3)]
    results = []
    for lib in (torch, gd):
        x, w = _leaves(lib, arrays)
        hidden = (x * w).tanh()
        hidden.retain_grad()
        out = hidden * 3
        out.retain_grad()
        (gx,) = lib.autograd.grad(out, [x], grad_outputs=lib.tensor(arrays[1].copy()),
                                  retain_graph=True)
        lib.autograd.grad(out.sum(), [x])      # retained grads accumulate, as .grad does
        assert x.grad is None and w.grad is None
        results.append([gx.numpy(), hidden.grad.numpy(), out.grad.numpy()])
    _assert_same_grads(results[1], results[0])


def test_tensor_where_method(rng):
    arrays = [rng.standard_normal(5), rng.standard_normal(5)]
    results = []
    for lib in (torch, gd):
        x, y = _leaves(lib, arrays)
        out = x.where(x > 0, y)
        (out * out).sum().backward()
        results.append([out.detach().numpy()] + _grads([x, y]))
    _assert_same_grads(results[1], results[0])


# ----------------------------------------------------------------- matmul keeps what it needs
@pytest.mark.parametrize("shapes", [((2, 3), (3, 2)), ((3,), (3, 2)), ((2, 3), (3,)),
                                    ((3,), (3,)), ((4, 2, 3), (3, 2))])
@pytest.mark.parametrize("grad_side", ["left", "right"])
def test_matmul_operand_needing_grad_may_be_edited_after(rng, shapes, grad_side):
    """Only the other operand is needed for an operand's gradient (torch keeps no more):
    editing the operand that needs the gradient, then backward, is allowed."""
    arrays = [rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])]
    weights = None
    grads = []
    for lib in (torch, gd):
        left = lib.tensor(arrays[0].copy(), requires_grad=grad_side == "left")
        right = lib.tensor(arrays[1].copy(), requires_grad=grad_side == "right")
        out = left @ right
        if weights is None:
            weights = rng.standard_normal(tuple(out.shape))
        with lib.no_grad():
            (left if grad_side == "left" else right).mul_(2)
        out.backward(lib.tensor(weights.copy()))
        grads.append(_grads([left, right]))
    _assert_same_grads(grads[1], grads[0])


def test_matmul_double_backward_with_one_operand_needing_grad(rng):
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((3, 4))]
    results = []
    for lib in (torch, gd):
        x = lib.tensor(arrays[0].copy(), requires_grad=True)
        w = lib.tensor(arrays[1].copy())
        (gx,) = lib.autograd.grad(((x @ w) ** 2).sum(), [x], create_graph=True)
        (gx * gx).sum().backward()
        results.append([gx.detach().numpy()] + _grads([x]))
    _assert_same_grads(results[1], results[0])


# ----------------------------------------------------------------- 0-d .grad stays writable
@pytest.mark.parametrize("op", ["mul", "maximum"])
def test_accumulated_0d_grad_can_be_zeroed_in_place(rng, op):
    value = rng.standard_normal(())
    grads = []
    for lib in (torch, gd):
        x = lib.tensor(value.copy(), requires_grad=True)
        for _ in range(2):                  # the second backward adds into .grad
            (x * 3 if op == "mul" else lib.maximum(x, x * 0.5)).backward()
        grads.append(x.grad.numpy().copy())
        x.grad.zero_()
        x.grad.add_(1.5)
        grads.append(x.grad.numpy().copy())
    np.testing.assert_allclose(grads[2], grads[0], rtol=1e-12)
    np.testing.assert_array_equal(grads[3], grads[1])


# ----------------------------------------------------------------- retain_grad on an edited view
def test_retain_grad_of_a_view_follows_an_edit_under_no_grad(rng):
    array = rng.standard_normal((2, 3))
    grads = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        v = x[0]
        v.retain_grad()
        with lib.no_grad():
            v.add_(v)
        (v * v).sum().backward()
        grads.append([None if v.grad is None else v.grad.numpy()] + _grads([x]))
    assert grads[1][0] is not None
    _assert_same_grads(grads[1], grads[0])


# ----------------------------------------------------------------- refused walks, view hooks
def test_refused_backward_leaves_a_seed_leaf_grad_untouched(rng):
    arrays = [rng.standard_normal(3), rng.standard_normal(3)]
    for lib in (torch, gd):
        x, y = _leaves(lib, arrays)
        product = x @ y
        product.backward()                      # frees what matmul kept
        y.grad = None
        with pytest.raises(RuntimeError, match="second time"):
            lib.autograd.backward([product, y], [lib.tensor(1.0, dtype=lib.float64),
                                                 lib.tensor(np.ones(3))])
        assert y.grad is None


@pytest.mark.parametrize("edit", ["mul_", "setitem", "add_"])
def test_hook_on_a_view_does_not_see_the_gradient_after_the_view_is_edited(rng, edit):
    array = rng.standard_normal(4)
    calls, grads = [], []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        v = (x * 1.5)[1:3]
        v.register_hook(lambda g, lib=lib: calls.append(lib.__name__) or g * -1)
        if edit == "mul_":
            v.mul_(3)
        elif edit == "setitem":
            v[0] = 2.0
        else:
            v.add_(x[:2])
        (v * v).sum().backward()
        grads.append(_grads([x]))
    assert calls == []                          # torch's CopySlices goes past the old view
    _assert_same_grads(grads[1], grads[0])


def test_retained_grad_still_filled_after_detach_in_place(rng):
    array = rng.standard_normal(4)
    results = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        doubled = x * 2
        piece = doubled[1:3]
        doubled.retain_grad()
        doubled.detach_()               # the view taken before still leads back to x
        (piece * piece).sum().backward()
        results.append([doubled.grad.numpy()] + _grads([x]))
    _assert_same_grads(results[1], results[0])


# ----------------------------------------------------------------- layouts and index placement
@pytest.mark.parametrize("join", ["cat 0", "cat 1", "stack 0", "stack -1"])
def test_cat_and_stack_of_transposed_inputs_are_row_major(rng, join):
    arrays = [rng.standard_normal((3, 2)), rng.standard_normal((3, 2))]
    results = []
    for lib in (torch, gd):
        a, b = _leaves(lib, arrays)
        name, dim = join.split()
        joined = getattr(lib, name)([a.t(), b.t()], int(dim))
        assert joined.is_contiguous()
        flat = joined.view(-1)                  # raised: NumPy kept the inputs' column order
        (flat * lib.tensor(np.arange(flat.shape[0], dtype=np.float64))).sum().backward()
        results.append([flat.detach().numpy()] + _grads([a, b]))
    _assert_same_grads(results[1], results[0])


ELLIPSIS_INDEXES = {"x[:1, [1, 0], ..., [2]]": lambda t: t[:1, [1, 0], ..., [2]],
                    "x[:0, [1, 1, 0], ..., [-1]]": lambda t: t[:0, [1, 1, 0], ..., [-1]],
                    "x[:, [1, 0], ..., [0]]": lambda t: t[:, [1, 0], ..., [0]],
                    "x[..., None, [0, 2]]": lambda t: t[..., None, [0, 2]]}


@pytest.mark.parametrize("index", ELLIPSIS_INDEXES, ids=list(ELLIPSIS_INDEXES))
def test_index_arrays_around_an_empty_ellipsis_keep_their_place(rng, index):
    array = rng.standard_normal((2, 2, 3))
    results = []
    for lib in (torch, gd):
        (x,) = _leaves(lib, [array])
        y = ELLIPSIS_INDEXES[index](x)
        weights = np.arange(y.numel(), dtype=np.float64).reshape(tuple(y.shape))
        (y * lib.tensor(weights)).sum().backward()
        results.append((tuple(y.shape), [y.detach().numpy()] + _grads([x])))
    assert results[1][0] == results[0][0]
    _assert_same_grads(results[1][1], results[0][1])


def test_setitem_through_index_arrays_around_an_empty_ellipsis(rng):
    arrays = [rng.standard_normal((2, 2, 3)), rng.standard_normal(2)]
    results = []
    for lib in (torch, gd):
        x, v = _leaves(lib, arrays)
        y = x * 1.0
        y[:1, [1, 0], ..., [2]] = v
        (y * y).sum().backward()
        results.append([y.detach().numpy()] + _grads([x, v]))
    _assert_same_grads(results[1], results[0])
