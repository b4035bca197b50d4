"""Idioms of PyTorch's first-hour tutorials (60-minute blitz, Learn the basics) that gpudl
refused or answered differently, each checked side by side against torch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gpudl as gd
from torch_gaps import torch_pads_a_forced_sci_mode


def test_where_with_the_condition_alone_gives_the_indices_as_torch(rng):
    values = rng.integers(-2, 3, (3, 4))
    for condition in (values, values > 0):
        ours, theirs = gd.where(gd.tensor(condition)), torch.where(torch.tensor(condition))
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            assert a.dtype == gd.int64
    with pytest.raises(TypeError, match="pass both input and other, or neither"):
        gd.where(gd.tensor(values > 0), gd.ones(4))


def test_a_0d_tensor_formats_as_its_value_as_torch(rng):
    """print(f"loss: {loss:>7f}") in a training loop, with or without .item()."""
    value = float(rng.standard_normal())
    for make, spec in ((lambda m: m.tensor(value), ">7f"), (lambda m: m.tensor(value), ""),
                       (lambda m: m.tensor(value, requires_grad=True) * 2, ".3e"),
                       (lambda m: m.tensor(7), "04d"), (lambda m: m.tensor([value]), "")):
        assert format(make(gd).cpu(), spec) == format(make(torch), spec)   # no device= shown
    for module in (gd, torch):       # a spec for a tensor with elements, or a Parameter
        for refused in (module.tensor([value]), module.nn.Parameter(module.tensor(value))):
            with pytest.raises(TypeError, match="unsupported format string"):
                format(refused, ".2f")


@pytest.mark.parametrize("edit", [
    lambda t, m: t.add_(m.ones(2, 3)), lambda t, m: t.sub_(m.ones(4)),
    lambda t, m: t.mul_(m.ones(2, 3)), lambda t, m: t.div_(m.ones(2, 1)),
    lambda t, m: t.clamp_(min=m.zeros(2, 3)), lambda t, m: t.copy_(m.ones(2, 3)),
    lambda t, m: t.copy_(m.ones(4))])
def test_in_place_edits_that_would_grow_the_tensor_raise_runtime_error_as_torch(rng, edit):
    """torch's RuntimeError (NumPy's ValueError leaked before), and the tensor is unchanged."""
    values = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(RuntimeError):
        edit(torch.tensor(values), torch)
    ours = gd.tensor(values)
    with pytest.raises(RuntimeError, match=r"does not broadcast to the shape \(3,\)"):
        edit(ours, gd)
    np.testing.assert_array_equal(ours.numpy(), values)
    leaf = gd.tensor(values, requires_grad=True).clone()        # the recorded path too
    with pytest.raises(RuntimeError, match="does not broadcast"):
        edit(leaf, gd)


def test_torchs_short_dtype_names(rng):
    values = rng.standard_normal(4) * 100
    for name in ("float", "double", "half", "long", "int", "short", "bool"):
        ours = gd.tensor(values).to(getattr(gd, name))
        theirs = torch.tensor(values).to(getattr(torch, name))
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("values", [
    [1.0, 2.5], [[0.1, 0.25], [3.0, -4.5]], [1e-5, 1.0], [1e10, 1.0], [2000.0, 1.0],
    [float("nan"), 1.5], [float("inf"), -2.0, 3.0], [0.0, 0.0], 3.0, np.arange(2000.0),
    ((5, 1200), 1.0), ((7, 9), 1000.0)])
def test_float_tensors_print_as_torch(rng, values):
    """Four decimals, whole numbers as "2.", scientific notation on a wide spread, summarised
    over 1000 elements, the dtype moved to a new line past 80 columns."""
    if isinstance(values, tuple):                   # (shape, scale) of random normals
        shape, scale = values
        values = rng.standard_normal(shape) * scale
    for dtype in (np.float32, np.float64):
        array = np.asarray(values, dtype=dtype)
        ours = gd.tensor(array, device="cpu")       # the default device may be cuda
        assert repr(ours).replace("gpudl.", "torch.") == repr(torch.tensor(array))
    assert repr(gd.zeros(0, 3, device="cpu")) == repr(torch.zeros(0, 3))


def test_batches_of_tuples_are_lists_as_torch(rng):
    """torch's collate (and batch_size=None's convert) turns a tuple sample into a list batch,
    so `batch[0] = batch[0].to(device)` works; a namedtuple keeps its type."""
    x, y = rng.standard_normal((5, 2)).astype(np.float32), rng.integers(0, 3, 5)
    for options in ({"batch_size": 2}, {"batch_size": None}, {"batch_size": 2, "num_workers": 1}):
        ours = next(iter(gd.utils.data.DataLoader(gd.utils.data.TensorDataset(x, y), **options)))
        theirs = next(iter(torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), **options)))
        assert type(ours) is type(theirs) is list
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    samples = [(int(i), x[i]) for i in range(3)]
    assert type(gd.utils.data.default_collate(samples)) is \
        type(torch.utils.data.default_collate(samples)) is list


def test_a_lone_tensor_saves_and_loads_as_torch(rng, tmp_path):
    """torch.save(x, path) of the tutorials; a view saves its own values."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    torch.save(torch.tensor(x)[1:], tmp_path / "t.pt")
    gd.save(gd.tensor(x)[1:], tmp_path / "g.safetensors")
    ours, theirs = gd.load(tmp_path / "g.safetensors"), torch.load(tmp_path / "t.pt")
    assert isinstance(ours, gd.Tensor) and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_reading_the_grad_of_a_non_leaf_warns_as_torch(rng):
    """The blitz's first autograd surprise: a non-leaf's .grad is None after backward, and
    torch says why (retain_grad); leaves, retained and grad-less tensors stay quiet."""
    import warnings
    values = rng.standard_normal(3)
    for module in (gd, torch):
        x = module.tensor(values, requires_grad=True)
        hidden, kept = x * 2, x * 3
        kept.retain_grad()
        (hidden * kept).sum().backward()
        with pytest.warns(UserWarning, match="not a leaf Tensor is being accessed"):
            assert hidden.grad is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert x.grad is not None and kept.grad is not None
            assert module.tensor(values).grad is None and hidden.detach().grad is None


@pytest.mark.parametrize("source, wanted", [(np.float32, "float64"), (np.float64, "float32"),
                                            (np.int64, "float64"), (np.float64, "float64")])
def test_as_tensor_converts_to_the_dtype_asked_and_shares_only_without_one(rng, source, wanted):
    """as_tensor(float32 array, dtype=float64) was returned float32, sharing the array:
    NumPy compares a dtype equal to None when it is float64."""
    array = (rng.standard_normal(4) * 10).astype(source)
    ours = gd.as_tensor(array, dtype=getattr(gd, wanted))
    theirs = torch.as_tensor(array, dtype=getattr(torch, wanted))
    array[0] = 99
    assert str(ours.dtype) == wanted
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())    # shared only when same


def test_softmax_of_a_fully_masked_row_is_nan_without_numpy_warnings(rng):
    """A padded row masked with -inf everywhere: nan as torch gives it, and no NumPy
    RuntimeWarning printed on every attention step."""
    import warnings
    scores = rng.standard_normal((3, 4)).astype(np.float32)
    scores[1] = -np.inf
    for name in ("softmax", "log_softmax"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = getattr(gd, name)(gd.tensor(scores), dim=1)
        theirs = getattr(torch, name)(torch.tensor(scores), dim=1)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-7)


def test_detect_anomaly_names_the_backward_that_made_nan_as_torch(rng):
    values = np.abs(rng.standard_normal(3)) + 0.5
    values[1] = 0.0                                   # sqrt's gradient at 0 * 0 -> nan
    for module in (gd, torch):
        x = module.tensor(values, requires_grad=True)
        with module.autograd.detect_anomaly():
            assert module.is_anomaly_enabled()
            loss = (x.sqrt() * (x > 0)).sum()
            with pytest.raises(RuntimeError, match=r"Function 'Sqrt\w*' returned nan values "
                                                   r"in its 0th output"):
                loss.backward()
        assert not module.is_anomaly_enabled()
        module.autograd.set_detect_anomaly(False)     # off: nan flows into .grad silently
        (x.sqrt() * (x > 0)).sum().backward()
        assert np.isnan(x.grad.numpy()[1])


@pytest.mark.parametrize("options", [
    {"precision": 2}, {"sci_mode": False}, {"sci_mode": True}, {"threshold": 5, "edgeitems": 1},
    {"linewidth": 40}, {"profile": "short"}, {"profile": "full"},
    {"profile": "short", "precision": 3, "sci_mode": True}])
def test_set_printoptions_as_torch(rng, options):
    if "sci_mode" in options and not torch_pads_a_forced_sci_mode():
        pytest.skip(f"torch {torch.__version__} lays out a forced sci_mode as 2.13 does not")
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal(30) * 1000, np.array([1e-5, 1.0]),
              np.array([1e10, 1.0]), rng.standard_normal((2, 5, 6)), np.arange(1200.0)]
    try:
        gd.set_printoptions(**options)
        torch.set_printoptions(**options)
        for array in arrays:
            ours = repr(gd.tensor(array, device="cpu")).replace("gpudl.", "torch.")
            assert ours == repr(torch.tensor(array))
    finally:
        gd.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")
    assert repr(gd.tensor([1.123456], device="cpu")) == "tensor([1.1235])"
    with pytest.raises(ValueError, match="profile must be one of"):
        gd.set_printoptions(profile="long")


@pytest.mark.parametrize("call", [lambda m, x: x[:1].std(), lambda m, x: x.reshape(-1, 1).var(1),
                                  lambda m, x: m.std_mean(x, correction=x.numel())[0]])
def test_std_and_var_without_degrees_of_freedom_warn_as_torch(rng, call):
    import warnings
    values = rng.standard_normal(4)
    results = []
    for module in (gd, torch):
        with pytest.warns(UserWarning, match="degrees of freedom is <= 0"):
            results.append(call(module, module.tensor(values)).numpy())
    np.testing.assert_allclose(*results)                 # nan, or inf for a sum over 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gd.tensor(values).std()                      # enough elements: quiet


def test_a_tensor_in_a_graph_pickles_as_a_leaf_as_torch(rng):
    """pickle keeps the values and requires_grad, not the history (which failed to pickle:
    "cannot pickle 'module' object"); deepcopy, which torch refuses here, copies the same way."""
    import copy
    import pickle
    values = rng.standard_normal(3)
    ours, theirs = [pickle.loads(pickle.dumps((module.tensor(values, requires_grad=True) * 2)[1:]))
                    for module in (gd, torch)]
    assert ours.is_leaf and ours.requires_grad and theirs.is_leaf and theirs.requires_grad
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    model = gd.nn.Linear(3, 1)
    model.last_output = model(gd.tensor(values[None], dtype=gd.float32))   # a cached non-leaf
    clone = copy.deepcopy(model)
    assert clone.last_output.is_leaf and clone.last_output is not model.last_output
    np.testing.assert_array_equal(clone.last_output.detach().numpy(),
                                  model.last_output.detach().numpy())


@pytest.mark.parametrize("requires_grad", [False, True])
def test_assigning_a_value_that_does_not_broadcast_raises_runtime_error_as_torch(
        rng, requires_grad):
    values = rng.standard_normal((2, 3))
    for module in (gd, torch):
        target = module.tensor(values, requires_grad=requires_grad).clone()
        with pytest.raises(RuntimeError):
            target[0] = module.ones(2, 3)
        np.testing.assert_array_equal(target.detach().numpy(), values)     # unchanged
    ours = gd.tensor(values, requires_grad=requires_grad).clone()
    with pytest.raises(RuntimeError, match=r"__setitem__: a value of shape \(2, 3\) does not "
                                           "broadcast"):
        ours[0] = gd.ones(2, 3)



def test_numpys_floating_point_warnings_stay_inside_gpudls_ops():
    # torch gives inf and nan silently; gpudl's CPU ops printed NumPy's RuntimeWarnings, while
    # a user's own NumPy code keeps them. A fresh interpreter: the filter is set at import, and
    # pytest drops filters set while it collects (this file imports gpudl then)
    script = """if True:
        import warnings
        import numpy as np
        import gpudl as gd
        warnings.filterwarnings("error", category=RuntimeWarning, append=True)
        zero, one = gd.tensor([0.0, 1.0]), gd.tensor([1.0, 1000.0])
        assert zero.log().numpy()[0] == -np.inf and (one / zero).numpy()[0] == np.inf
        assert np.isinf(one.exp().numpy()[1]) and np.isnan((zero / zero).numpy()[0])
        try:
            np.log(np.zeros(1))
        except RuntimeWarning as warning:
            print("user's own:", warning)
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "GPUDL_DEVICE": "cpu"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "user's own: divide by zero encountered in log\n"


def test_compile_runs_the_model_as_it_is_and_checks_its_arguments():
    model = gd.nn.Linear(2, 3)
    assert gd.compile(model) is model
    assert gd.compile(mode="reduce-overhead", fullgraph=True)(model) is model
    double = gd.compile(lambda x: x * 2, dynamic=True)
    np.testing.assert_array_equal(double(gd.ones(2)).numpy(), [2.0, 2.0])
    with pytest.raises(RuntimeError, match="unrecognized mode='fast'"):
        gd.compile(model, mode="fast")
    with pytest.raises(RuntimeError, match="either mode or options"):
        gd.compile(model, mode="default", options={})
    with pytest.raises(TypeError, match="model must be a Module or a function, got int"):
        gd.compile(3)


def test_torch_cuda_amp_names_warn_and_are_the_amp_classes():
    with pytest.warns(FutureWarning, match=r"gd.amp.GradScaler\('cuda'"):
        scaler = gd.cuda.amp.GradScaler(init_scale=8.0)
    assert isinstance(scaler, gd.amp.GradScaler)
    # without the cuda device the scaler disables itself (a warning), and reports 1.0 as torch's
    assert scaler.get_scale() == (8.0 if gd.cuda.is_available() else 1.0)
    with pytest.warns(FutureWarning, match=r"gd.amp.autocast\('cuda'"):
        region = gd.cuda.amp.autocast(enabled=False)
    assert isinstance(region, gd.amp.autocast) and region.device == "cuda"
    with region:
        assert gd.ones(2, 2).matmul(gd.ones(2, 2)).dtype == gd.float32


@pytest.mark.parametrize("data", [[1, 2, 3], [[True, False]], (2, 3), np.arange(4),
                                  np.ones((2, 2), np.float64)])
def test_the_legacy_tensor_constructor_makes_default_float_tensors_as_torch(data):
    """torch.Tensor(data) is float32 whatever data holds (gd.tensor keeps data's dtype)."""
    ours, theirs = gd.Tensor(data), torch.Tensor(data)
    assert ours.dtype == gd.float32 and theirs.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_the_legacy_tensor_constructor_sizes_and_aliases_as_torch():
    assert gd.Tensor(2, 3).shape == tuple(torch.Tensor(2, 3).shape)
    assert gd.Tensor(4).shape == tuple(torch.Tensor(4).shape) == (4,)
    assert gd.Tensor().shape == tuple(torch.Tensor().shape) == (0,)
    weight = gd.nn.Parameter(gd.Tensor(5, 3))            # a custom layer's usual start
    gd.nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
    assert weight.shape == (5, 3) and weight.requires_grad and weight.dtype == gd.float32
    ints = gd.tensor([1, 2])
    alias = gd.Tensor(ints)                              # a Tensor: shared as it is, as torch
    assert alias.dtype == gd.int64
    alias.add_(1)
    assert ints.tolist() == [2, 3]
    with pytest.raises(TypeError, match="Tensor: expected data, or sizes as ints, got list, int"):
        gd.Tensor([1], 2)


def test_torch_cuda_queries_of_seeding_scripts_answer_without_a_gpu():
    """set_seed() helpers call torch.cuda.manual_seed_all; memory logs call memory_allocated."""
    gd.manual_seed(0)
    first = gd.rand(3, device="cpu")
    gd.manual_seed(0)
    gd.cuda.manual_seed_all(7)                     # the cpu generator goes on as it was
    gd.cuda.manual_seed(7)
    np.testing.assert_array_equal(gd.rand(3, device="cpu").numpy(), first.numpy())
    gd.cuda.empty_cache()
    assert gd.cuda.memory_allocated() >= 0 and gd.cuda.memory_reserved() >= 0
    assert gd.backends.mps.is_available() is torch.backends.mps.is_available() is False
    if not gd.cuda.is_available():
        assert gd.cuda.memory_allocated() == torch.cuda.memory_allocated() == 0
        with pytest.raises(RuntimeError, match="cuda.get_device_name: the cuda device is not"):
            gd.cuda.get_device_name(0)
    else:
        assert isinstance(gd.cuda.get_device_name(), str) and gd.cuda.current_device() == 0


def test_cuda_manual_seed_repeats_the_cuda_stream():
    if not gd.cuda.is_available():
        pytest.skip("needs the cuda device (a GPU, or the simulator)")
    draws = []
    for _ in range(2):
        gd.cuda.manual_seed(11)
        draws.append(gd.randn(4, device="cuda").numpy())
    np.testing.assert_array_equal(*draws)


def test_torch_constants_size_and_conjugate_transposes():
    for name in ("inf", "nan", "pi", "e"):
        ours, theirs = getattr(gd, name), getattr(torch, name)
        assert ours == theirs or (np.isnan(ours) and np.isnan(theirs))
    assert gd.ones(2, 3).shape == gd.Size([2, 3]) == tuple(torch.Size([2, 3]))
    assert gd.Size([2, 3]).numel() == torch.Size([2, 3]).numel() == 6
    data = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(gd.tensor(data).H.numpy(), torch.tensor(data).H.numpy())
    batch = np.arange(12.0).reshape(2, 2, 3)
    np.testing.assert_array_equal(gd.tensor(batch).mH.numpy(), torch.tensor(batch).mH.numpy())
    with pytest.raises(RuntimeError, match="only supported on matrices"):
        gd.ones(3).H


def test_exponential_and_random_fills_have_torchs_ranges():
    gd.manual_seed(1)
    draws = gd.empty(200_000).exponential_(4.0).numpy()
    assert draws.min() >= 0 and abs(draws.mean() - 0.25) < 0.01 and abs(draws.std() - 0.25) < 0.01
    for args, low, high in (((3, 9), 3, 8), ((5,), 0, 4), ((-2, 2), -2, 1)):
        values = gd.empty(2000, dtype=gd.int64).random_(*args).numpy()
        assert values.min() == low and values.max() == high
    floats = gd.empty(5000).random_().numpy()          # [0, 2**24] for float32, as torch
    assert floats.min() >= 0 and floats.max() <= 2 ** 24 and floats.max() > 2 ** 23
    assert np.array_equal(floats, np.round(floats))
    with pytest.raises(ValueError, match="lambd must be positive"):
        gd.empty(2).exponential_(0)
    with pytest.raises(ValueError, match="expected from_ < to"):
        gd.empty(2).random_(4, 4)


def test_module_type_casts_its_parameters():
    model = gd.nn.Linear(2, 3).type(gd.float64)
    assert model.weight.dtype == model.bias.dtype == gd.float64


def test_assert_close_uses_torchs_tolerances_and_reports_the_worst_element():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = a + np.array([0, 1e-6, 0], np.float32)          # within float32's rtol 1.3e-6
    gd.testing.assert_close(gd.tensor(a), gd.tensor(b))
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b))
    far = a + np.array([0, 0.5, 0], np.float32)
    for module in (gd, torch):
        with pytest.raises(AssertionError, match=r"Mismatched elements: 1 / 3 \(33.3%\)"
                                                 r"\nGreatest absolute difference: 0.5 at index "
                                                 r"\(1,\)"):
            module.testing.assert_close(module.tensor(a), module.tensor(far))
    with pytest.raises(AssertionError, match="different dtypes: float32 and float64"):
        gd.testing.assert_close(gd.tensor(a), gd.tensor(a.astype(np.float64)))
    gd.testing.assert_close(gd.tensor(a), gd.tensor(a.astype(np.float64)), check_dtype=False)
    gd.testing.assert_close({"w": [gd.tensor(a), 2]}, {"w": [gd.tensor(b), 2]})
    with pytest.raises(AssertionError, match="shapes"):
        gd.testing.assert_close(gd.ones(2), gd.ones(3))
    with pytest.raises(ValueError, match="pass both rtol and atol"):
        gd.testing.assert_close(gd.ones(2), gd.ones(2), rtol=1e-3)
