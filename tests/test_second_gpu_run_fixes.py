"""Library bugs the second GPU run (CuPy 14, an H200) found, pinned on the CPU: each test drives
the code path the GPU took, with NumPy made to refuse what CuPy refuses."""

import numpy as np
import pytest

import gpudl as gd
from cupy_like import fake_cuda  # noqa: F401 (a fixture)

torch = pytest.importorskip("torch")


def _refusing_bfloat16(scan):
    def refuse(a, *args, **kwargs):
        if np.asarray(a).dtype == gd.bfloat16:
            raise TypeError(f"{scan.__name__} of bfloat16 (CuPy's scan kernel has no bfloat16 "
                            "arithmetic)")
        return scan(a, *args, **kwargs)
    return refuse


@pytest.mark.parametrize("zeros", [False, True], ids=["nonzero", "with_a_zero"])
@pytest.mark.parametrize("op", ["prod", "cumsum", "cumprod"])
def test_bfloat16_scans_in_backward_run_in_float32(monkeypatch, rng, op, zeros):
    """CuPy's cumsum/cumprod kernels fail to compile for bfloat16 (no bfloat16 ``+=``/``*=``):
    every scan of a bfloat16 array, the backwards' included, runs in float32. NumPy's scans
    refuse bfloat16 here as CuPy's do; the gradients are torch's (float64 from the same
    bfloat16 values), within bfloat16's rounding."""
    for name in ("cumsum", "cumprod"):
        monkeypatch.setattr(np, name, _refusing_bfloat16(getattr(np, name)))
    x = rng.uniform(0.5, 1.5, (3, 5)).astype(np.float32)
    if zeros:
        x[1, 2] = 0.0
    weights = rng.standard_normal((3, 5)).astype(np.float32)
    a = gd.tensor(x).bfloat16().requires_grad_()
    exact = torch.tensor(a.float().numpy().astype(np.float64), requires_grad=True)
    for lib, t in ((gd, a), (torch, exact)):
        y = t.prod(1) if op == "prod" else getattr(t, op)(1)
        w = lib.tensor(weights[:, 0] if op == "prod" else weights)
        (y * w.to(y.dtype)).sum().backward()
    assert a.grad.dtype == gd.bfloat16
    np.testing.assert_allclose(a.grad.float().numpy(), exact.grad.numpy(), rtol=2 ** -6,
                               atol=1e-2)


class FlushingNumPy:
    """NumPy's functions as the GPU runs them in float32: frexp of float32 flushes subnormals
    to zero (both GPU runs), so the device branch must not pass them to it."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def frexp(x):
        if x.dtype == np.float32:
            x = np.where(np.abs(x) < np.finfo(np.float32).tiny, np.copysign(np.float32(0), x), x)
        return np.frexp(x)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_frexp_on_the_device_branch_keeps_subnormals(monkeypatch, rng, dtype):
    from gpudl import backend
    from gpudl.ops import elementwise_math
    real_gpu = backend._cupy is not None and not backend.SIMULATOR
    if not real_gpu:            # on a GPU, its own frexp
        monkeypatch.setattr(elementwise_math, "xp_of", lambda a: FlushingNumPy())
    tiny = {"float16": 1e-6, "float64": 1e-310}.get(dtype, 1e-40)
    x = np.concatenate([[tiny, -tiny, 3 * tiny, 0.0, -0.0, np.inf, -np.inf, np.nan],
                        rng.standard_normal(12) * 100])
    # cast on the host, then moved: the subnormals reach the device whatever its casts do
    a = gd.tensor(x, device="cpu").to(getattr(gd, dtype)).to("cuda" if real_gpu else "cpu")
    theirs = torch.frexp(torch.from_numpy(x).to(getattr(torch, dtype)))
    ours = gd.frexp(a)
    assert ours.mantissa.dtype == a.dtype and ours.exponent.dtype == gd.int32
    np.testing.assert_array_equal(ours.mantissa.float().numpy(),
                                  theirs.mantissa.float().numpy())
    np.testing.assert_array_equal(np.signbit(ours.mantissa.float().numpy()),
                                  np.signbit(theirs.mantissa.float().numpy()))
    finite = np.isfinite(x)
    np.testing.assert_array_equal(ours.exponent.numpy()[finite],
                                  theirs.exponent.numpy()[finite])


class WideningWhere(FlushingNumPy):
    """NumPy's functions with CuPy's ``where``, which has no bfloat16 loop: bfloat16 choices
    come back in float32."""

    @staticmethod
    def where(condition, x, y):
        widen = [v.astype(np.float32) if getattr(v, "dtype", None) == gd.bfloat16 else v
                 for v in (x, y)]
        return np.where(condition, *widen)


@pytest.mark.parametrize("name", ["xlogy", "copysign", "atan2"])
def test_binary_math_keeps_bfloat16_when_cupys_where_widens(monkeypatch, rng, name):
    from gpudl.ops import elementwise_math
    monkeypatch.setattr(elementwise_math, "_xp2", lambda a, b: WideningWhere())
    monkeypatch.setattr(elementwise_math, "xp_of", lambda a: WideningWhere())
    x, z = (rng.uniform(-2.5, 2.5, 6).astype(np.float32) for _ in range(2))
    x[0] = 0.0
    a, b = (gd.tensor(v).bfloat16().requires_grad_() for v in (x, np.abs(z)))
    ta, tb = (torch.tensor(v.float().detach().numpy()).bfloat16().requires_grad_()
              for v in (a, b))
    ours, theirs = getattr(gd, name)(a, b), getattr(torch, name)(ta, tb)
    assert ours.dtype == gd.bfloat16
    np.testing.assert_allclose(ours.float().detach().numpy(), theirs.float().detach().numpy(),
                               rtol=1e-2, atol=1e-2)
    ours.sum().backward()
    theirs.sum().backward()
    for mine, torchs in ((a, ta), (b, tb)):
        assert mine.grad.dtype == gd.bfloat16
        np.testing.assert_allclose(mine.grad.float().numpy(), torchs.grad.float().numpy(),
                                   rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kw", [dict(kernel_size=(2, 3), dilation=(1, 2), padding=1, stride=2),
                                dict(kernel_size=3, padding=(0, 2), stride=(1, 2))])
def test_unfold_and_fold_move_values_without_a_convolution(monkeypatch, rng, kw):
    """nn.Unfold on the GPU rounded its values to TF32 (1.181640625 for 1.18189609): it ran as
    a convolution with one-hot kernels, which TF32 tensor cores round. unfold and fold are data
    movement: no convolution may run (each refuses here), and unfold's values are torch's
    bit for bit; fold's and both gradients are sums of the same values."""
    from gpudl import kernels

    def refuse(*args, **kwargs):
        raise AssertionError("unfold/fold ran a convolution (TF32 rounding on a GPU)")
    for name in ("conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
                 "conv_transpose2d_backward"):
        monkeypatch.setattr(kernels.conv, name, refuse)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    a, t = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours, theirs = gd.nn.functional.unfold(a, **kw), torch.nn.functional.unfold(t, **kw)
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    weights = rng.standard_normal(tuple(theirs.shape)).astype(np.float32)
    (ours * gd.tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-6, atol=1e-6)
    b, u = gd.tensor(weights, requires_grad=True), torch.tensor(weights, requires_grad=True)
    ours = gd.nn.functional.fold(b, (5, 7), **kw)
    theirs = torch.nn.functional.fold(u, (5, 7), **kw)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-6,
                               atol=1e-6)
    (ours * gd.tensor(x)).sum().backward()
    (theirs * torch.tensor(x)).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), u.grad.numpy())


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("form", ["array", "float32_array", "list"])
def test_a_host_gradient_reaches_a_cuda_backward_on_the_device(fake_cuda, rng, form,
                                                               create_graph):
    """``.backward(g, inputs=a)`` with g a NumPy array gave CuPy the host array (TypeError
    Unsupported type numpy.ndarray): a gradient given as an array, a list or a number is
    copied to the tensor's device, in its dtype, as torch casts one."""
    x, weights = rng.standard_normal(3), rng.standard_normal(3)
    given = {"array": weights, "float32_array": weights.astype(np.float32),
             "list": weights.tolist()}[form]
    expected = 2 * np.exp(2 * x) * (weights.astype(np.float32) if form == "float32_array"
                                    else weights)
    a = gd.tensor(x, device="cuda", requires_grad=True)
    (a * 2).exp().backward(given, inputs=a, create_graph=create_graph)
    assert isinstance(a.grad._data, fake_cuda) and a.grad.dtype == gd.float64
    np.testing.assert_allclose(a.grad.detach().numpy(), expected, rtol=1e-12)
    b = gd.tensor(x, device="cuda", requires_grad=True)
    (found,) = gd.autograd.grad((b * 2).exp(), b, (given,), create_graph=create_graph)
    np.testing.assert_allclose(found.detach().numpy(), expected, rtol=1e-12)
    c = gd.tensor(x[:1], device="cuda", requires_grad=True)
    (c * 2).exp().sum().backward(0.5)                                   # a number
    np.testing.assert_allclose(c.grad.numpy(), np.exp(2 * x[:1]), rtol=1e-12)


def test_a_gradient_of_the_wrong_shape_or_device_is_refused(fake_cuda, rng):
    a = gd.tensor(rng.standard_normal(3), device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match=r"backward: grad has shape \(2,\) but the tensor has "
                                           r"shape \(3,\)"):
        (a * 2).backward(np.ones(2))
    with pytest.raises(RuntimeError, match="the gradient is on cpu but the tensor is on cuda"):
        (a * 2).backward(gd.ones(3, device="cpu", dtype=gd.float64))
    with pytest.raises(RuntimeError, match="the gradient is on cpu but the tensor is on cuda"):
        gd.autograd.grad(a * 2, a, gd.ones(3, device="cpu", dtype=gd.float64))
    assert a.grad is None


def test_copy_and_item_assignment_move_cpu_values_to_a_cuda_tensor(fake_cuda, rng):
    """``p.copy_(torch.from_numpy(...))`` into a cuda parameter handed CuPy the cpu tensor's
    NumPy array (non-scalar numpy.ndarray cannot be used for fill): copy_, item assignment and
    fill_ copy across devices, as torch's do; host arrays go to the device too."""
    x = rng.standard_normal((3, 4))
    source, row, column = (rng.standard_normal(shape) for shape in ((3, 4), (4,), (3,)))
    t = gd.tensor(x, device="cuda")
    t.copy_(gd.from_numpy(source))
    expected = source.copy()
    t[1] = gd.from_numpy(row)
    t[[0, 2], 1] = gd.from_numpy(row[:2])
    t[:, 3] = column                                          # a NumPy array
    expected[1], expected[[0, 2], 1], expected[:, 3] = row, row[:2], column
    assert isinstance(t._data, fake_cuda) and t.device == "cuda"
    np.testing.assert_array_equal(t.numpy(), expected)
    t.copy_(x)
    np.testing.assert_array_equal(t.numpy(), x)
    t.fill_(gd.tensor(2.5, device="cpu"))
    np.testing.assert_array_equal(t.numpy(), np.full((3, 4), 2.5))


def test_copy_from_a_cpu_tensor_keeps_its_gradient(fake_cuda, rng):
    x, source, weights = (rng.standard_normal(4) for _ in range(3))
    leaf = gd.tensor(x, device="cuda", requires_grad=True)
    src = gd.tensor(source, device="cpu", requires_grad=True)
    t = leaf * 1
    t.copy_(src * 3)
    (t * gd.tensor(weights, device="cuda")).sum().backward()
    assert src.grad.device == "cpu"
    np.testing.assert_allclose(src.grad.numpy(), 3 * weights, rtol=1e-12)


def test_comparisons_across_devices_follow_torch(fake_cuda, rng):
    """A cuda tensor compared with a cpu tensor gave CuPy a NumPy array (TypeError): as in
    torch, a NumPy array or a 0-d cpu tensor is taken to the cuda tensor's device, and a cpu
    tensor of any other shape is refused with torch's error, not computed on the host."""
    x = rng.integers(0, 3, (2, 3))
    t = gd.tensor(x, device="cuda")
    for ours, expected in ((t == x[0], x == x[0]), (t != gd.tensor(1, device="cpu"), x != 1),
                           (gd.tensor(1, device="cpu") < t, 1 < x)):
        assert ours.device == "cuda"
        np.testing.assert_array_equal(ours.numpy(), expected)
    cpu = gd.tensor(x, device="cpu")
    for call in (lambda: t == cpu, lambda: cpu != t, lambda: t < cpu.double(),
                 lambda: gd.logical_and(cpu != 0, t != 0)):
        with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
            call()


def test_embedding_bag_on_the_device_and_across_devices(fake_cuda, rng):
    """A cpu ``input`` with cuda ``offsets`` and weight handed CuPy's searchsorted a NumPy
    array: tensors on different devices are refused, as torch refuses them; on one device the
    bags are torch's."""
    weight = rng.standard_normal((10, 4))
    text, offsets = rng.integers(0, 10, 9), np.array([0, 2, 2, 6])
    expected = torch.nn.functional.embedding_bag(torch.from_numpy(text), torch.from_numpy(weight),
                                                 torch.from_numpy(offsets)).numpy()
    on_cuda = [gd.tensor(a, device="cuda") for a in (text, weight, offsets)]
    ours = gd.nn.functional.embedding_bag(on_cuda[0], on_cuda[1], on_cuda[2])
    assert isinstance(ours._data, fake_cuda)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)
    for mixed in ((gd.from_numpy(text), on_cuda[1], on_cuda[2]),
                  (on_cuda[0], on_cuda[1], gd.from_numpy(offsets))):
        with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
            gd.nn.functional.embedding_bag(*mixed)


def test_masked_fill_of_a_cuda_tensor_takes_a_0d_cpu_value(fake_cuda, rng):
    x = rng.standard_normal((3, 4))
    mask = rng.uniform(size=(3, 4)) < 0.5
    t = gd.tensor(x, device="cuda")
    for value in (gd.tensor(-2.0, device="cpu"), -2.0):
        ours = t.masked_fill(gd.tensor(mask, device="cuda"), value)
        assert isinstance(ours._data, fake_cuda)
        np.testing.assert_array_equal(ours.numpy(), np.where(mask, -2.0, x))
    with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
        t.masked_fill(gd.tensor(mask, device="cpu"), 1.0)
    t.masked_fill_(gd.tensor(mask, device="cuda"), gd.tensor(-2.0, device="cpu"))
    np.testing.assert_array_equal(t.numpy(), np.where(mask, -2.0, x))


def test_where_takes_0d_cpu_tensors_as_numbers(fake_cuda, rng):
    x, y = rng.standard_normal((2, 3, 4))
    mask = rng.uniform(size=(3, 4)) < 0.5
    t, m = gd.tensor(x, device="cuda"), gd.tensor(mask, device="cuda")
    half = gd.tensor(0.5, device="cpu", dtype=gd.float64)
    for ours, expected in ((gd.where(m, half, t), np.where(mask, 0.5, x)),
                           (gd.where(m, t, half), np.where(mask, x, 0.5))):
        assert ours.device == "cuda"
        np.testing.assert_array_equal(ours.numpy(), expected)
    with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
        gd.where(m, t, gd.tensor(y, device="cpu"))
