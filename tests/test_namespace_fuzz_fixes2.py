"""Regressions found by session 26's second namespace fuzz (helper nsfuzz): Tensor methods (in
place ones too), gpudl.nn.functional, gpudl.linalg and gpudl.special against torch 2.13, with
random positional and keyword arguments; each compared with torch on fresh random inputs."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F

torch = pytest.importorskip("torch")


def _same(ours, theirs, rtol=1e-7, atol=1e-12):
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["gammainc", "gammaincc"])
def test_incomplete_gamma_at_a_zero_is_the_limit(name):
    """P(0, x) = 1 and Q(0, x) = 0 for x > 0 (the limit a -> 0+, torch and SciPy): it was NaN,
    so x.igamma(mask.double()) with a 0/1 tensor came back NaN where the mask is 0."""
    rng = np.random.default_rng()
    a = np.where(rng.random(30) < 0.4, 0.0, rng.random(30) * 3)
    x = np.concatenate([rng.random(27) * 4, [0.0, np.inf, 1e-300]])
    a[-3:] = 0.0
    ours = getattr(gd.special, name)(gd.tensor(a), gd.tensor(x))
    theirs = getattr(torch.special, name)(torch.tensor(a), torch.tensor(x))
    _same(ours, theirs, rtol=1e-10)
    mask = rng.random(5) < 0.5
    _same(gd.tensor(mask).igamma(gd.tensor(x[:5] + 0.1)),
          torch.tensor(mask).igamma(torch.tensor(x[:5] + 0.1)), rtol=1e-10)


@pytest.mark.parametrize("name", ["view_as", "expand_as", "reshape_as", "type_as"])
@pytest.mark.parametrize("other", [0, 1.5, None, (2, 3), [2, 3], "abc"])
def test_as_methods_refuse_a_non_tensor_with_a_type_error(name, other):
    """x.view_as(3) raised AttributeError: 'int' object has no attribute 'shape'."""
    x = gd.tensor(np.random.default_rng().standard_normal((2, 3)))
    with pytest.raises(TypeError, match=f"{name}: other must be a Tensor, got"):
        getattr(x, name)(other)
    with pytest.raises(TypeError):
        getattr(torch.zeros(2, 3), name)(other)


def test_as_methods_still_match_torch():
    rng = np.random.default_rng()
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 2)).astype(np.float32)
    for name in ("view_as", "reshape_as", "type_as"):
        _same(getattr(gd.tensor(a), name)(gd.tensor(b)),
              getattr(torch.tensor(a), name)(torch.tensor(b)))
    c = rng.standard_normal((1, 3))
    _same(gd.tensor(c).expand_as(gd.tensor(a)), torch.tensor(c).expand_as(torch.tensor(a)))


@pytest.mark.parametrize("name, args, kwargs", [
    ("unsqueeze_", (), {"dim": 0}), ("unsqueeze_", (), {"dim": -1}), ("squeeze_", (), {"dim": 1}),
    ("transpose_", (), {"dim0": 0, "dim1": 2}), ("swapaxes_", (0,), {"axis1": 1})])
def test_in_place_view_ops_take_keyword_dims(name, args, kwargs):
    """x.unsqueeze_(dim=0) raised TypeError: edit() got an unexpected keyword argument."""
    if name == "swapaxes_":
        name, args, kwargs = "transpose_", (0, 1), {}
    x = np.random.default_rng().standard_normal((2, 1, 3))
    ours, theirs = gd.tensor(x), torch.tensor(x)
    assert getattr(ours, name)(*args, **kwargs) is ours
    getattr(theirs, name)(*args, **kwargs)
    _same(ours, theirs)


def test_a_refused_in_place_view_op_changes_nothing():
    x = gd.tensor(np.random.default_rng().standard_normal((2, 3)))
    before, version = x.numpy().copy(), x._version
    with pytest.raises(IndexError):
        x.unsqueeze_(dim=5)
    assert x.shape == (2, 3) and x._version == version
    np.testing.assert_array_equal(x.numpy(), before)


def test_nan_to_num_takes_nan_none_as_zero():
    """x.nan_to_num(None) (torch: NaN -> 0) raised TypeError from where."""
    x = np.random.default_rng().standard_normal(6)
    x[[0, 2, 4]] = [np.nan, np.inf, -np.inf]
    for call in (lambda t: t.nan_to_num(None), lambda t: t.nan_to_num(None, 1.0),
                 lambda t: t.nan_to_num_(None), lambda t: t.float().nan_to_num(nan=None)):
        _same(call(gd.tensor(x)), call(torch.tensor(x)))


def test_tile_and_broadcast_to_take_an_int():
    x = np.random.default_rng().integers(-5, 5, 3)
    for reps in (0, 1, 2):
        _same(gd.tensor(x).tile(reps), torch.tensor(x).tile(reps))
        _same(gd.tile(gd.tensor(x), reps), torch.tile(torch.tensor(x), (reps,)))
    _same(gd.tensor(x[:1]).broadcast_to(4), torch.tensor(x[:1]).broadcast_to(4))


def test_instance_norm_with_only_running_mean_is_refused_before_updating_it():
    """instance_norm(x, running_mean) updated running_mean, then raised AttributeError on
    running_var None (torch refuses, changing nothing)."""
    x = gd.tensor(np.random.default_rng().standard_normal((2, 3, 4, 4)).astype(np.float32))
    running_mean = gd.zeros(3)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.instance_norm(x, running_mean)
    np.testing.assert_array_equal(running_mean.numpy(), np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        torch.nn.functional.instance_norm(torch.tensor(x.numpy()), torch.zeros(3))


@pytest.mark.parametrize("call, message", [
    (lambda: F.linear(gd.ones(2, 3), gd.ones(4, 3), 7), "linear: bias must be a Tensor"),
    (lambda: F.linear(gd.ones(2, 3), gd.ones(4, 3), [1, 2, 3, 4]), "linear: bias must be"),
    (lambda: F.embedding_bag(gd.tensor([0, 1]), gd.ones(3, 3), (0, 1)),
     "embedding_bag: offsets must be a Tensor"),
    (lambda: gd.chain_matmul(0.5), "chain_matmul: matrices must be a Tensor"),
    (lambda: gd.linalg.tensorinv(None), "linalg.tensorinv: A must be a Tensor")])
def test_non_tensor_arguments_get_a_type_error(call, message):
    """Each raised AttributeError ('int' object has no attribute 'shape', ...)."""
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 0), (0, 2, 2)])
def test_lu_of_an_empty_matrix_matches_torch(shape):
    """linalg.lu_factor_ex/lu of a matrix with an empty diagonal raised NumPy's
    'attempt to get argmax of an empty sequence'."""
    ours, theirs = gd.linalg.lu_factor_ex(gd.zeros(*shape)), torch.linalg.lu_factor_ex(
        torch.zeros(*shape))
    for a, b in zip(ours, theirs):
        _same(a, b)
    for a, b in zip(gd.linalg.lu(gd.zeros(*shape)), torch.linalg.lu(torch.zeros(*shape))):
        _same(a, b)


def test_lu_factor_ex_info_still_names_the_first_zero_pivot():
    a = np.random.default_rng().standard_normal((3, 4, 4))
    a[0, 2], a[0, :, 2] = 0, 0
    a[2, :, 0] = 0
    _same(gd.linalg.lu_factor_ex(gd.tensor(a)).info, torch.linalg.lu_factor_ex(
        torch.tensor(a)).info)


def test_histogram_of_no_data_spans_zero_to_one():
    """With no values and no range the edges were [-0.5, 0.5] (torch, NumPy: [0, 1])."""
    for bins in (1, 4, 7):
        ours = gd.histogram(gd.zeros(0, 3).double(), bins)
        theirs = torch.histogram(torch.zeros(0, 3).double(), bins)
        for a, b in zip(ours, theirs):
            _same(a, b)
    x = np.full(4, np.random.default_rng().standard_normal())
    for a, b in zip(gd.histogram(gd.tensor(x), 3), torch.histogram(torch.tensor(x), 3)):
        _same(a, b)


def test_clamp_with_two_tensor_bounds_promotes_all_three_at_once():
    """clamp(0-d float64, min=float64 (2, 3), max=float32 (2, 3)) gave float32 (promoted pair
    by pair: the 0-d self, once float64, then ranked below max); torch gives float64."""
    rng = np.random.default_rng()
    pool = [np.array(rng.standard_normal()), np.array(2), rng.standard_normal((2, 3)),
            rng.standard_normal((2, 3)).astype(np.float32), np.array([1, -2, 3]),
            np.array(0.5, np.float32), None]
    checked = 0
    for a in pool[:-1]:
        for lo in pool:
            for hi in pool:
                args = (a, lo, hi)
                try:
                    theirs = torch.clamp(*[None if v is None else torch.tensor(v) for v in args])
                except (RuntimeError, TypeError):
                    continue
                _same(gd.clamp(*[None if v is None else gd.tensor(v) for v in args]), theirs)
                _same(gd.tensor(a).clip(*[None if v is None else gd.tensor(v) for v in args[1:]]),
                      theirs)
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("call, message", [
    (lambda: F.softmax(7, 0, gd.float32), "softmax: input must be a Tensor, got int"),
    (lambda: F.log_softmax(True, 0, dtype=gd.float64), "log_softmax: input must be a Tensor"),
    (lambda: F.scaled_dot_product_attention(gd.ones(2, 3, 4), gd.ones(2, 3, 4), 3),
     "scaled_dot_product_attention: value must be a Tensor, got int"),
    (lambda: F.scaled_dot_product_attention(gd.ones(2, 3, 4), [1], gd.ones(2, 3, 4)),
     "scaled_dot_product_attention: key must be a Tensor, got list")])
def test_functional_non_tensor_inputs_get_a_type_error(call, message):
    """Each raised AttributeError (astype / dtype read on the int, bool or list)."""
    with pytest.raises(TypeError, match=message):
        call()


def test_softmax_dtype_still_casts_an_integer_input_as_torch():
    x = np.random.default_rng().integers(-3, 4, (2, 5))
    for name in ("softmax", "log_softmax"):
        ours = getattr(F, name)(gd.tensor(x), 1, dtype=gd.float64)
        _same(ours, getattr(torch.nn.functional, name)(torch.tensor(x), 1, dtype=torch.float64),
              rtol=1e-12)


@pytest.mark.parametrize("name", ["can_cast", "promote_types"])
def test_dtype_queries_refuse_none_and_tensors(name):
    """can_cast(x, None) raised AttributeError: 'NoneType' object has no attribute 'kind'; a
    tensor was taken for its dtype (torch refuses both)."""
    for args in ((gd.float32, None), (None, gd.float32), (gd.zeros(2), gd.float32)):
        with pytest.raises(TypeError, match=f"{name}: .* must be a dtype"):
            getattr(gd, name)(*args)
    pairs = [(a, b) for a in ("float32", "float64", "int64", "bool") for b in ("int64", "float32")]
    for a, b in pairs:
        ours = getattr(gd, name)(getattr(gd, a), getattr(gd, b))
        theirs = getattr(torch, name)(getattr(torch, a), getattr(torch, b))
        assert str(ours) == str(theirs).replace("torch.", "")


def test_tile_and_broadcast_to_methods_take_several_ints():
    """x.tile(2, 2) and x.broadcast_to(2, 3) (torch's methods take sizes as varargs) raised
    TypeError: takes 2 positional arguments."""
    x = np.random.default_rng().standard_normal(3)
    for reps in ((2, 2), (1, 2, 1), ((2, 1),), ([3],)):
        _same(gd.tensor(x).tile(*reps), torch.tensor(x).tile(*reps))
    _same(gd.tensor(x[:1]).broadcast_to(2, 3), torch.tensor(x[:1]).broadcast_to(2, 3))
    for name in ("tile", "broadcast_to"):
        with pytest.raises(TypeError, match=f"{name}: missing"):
            getattr(gd.tensor(x), name)()


def test_zeta_at_a_pole_is_inf_for_any_s_above_one():
    """zeta(1.5, -2) gave NaN (the q < 0 with a non-integer s rule overrode the pole at a
    non-positive integer q); torch (Cephes) gives +inf there, NaN for s < 1."""
    rng = np.random.default_rng()
    s = np.concatenate([rng.standard_normal(40) * 3, [1.0, 2.0, 3.0, 0.5]])
    for q in (-3.0, -1.0, 0.0, -1.5, -0.25, 0.5, 2.0):
        ours = gd.special.zeta(gd.tensor(s), q)
        _same(ours, torch.special.zeta(torch.tensor(s), q), rtol=1e-9)
    q = np.array([-3, -2, -1, 0, 1, 2])
    s32 = np.array([0.5, 1.5, 2.0, 3.0, 2.5, -0.5], np.float32)
    _same(gd.special.zeta(gd.tensor(s32), gd.tensor(q)),
          torch.special.zeta(torch.tensor(s32), torch.tensor(q)), rtol=1e-5)


@pytest.mark.parametrize("x_shape, y_shape, dim", [
    ((0, 3), (3,), 1), ((3, 3), (), -1), ((2, 1, 3), (4, 3), -1), ((2, 3), (2, 1), -1),
    ((2, 3), (2, 3), 0)])
def test_vecdot_broadcasts_before_reading_dim(x_shape, y_shape, dim):
    """linalg.vecdot compared x.shape[dim] with y.shape[dim] before broadcasting: a vector or
    0-d y raised IndexError: tuple index out of range, or a size mismatch torch accepts."""
    rng = np.random.default_rng()
    x, y = rng.standard_normal(x_shape), rng.standard_normal(y_shape)
    ours, theirs = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out = gd.linalg.vecdot(ours, gd.tensor(y), dim=dim)
    expected = torch.linalg.vecdot(theirs, torch.tensor(y), dim=dim)
    _same(out.detach(), expected.detach(), rtol=1e-12)
    out.sum().backward()
    expected.sum().backward()
    _same(ours.grad, theirs.grad, rtol=1e-12)


@pytest.mark.parametrize("log_input, full", [(True, False), (False, False), (True, True)])
def test_poisson_nll_loss_ranks_a_0d_tensor_below_the_other(log_input, full):
    """poisson_nll_loss(float32 (2, 3), 0-d float64) gave float64: torch's is a composite
    (exp(input) - target * input), whose 0-d float64 operand does not promote float32."""
    rng = np.random.default_rng()
    pool = [rng.standard_normal((2, 3)).astype(np.float32), rng.random((2, 3)) * 3,
            np.array(rng.random() * 2), np.array(rng.random(), np.float32),
            rng.integers(0, 3, (2, 3)), rng.random(3).astype(np.float32) + 0.5]
    for a in pool[:4] + pool[5:]:
        for b in pool:
            kwargs = dict(log_input=log_input, full=full, reduction="none")
            if not log_input:
                a = np.abs(a) + 0.1
            theirs = torch.nn.functional.poisson_nll_loss(torch.tensor(a), torch.tensor(b),
                                                           **kwargs)
            # float32 exp(input) - target * input cancels: an absolute tolerance of its terms
            _same(F.poisson_nll_loss(gd.tensor(a), gd.tensor(b), **kwargs), theirs, rtol=2e-6,
                  atol=1e-6)


def test_lerp_takes_a_0d_weight_of_another_floating_dtype():
    """x.lerp(end, 0-d float64 weight) on float32 was refused; torch accepts a 0-d weight
    (not a 1-D one, nor an end of another dtype) and keeps self's dtype."""
    rng = np.random.default_rng()
    x, end = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    for w in (np.array(0.3), np.array(0.8), np.array(0.25, np.float16)):
        _same(gd.tensor(x).lerp(gd.tensor(end), gd.tensor(w)),
              torch.tensor(x).lerp(torch.tensor(end), torch.tensor(w)), rtol=1e-6)
        ours, theirs = gd.tensor(x), torch.tensor(x)
        ours.lerp_(gd.tensor(end), gd.tensor(w))
        theirs.lerp_(torch.tensor(end), torch.tensor(w))
        _same(ours, theirs, rtol=1e-6)
    with pytest.raises(RuntimeError, match="lerp: expected weight of dtype float32"):
        gd.tensor(x).lerp(gd.tensor(end), gd.tensor(rng.random(5)))
