"""gd.device objects, tensor.device, .to/.cuda/.cpu and Module.to, against torch's behaviour."""

import pickle

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn


def test_device_objects_parse_like_torch():
    for spec in ["cpu", "cuda", "cuda:0", ("cuda", 0), ("cpu", 0)]:
        ours = gd.device(*spec) if isinstance(spec, tuple) else gd.device(spec)
        theirs = torch.device(*spec) if isinstance(spec, tuple) else torch.device(spec)
        assert (ours.type, ours.index) == (theirs.type, theirs.index)
        assert str(ours) == str(theirs)
        assert repr(ours) == repr(theirs)
    assert gd.device(gd.device("cuda:0")) == gd.device("cuda", 0)
    assert pickle.loads(pickle.dumps(gd.device("cuda:0"))) == gd.device("cuda:0")


def test_device_compares_with_strings_and_devices():
    cpu, cuda0 = gd.device("cpu"), gd.device("cuda:0")
    assert cpu == "cpu" and cpu != "cuda" and cuda0 == "cuda" and cuda0 == "cuda:0"
    assert cuda0 == gd.device("cuda") and cuda0 != cpu
    assert cpu != "float32" and cpu != 3
    assert len({cpu, gd.device("cpu")}) == 1


def test_device_with_no_argument_is_the_default_device_name():
    assert gd.device() in ("cpu", "cuda") and isinstance(gd.device(), str)


@pytest.mark.parametrize("spec, error, pattern", [
    ("tpu", RuntimeError, "expected one of cpu, cuda"),
    ("cuda:x", RuntimeError, "invalid device string"),
    ("cuda:-1", RuntimeError, "invalid device string"),
    (3.0, TypeError, "expected a string"),
])
def test_bad_device_strings_are_refused_as_torch_does(spec, error, pattern):
    with pytest.raises(error, match=pattern):
        gd.device(spec)
    with pytest.raises(type(_torch_error(spec))):
        torch.device(spec)


def _torch_error(spec):
    try:
        torch.device(spec)
    except Exception as exc:
        return exc
    raise AssertionError(f"torch accepted {spec!r}")


def test_tensor_device_is_a_device_object():
    t = gd.zeros(2, device="cpu")
    assert isinstance(t.device, gd.device) and t.device == gd.device("cpu")
    assert gd.zeros(2, device=t.device).device == "cpu"
    assert gd.tensor([1.0], device=gd.device("cpu")).device.type == "cpu"


def test_to_accepts_device_dtype_tensor_and_non_blocking(rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    t, ref = gd.tensor(a, device="cpu"), torch.tensor(a)
    assert t.to("cpu") is t and t.to(gd.device("cpu"), non_blocking=True) is t
    assert t.to(torch.device("cpu")) is t                    # a torch.device works too
    for ours, theirs in [(t.to(gd.float64), ref.to(torch.float64)),
                         (t.to("cpu", gd.float16), ref.to("cpu", torch.float16)),
                         (t.to(dtype=gd.int64), ref.to(dtype=torch.int64)),
                         (t.to(gd.zeros(1, dtype=gd.float64)),
                          ref.to(torch.zeros(1, dtype=torch.float64)))]:
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    copied = t.to("cpu", copy=True)
    assert copied is not t and not np.shares_memory(copied.numpy(), t.numpy())
    assert t.cpu() is t


def test_to_keeps_the_graph(rng):
    w = gd.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    (w.to(gd.float64) * 2).sum().backward()
    assert w.grad.dtype == gd.float32
    np.testing.assert_array_equal(w.grad.numpy(), np.full(4, 2, np.float32))


@pytest.mark.skipif(gd.cuda.is_available(), reason="checks the cpu-only refusal")
def test_cuda_refused_clearly_without_a_gpu():
    assert gd.cuda.is_available() is False
    t = gd.zeros(2)
    for call in (lambda: t.cuda(), lambda: t.to("cuda"), lambda: t.to(gd.device("cuda:0")),
                 lambda: nn.Linear(2, 2).to(gd.device("cuda"))):
        with pytest.raises(RuntimeError, match="'cuda' requested"):
            call()
    assert t.device == "cpu"


def test_module_to_moves_in_place_and_returns_self(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = list(model.parameters())
    buffers = list(model.buffers())
    device = gd.device("cuda" if gd.cuda.is_available() else "cpu")
    assert model.to(device) is model
    assert model.to(device, non_blocking=True) is model
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert all(a is b for a, b in zip(buffers, model.buffers()))
    assert all(p.device == device for p in model.parameters())
    assert model.to(gd.float64) is model and params[0].dtype == gd.float64
    assert buffers[-1].dtype == gd.int64                     # num_batches_tracked stays integer
