"""Bugs tools/opinfo_sweep.py found (PyTorch's OpInfo samples run over every gpudl name), each
checked against torch on the sample shapes that exposed it."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("args", [(0.0, -8.000001, -4.0), (3.1,), (-0.9, 2.1, 2.0),
                                  (2.1, -2.9, -1.0), (0.5, 3.7, 1.5)])
def test_arange_truncates_float_bounds_for_an_integer_dtype(args):
    got = gd.arange(*args, dtype=gd.int64)
    want = torch.arange(*args, dtype=torch.int64)
    assert got.dtype == gd.int64
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("factory", ["linspace", "logspace"])
@pytest.mark.parametrize("start, end, steps", [(4.3, -3, 50), (4.3, 0, 7), (0, 1.2, 4),
                                               (-2.7, 2.2, 9)])
def test_linspace_and_logspace_truncate_bounds_for_an_integer_dtype(factory, start, end, steps):
    got = getattr(gd, factory)(start, end, steps, dtype=gd.int64)
    want = getattr(torch, factory)(start, end, steps, dtype=torch.int64)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_logspace_refuses_a_float_step_count_with_torchs_type_error():
    with pytest.raises(TypeError, match="steps"):
        gd.logspace(0, 3, 1.0)
    with pytest.raises(ValueError, match="steps"):
        gd.logspace(0, 3, -1)


@pytest.mark.parametrize("args", [(10, (5, 5)), (10, []), (3, 10, (4,)), (10, [0, 5, 0])])
def test_randint_takes_torchs_high_size_form(args):
    got, want = gd.randint(*args), torch.randint(*args)
    assert got.shape == tuple(want.shape) and got.dtype == gd.int64
    low, high = (0, args[0]) if len(args) == 2 else args[:2]
    assert ((got.numpy() >= low) & (got.numpy() < high)).all()


def test_narrow_and_roll_raise_torchs_errors_with_clear_messages():
    x = gd.tensor(np.random.default_rng(0).standard_normal((20, 10, 5)))
    with pytest.raises(RuntimeError, match="0-d"):
        gd.tensor(1.5).narrow(0, 0, 1)
    with pytest.raises(IndexError, match="start 11"):
        x.narrow(1, 11, 0)
    with pytest.raises(RuntimeError, match="length 11"):
        x.narrow(1, 0, 11)
    with pytest.raises(RuntimeError, match="shifts"):
        gd.roll(x, [])
    np.testing.assert_array_equal(x.narrow(1, -3, 2).numpy(), x.numpy()[:, 7:9])


def test_integer_pow_with_negative_tensor_exponents_matches_torch():
    rng = np.random.default_rng(1)
    base = rng.integers(-3, 4, size=(6, 5))
    exponent = rng.integers(-3, 4, size=(5,))
    for dtype, tdtype in ((gd.int64, torch.int64), (gd.int32, torch.int32)):
        got = gd.tensor(base, dtype=dtype) ** gd.tensor(exponent, dtype=dtype)
        want = torch.tensor(base, dtype=tdtype) ** torch.tensor(exponent, dtype=tdtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal((2 ** gd.tensor(exponent)).numpy(),
                                  (2 ** torch.tensor(exponent)).numpy())
    with pytest.raises(RuntimeError, match="negative integer powers"):
        gd.tensor(base) ** -1                     # a negative Python exponent: torch refuses


def test_sum_and_mean_take_dtype_as_torch():
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    a, t = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = a.sum(1, dtype=gd.float64), t.sum(1, dtype=torch.float64)
    assert got.dtype == gd.float64
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12)
    got.sum().backward()
    want.sum().backward()
    assert a.grad.dtype == gd.float32
    np.testing.assert_array_equal(a.grad.numpy(), t.grad.numpy())
    mask = np.random.default_rng(3).random(7) > 0.5
    assert gd.tensor(mask).sum(dtype=gd.float32).item() == mask.sum()
    m = gd.mean(gd.tensor([1, 2, 4]), dtype=gd.float64)
    assert m.dtype == gd.float64 and m.item() == pytest.approx(7 / 3)
    with pytest.raises(RuntimeError, match="floating"):
        gd.tensor(x).mean(dtype=gd.int64)


def test_square_of_a_bool_tensor_is_int64_as_torch():
    mask = np.random.default_rng(4).random(9) > 0.5
    got, want = gd.square(gd.tensor(mask)), torch.square(torch.tensor(mask))
    assert got.dtype == gd.int64
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("op, args", [("prod", (1,)), ("cumsum", (0,)), ("cumprod", (1,))])
def test_prod_cumsum_cumprod_take_dtype_as_torch(op, args):
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    a, t = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    got, want = getattr(a, op)(*args, dtype=gd.float64), getattr(t, op)(*args, dtype=torch.float64)
    assert got.dtype == gd.float64
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-12)
    w = np.random.default_rng(6).standard_normal(got.shape)
    (got * gd.tensor(w)).sum().backward()
    (want * torch.tensor(w)).sum().backward()
    assert a.grad.dtype == gd.float32
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-6)


def test_normal__and_uniform__refuse_bad_parameters_and_leave_the_tensor_unchanged():
    values = np.random.default_rng(7).standard_normal(10)
    x = gd.tensor(values)
    with pytest.raises(ValueError, match="std"):
        x.normal_(0, -1)
    np.testing.assert_array_equal(x.numpy(), values)
    assert float(x.normal_(0, 0.0).abs().max()) == 0.0
    with pytest.raises(ValueError, match="a <= b"):
        x.uniform_(1.0, 0.0)                   # torch refuses from > to
    assert float(x.abs().max()) == 0.0


def test_unbind_of_a_0d_tensor_is_torchs_index_error():
    with pytest.raises(IndexError, match="0-d"):
        gd.tensor(3.5).unbind(0)
    with pytest.raises(IndexError):
        torch.tensor(3.5).unbind(0)


def test_masked_fill_refuses_a_complex_value_with_torchs_runtime_error():
    x = gd.tensor(np.random.default_rng(8).standard_normal((2, 2)))
    with pytest.raises(RuntimeError, match="complex"):
        x.masked_fill(gd.tensor(True), 1j)


def test_to_takes_torchs_positional_non_blocking_and_copy():
    values = np.random.default_rng(9).standard_normal((3, 2))
    x, other = gd.tensor(values), gd.tensor(values)
    t, t_other = torch.tensor(values), torch.tensor(values)
    assert x.to(other, False, True) is not x and t.to(t_other, False, True) is not t  # copy
    assert x.to(other, False) is x and t.to(t_other, False) is t          # nothing changes
    y = x.to("cpu", gd.float32, False, True)
    assert y.dtype == gd.float32 and t.to("cpu", torch.float32, False, True).dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), values.astype(np.float32))
    with pytest.raises(TypeError, match="bools"):
        x.to(other, False, True, True)


def test_prod_keeps_an_explicit_bool_or_int32_dtype():
    mask = np.random.default_rng(10).random((5, 4)) > 0.3
    got, want = gd.tensor(mask).prod(1, dtype=gd.bool), torch.tensor(mask).prod(1, dtype=torch.bool)
    assert got.dtype == gd.bool
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    ints = np.random.default_rng(11).integers(-3, 4, (3, 4))
    got = gd.tensor(ints).prod(0, dtype=gd.int32)
    assert got.dtype == gd.int32
    np.testing.assert_array_equal(got.numpy(), torch.tensor(ints).prod(0, dtype=torch.int32).numpy())
