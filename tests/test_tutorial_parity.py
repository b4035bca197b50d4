"""Idioms of PyTorch's intermediate tutorials (seq2seq, transformer LM, DCGAN, VAE, transfer
learning, SWA/EMA) that gpudl refused or answered differently, each checked side by side
against torch with the same weights and data."""

import numpy as np
import pytest
import torch

import gpudl as gd


def _copy_weights(source, target):
    target.load_state_dict({k: gd.tensor(v.detach().numpy()) for k, v in
                            source.state_dict().items()})


def _small_bn_net(module):
    nn = module.nn
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


def test_randint_like_takes_the_shape_dtype_and_bounds_as_torch(rng):
    like = rng.standard_normal((3, 5)).astype(np.float32)
    for args in ((7,), (2, 7)):
        ours, theirs = gd.randint_like(gd.tensor(like), *args), torch.randint_like(
            torch.tensor(like), *args)
        assert ours.shape == tuple(theirs.shape) and str(ours.dtype) == "float32"
        values, low = ours.numpy(), (0 if len(args) == 1 else args[0])
        assert values.min() >= low and values.max() < args[-1]
        assert np.array_equal(values, np.round(values))
    assert gd.randint_like(gd.tensor(like), 4, dtype=gd.int64).dtype == gd.int64


@pytest.mark.parametrize("averaging", ["swa", "ema_multi", "ema_buffers"])
def test_averaged_model_follows_torch_swa_and_ema(rng, averaging):
    batches = rng.standard_normal((4, 8, 4)).astype(np.float32)
    results = {}
    theirs_net = _small_bn_net(torch)
    ours_net = _small_bn_net(gd)
    _copy_weights(theirs_net, ours_net)
    for module, net in ((torch, theirs_net), (gd, ours_net)):
        swa_utils = module.optim.swa_utils
        make = {"swa": lambda: swa_utils.AveragedModel(net),
                "ema_multi": lambda: swa_utils.AveragedModel(
                    net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9)),
                "ema_buffers": lambda: swa_utils.AveragedModel(
                    net, avg_fn=swa_utils.get_ema_avg_fn(0.8), use_buffers=True)}[averaging]
        averaged = make()
        optimizer = module.optim.SGD(net.parameters(), lr=0.5)
        for batch in batches:
            optimizer.zero_grad()
            net(module.tensor(batch)).pow(2).mean().backward()
            optimizer.step()
            averaged.update_parameters(net)
        if averaging == "swa":
            swa_utils.update_bn([module.tensor(b) for b in batches], averaged)
        averaged.eval()
        results[module.__name__] = ({k: np.asarray(v.detach().cpu().numpy()) for k, v in
                                     averaged.state_dict().items()},
                                    averaged(module.tensor(batches[0])).detach().numpy())
    (ours_state, ours_out), (theirs_state, theirs_out) = results["gpudl"], results["torch"]
    assert list(ours_state) == list(theirs_state)
    for key in theirs_state:
        np.testing.assert_allclose(ours_state[key], theirs_state[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
        assert ours_state[key].dtype == theirs_state[key].dtype
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy,anneal_epochs", [("cos", 3), ("linear", 2), ("cos", 0)])
def test_swalr_anneals_each_group_as_torch(strategy, anneal_epochs):
    lrs = {}
    for module in (torch, gd):
        optimizer = module.optim.SGD(
            [{"params": [module.nn.Parameter(module.ones(2))], "lr": 1.0},
             {"params": [module.nn.Parameter(module.ones(2))], "lr": 0.2}], lr=0.1)
        scheduler = module.optim.swa_utils.SWALR(optimizer, swa_lr=[0.1, 0.5],
                                                 anneal_epochs=anneal_epochs,
                                                 anneal_strategy=strategy)
        seen = [scheduler.get_last_lr()]
        for _ in range(5):
            optimizer.step()
            scheduler.step()
            seen.append(scheduler.get_last_lr())
        lrs[module.__name__] = np.array(seen)
    np.testing.assert_allclose(lrs["gpudl"], lrs["torch"], rtol=1e-12)


def test_swa_utils_refuse_bad_settings_naming_them():
    swa_utils = gd.optim.swa_utils
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\], got 1.5"):
        swa_utils.get_ema_multi_avg_fn(1.5)
    optimizer = gd.optim.SGD(gd.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="anneal_strategy must be 'cos' or 'linear', got 'exp'"):
        swa_utils.SWALR(optimizer, 0.05, anneal_strategy="exp")
    with pytest.raises(ValueError, match="anneal_epochs must be an int >= 0, got -1"):
        swa_utils.SWALR(optimizer, 0.05, anneal_epochs=-1)
    assert "swa_lr" not in optimizer.param_groups[0]     # a refused call changes nothing


def _checkpointed_net(module):
    nn = module.nn
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_checkpoint_gives_torch_values_and_gradients(rng, use_reentrant, input_requires_grad):
    """torch's reentrant checkpoint gives no gradient at all when no input requires grad."""
    data = rng.standard_normal((4, 5)).astype(np.float32)
    theirs_net = _checkpointed_net(torch)
    ours_net = _checkpointed_net(gd)
    _copy_weights(theirs_net, ours_net)
    results = {}
    for module, net in ((torch, theirs_net), (gd, ours_net)):
        checkpointing = module.utils.checkpoint
        x = module.tensor(data, requires_grad=input_requires_grad)
        hidden = checkpointing.checkpoint(net[0:2], x, use_reentrant=use_reentrant)
        out = checkpointing.checkpoint_sequential(net[2:], 2, hidden,
                                                  use_reentrant=use_reentrant)
        seen = [hidden.detach().numpy(), out.detach().numpy(), out.requires_grad]
        if out.requires_grad:
            out.pow(2).sum().backward()
        seen += [None if t.grad is None else t.grad.numpy() for t in [x, *net.parameters()]]
        results[module.__name__] = seen
    for ours, theirs in zip(results["gpudl"], results["torch"]):
        if theirs is None or isinstance(theirs, bool):
            assert ours is theirs
        else:
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_checkpoint_replays_dropout_with_the_first_runs_random_state(rng):
    data = rng.standard_normal((6, 5)).astype(np.float32)
    net = gd.nn.Sequential(gd.nn.Linear(5, 8), gd.nn.Dropout(0.5), gd.nn.Linear(8, 2))
    grads = []
    for run in (lambda x: gd.utils.checkpoint.checkpoint(net, x, use_reentrant=False), net):
        net.zero_grad()
        x = gd.tensor(data, requires_grad=True)
        gd.manual_seed(5)
        run(x).pow(2).sum().backward()
        grads.append([t.grad.numpy() for t in [x, *net.parameters()]])
    for checkpointed, plain in zip(*grads):
        np.testing.assert_allclose(checkpointed, plain, rtol=1e-6)


def test_checkpoint_gradients_come_from_autograd_grad_too(rng):
    net = _checkpointed_net(gd)
    data = rng.standard_normal((3, 5)).astype(np.float32)
    found = []
    for run in (lambda x: gd.utils.checkpoint.checkpoint(net, x, use_reentrant=False), net):
        x = gd.tensor(data, requires_grad=True)
        found.append(gd.autograd.grad(run(x).sum(), [x, *net.parameters()]))
    for checkpointed, plain in zip(*found):
        np.testing.assert_allclose(checkpointed.numpy(), plain.numpy(), rtol=1e-6)
    assert all(p.grad is None for p in net.parameters())


def test_checkpoint_refuses_a_hidden_tensor_that_requires_grad(rng):
    """Its gradient would be silently missing: the recomputation cannot return it."""
    hidden = gd.nn.Parameter(gd.tensor(rng.standard_normal(5).astype(np.float32)))
    x = gd.tensor(rng.standard_normal((2, 5)).astype(np.float32), requires_grad=True)
    out = gd.utils.checkpoint.checkpoint(lambda a: a * hidden, x, use_reentrant=False)
    with pytest.raises(RuntimeError, match=r"reads a tensor of shape \(5,\) that requires grad"):
        out.sum().backward()
    assert hidden.grad is None


def test_autograd_backward_takes_a_sequence_of_tensors_as_torch(rng):
    """torch.autograd.backward([loss_a, loss_b], [grad_a, grad_b]): one walk from all."""
    data = rng.standard_normal(4).astype(np.float32)
    seed = rng.standard_normal(4).astype(np.float32)
    grads = {}
    for module in (torch, gd):
        x = module.tensor(data, requires_grad=True)
        hidden = x.tanh()
        squared = hidden * hidden
        module.autograd.backward([hidden, squared.sum(), x.sum()],
                                 grad_tensors=[module.tensor(seed), None, None])
        grads[module.__name__] = x.grad.numpy()
    np.testing.assert_allclose(grads["gpudl"], grads["torch"], rtol=1e-6)
    x = gd.tensor(data, requires_grad=True)
    with pytest.raises(RuntimeError, match="got 2 grad_tensors for 1 tensors"):
        gd.autograd.backward([x.sum()], [None, None])
    with pytest.raises(TypeError, match=r"tensors\[1\] must be a Tensor, got int"):
        gd.autograd.backward([x.sum(), 3])
    assert x.grad is None


def test_nn_modules_paths_hold_the_base_classes_as_torch(rng):
    """Fine-tuning with frozen BatchNorm statistics:
    isinstance(m, nn.modules.batchnorm._BatchNorm), as torch."""
    from gpudl.nn.modules.conv import _ConvNd
    from gpudl.nn.modules.loss import _Loss
    data = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)

    def frozen_norm_stats(module):
        nn = module.nn
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.Identity())
        net.train()
        for layer in net.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()
        return net

    theirs, ours = frozen_norm_stats(torch), frozen_norm_stats(gd)
    _copy_weights(theirs, ours)
    np.testing.assert_allclose(ours(gd.tensor(data)).detach().numpy(),
                               theirs(torch.tensor(data)).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[1].running_mean.numpy(), np.zeros(4, np.float32))
    assert issubclass(gd.nn.ConvTranspose2d, _ConvNd) and issubclass(gd.nn.MSELoss, _Loss)
    assert gd.nn.modules.Linear is gd.nn.Linear
    assert gd.nn.modules.transformer.TransformerEncoderLayer is gd.nn.TransformerEncoderLayer


def test_checkpoint_refuses_torch_options_it_lacks_instead_of_passing_them_on(rng):
    x = gd.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    seen = []

    def takes_anything(a, **kwargs):
        seen.append(kwargs)
        return a * 2

    with pytest.raises(NotImplementedError, match="context_fn and debug are not supported"):
        gd.utils.checkpoint.checkpoint(takes_anything, x, use_reentrant=False,
                                       context_fn=lambda: (None, None))
    with pytest.raises(ValueError, match="determinism_check must be 'default' or 'none'"):
        gd.utils.checkpoint.checkpoint(takes_anything, x, use_reentrant=False,
                                       determinism_check="strict")
    assert seen == []


def _pruned_net(module):
    nn = module.nn
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def test_pruning_tutorial_steps_match_torch(rng):
    import torch.nn.utils.prune  # noqa: F401  (torch does not import it with nn.utils)
    data = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    importance = rng.random((3, 16)).astype(np.float32)
    theirs_net, ours_net = _pruned_net(torch), _pruned_net(gd)
    _copy_weights(theirs_net, ours_net)
    seen = {}
    for module, net in ((torch, theirs_net), (gd, ours_net)):
        prune, steps = module.nn.utils.prune, []
        prune.l1_unstructured(net[0], "weight", amount=0.3)
        prune.l1_unstructured(net[0], "weight", amount=5)      # 5 more of those left
        prune.l1_unstructured(net[3], "weight", amount=0.25,
                              importance_scores=module.tensor(importance))
        steps.append(list(net.state_dict()))
        out = net(module.tensor(data))
        out.pow(2).sum().backward()
        steps += [out, net[0].weight, *(p.grad for p in net.parameters()), *net.buffers()]
        prune.global_unstructured([(net[0], "weight"), (net[3], "weight"), (net[3], "bias")],
                                  pruning_method=prune.L1Unstructured, amount=0.4)
        steps += list(net.buffers())
        prune.remove(net[0], "weight")
        prune.remove(net[3], "weight")
        steps += [list(net.state_dict()), prune.is_pruned(net), *net.parameters()]
        prune.custom_from_mask(net[3], "bias", mask=module.tensor([1.0, 0.0, 1.0]))
        steps.append(net[3].bias)
        seen[module.__name__] = steps
    for ours, theirs in zip(seen["gpudl"], seen["torch"]):
        if isinstance(theirs, (list, bool)):
            assert ours == theirs
        else:
            np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_pruning_refuses_bad_amounts_naming_them():
    net = gd.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"amount=1.5 should either be a float in the range"):
        gd.nn.utils.prune.l1_unstructured(net, "weight", amount=1.5)
    with pytest.raises(ValueError, match="amount=7 should be smaller than the number of "
                                         "parameters to prune=6"):
        gd.nn.utils.prune.l1_unstructured(net, "weight", amount=7)
    with pytest.raises(TypeError, match="Invalid type for amount: 0.3"):
        gd.nn.utils.prune.random_unstructured(net, "weight", amount="0.3")
    with pytest.raises(ValueError, match="has to be pruned before pruning can be removed"):
        gd.nn.utils.prune.remove(net, "weight")
    assert list(net.state_dict()) == ["weight", "bias"] and not gd.nn.utils.prune.is_pruned(net)
