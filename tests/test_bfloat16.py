"""gd.bfloat16 (ml_dtypes on NumPy) against torch's bfloat16 on the CPU: conversions bit for bit,
arithmetic and the CPU twins (computed in float32, rounded back) within bfloat16's rounding."""

import ml_dtypes
import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F

torch = pytest.importorskip("torch")

BF16_TOL = dict(rtol=2 ** -7, atol=2 ** -7)     # one bfloat16 ulp (8 mantissa bits)


def to_torch(t):
    """A gpudl tensor as a torch tensor of the same dtype (bfloat16 through its bits)."""
    a = t.detach().numpy()
    if a.dtype == gd.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def as_f32(x):
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    return x.detach().numpy().astype(np.float32)


def bits(x):
    if isinstance(x, torch.Tensor):
        return x.detach().view(torch.int16).numpy()
    return x.detach().numpy().view(np.int16)


def test_dtype_is_ml_dtypes_and_named_as_torch():
    assert gd.bfloat16 == np.dtype(ml_dtypes.bfloat16)
    assert gd.dtypes.as_dtype("bfloat16") == gd.bfloat16
    assert gd.dtypes.as_dtype(torch.bfloat16) == gd.bfloat16
    assert gd.dtypes.is_floating(gd.bfloat16) and not gd.dtypes.is_floating(gd.int32)
    for make in (lambda: gd.zeros(3, dtype=gd.bfloat16), lambda: gd.randn(3, dtype="bfloat16"),
                 lambda: gd.ones(2).bfloat16(), lambda: gd.ones(2).to(gd.bfloat16),
                 lambda: gd.ones(2).type("torch.BFloat16Tensor")):
        assert make().dtype == gd.bfloat16
    assert "dtype=gpudl.bfloat16" in repr(gd.ones(2).bfloat16())
    # numbers printed as floats (ml_dtypes prints 1.0 as "1"), as torch does and as gpudl
    # prints the same values in float32
    assert repr(gd.ones(2, device="cpu").bfloat16()).replace("gpudl.", "torch.") == \
        repr(torch.ones(2).bfloat16())
    x = gd.tensor([0.1, -2.5, 3e-3]).bfloat16()
    assert repr(x) == repr(x.float())[:-1] + ", dtype=gpudl.bfloat16)"
    assert gd.ones(2).bfloat16().requires_grad_().requires_grad


def test_float32_to_bfloat16_rounds_as_torch(rng):
    x = rng.standard_normal(10000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10000)
    np.testing.assert_array_equal(bits(gd.tensor(x).bfloat16()),
                                  bits(torch.from_numpy(x).bfloat16()))
    y = rng.standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(gd.tensor(y).half().numpy(), torch.from_numpy(y).half().numpy())


def test_torch_bfloat16_tensors_convert_bit_for_bit(rng):
    t = torch.from_numpy(rng.standard_normal(50).astype(np.float32)).bfloat16()
    g = gd.tensor(t)
    assert g.dtype == gd.bfloat16
    np.testing.assert_array_equal(bits(g), bits(t))
    np.testing.assert_array_equal(bits(to_torch(g)), bits(t))


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
    lambda a, b: a * 1.001, lambda a, b: 2.5 - a, lambda a, b: a / 3,
    lambda a, b: a.exp(), lambda a, b: a.tanh(), lambda a, b: a.sigmoid(), lambda a, b: a.relu(),
    lambda a, b: a.abs().sqrt(), lambda a, b: a ** 2, lambda a, b: a.clamp(-0.5, 0.5)])
def test_elementwise_matches_torch_bfloat16(rng, op):
    a, b = (rng.standard_normal(200).astype(np.float32) for _ in range(2))
    ga, gb = gd.tensor(a).bfloat16(), gd.tensor(b).bfloat16()
    out, expected = op(ga, gb), op(to_torch(ga), to_torch(gb))
    assert out.dtype == gd.bfloat16 and expected.dtype == torch.bfloat16
    np.testing.assert_allclose(as_f32(out), as_f32(expected), **BF16_TOL)


def test_promotion_follows_torch():
    b = gd.ones(3).bfloat16()
    cases = [(b + gd.ones(3, dtype=gd.int64), torch.bfloat16), (b + gd.ones(3).half(), torch.float32),
             (b + gd.ones(3), torch.float32), (b * 2, torch.bfloat16),
             (gd.where(b > 0, b, 0.5), torch.bfloat16),
             (gd.cat([b, gd.ones(3).half()]), torch.float32)]
    tb = torch.ones(3).bfloat16()
    torch_cases = [tb + torch.ones(3, dtype=torch.int64), tb + torch.ones(3).half(),
                   tb + torch.ones(3), tb * 2, torch.where(tb > 0, tb, 0.5),
                   torch.cat([tb, torch.ones(3).half()])]
    for case, ((got, want), theirs) in enumerate(zip(cases, torch_cases)):
        assert theirs.dtype == want
        assert str(got.dtype) == str(want).replace("torch.", ""), (case, got.device)


def test_sums_accumulate_in_float32():
    """bfloat16 has 8 mantissa bits: adding 1 to 256 in bfloat16 gives 256 again. torch sums
    in float32; a bfloat16 accumulator would stop at 256."""
    x = gd.ones(4096).bfloat16()
    assert float(x.sum()) == float(torch.ones(4096).bfloat16().sum()) == 4096.0
    assert float(x.mean()) == 1.0
    w = gd.ones(4096, requires_grad=True)
    (w.bfloat16() * gd.ones(1, 4096).bfloat16()).sum().backward()   # broadcast backward sums
    np.testing.assert_array_equal(w.grad.numpy(), 1.0)


def test_matmul_and_linear_return_bfloat16_with_bfloat16_grads(rng):
    x = gd.tensor(rng.standard_normal((5, 16)).astype(np.float32)).bfloat16().requires_grad_()
    w = gd.tensor(rng.standard_normal((8, 16)).astype(np.float32)).bfloat16().requires_grad_()
    b = gd.tensor(rng.standard_normal(8).astype(np.float32)).bfloat16().requires_grad_()
    tx, tw, tb = (to_torch(t).requires_grad_() for t in (x, w, b))
    for y, ty in ((F.linear(x, w, b), torch.nn.functional.linear(tx, tw, tb)),
                  (x @ w.T, tx @ tw.T)):
        assert y.dtype == gd.bfloat16
        np.testing.assert_allclose(as_f32(y), as_f32(ty), rtol=2e-2, atol=5e-2)
    F.linear(x, w, b).sum().backward()
    torch.nn.functional.linear(tx, tw, tb).sum().backward()
    for g, tg in ((x.grad, tx.grad), (w.grad, tw.grad), (b.grad, tb.grad)):
        assert g.dtype == gd.bfloat16
        np.testing.assert_allclose(as_f32(g), as_f32(tg), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "avg_pool2d", "sdpa", "gelu",
                                  "softmax", "lstm"])
def test_cpu_twins_take_low_precision(rng, monkeypatch, dtype, name):
    """Each CPU twin computes float16/bfloat16 in float32 and rounds to the input's dtype; the
    result, and every gradient, has torch's dtype and values within that dtype's rounding."""
    if gd.backend.SIMULATOR:
        # the simulator runs every array on the CUDA kernels (backend.kernel_device), a cpu
        # tensor's too; a GPU runs a cpu tensor on the CPU twins, the ones under test here
        monkeypatch.setattr(gd.backend, "kernel_device", lambda array, bfloat16=False: "cpu")
    tdtype = getattr(torch, dtype)
    x32 = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w32 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    # on the cpu whatever the default device: the CPU twins are under test
    x, w = (gd.tensor(a, device="cpu").to(dtype).requires_grad_() for a in (x32, w32))
    tx, tw = (torch.from_numpy(a).to(tdtype).requires_grad_() for a in (x32, w32))
    tf = torch.nn.functional
    if name == "conv2d":
        y, ty = F.conv2d(x, w, padding=1), tf.conv2d(tx, tw, padding=1)
    elif name == "max_pool2d":
        y, ty = F.max_pool2d(x, 2), tf.max_pool2d(tx, 2)
    elif name == "avg_pool2d":
        y, ty = F.avg_pool2d(x, 2), tf.avg_pool2d(tx, 2)
    elif name == "sdpa":
        y, ty = F.scaled_dot_product_attention(x, x, x), tf.scaled_dot_product_attention(tx, tx,
                                                                                          tx)
    elif name == "gelu":
        y, ty = F.gelu(x), tf.gelu(tx)
    elif name == "softmax":
        y, ty = F.softmax(x, -1), tf.softmax(tx, -1)
    else:
        lstm, tlstm = gd.nn.LSTM(8, 5, device="cpu"), torch.nn.LSTM(8, 5)
        lstm.load_state_dict({k: v.detach().numpy() for k, v in tlstm.state_dict().items()})
        lstm, tlstm = lstm.to(dtype), tlstm.to(tdtype)
        y, ty = lstm(x[0])[0], tlstm(tx[0])[0]
    assert str(y.dtype) == dtype and ty.dtype == tdtype
    tol = 3e-2 if dtype == "bfloat16" else 4e-3
    np.testing.assert_allclose(as_f32(y), as_f32(ty), rtol=tol, atol=tol)
    y.sum().backward()
    ty.float().sum().backward()
    assert str(x.grad.dtype) == dtype
    np.testing.assert_allclose(as_f32(x.grad), as_f32(tx.grad), rtol=5 * tol, atol=5 * tol)


def test_safetensors_round_trip_keeps_bfloat16(tmp_path, rng):
    from safetensors.torch import load_file
    t = gd.tensor(rng.standard_normal((3, 4)).astype(np.float32)).bfloat16()
    gd.save({"w": t}, tmp_path / "m.safetensors")
    back = gd.load(tmp_path / "m.safetensors")["w"]
    assert back.dtype == gd.bfloat16
    np.testing.assert_array_equal(bits(back), bits(t))
    theirs = load_file(str(tmp_path / "m.safetensors"))["w"]     # torch reads BF16
    assert theirs.dtype == torch.bfloat16
    np.testing.assert_array_equal(bits(theirs), bits(t))


def test_module_to_bfloat16_trains_a_step(rng):
    model = gd.nn.Sequential(gd.nn.Linear(6, 4), gd.nn.ReLU(), gd.nn.Linear(4, 3)).bfloat16()
    x = gd.tensor(rng.standard_normal((8, 6)).astype(np.float32)).bfloat16()
    loss = F.cross_entropy(model(x), gd.tensor(rng.integers(0, 3, 8)))
    loss.backward()
    assert all(p.grad.dtype == gd.bfloat16 for p in model.parameters())


def test_cuda_path_refuses_bfloat16_clearly(monkeypatch):
    """No GPU here: the checks are driven with stand-ins. A CuPy without bfloat16 (before 14)
    refuses bfloat16 tensors at the call; the Numba-CUDA kernels refuse them on any CuPy."""
    from gpudl import backend

    class OldCupy:
        __version__ = "13.6.0"

        @staticmethod
        def empty(shape, dtype):
            raise TypeError("Unsupported dtype bfloat16")

    monkeypatch.setattr(backend, "_cupy", OldCupy)
    monkeypatch.setattr(backend, "_cupy_bfloat16", None)
    with pytest.raises(TypeError, match="need CuPy 14 or later"):
        backend.check_dtype_on_device(gd.bfloat16, "cuda", "astype")
    backend.check_dtype_on_device(gd.float16, "cuda", "astype")          # float16 is fine
    backend.check_dtype_on_device(gd.bfloat16, "cpu", "astype")          # so is the cpu
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "is_device_array", lambda a: True)
    with pytest.raises(TypeError, match="no Numba-CUDA kernels"):
        backend.kernel_device(np.zeros(2, gd.bfloat16))
    assert backend.kernel_device(np.zeros(2, np.float16)) == "cuda"


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm", "group_norm"])
def test_norms_of_bfloat16_take_their_statistics_in_float32(rng, norm):
    """Rows of 2048 values around 5: means taken in bfloat16 would be off by whole units; torch
    (statistics in float32) is within one bfloat16 rounding of the float32 result."""
    x = (rng.standard_normal((8, 16, 128)) * 3 + 5).astype(np.float32)
    g, t = gd.tensor(x).bfloat16(), torch.from_numpy(x).bfloat16()
    calls = {"layer_norm": lambda f, a: f.layer_norm(a, (16, 128)),
             "batch_norm": lambda f, a: f.batch_norm(a, None, None, training=True),
             "group_norm": lambda f, a: f.group_norm(a, 4)}
    y = calls[norm](F, g)
    ty = calls[norm](torch.nn.functional, t)
    assert y.dtype == gd.bfloat16
    np.testing.assert_allclose(as_f32(y), as_f32(ty), rtol=2 ** -7, atol=2 ** -6)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss", "mse_loss", "l1_loss",
                                  "binary_cross_entropy_with_logits"])
def test_losses_of_bfloat16_reduce_in_float32(rng, loss):
    """4096 x 10 terms: a bfloat16 running sum stalls (it gave 8.0 for a cross entropy of 2.73);
    the loss is reduced in float32 and rounded once, within one bfloat16 rounding of the
    float64 value."""
    x = rng.standard_normal((4096, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 4096)
    other = rng.uniform(0, 1, (4096, 10)).astype(np.float32)
    g = gd.tensor(x).bfloat16().requires_grad_()
    exact = torch.from_numpy(as_f32(g).astype(np.float64))
    if loss in ("cross_entropy", "nll_loss"):
        y, expected = getattr(F, loss)(g, gd.tensor(labels)), getattr(torch.nn.functional, loss)(
            exact, torch.from_numpy(labels))
    else:
        t = gd.tensor(other).bfloat16()
        y = getattr(F, loss)(g, t)
        expected = getattr(torch.nn.functional, loss)(exact, torch.from_numpy(as_f32(t)).double())
    assert y.dtype == gd.bfloat16
    np.testing.assert_allclose(float(y), float(expected), rtol=2 ** -8, atol=1e-6)
    y.backward()
    assert g.grad.dtype == gd.bfloat16


@pytest.mark.parametrize("op", [lambda m, a: a.prod(), lambda m, a: a.cumsum(0)[-1],
                                lambda m, a: a.cumprod(0)[-1], lambda m, a: a.norm(),
                                lambda m, a: a.var(), lambda m, a: a.logsumexp(0)])
def test_other_reductions_of_bfloat16_accumulate_in_float32(rng, op):
    x = rng.uniform(0.999, 1.001, 3000).astype(np.float32)
    g = gd.tensor(x).bfloat16().requires_grad_()
    exact = torch.from_numpy(as_f32(g).astype(np.float64))
    y = op(gd, g)
    assert y.dtype == gd.bfloat16
    np.testing.assert_allclose(float(y), float(op(torch, exact)), rtol=2 ** -7, atol=1e-6)
    y.backward()
    assert g.grad.dtype == gd.bfloat16


def test_from_dlpack_shares_a_torch_bfloat16_tensor():
    t = torch.arange(4, dtype=torch.float32).bfloat16()
    g = gd.from_dlpack(t)
    assert g.dtype == gd.bfloat16
    t[0] = 7.0
    assert float(g[0]) == 7.0                          # the same memory


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "silu", "softplus", "gelu",
                                  "sigmoid", "tanh", "relu6", "hardtanh", "mish", "glu"])
def test_activations_keep_bfloat16_and_match_torch(rng, name):
    """Python-float parameters (slopes, bounds) must not widen bfloat16 to float32 (NumPy's
    rule for ml_dtypes); values within one bfloat16 rounding of torch's."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    g = gd.tensor(x).bfloat16().requires_grad_()
    t = torch.from_numpy(x).bfloat16().requires_grad_()
    y, ty = getattr(F, name)(g), getattr(torch.nn.functional, name)(t)
    assert y.dtype == gd.bfloat16 and ty.dtype == torch.bfloat16
    np.testing.assert_allclose(as_f32(y), as_f32(ty), **BF16_TOL)
    y.float().sum().backward()
    ty.float().sum().backward()
    assert g.grad.dtype == gd.bfloat16
    np.testing.assert_allclose(as_f32(g.grad), as_f32(t.grad), rtol=2e-2, atol=2e-2)


def test_bit_level_conversions_match_ml_dtypes(rng):
    """dtypes.float32_to_bfloat16 / bfloat16_to_float32 (what the cuda kernels' code uses:
    CuPy's bfloat16 cannot cast) against ml_dtypes' casts, bit for bit: every magnitude,
    random bit patterns, ties, infinities, overflow to inf, subnormals, NaNs (quiet, sign
    kept)."""
    magnitudes = rng.standard_normal(100000) * 10.0 ** rng.integers(-40, 39, 100000)
    values = np.concatenate([
        np.clip(magnitudes, -3.4e38, 3.4e38).astype(np.float32),
        rng.integers(0, 2 ** 32, 100000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 3.4028235e38, -3.39e38, 1e-45,
                  1.00390625, 1.01171875, 1.0 + 2 ** -8 + 2 ** -20], np.float32)])
    got = gd.dtypes.float32_to_bfloat16(np, values)
    with np.errstate(all="ignore"):                 # ml_dtypes warns of the overflows and NaNs
        want = values.astype(gd.bfloat16)
        want32 = want.astype(np.float32)
    nan = np.isnan(values)
    assert got.dtype == gd.bfloat16 and nan.sum() > 100
    np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    back = gd.dtypes.bfloat16_to_float32(got)
    assert np.isnan(back[nan]).all()
    np.testing.assert_array_equal(np.signbit(back[nan]), np.signbit(values[nan]))
    np.testing.assert_array_equal(back[~nan], want32[~nan])
