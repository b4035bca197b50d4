"""Module state-dict hooks against torch's: the same calls (module, prefix) in the same order,
edits of the state dict, refusals through error_msgs, post-hooks clearing keys before the
strict check; and parametrizations.weight_norm loading an old-style weight_g/weight_v dict."""

import warnings

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn


def _nets():
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.ReLU(),
                                                                            torch.nn.Linear(4, 2)))
    ours = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _register(net, calls, lib):
    for name, module in net.named_modules():
        def pre(m, prefix, keep_vars, name=name):
            calls.append(("pre", name, prefix, keep_vars))

        def post(m, state_dict, prefix, meta, name=name):
            calls.append(("post", name, prefix, len(state_dict)))
            state_dict.pop(prefix + "bias", None)          # edits in place

        module.register_state_dict_pre_hook(pre)
        module.register_state_dict_post_hook(post)


def test_state_dict_hooks_run_as_torch():
    ours, theirs = _nets()
    ours_calls, theirs_calls = [], []
    _register(ours, ours_calls, gd)
    _register(theirs, theirs_calls, torch)
    ours_keys, theirs_keys = list(ours.state_dict()), list(theirs.state_dict())
    assert ours_calls == theirs_calls
    assert ours_keys == theirs_keys == ["0.weight", "1.1.weight"]


def test_state_dict_post_hook_must_return_none_and_handles_remove():
    lin = nn.Linear(2, 2)
    handle = lin.register_state_dict_post_hook(lambda m, sd, prefix, meta: {})
    with pytest.raises(RuntimeError, match="must return None"):
        lin.state_dict()
    handle.remove()
    assert list(lin.state_dict()) == ["weight", "bias"]


def test_load_pre_hook_renames_and_refuses_as_torch():
    ours, theirs = _nets()
    state = {k.replace("weight", "w"): v.numpy() for k, v in theirs.state_dict().items()}

    def rename(module, state_dict, prefix, meta, strict, missing, unexpected, errors):
        if prefix + "w" in state_dict:
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "w")

    for net in (ours, theirs):
        for _, module in net.named_modules():
            module.register_load_state_dict_pre_hook(rename)
    given = dict(state)
    ours.load_state_dict(state)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    assert state == given                               # the hooks edited a copy
    for (k, a), (k2, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    lin = nn.Linear(2, 2)
    before = lin.weight.numpy().copy()
    lin.register_load_state_dict_pre_hook(
        lambda m, sd, prefix, meta, strict, missing, unexpected, errors: errors.append("no"))
    with pytest.raises(RuntimeError, match="no"):
        lin.load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(2)})
    np.testing.assert_array_equal(lin.weight.numpy(), before)


def test_load_post_hook_may_clear_keys_before_the_strict_check():
    for lib in (nn, torch.nn):
        lin = lib.Linear(2, 2)
        seen = []

        def forgive(module, keys):
            seen.append((list(keys.missing_keys), list(keys.unexpected_keys)))
            keys.missing_keys.clear()
            keys.unexpected_keys.clear()

        lin.register_load_state_dict_post_hook(forgive)
        w = np.full((2, 2), 3.0, np.float32)
        result = lin.load_state_dict({"weight": torch.tensor(w) if lib is torch.nn else w,
                                      "extra": torch.zeros(1) if lib is torch.nn
                                      else np.zeros(1)})
        assert seen == [(["bias"], ["extra"])]
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert float(lin.weight.detach().numpy()[0, 0]) == 3.0


def test_parametrized_weight_norm_loads_old_style_keys(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = torch.nn.utils.weight_norm(torch.nn.Linear(4, 3).double())
    ours = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3).double())
    ours.load_state_dict({k: v.detach().numpy() for k, v in old.state_dict().items()})
    x = rng.standard_normal((2, 4))
    np.testing.assert_allclose(ours(gd.tensor(x)).numpy(),
                               old(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_assigning_a_parameter_to_a_parametrized_name_is_refused():
    lin = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        lin.weight = nn.Parameter(gd.ones(2, 3))
