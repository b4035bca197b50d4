"""Lazy modules, UninitializedParameter/Buffer, nn.Buffer and Module.set_submodule, against
torch: inferred sizes, state-dict keys and shapes, the class after the first call, the values a
directly built layer gets from the same seed, and loading torch's state before the first call."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 conv on cuda

CASES = [  # lazy class, regular class, constructor kwargs, input shape, size attribute
    ("LazyLinear", "Linear", {"out_features": 4}, (3, 7), "in_features"),
    ("LazyConv1d", "Conv1d", {"out_channels": 4, "kernel_size": 3, "groups": 2}, (2, 6, 9),
     "in_channels"),
    ("LazyConv2d", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}, (2, 3, 5, 5),
     "in_channels"),
    ("LazyConv2d", "Conv2d", {"out_channels": 4, "kernel_size": 2}, (3, 5, 5), "in_channels"),
    ("LazyConvTranspose2d", "ConvTranspose2d", {"out_channels": 4, "kernel_size": 3,
                                                "groups": 2, "stride": 2}, (2, 6, 4, 4),
     "in_channels"),
    ("LazyBatchNorm1d", "BatchNorm1d", {}, (8, 5), "num_features"),
    ("LazyBatchNorm2d", "BatchNorm2d", {"momentum": 0.3}, (4, 3, 4, 4), "num_features"),
    ("LazyInstanceNorm1d", "InstanceNorm1d", {}, (4, 3, 6), "num_features"),
    ("LazyInstanceNorm2d", "InstanceNorm2d", {"affine": False}, (2, 3, 4, 4), "num_features"),
]


@pytest.mark.parametrize("lazy,regular,kwargs,shape,attr", CASES)
def test_lazy_module_becomes_the_regular_one(rng, lazy, regular, kwargs, shape, attr):
    x = rng.standard_normal(shape).astype(np.float32)
    module = getattr(nn, lazy)(**kwargs)
    assert getattr(module, attr) == 0 and module.has_uninitialized_params()
    held = list(module.parameters())                       # as an optimizer built now would
    assert all(isinstance(p, nn.UninitializedParameter) for p in held)
    gd.manual_seed(11)
    out = module(gd.tensor(x))
    assert type(module) is getattr(nn, regular) and not hasattr(module, "_initialize_hook")
    assert [p for p in module.parameters()] == held or not held
    assert all(type(p) is nn.Parameter for p in held)
    size = shape[1] if len(shape) > 2 or "Linear" not in lazy else shape[-1]
    if lazy == "LazyConv2d" and len(shape) == 3:
        size = shape[0]
    assert getattr(module, attr) == size
    # the values a layer built directly for that size gets from the same seed
    gd.manual_seed(11)
    direct_kwargs = dict(kwargs)
    size_key = {"in_features": "in_features", "in_channels": "in_channels",
                "num_features": "num_features"}[attr]
    direct = getattr(nn, regular)(**{size_key: size}, **direct_kwargs)
    for (k, a), (k2, b) in zip(module.named_parameters(), direct.named_parameters()):
        assert k == k2
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=k)
    # torch's lazy module: the same keys and shapes, and with its state, the same output
    theirs = getattr(torch.nn, lazy)(**kwargs)
    t_out = theirs(torch.tensor(x))
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in module.state_dict().items()}
    fresh = getattr(nn, lazy)(**kwargs)
    fresh.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_allclose(fresh(gd.tensor(x)).numpy(), t_out.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert out.shape == tuple(t_out.shape)


def test_lazy_module_keeps_device_dtype_and_refuses_bad_input():
    lazy = nn.LazyLinear(3, dtype=gd.float64)
    lazy(gd.randn(2, 4, dtype=gd.float64))
    assert lazy.weight.dtype == gd.float64
    conv = nn.LazyConv2d(4, 3, groups=2)
    with pytest.raises(ValueError, match="in_channels \\(3\\) must be divisible by groups"):
        conv(gd.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match="Expected 3D \\(unbatched\\) or 4D"):
        conv(gd.randn(5, 5))
    assert conv.has_uninitialized_params()                  # refused: still lazy
    to64 = nn.LazyLinear(2).double()
    to64(gd.randn(1, 3, dtype=gd.float64))
    assert to64.weight.dtype == gd.float64


def test_lazy_state_dict_before_the_first_call_materializes_on_load():
    theirs = torch.nn.LazyLinear(3)
    theirs(torch.randn(2, 5))
    ours = nn.LazyLinear(3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert ours.weight.shape == (3, 5) and not ours.has_uninitialized_params()
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())


def test_uninitialized_parameter_materializes_in_place():
    p = nn.UninitializedParameter(dtype=gd.float64)
    q = p
    p.materialize((2, 3))
    assert q is p and type(p) is nn.Parameter and p.shape == (2, 3) and p.dtype == gd.float64
    b = nn.UninitializedBuffer()
    b.materialize((4,))
    assert type(b) is gd.Tensor and not b.requires_grad


def test_buffer_assignment_registers_a_buffer():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.kept = nn.Buffer(gd.ones(2))
            self.scratch = nn.Buffer(gd.zeros(3), persistent=False)

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.kept = torch.nn.Buffer(torch.ones(2))
            self.scratch = torch.nn.Buffer(torch.zeros(3), persistent=False)

    ours, theirs = Net(), TorchNet()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["kept"]
    assert [k for k, _ in ours.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    ours.kept = gd.full((2,), 5.0)                         # a plain tensor replaces it
    assert "kept" in ours._buffers and ours.kept.numpy().tolist() == [5.0, 5.0]
    source = gd.ones(2, requires_grad=True)
    assert nn.Buffer(source).requires_grad and nn.Buffer(source).data is not None


def test_set_submodule_matches_torch():
    ours = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    ours.set_submodule("1.0", nn.Tanh())
    assert isinstance(ours[1][0], nn.Tanh)
    ours.set_submodule("1.extra", nn.Identity())
    assert isinstance(ours.get_submodule("1.extra"), nn.Identity)
    with pytest.raises(AttributeError, match="has no attribute `missing`"):
        ours.set_submodule("1.missing", nn.Tanh(), strict=True)
    with pytest.raises(ValueError, match="not an nn.Module"):
        ours.set_submodule("1.0", 3)
    with pytest.raises(AttributeError, match="`weight` is not an nn.Module"):
        ours.set_submodule("0.weight", nn.Tanh())
    with pytest.raises(ValueError, match="without a target name"):
        ours.set_submodule("", nn.Tanh())
