"""Module machinery against torch.nn.Module: registration, traversal, state dicts, modes, to()."""

import subprocess
import sys

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from oracle import torch
from torch_gaps import torch_norms_take_bias

tnn = torch.nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(6, 3), nn.Linear(6, 2)])
        self.extra = nn.ModuleDict({"norm": nn.LayerNorm(3), "drop": nn.Dropout(0.5)})
        self.scale = nn.Parameter(gd.ones(3))
        self.register_buffer("steps", gd.zeros(1))
        self.register_buffer("scratch", gd.zeros(2), persistent=False)

    def forward(self, x):
        h = self.features(x)
        return self.extra["norm"](self.heads[0](h) * self.scale), self.heads[1](h)


class TorchNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(tnn.Linear(4, 6), tnn.BatchNorm1d(6), tnn.ReLU())
        self.heads = tnn.ModuleList([tnn.Linear(6, 3), tnn.Linear(6, 2)])
        self.extra = tnn.ModuleDict({"norm": tnn.LayerNorm(3), "drop": tnn.Dropout(0.5)})
        self.scale = tnn.Parameter(torch.ones(3))
        self.register_buffer("steps", torch.zeros(1))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)

    def forward(self, x):
        h = self.features(x)
        return self.extra["norm"](self.heads[0](h) * self.scale), self.heads[1](h)


def torch_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_state_dict_keys_and_shapes_match_torch():
    ours, theirs = Net(), TorchNet()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, v), (_, tv) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert v.shape == tuple(tv.shape), k
    assert ours.state_dict()["features.1.num_batches_tracked"].dtype == np.int64
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]


@pytest.mark.parametrize("prefix", ["encoder.", "encoder", ""])
def test_state_dict_prefix_is_prepended_as_torch(prefix):
    ours, theirs = Net(), TorchNet()
    assert list(ours.state_dict(prefix=prefix)) == list(theirs.state_dict(prefix=prefix))
    destination = {}
    ours.heads.state_dict(destination, "heads.")
    assert list(destination) == list(theirs.heads.state_dict(prefix="heads."))


def test_named_members_remove_duplicate_false_lists_shared_layers_again():
    shared, tshared = nn.Linear(2, 2), tnn.Linear(2, 2)
    ours, theirs = nn.Sequential(shared, nn.Tanh(), shared), tnn.Sequential(tshared, tnn.Tanh(),
                                                                           tshared)
    ours.register_buffer("b", gd.zeros(1))
    theirs.register_buffer("b", torch.zeros(1))
    for remove_duplicate in (True, False):
        assert [n for n, _ in ours.named_parameters(remove_duplicate=remove_duplicate)] == \
            [n for n, _ in theirs.named_parameters(remove_duplicate=remove_duplicate)]
        assert [n for n, _ in ours.named_buffers(remove_duplicate=remove_duplicate)] == \
            [n for n, _ in theirs.named_buffers(remove_duplicate=remove_duplicate)]


def test_state_dict_values_are_detached_and_share_data():
    model = Net()
    sd = model.state_dict()
    assert not sd["scale"].requires_grad and model.scale.requires_grad
    assert np.shares_memory(sd["scale"]._data, model.scale._data)
    assert sd["scale"] is not model.scale
    assert model.state_dict(keep_vars=True)["scale"] is model.scale


def test_load_torch_state_dict_reproduces_torch_outputs(rng):
    theirs = TorchNet()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
        theirs.features[1].running_mean.copy_(torch.tensor(rng.standard_normal(6)))
        theirs.features[1].running_var.copy_(torch.tensor(rng.random(6) + 0.5))
        theirs.features[1].num_batches_tracked.fill_(7)
    ours = Net()
    result = ours.load_state_dict(torch_state(theirs))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    assert ours.features[1].num_batches_tracked.item() == 7
    assert ours.features[0].weight.dtype == np.float32      # dtype of the model kept
    ours.eval(), theirs.eval()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for a, b in zip(ours(gd.tensor(x)), theirs(torch.tensor(x))):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_load_accepts_gpudl_tensors_and_lists_and_keeps_identity():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    weight = a.weight
    a.load_state_dict(b.state_dict())
    assert a.weight is weight
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    a.load_state_dict({"weight": [[1, 2, 3], [4, 5, 6]], "bias": np.zeros(2)})
    assert a.weight.dtype == np.float32 and a.weight.numpy()[1, 2] == 6


def test_refused_load_names_every_bad_key_and_changes_nothing():
    model = Net()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    sd = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    del sd["heads.1.bias"], sd["features.1.running_var"]
    sd["heads.0.weight"] = np.zeros((2, 6))
    sd["bogus.weight"] = np.zeros(3)
    sd["features.0.bias"] = np.zeros(5)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    for key in ("heads.1.bias", "features.1.running_var", "bogus.weight", "heads.0.weight",
                "features.0.bias"):
        assert key in message
    assert "(2, 6)" in message and "(3, 6)" in message and "(5,)" in message
    assert isinstance(info.value, ValueError)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_non_strict_load_reports_keys_but_still_refuses_shape_mismatch():
    model = nn.Linear(3, 2)
    result = model.load_state_dict({"weight": np.ones((2, 3)), "other": np.ones(1)},
                                   strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]
    assert np.all(model.weight.numpy() == 1)
    with pytest.raises(ValueError, match="size mismatch for weight"):
        model.load_state_dict({"weight": np.ones((3, 2))}, strict=False)


def test_load_refuses_non_numeric_values():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="bias"):
        model.load_state_dict({"weight": np.ones((1, 2)), "bias": np.array(["a"])})
    with pytest.raises(TypeError):
        model.load_state_dict([("weight", 1)])


def test_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(gd.zeros(2))
    m.child = nn.Linear(1, 1)
    m.plain = gd.zeros(1)                       # a plain tensor attribute is not state
    assert list(m._parameters) == ["w"] and list(m._modules) == ["child"]
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    with pytest.raises(TypeError, match="Parameter or None"):
        m.w = gd.zeros(2)
    m.w = None
    assert m.w is None and [n for n, _ in m.named_parameters()] == ["child.weight", "child.bias"]
    m.register_buffer("b", gd.ones(1))
    with pytest.raises(TypeError):
        m.b = 3
    m.b = gd.zeros(1)
    assert m._buffers["b"].item() == 0
    del m.child
    assert not hasattr(m, "child")
    with pytest.raises(KeyError):
        m.register_buffer("plain", gd.zeros(1))
    with pytest.raises(KeyError, match="must not be empty"):
        m.register_parameter("a.b", None)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gd.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Forgot()


def test_shared_parameters_listed_once():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    tl = tnn.Linear(2, 2)
    assert list(model.state_dict()) == list(tnn.Sequential(tl, tnn.ReLU(), tl).state_dict())


def test_train_eval_propagate_and_dropout_obeys():
    model = Net()
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.extra["drop"].eval()
    assert model.training and not model.extra["drop"].training
    with pytest.raises(ValueError):
        model.train("yes")


def test_to_dtype_keeps_parameter_identity_and_int_buffers():
    model = Net()
    params = list(model.parameters())
    model(gd.randn(3, 4))[0].sum().backward()
    model.to(gd.float64)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(p.grad.dtype == np.float64 for p in model.parameters() if p.grad is not None)
    assert model.features[1].running_mean.dtype == np.float64
    assert model.features[1].num_batches_tracked.dtype == np.int64
    out = model(gd.randn(3, 4, dtype=gd.float64))
    assert out[0].dtype == np.float64
    model.float()
    assert model.scale.dtype == np.float32
    assert model.to("cpu") is model
    with pytest.raises(TypeError):
        model.to(gd.int64)


def test_zero_grad_and_requires_grad():
    model = nn.Linear(3, 2)
    model(gd.randn(4, 3)).sum().backward()
    model.zero_grad(set_to_none=False)
    assert np.all(model.weight.grad.numpy() == 0)
    model.zero_grad()
    assert model.weight.grad is None
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_apply_visits_children_first():
    order = []
    model = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU()))
    model.apply(lambda m: order.append(type(m).__name__))
    assert order == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_repr_matches_torch():
    if not torch_norms_take_bias():
        pytest.skip(f"torch {torch.__version__}'s norm layers take no bias keyword, nor show it")
    ours = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.BatchNorm1d(3),
                         nn.Dropout(0.25), nn.LayerNorm(3), nn.Embedding(10, 3, padding_idx=0),
                         nn.Flatten(), nn.Softmax(dim=1), nn.GELU(approximate="tanh"),
                         nn.LeakyReLU(0.2), nn.CrossEntropyLoss(), nn.LayerNorm(3, bias=False),
                         nn.BatchNorm2d(3, bias=False), nn.LogSoftmax(1), nn.ELU(), nn.SiLU(),
                         nn.Hardtanh(), nn.ReLU6(), nn.Softplus(), nn.MSELoss(reduction="sum"),
                         nn.Unflatten(1, (2, 3)), nn.Identity(), nn.BCEWithLogitsLoss(),
                         nn.Sigmoid(), nn.Tanh())
    theirs = tnn.Sequential(tnn.Linear(4, 3, bias=False), tnn.ReLU(), tnn.BatchNorm1d(3),
                            tnn.Dropout(0.25), tnn.LayerNorm(3),
                            tnn.Embedding(10, 3, padding_idx=0), tnn.Flatten(),
                            tnn.Softmax(dim=1), tnn.GELU(approximate="tanh"),
                            tnn.LeakyReLU(0.2), tnn.CrossEntropyLoss(),
                            tnn.LayerNorm(3, bias=False), tnn.BatchNorm2d(3, bias=False),
                            tnn.LogSoftmax(1), tnn.ELU(), tnn.SiLU(), tnn.Hardtanh(), tnn.ReLU6(),
                            tnn.Softplus(), tnn.MSELoss(reduction="sum"),
                            tnn.Unflatten(1, (2, 3)), tnn.Identity(), tnn.BCEWithLogitsLoss(),
                            tnn.Sigmoid(), tnn.Tanh())
    assert repr(ours) == repr(theirs)
    assert repr(Net()).startswith("Net(\n  (features): Sequential(\n    (0): Linear(")
    assert repr(nn.Parameter(gd.ones(2))).startswith("Parameter containing:\ntensor(")


def test_parameter_construction():
    t = gd.randn(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, gd.Tensor) and p.requires_grad and p._data is t._data
    assert nn.Parameter(np.ones(2), requires_grad=False).requires_grad is False
    assert type(p * 2) is gd.Tensor
    with pytest.raises(RuntimeError):
        nn.Parameter(gd.tensor([1, 2]))        # integers cannot require grad


def test_parameter_from_tensor_keeps_the_device_name():
    """Tensors hold their device as a name; a Parameter built from a tensor once held the device
    object, and every op on it then parsed a device string in Function.apply."""
    t = gd.randn(2)
    p = nn.Parameter(t)
    assert type(p._device) is str and p._device == t._device
    assert p.device == t.device


def test_sequential_indexing_and_editing():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[-1] is layers[2] and list(seq) == layers
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub._modules) == ["1", "2"]
    seq.append(nn.Sigmoid())
    assert list(seq._modules) == ["0", "1", "2", "3"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and seq[1] is layers[2]
    seq[0] = nn.Identity()
    assert isinstance(seq[0], nn.Identity)
    with pytest.raises(IndexError, match="out of range"):
        seq[7]
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    x = gd.randn(3, 2)
    np.testing.assert_allclose(named(x).numpy(), named.act(named.fc(x)).numpy())


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml.append(nn.ReLU())
    ml.extend([nn.Tanh()])
    ml.insert(0, nn.Sigmoid())
    assert [type(m).__name__ for m in ml] == ["Sigmoid", "Linear", "ReLU", "Tanh"]
    assert list(ml.state_dict()) == ["1.weight", "1.bias"]
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    with pytest.raises(TypeError):
        ml.extend(nn.Linear(1, 1))
    md = nn.ModuleDict({"a": nn.Linear(1, 2)})
    md["b"] = nn.ReLU()
    assert list(md) == ["a", "b"] and "a" in md and len(md) == 2
    assert md.pop("b").__class__ is nn.ReLU and list(md.keys()) == ["a"]
    assert list(md.state_dict()) == ["a.weight", "a.bias"]


def test_forward_missing_and_nn_does_not_reach_the_training_loop():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)
    assert not hasattr(nn.Sequential(), "compile")     # Keras's training: gpudl.keras
    code = "import sys, gpudl.nn; print(sorted(m for m in sys.modules if m.split('.')[:2] in " \
           "(['gpudl', 'train'], ['gpudl', 'keras'], ['gpudl', 'data'], ['gpudl', 'callbacks'])))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_get_submodule():
    model = Net()
    assert model.get_submodule("features.0") is model.features[0]
    with pytest.raises(AttributeError, match="nope"):
        model.get_submodule("features.nope")


def test_deepcopy_gives_independent_parameters():
    import copy
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    clone = copy.deepcopy(model)
    assert isinstance(clone[0].weight, nn.Parameter) and clone[0].weight.requires_grad
    clone[0].weight.data[...] = 0
    clone[1].running_mean.data[...] = 5
    assert model[0].weight.numpy().any() and not model[1].running_mean.numpy().any()
    assert list(clone.state_dict()) == list(model.state_dict())


# ---------------------------------------------------------------- forward hooks
def _hooked_run(nn_, lib):
    """The same hooks on gpudl's and torch's layers: what each saw and what came out."""
    log = []
    model = nn_.Sequential(nn_.Linear(3, 4), nn_.ReLU(), nn_.Linear(4, 2))
    model[0].register_forward_pre_hook(lambda m, args: args[0] * 2)         # one value
    model[0].register_forward_hook(lambda m, args, out: log.append(tuple(out.shape)))
    zero = model[2].register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    plus_one = model.register_forward_hook(lambda m, args, out: out + 1)
    model[1].register_forward_pre_hook(lambda m, args: log.append("second"))
    model[1].register_forward_pre_hook(lambda m, args: log.append("first"), prepend=True)
    model[2].register_forward_hook(lambda m, args, kwargs, out: log.append(sorted(kwargs)),
                                   with_kwargs=True)
    x = lib.ones(5, 3)
    hooked = model(x).detach().numpy().copy()
    bias = model[2].bias.detach().numpy()
    zero.remove()
    plus_one.remove()
    plus_one.remove()                                   # a second remove changes nothing
    with model[0].register_forward_hook(lambda m, args, out: log.append("in with")):
        model(x)
    unhooked = model(x)
    return np.allclose(hooked, bias + 1), tuple(unhooked.shape), log


def test_forward_hooks_run_replace_and_remove_as_torchs():
    ours, theirs = _hooked_run(nn, gd), _hooked_run(tnn, torch)
    assert ours == theirs
    assert ours[0] is True and "in with" in ours[2]


def test_forward_hook_must_be_callable():
    with pytest.raises(TypeError, match="register_forward_hook: hook must be callable"):
        nn.Linear(2, 2).register_forward_hook("print")


def _backward_hooked_run(lib, x_values, y_values):
    """Full backward hooks on a two-input module (one input needs no gradient) inside a model:
    what the hooks saw, a replaced input gradient, a removed hook."""

    class Gate(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = lib.nn.Parameter(lib.tensor([1.5, -0.5, 2.0], dtype=lib.float64))

        def forward(self, x, y, k=2):
            return x * self.scale * k + y, (x * y).sum(1)

    gate, layer = Gate(), lib.nn.Linear(3, 3).double()
    layer.load_state_dict({"weight": lib.tensor(x_values[:3]), "bias": lib.tensor(y_values[0])})
    log = []
    gate.register_full_backward_hook(lambda m, grad_in, grad_out: log.append(
        [None if g is None else g.detach().numpy().copy() for g in grad_in + grad_out]))
    gate.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0] * 3, None))
    removed = layer.register_full_backward_hook(lambda m, grad_in, grad_out: log.append("no"))
    removed.remove()
    x = lib.tensor(x_values, requires_grad=True)
    h = layer(x)
    out, side = gate(h, lib.tensor(y_values), k=3)
    (out.pow(2).sum() + side.sum()).backward()
    return log, x.grad.numpy(), gate.scale.grad.numpy()


def test_full_backward_hooks_see_and_replace_gradients_as_torchs(rng):
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    (our_log, our_x, our_scale), (their_log, their_x, their_scale) = (
        _backward_hooked_run(gd, x, y), _backward_hooked_run(torch, x, y))
    assert len(our_log) == len(their_log) == 1
    # torch gives zeros for the tensor input that needs no gradient, gpudl None
    assert our_log[0][1] is None and not their_log[0][1].any()
    for ours, theirs in zip(our_log[0][:1] + our_log[0][2:], their_log[0][:1] + their_log[0][2:]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(our_x, their_x, rtol=1e-12)
    np.testing.assert_allclose(our_scale, their_scale, rtol=1e-12)
    with pytest.raises(TypeError, match="register_full_backward_hook: hook must be callable"):
        nn.Linear(2, 2).register_full_backward_hook(None)


def _pre_hooked_run(lib, x_values, w_values):
    log = []
    first, second = lib.nn.Linear(3, 4).double(), lib.nn.Linear(4, 2).double()
    for layer, w in ((first, w_values[:4, :3]), (second, w_values[:2, :4])):
        layer.load_state_dict({"weight": lib.tensor(w), "bias": lib.tensor(w[:, 0])})
    second.register_full_backward_pre_hook(lambda m, grad_out: log.append(
        grad_out[0].detach().numpy().copy()))
    second.register_full_backward_pre_hook(lambda m, grad_out: (grad_out[0] * -2,))
    first.register_full_backward_hook(lambda m, grad_in, grad_out: log.append(
        grad_out[0].detach().numpy().copy()))
    removed = first.register_full_backward_pre_hook(lambda m, grad_out: (grad_out[0] * 0,))
    removed.remove()
    x = lib.tensor(x_values, requires_grad=True)
    second(lib.tanh(first(x))).pow(2).sum().backward()
    return log, x.grad.numpy(), first.weight.grad.numpy()


def test_full_backward_pre_hooks_see_and_replace_output_gradients_as_torchs(rng):
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((4, 4))
    ours, theirs = _pre_hooked_run(gd, x, w), _pre_hooked_run(torch, x, w)
    assert len(ours[0]) == len(theirs[0]) == 2
    for a, b in zip(ours[0] + list(ours[1:]), theirs[0] + list(theirs[1:])):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(TypeError, match="register_full_backward_pre_hook: hook must be callable"):
        nn.Linear(2, 2).register_full_backward_pre_hook(3)


def test_get_parameter_and_get_buffer_as_torch():
    ours, theirs = Net(), TorchNet()
    for target in ("features.0.weight", "scale", "heads.1.bias"):
        assert ours.get_parameter(target) is dict(ours.named_parameters())[target]
        assert ours.get_parameter(target).shape == tuple(theirs.get_parameter(target).shape)
    assert ours.get_buffer("features.1.running_var") is ours.features[1].running_var
    for method, target in (("get_parameter", "features.1.running_mean"),
                           ("get_buffer", "features.0.weight"), ("get_parameter", "nope.weight")):
        with pytest.raises(AttributeError):
            getattr(theirs, method)(target)
        with pytest.raises(AttributeError, match=target.rpartition(".")[2] if "nope" not in
                           target else "nope"):
            getattr(ours, method)(target)
