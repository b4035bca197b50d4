"""Regression tests for the bugs the state/serialization fuzz (session 25, statefuzz) found:
checkpoints, optimizer/scheduler/module state, RNG state and data loading against torch CPU."""

import copy
import io
import pickle

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


def _pair(rng, lr=0.1):
    w0 = rng.standard_normal(4)
    tp = torch.nn.Parameter(torch.tensor(w0))
    gp = gd.nn.Parameter(gd.tensor(w0))
    return tp, torch.optim.SGD([tp], lr=lr, momentum=0.9), gp, gd.optim.SGD([gp], lr=lr, momentum=0.9)


def test_torch_checkpoint_with_multisteplr_milestones_resumes():
    """torch's MultiStepLR keeps its milestones in a collections.Counter: a torch.save'd
    {model, optimizer, scheduler} checkpoint was refused by gd.load."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((7, 4))
    tp, topt, gp, gopt = _pair(rng)
    tsched = torch.optim.lr_scheduler.MultiStepLR(topt, milestones=[2, 2, 5], gamma=0.5)
    gsched = gd.optim.lr_scheduler.MultiStepLR(gopt, milestones=[2, 2, 5], gamma=0.5)
    for g in grads[:3]:
        tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
    buf = io.BytesIO()
    torch.save({"w": tp.detach(), "opt": topt.state_dict(), "sched": tsched.state_dict()}, buf)
    ck = gd.load(io.BytesIO(buf.getvalue()))
    with gd.no_grad():
        gp.copy_(ck["w"])
    gopt.load_state_dict(ck["opt"])
    gsched.load_state_dict(ck["sched"])
    for g in grads[3:]:
        tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
        gp.grad = gd.tensor(g)
        gopt.step()
        gsched.step()
    np.testing.assert_allclose(gp.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert gsched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)


def test_torch_checkpoint_with_a_torch_size_loads_as_a_tuple():
    buf = io.BytesIO()
    torch.save({"shape": torch.Size([3, 4]), "w": torch.ones(3, 4)}, buf)
    loaded = gd.load(io.BytesIO(buf.getvalue()))
    assert loaded["shape"] == (3, 4) and type(loaded["shape"]) is tuple
    assert tuple(loaded["w"].shape) == loaded["shape"]


def _copies(module):
    return [copy.deepcopy(module), pickle.loads(pickle.dumps(module))]


def test_copied_model_does_not_carry_stale_grads():
    """torch drops .grad when deep-copying a Parameter and when pickling any tensor: a copied
    model's next backward starts from zero. gpudl kept the gradients, so the copy's first
    optimizer step added the original's stale gradient to the new one."""
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((2, 3)), rng.standard_normal(2)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    results = {}
    for lib in (torch, gd):
        m = lib.nn.Linear(3, 2).double()
        with lib.no_grad():
            m.weight.copy_(lib.tensor(w))
            m.bias.copy_(lib.tensor(b))
        (m(lib.tensor(x1)) ** 2).sum().backward()
        out = []
        for c in _copies(m):
            assert c.weight.grad is None and c.bias.grad is None
            (c(lib.tensor(x2)) ** 2).sum().backward()
            lib.optim.SGD(c.parameters(), lr=0.1).step()
            out.append(c.weight.detach().numpy().copy())
        assert m.weight.grad is not None          # the original keeps its own
        results[lib] = out
    for got, expected in zip(results[gd], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_deepcopy_of_a_plain_tensor_keeps_its_grad_pickle_does_not():
    for lib in (torch, gd):
        t = lib.ones(3, requires_grad=True)
        (t * 3).sum().backward()
        c = copy.deepcopy(t)
        assert c.grad is not None and c.grad is not t.grad
        assert c.grad.tolist() == [3.0, 3.0, 3.0]
        assert pickle.loads(pickle.dumps(t)).grad is None
        p = lib.nn.Parameter(lib.ones(2))
        d = copy.deepcopy({"a": p, "b": p})
        assert d["a"] is d["b"] and type(d["a"]).__name__ == "Parameter" and d["a"].requires_grad


@pytest.mark.parametrize("draw", [
    lambda lib, g: lib.randn(3, 4, generator=g),
    lambda lib, g: lib.randperm(9, generator=g),
    lambda lib, g: lib.empty(5).uniform_(-1, 1, generator=g),
    lambda lib, g: lib.multinomial(lib.tensor([0.2, 0.3, 0.5]), 4, replacement=True, generator=g),
])
def test_generator_get_state_set_state_repeat_the_draws(draw):
    """torch.Generator.get_state/set_state had no gpudl counterpart (AttributeError)."""
    for lib in (torch, gd):
        g = lib.Generator().manual_seed(5)
        draw(lib, g)
        state = g.get_state()
        assert state.dtype == lib.uint8 and state.ndim == 1
        first = draw(lib, g).numpy()
        g.set_state(state)
        np.testing.assert_array_equal(draw(lib, g).numpy(), first)
        other = lib.Generator().manual_seed(123)
        other.set_state(state)                       # another generator takes the stream over
        np.testing.assert_array_equal(draw(lib, other).numpy(), first)
    with pytest.raises(TypeError, match="new_state"):
        gd.Generator().set_state(np.zeros(40, np.uint8))


def test_fork_rng_restores_the_global_stream():
    for lib in (torch, gd):
        lib.manual_seed(3)
        lib.randn(2)
        with lib.random.fork_rng(devices=[]):
            lib.randn(5)
            lib.manual_seed(99)
            lib.nn.functional.dropout(lib.ones(6), 0.5)
        after = lib.randn(4).numpy()
        lib.manual_seed(3)
        lib.randn(2)
        np.testing.assert_array_equal(lib.randn(4).numpy(), after)


def _loader_subclasses(D):
    class Reversed(D.SequentialSampler):
        def __iter__(self):
            return iter(range(len(self.data_source) - 1, -1, -1))

    class EvenOnly(D.RandomSampler):
        def __iter__(self):
            return iter(range(0, len(self.data_source), 2))

        def __len__(self):
            return (len(self.data_source) + 1) // 2

    class SwappedPairs(D.BatchSampler):
        def __iter__(self):
            order = list(self.sampler)
            for i in range(0, len(order), 2):
                yield order[i:i + 2][::-1]

    class Scaled(D.TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x * 10, y

    return Reversed, EvenOnly, SwappedPairs, Scaled


@pytest.mark.parametrize("num_workers", [0, 1])
def test_dataloader_honours_overridden_sampler_and_dataset_methods(num_workers):
    """The DataLoader's whole-array shortcuts (a sampler's order(), BatchSampler.index_arrays,
    TensorDataset row gathers) skipped a subclass's own __iter__/__getitem__: the batches came
    in the base class's order, or without the subclass's transform."""
    got = {}
    for lib, D in ((torch, torch.utils.data), (gd, gd.data)):
        Reversed, EvenOnly, SwappedPairs, Scaled = _loader_subclasses(D)
        x, y = lib.arange(7), lib.arange(7) * 2
        ds = D.TensorDataset(x, y)
        loaders = [D.DataLoader(ds, batch_size=3, sampler=Reversed(ds), num_workers=num_workers),
                   D.DataLoader(ds, batch_size=3, sampler=EvenOnly(ds), num_workers=num_workers),
                   D.DataLoader(ds, batch_sampler=SwappedPairs(D.SequentialSampler(ds), 3, False),
                                num_workers=num_workers),
                   D.DataLoader(Scaled(x, y), batch_size=3, num_workers=num_workers)]
        got[lib] = [[[t.tolist() for t in batch] for batch in loader] for loader in loaders]
    assert got[gd] == got[torch]


def test_shuffle_order_does_not_depend_on_num_workers():
    """Each new iterator draws the workers' base seed, in torch with or without workers; gpudl
    drew it only with workers, so from the second epoch on a seeded generator gave other batches
    with num_workers=1 than with num_workers=0."""
    def epochs(lib, D, num_workers):
        loader = D.DataLoader(D.TensorDataset(lib.arange(7)), batch_size=2, shuffle=True,
                              num_workers=num_workers, generator=lib.Generator().manual_seed(4))
        return [[b[0].tolist() for b in loader] for _ in range(3)]

    for lib, D in ((torch, torch.utils.data), (gd, gd.data)):
        assert epochs(lib, D, 1) == epochs(lib, D, 0)


def test_extra_state_round_trips_through_state_dict():
    """torch's get_extra_state/set_extra_state: gpudl left the extra state out of state_dict
    and never called set_extra_state, so a load silently kept the fresh module's value."""
    results = {}
    for lib in (torch, gd):
        class Counted(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = lib.nn.Linear(2, 2)
                self.count = 0

            def get_extra_state(self):
                return {"count": self.count}

            def set_extra_state(self, state):
                self.count = state["count"]

        source = lib.nn.Sequential(Counted(), lib.nn.Linear(2, 1))
        source[0].count = 7
        sd = source.state_dict()
        target = lib.nn.Sequential(Counted(), lib.nn.Linear(2, 1))
        target.load_state_dict(sd)
        del sd["0._extra_state"]
        report = lib.nn.Sequential(Counted(), lib.nn.Linear(2, 1)).load_state_dict(sd, strict=False)
        with pytest.raises(RuntimeError, match="0._extra_state"):
            lib.nn.Sequential(Counted(), lib.nn.Linear(2, 1)).load_state_dict(sd)
        results[lib] = (list(source.state_dict()), target[0].count, list(report.missing_keys))
    assert results[gd] == results[torch] == (
        ["0._extra_state", "0.lin.weight", "0.lin.bias", "1.weight", "1.bias"], 7,
        ["0._extra_state"])
    buf = io.BytesIO()                                   # and through a gpudl checkpoint
    gd.save(dict(gd.nn.Sequential(gd.nn.Linear(1, 1)).state_dict(), extra={"count": 3}), buf)
    assert gd.load(io.BytesIO(buf.getvalue()))["extra"] == {"count": 3}


def _legacy_classes(lib):
    class Renamed(lib.nn.Module):
        """Loads checkpoints from before a rename (old_w, stored halved)."""
        def __init__(self):
            super().__init__()
            self.w = lib.nn.Parameter(lib.zeros(2))
            self.bn = lib.nn.BatchNorm1d(2)

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing,
                                  unexpected, errors):
            old = prefix + "old_w"
            if old in state_dict:
                state_dict[prefix + "w"] = state_dict.pop(old) * 2
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing,
                                          unexpected, errors)

    class Packed(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = lib.nn.Parameter(lib.ones(2))

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            destination[prefix + "packed"] = self.w.detach() * 10

    return Renamed, Packed


def test_overridden_load_from_and_save_to_state_dict_are_called():
    """torch's per-module hook points: gpudl never called a subclass's _load_from_state_dict or
    _save_to_state_dict, so a converting override was silently skipped."""
    out = {}
    for lib in (torch, gd):
        Renamed, Packed = _legacy_classes(lib)
        m = lib.nn.Sequential(lib.nn.Linear(2, 2), Renamed())
        sd = dict(m.state_dict())
        sd["1.old_w"] = sd.pop("1.w") + 1.5
        first = m.load_state_dict(sd)
        sd.pop("0.bias")
        sd["junk"] = lib.zeros(1)
        sd["1.bn.junk"] = lib.zeros(1)
        report = m.load_state_dict(sd, strict=False)
        with pytest.raises(RuntimeError, match='Missing key.*"0.bias"'):
            m.load_state_dict(sd)
        sd["0.bias"], sd["0.weight"] = lib.zeros(2), lib.zeros(3, 2)
        with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
            m.load_state_dict(sd, strict=False)
        saved = lib.nn.Sequential(Packed()).state_dict()
        out[lib] = (m[1].w.tolist(), list(first.missing_keys), list(report.missing_keys),
                    list(report.unexpected_keys), {k: v.tolist() for k, v in saved.items()})
    assert out[gd] == out[torch] == ([3.0, 3.0], [], ["0.bias"], ["junk", "1.bn.junk"],
                                     {"0.packed": [10.0, 10.0]})


def test_bfloat16_checkpoint_loads_from_a_file_object():
    """gd.load of a file object (BytesIO) refused bfloat16 tensors ('BF16': safetensors.numpy's
    bytes reader lacks the dtype), while the same checkpoint loaded from a path."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(2)
    values = rng.standard_normal((3, 2)).astype(np.float32)
    buf = io.BytesIO()
    gd.save({"w": gd.tensor(values).to(gd.bfloat16), "h": gd.tensor(values).half()}, buf)
    loaded = gd.load(io.BytesIO(buf.getvalue()))
    expected = torch.tensor(values).bfloat16().float().numpy()
    assert loaded["w"].dtype == gd.bfloat16
    np.testing.assert_array_equal(loaded["w"].float().numpy(), expected)
    np.testing.assert_array_equal(loaded["h"].float().numpy(), values.astype(np.float16))
    loaded["w"].add_(1.0)                                # writable, not a view of the bytes
    theirs = gd.load(io.BytesIO(safetensors_torch.save({"t": torch.tensor(values).bfloat16()})))
    np.testing.assert_array_equal(theirs["t"].float().numpy(), expected)
