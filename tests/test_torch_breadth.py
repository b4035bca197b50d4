"""torch's everyday Tensor methods and top-level names added in session 26 (gpudl.tensor_compat,
gpudl.torch_numerics, gpudl.torch_names), each against torch 2.13 on fresh random inputs."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read

torch = pytest.importorskip("torch")


def _pair(*shape, requires_grad=False, dtype=np.float64):
    data = np.random.default_rng().standard_normal(shape).astype(dtype)
    return (gd.tensor(data, requires_grad=requires_grad),
            torch.tensor(data, requires_grad=requires_grad))


def _close(ours, theirs, **tol):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tol)


@pytest.mark.parametrize("name", ["byte", "char", "short", "int", "long"])
def test_conversions(name):
    x, tx = _pair(4, 3)
    x, tx = x * 50, tx * 50
    if name == "byte":                  # torch's float->uint8 of negatives is platform-defined
        x, tx = x.abs(), tx.abs()
    out, expected = getattr(x, name)(), getattr(tx, name)()
    assert str(out.dtype) == str(expected.dtype).replace("torch.", "")
    np.testing.assert_array_equal(out.numpy(), expected.numpy())


@pytest.mark.parametrize("name, shapes", [("addmm", [(3, 4), (3, 5), (5, 4)]),
                                          ("baddbmm", [(2, 3, 4), (2, 3, 5), (2, 5, 4)]),
                                          ("addbmm", [(3, 4), (2, 3, 5), (2, 5, 4)])])
def test_blas_in_place(name, shapes):
    (a, ta), (b, tb), (c, tc) = (_pair(*s, requires_grad=True) for s in shapes)
    y, ty = a * 1, ta * 1                           # not a leaf: may be edited in place
    out = getattr(y, name + "_")(b, c, beta=0.5, alpha=2.0)
    expected = getattr(ty, name + "_")(tb, tc, beta=0.5, alpha=2.0)
    assert out is y and y._version > 0
    _close(y, ty)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for ours, theirs in ((a, ta), (b, tb), (c, tc)):
        _close(ours.grad, theirs.grad)
    leaf = _pair(*shapes[0], requires_grad=True)[0]
    with pytest.raises(RuntimeError, match="leaf"):
        getattr(leaf, name + "_")(b, c)


def test_new_legacy_constructor():
    x = gd.zeros(2, dtype=gd.int32)
    tx = torch.zeros(2, dtype=torch.int32)
    for args in ((2, 3), (gd.Size([2, 3]),), ()):
        assert tuple(x.new(*args).shape) == tuple(tx.new(*[torch.Size(a) if isinstance(
            a, gd.Size) else a for a in args]).shape)
        assert x.new(*args).dtype == gd.int32
    np.testing.assert_array_equal(x.new([2, 3]).numpy(), tx.new([2, 3]).numpy())
    assert x.new([2.7]).dtype == gd.int32


def test_resize_keeps_leading_elements():
    data = np.random.default_rng().standard_normal(12)
    x, tx = gd.tensor(data), torch.tensor(data)
    for size in ((3, 2), (2, 2), (2, 5)):
        x.resize_(*size)
        tx.resize_(*size)
        assert tuple(x.shape) == tuple(tx.shape)
    np.testing.assert_array_equal(x.numpy().reshape(-1)[:4], tx.numpy().reshape(-1)[:4])
    y = gd.zeros(3, 4)
    assert x.resize_as_(y) is x and tuple(x.shape) == (3, 4)
    with pytest.raises(RuntimeError, match="require grad"):
        gd.zeros(3, requires_grad=True).resize_(2)


def test_as_strided_values_and_gradient():
    x, tx = _pair(10, requires_grad=True)
    args = ((3, 3), (2, 1), 1)                      # overlapping windows
    out, expected = x.as_strided(*args), tx.as_strided(*args)
    _close(out, expected)
    w = np.random.default_rng().standard_normal((3, 3))
    (out * gd.tensor(w)).sum().backward()
    (expected * torch.tensor(w)).sum().backward()
    _close(x.grad, tx.grad)
    _close(gd.as_strided(x, (2, 2), (1, 2)), torch.as_strided(tx, (2, 2), (1, 2)))
    with pytest.raises(RuntimeError, match="out of bounds"):
        x.as_strided((4, 4), (3, 1))


def test_real_tensor_complex_names_and_flags():
    x, tx = _pair(2, 3)
    for name in ("conj", "conj_physical", "resolve_conj", "resolve_neg"):
        assert getattr(x, name)() is x
        _close(getattr(gd, name)(x), getattr(torch, name)(tx))
    for name in ("is_complex", "is_conj", "is_neg", "is_inference"):
        assert getattr(x, name)() is getattr(tx, name)() is False
        assert getattr(gd, name)(x) is getattr(torch, name)(tx)
    for name in ("is_sparse", "is_quantized", "is_meta", "is_nested", "is_mkldnn", "is_xpu",
                 "is_mps"):
        assert getattr(x, name) is getattr(tx, name) is False
    assert x.real is x and gd.real(x) is x and x.share_memory_() is x
    assert x.layout is gd.strided and repr(gd.strided) == "gpudl.strided"
    assert isinstance(gd.strided, gd.layout)
    assert x.name is None and x.output_nr == 0 and x.is_shared() is False
    with pytest.raises(RuntimeError, match="non-complex"):
        x.imag
    with pytest.raises(RuntimeError, match="non-complex"):
        gd.imag(x)
    _close(x.adjoint(), tx.adjoint())
    with pytest.raises(RuntimeError, match="matrices"):
        gd.ones(3).adjoint()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_angle(dtype):
    data = (np.random.default_rng().standard_normal(8) * 5).astype(dtype)
    data[0] = 0
    x, tx = gd.tensor(data), torch.tensor(data)
    out, expected = gd.angle(x), torch.angle(tx)
    assert str(out.dtype) == str(expected.dtype).replace("torch.", "")
    _close(out, expected)
    if dtype != np.int64:
        x.requires_grad_(True)
        tx.requires_grad_(True)
        x.angle().sum().backward()
        tx.angle().sum().backward()
        _close(x.grad, tx.grad)


def test_samplers_moments():
    gen = gd.Generator(device=gd.ones(1).device).manual_seed(0)     # the tensors' device
    x = gd.empty(200_000, dtype=gd.float64)
    x.log_normal_(0.5, 0.25, generator=gen)
    assert abs(np.log(x.numpy()).mean() - 0.5) < 0.01
    assert abs(np.log(x.numpy()).std() - 0.25) < 0.01
    x.geometric_(0.3, generator=gen)
    values = x.numpy()
    assert values.min() == 1 and abs(values.mean() - 1 / 0.3) < 0.05
    assert abs(values.var() - 0.7 / 0.09) < 0.3
    x.cauchy_(2.0, 0.5, generator=gen)
    quartiles = np.percentile(x.numpy(), [25, 50, 75])
    np.testing.assert_allclose(quartiles, [1.5, 2.0, 2.5], atol=0.02)
    for call, match in ((lambda: x.geometric_(1.5), "p to be in"),
                        (lambda: x.log_normal_(0, -1), "std > 0"),
                        (lambda: x.cauchy_(0, 0), "sigma > 0")):
        with pytest.raises(RuntimeError, match=match):
            call()
    with pytest.raises(RuntimeError, match="leaf"):
        gd.ones(3, requires_grad=True).cauchy_()


@pytest.mark.parametrize("kwargs", [dict(bins=7), dict(bins=5, range=(-1.0, 2.0)),
                                    dict(bins=6, density=True), dict(bins=4, weight=True),
                                    dict(bins="tensor", density=True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram(kwargs, dtype):
    x, tx = _pair(50, dtype=dtype)
    ours, theirs = dict(kwargs), dict(kwargs)
    if kwargs.get("weight"):
        w, tw = _pair(50, dtype=dtype)
        ours["weight"], theirs["weight"] = w.abs(), tw.abs()
    if kwargs["bins"] == "tensor":
        edges = np.sort(np.random.default_rng().uniform(-2, 2, 6)).astype(dtype)
        ours["bins"], theirs["bins"] = gd.tensor(edges), torch.tensor(edges)
    hist, edges = gd.histogram(x, **ours)
    expected = torch.histogram(tx, **theirs)
    _close(hist, expected.hist, rtol=1e-5)
    _close(edges, expected.bin_edges, rtol=1e-6, atol=1e-6)
    assert hist.dtype == x.dtype and edges.dtype == x.dtype
    _close(x.histogram(**ours)[0], expected.hist, rtol=1e-5)


def test_histogram_errors_and_constant_input():
    hist, edges = gd.histogram(gd.ones(3), 3)
    expected = torch.histogram(torch.ones(3), 3)
    _close(hist, expected.hist)
    _close(edges, expected.bin_edges)
    with pytest.raises(RuntimeError, match="floating"):
        gd.histogram(gd.tensor([1, 2]), 3)
    with pytest.raises(RuntimeError, match="min should not exceed max"):
        gd.histogram(gd.ones(3), 3, range=(2.0, 1.0))


def test_nonzero_static_and_unravel_index():
    data = (np.random.default_rng().random((4, 5)) > 0.6).astype(np.float32)
    for size in (0, 3, 30):
        np.testing.assert_array_equal(
            gd.nonzero_static(gd.tensor(data), size=size, fill_value=-7).numpy(),
            torch.nonzero_static(torch.tensor(data), size=size, fill_value=-7).numpy())
    indices = np.random.default_rng().integers(-30, 30, (3, 4))
    ours = gd.unravel_index(gd.tensor(indices), (4, 5))
    theirs = torch.unravel_index(torch.tensor(indices), (4, 5))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(TypeError, match="integer"):
        gd.unravel_index(gd.ones(2), (2,))


@pytest.mark.parametrize("name", ["relu_", "sigmoid_", "tanh_", "exp_", "abs_", "neg_", "zero_",
                                  "sqrt_", "floor_"])
def test_top_level_in_place(name):
    x, tx = _pair(3, 4)
    x, tx = x.abs(), tx.abs()
    out = getattr(gd, name)(x)
    getattr(torch, name)(tx)
    assert out is x
    _close(x, tx)


def test_top_level_in_place_with_arguments():
    x, tx = _pair(3, 4)
    gd.clamp_(x, -0.5, 0.5)
    torch.clamp_(tx, -0.5, 0.5)
    _close(x, tx)
    gd.fill_(x, 2.5)
    torch.fill_(tx, 2.5)
    _close(x, tx)


# ----------------------------------------------------------------- top-level functions
def test_asarray_shares_memory_as_torch():
    a = np.random.default_rng().standard_normal(3)
    t = gd.asarray(a)
    t[0] = 5.0
    assert a[0] == 5.0
    assert gd.asarray(a, copy=True).numpy()[0] == 5.0
    b = gd.asarray(a, copy=True)
    b[1] = -1.0
    assert a[1] != -1.0
    x = gd.ones(3)
    assert gd.asarray(x) is x and gd.asarray(x, dtype=gd.float64) is not x
    assert gd.asarray([1, 2]).dtype == gd.int64 and gd.asarray(3.5).item() == 3.5
    with pytest.raises(ValueError, match="copy=False"):
        gd.asarray([1.0, 2.0], copy=False)
    leaf = gd.asarray(a, requires_grad=True)
    assert leaf.requires_grad and leaf.is_leaf


def test_scalar_tensor_empty_strided_frombuffer():
    out, expected = gd.scalar_tensor(3), torch.scalar_tensor(3)
    assert out.shape == () and out.dtype == gd.float32 and out.item() == expected.item()
    assert gd.scalar_tensor(True, dtype=gd.bool).dtype == gd.bool
    with pytest.raises(TypeError, match="Number"):
        gd.scalar_tensor(gd.ones(1))
    x = gd.empty_strided((2, 3), (1, 2))
    assert x.stride() == torch.empty_strided((2, 3), (1, 2)).stride()
    raw = bytearray(np.arange(4, dtype=np.float32).tobytes())
    t = gd.frombuffer(raw, dtype=gd.float32, count=2, offset=4)
    np.testing.assert_array_equal(t.numpy(), torch.frombuffer(
        bytearray(raw), dtype=torch.float32, count=2, offset=4).numpy())
    t[0] = 9.0
    assert np.frombuffer(raw, dtype=np.float32)[1] == 9.0
    with pytest.raises(ValueError, match="buffer length"):
        gd.frombuffer(raw, dtype=gd.float32, count=9)


def test_range_and_fill():
    for args in ((0, 1, 0.25), (1, 4), (0, 5, 2), (3, -1, -1.5)):
        with pytest.warns(UserWarning, match="deprecated"):
            out = gd.range(*args)
        with pytest.warns(UserWarning):
            expected = torch.range(*args)
        assert out.dtype == gd.float32
        _close(out, expected)
    with pytest.raises(RuntimeError, match="step"), pytest.warns(UserWarning):
        gd.range(0, 1, 0)
    x, tx = _pair(2, 3)
    _close(gd.fill(x, 3.5), torch.fill(tx, 3.5))


@pytest.mark.parametrize("name", ["hann_window", "hamming_window", "blackman_window",
                                  "bartlett_window", "kaiser_window"])
@pytest.mark.parametrize("periodic", [True, False])
def test_windows(name, periodic):
    for n in (0, 1, 2, 7, 16):
        out = getattr(gd, name)(n, periodic, dtype=gd.float64)
        expected = getattr(torch, name)(n, periodic, dtype=torch.float64)
        _close(out, expected, atol=1e-12)
    assert getattr(gd, name)(5).dtype == gd.float32
    _close(gd.hamming_window(9, True, 0.5, 0.5), torch.hamming_window(9, True, 0.5, 0.5),
           atol=1e-6)
    _close(gd.kaiser_window(9, False, 5.0), torch.kaiser_window(9, False, 5.0), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(), dict(edge_order=2), dict(spacing=2.0, dim=1),
                                    dict(spacing=[0.5, 3.0]), dict(dim=(0,), spacing="coords"),
                                    dict(dim=-1, spacing="coords", edge_order=2)])
def test_gradient(kwargs):
    x, tx = _pair(5, 6, requires_grad=True)
    ours, theirs = dict(kwargs), dict(kwargs)
    if kwargs.get("spacing") == "coords":
        n = 5 if kwargs["dim"] == (0,) else 6
        coords = np.cumsum(np.random.default_rng().random(n) + 0.1)
        ours["spacing"], theirs["spacing"] = [gd.tensor(coords)], [torch.tensor(coords)]
    out, expected = gd.gradient(x, **ours), torch.gradient(tx, **theirs)
    assert len(out) == len(expected)
    w = np.random.default_rng().standard_normal((5, 6))
    for a, b in zip(out, expected):
        _close(a, b, rtol=1e-10, atol=1e-10)
    sum((a * gd.tensor(w)).sum() for a in out).backward()
    sum((b * torch.tensor(w)).sum() for b in expected).backward()
    _close(x.grad, tx.grad, rtol=1e-10, atol=1e-10)
    with pytest.raises(RuntimeError, match="edge_order"):
        gd.gradient(gd.ones(2), edge_order=2)


def test_poisson_and_binomial_moments():
    gen = gd.Generator(device=gd.ones(1).device).manual_seed(1)
    rates = gd.full((100_000,), 3.0, dtype=gd.float64)
    drawn = gd.poisson(rates, generator=gen).numpy()
    assert abs(drawn.mean() - 3) < 0.03 and abs(drawn.var() - 3) < 0.1
    assert gd.poisson(gd.ones(2)).dtype == gd.float32
    count, prob = gd.full((100_000,), 10.0), gd.full((100_000,), 0.3)
    drawn = gd.binomial(count, prob, generator=gen).numpy()
    assert drawn.dtype == np.float32 and drawn.max() <= 10
    assert abs(drawn.mean() - 3) < 0.03 and abs(drawn.var() - 2.1) < 0.1
    with pytest.raises(ValueError, match="rate"):          # on cuda: at the next read
        call_then_read(gd.poisson, -gd.ones(2))
    with pytest.raises(ValueError, match="prob"):
        call_then_read(gd.binomial, gd.ones(2), gd.full((2,), 1.5))


def test_process_state():
    assert gd.are_deterministic_algorithms_enabled() is torch.are_deterministic_algorithms_enabled()
    try:
        for mode in ("warn", "error", 0, 1):
            gd.set_deterministic_debug_mode(mode)
            torch.set_deterministic_debug_mode(mode)
            assert gd.get_deterministic_debug_mode() == torch.get_deterministic_debug_mode()
            assert gd.are_deterministic_algorithms_enabled() is \
                torch.are_deterministic_algorithms_enabled()
            assert gd.is_deterministic_algorithms_warn_only_enabled() is \
                torch.is_deterministic_algorithms_warn_only_enabled()
        with pytest.raises(RuntimeError, match="debug_mode"):
            gd.set_deterministic_debug_mode("x")
    finally:
        gd.use_deterministic_algorithms(False)
        torch.use_deterministic_algorithms(False)
    assert not gd.is_inference_mode_enabled()
    with gd.inference_mode():
        assert gd.is_inference_mode_enabled() and not gd.is_grad_enabled()
        with gd.inference_mode(False):
            assert not gd.is_inference_mode_enabled()
    assert not gd.is_inference_mode_enabled()
    assert gd.set_flush_denormal(True) is False
    gd.set_warn_always(True)
    assert gd.is_warn_always_enabled()
    gd.set_warn_always(False)
    on_cuda = gd.ones(2).device.type == "cuda"
    assert gd.typename(gd.ones(2)) == ("gpudl.cuda.FloatTensor" if on_cuda else
                                       "gpudl.FloatTensor")
    assert gd.typename(3) == "int"
    assert gd.typename(np.zeros(2)) == torch.typename(np.zeros(2))
    assert gd.get_num_interop_threads() >= 1


def test_default_device():
    assert gd.get_default_device() == gd.device()
    try:
        gd.set_default_device("cpu")
        assert gd.get_default_device() == "cpu" and gd.zeros(2).device == "cpu"
        assert gd.tensor([1.0]).device == "cpu"
    finally:
        gd.set_default_device(None)
    assert gd.get_default_device() == gd.device()
    with pytest.raises(ValueError, match="set_default_device"):
        gd.set_default_device("tpu")


@pytest.mark.parametrize("name, shapes, extra", [
    ("kl_div", [(4, 5), (4, 5)], (1,)),
    ("hinge_embedding_loss", [(6,), "sign"], (0.5, 2)),
    ("margin_ranking_loss", [(6,), (6,), "sign"], (0.2, 0)),
    ("triplet_margin_loss", [(4, 5), (4, 5), (4, 5)], (1.0, 2.0, 1e-6, True, 1)),
    ("poisson_nll_loss", [(6,), "positive"], (True, True, 1e-8, 1)),
    ("cosine_embedding_loss", [(4, 5), (4, 5), (4,)], (0.1, 2)),
    ("binary_cross_entropy_with_logits", [(4, 5), "unit"], (None, None, 1)),
    ("cosine_similarity", [(4, 5), (4, 5)], (1, 1e-8)),
    ("pairwise_distance", [(4, 5), (4, 5)], (2.0, 1e-6, False)),
])
def test_top_level_losses(name, shapes, extra):
    rng = np.random.default_rng()
    arrays = []
    for shape in shapes:
        if shape == "sign":
            arrays.append(np.sign(rng.standard_normal(6)))
        elif shape == "positive":
            arrays.append(rng.poisson(2.0, 6).astype(np.float64))
        elif shape == "unit":
            arrays.append(rng.random((4, 5)))
        else:
            arrays.append(rng.standard_normal(shape))
    if name == "cosine_embedding_loss":
        arrays[2] = np.sign(arrays[2])
    ours = [gd.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = getattr(gd, name)(*ours, *extra), getattr(torch, name)(*theirs, *extra)
    _close(out, expected, rtol=1e-6, atol=1e-8)
    out.sum().backward()
    expected.sum().backward()
    _close(ours[0].grad, theirs[0].grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, arity", [
    ("kl_div", 2), ("hinge_embedding_loss", 2), ("margin_ranking_loss", 3),
    ("triplet_margin_loss", 3), ("cosine_embedding_loss", 3),
    ("binary_cross_entropy_with_logits", 2)])
def test_top_level_losses_reduce_nothing_by_default(name, arity):
    """torch.<loss>(...) without reduction gives the unreduced losses (F.<loss>: their mean)."""
    rng = np.random.default_rng()
    arrays = [rng.standard_normal((4, 5)) for _ in range(arity)]
    if name in ("hinge_embedding_loss", "margin_ranking_loss"):
        arrays[-1] = np.sign(arrays[-1])
    if name == "cosine_embedding_loss":
        arrays[-1] = np.sign(arrays[-1][:, 0])
    out = getattr(gd, name)(*map(gd.tensor, arrays))
    expected = getattr(torch, name)(*map(torch.tensor, arrays))
    assert expected.ndim > 0
    _close(out, expected, rtol=1e-12, atol=1e-12)


def test_top_level_rms_norm_and_bilinear():
    x, tx = _pair(3, 4, requires_grad=True)
    w, tw = _pair(4)
    _close(gd.rms_norm(x, (4,), w, 1e-5), torch.rms_norm(tx, (4,), tw, 1e-5), rtol=1e-6)
    y, ty = _pair(3, 2)
    weight, tweight = _pair(5, 4, 2)
    _close(gd.bilinear(x, y, weight), torch.bilinear(tx, ty, tweight), rtol=1e-6)
    a, ta = _pair(3, 4)
    b, tb = _pair(3, 4)
    _close(gd.kl_div(a, b, 2, log_target=True), torch.kl_div(ta, tb, 2, log_target=True))
    with pytest.raises(TypeError, match="positional"):
        gd.kl_div(a, b, 2, True)


# ----------------------------------------------------------------- nn breadth
@pytest.mark.parametrize("name, args, shape", [
    ("LazyConv3d", (4, 3), (2, 3, 5, 5, 5)),
    ("LazyConvTranspose1d", (4, 3, 2, 1, 1), (2, 6, 7)),
    ("LazyConvTranspose3d", (2, 2), (1, 3, 3, 4, 3)),
    ("LazyBatchNorm3d", (), (2, 3, 2, 2, 2)),
    ("LazyInstanceNorm3d", (), (2, 3, 2, 2, 2)),
])
def test_lazy_modules_become_their_base(name, args, shape):
    module, reference = getattr(gd.nn, name)(*args), getattr(torch.nn, name)(*args)
    data = np.random.default_rng().standard_normal(shape).astype(np.float32)
    out = module(gd.tensor(data))
    reference(torch.tensor(data))
    assert type(module).__name__ == name[4:] and type(reference).__name__ == name[4:]
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in
                               module.state_dict().items()})
    reference.train()
    _close(out, reference(torch.tensor(data)), rtol=1e-4, atol=1e-5)


def test_stack_dataset_and_default_convert():
    from torch.utils.data import StackDataset as TorchStack, default_convert as torch_convert
    from gpudl.utils.data import StackDataset, default_convert
    a, b = list(range(5)), [x * 2.0 for x in range(5)]
    assert StackDataset(a, b)[3] == TorchStack(a, b)[3] and len(StackDataset(a, b)) == 5
    assert StackDataset(x=a, y=b)[2] == TorchStack(x=a, y=b)[2]
    with pytest.raises(ValueError, match="mismatch"):
        StackDataset(a, b[:3])
    with pytest.raises(ValueError, match="both"):
        StackDataset(a, y=b)
    sample = {"x": np.arange(3.0), "y": (np.float32(2.0), 3)}
    ours, theirs = default_convert(sample), torch_convert(sample)
    np.testing.assert_array_equal(ours["x"].numpy(), theirs["x"].numpy())
    assert type(ours["y"]) is type(theirs["y"]) and ours["y"][1] == theirs["y"][1]


def test_nn_utils_submodules():
    from gpudl.nn.utils.clip_grad import clip_grad_norm_
    from gpudl.nn.utils.convert_parameters import parameters_to_vector
    assert clip_grad_norm_ is gd.nn.utils.clip_grad_norm_
    assert parameters_to_vector is gd.nn.utils.parameters_to_vector


def test_feature_alpha_dropout_keeps_whole_channels():
    x = gd.randn(4, 6, 5, 5)
    out = gd.nn.functional.feature_alpha_dropout(x, 0.5, training=True).numpy()
    alpha = 1.6732632423543772 * 1.0507009873554805
    a = 1 / np.sqrt((alpha ** 2 * 0.5 + 1) * 0.5)
    dropped = np.isclose(out, -alpha * a * 0.5, atol=1e-5).all(axis=(2, 3))
    kept = np.isclose(out, x.numpy() * a + alpha * a * 0.5, atol=1e-5).all(axis=(2, 3))
    assert (dropped | kept).all() and dropped.any() and kept.any()
    module = gd.nn.FeatureAlphaDropout(0.3).eval()
    assert module(x) is x and repr(module) == repr(torch.nn.FeatureAlphaDropout(0.3))
    with pytest.raises(RuntimeError, match="2 dimensions"):
        gd.nn.functional.feature_alpha_dropout(gd.ones(3), 0.5, True)


def test_sync_batch_norm_alone_is_batch_norm():
    model = gd.nn.Sequential(gd.nn.Conv2d(3, 4, 3), gd.nn.BatchNorm2d(4),
                             gd.nn.Sequential(gd.nn.BatchNorm2d(4)))
    converted = gd.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], gd.nn.SyncBatchNorm)
    assert isinstance(converted[2][0], gd.nn.SyncBatchNorm)
    reference = torch.nn.SyncBatchNorm(4).train()
    data = np.random.default_rng().standard_normal((2, 4, 5, 5)).astype(np.float32)
    ours = gd.nn.SyncBatchNorm(4)
    _close(ours(gd.tensor(data)), torch.nn.BatchNorm2d(4)(torch.tensor(data)), rtol=1e-4,
           atol=1e-5)
    reference.eval()
    ours.eval()
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    _close(ours(gd.tensor(data)), reference(torch.tensor(data)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["int32", "float16", "float64", "uint8", "bfloat16",
                                   "int16", "float32"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_view_as_dtype_matches_torch(dtype, layout):
    """x.view(dtype): the same bytes read as dtype (last dim scaled by the size ratio),
    sharing memory; torch's refusals (0-d, a strided last dim, a size not divisible)."""
    x = np.random.default_rng().standard_normal((2, 4)).astype(np.float32)
    ours, theirs = gd.tensor(x), torch.tensor(x)
    if layout == "transposed":
        ours, theirs = ours.t(), theirs.t()
    elif layout == "sliced":
        ours, theirs = ours[:, 1:], theirs[:, 1:]
    try:
        expected = theirs.view(getattr(torch, dtype))
    except RuntimeError:
        with pytest.raises(RuntimeError, match="view"):
            ours.view(getattr(gd, dtype))
        return
    got = ours.view(getattr(gd, dtype))
    assert got.shape == tuple(expected.shape) and got.dtype == getattr(gd, dtype)
    np.testing.assert_array_equal(got.float().numpy(), expected.float().numpy())


def test_view_as_dtype_shares_memory_and_leaves_the_graph():
    x = gd.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert not x.view(gd.int32).requires_grad and x.view(gd.float32).requires_grad
    y = gd.tensor([1.0, 2.0, 3.0])
    bits = y.view(gd.int32)
    bits[0] = 0
    assert y.tolist() == [0.0, 2.0, 3.0] and y._version == 1
    assert gd.ones(2, dtype=gd.bool).view(gd.uint8).tolist() == [1, 1]
    assert x.view(3).shape == (3,) and x.view(-1).shape == (3,)
    with pytest.raises(TypeError, match="not both"):
        x.view(3, dtype=gd.int32)
