"""The multi-tensor updates of the optimizers (gpudl/multi_tensor.py) without a GPU:
their CUDA source runs as host C++ over the whole grid (fused_emulator.HostRawKernel), against
the per-parameter fused kernels (foreach=False; bit for bit) and torch.optim; the source compiles
with NVRTC; the table's NumPy layout is the C struct's."""

import ctypes
import re
import shutil

import numpy as np
import pytest
from fused_emulator import DeviceLike, HostKernel, HostRawKernel, _build_shared_library, nvrtc_ptx
from optim_cases import CASES, case_id

import gpudl as gd
from gpudl import backend, optim
from gpudl import multi_tensor
from gpudl.optim import adam, adam_variants, classic, rmsprop

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")

BATCHED = [c for c in CASES if c[0] in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam",
                                         "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD")]
CAPTURABLE = ("Adam", "AdamW", "RMSprop")
# sizes around the chunk and slot boundaries: several blocks per tensor, a partial last block,
# one-element and empty tensors
SIZES = [(3, 5), (7,), (1,), (multi_tensor.CHUNK + 17,), (0,), (2, 3, 2),
         (2, multi_tensor.CHUNK + 1)]


@pytest.fixture
def fake_gpu(monkeypatch):
    if backend._cupy is not None:
        pytest.skip("emulates a GPU: on one, the real kernels run (the last test here)")
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(backend, "elementwise_kernel", HostKernel)
    monkeypatch.setattr(backend, "raw_kernel", HostRawKernel)
    monkeypatch.setattr(HostKernel, "calls", 0)
    monkeypatch.setattr(HostRawKernel, "launches", 0)
    # state buffers of a device-like parameter are device-like (CuPy makes them on the device)
    made = adam.new_state_buffer

    def new_state_buffer(param, *fill):
        buffer = made(param, *fill)
        if isinstance(param._data, DeviceLike):
            buffer._data = buffer._data.view(DeviceLike)
        return buffer
    for module in (adam, adam_variants, classic, rmsprop):
        monkeypatch.setattr(module, "new_state_buffer", new_state_buffer)


def _device(array):
    return np.ascontiguousarray(array).view(DeviceLike)


def _run(rng_state, name, options, sizes, steps, dtype=np.float32, skips=()):
    """gpudl parameters and optimizer state after ``steps`` steps on device-like arrays; the
    parameters numbered in ``skips`` have no gradient in the first steps (their step counts
    lag)."""
    rng = np.random.default_rng(rng_state)
    params = [gd.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in sizes]
    for p in params:
        p._data = _device(p._data)
    opt = getattr(optim, name)(params, **options)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = gd.tensor((rng.standard_normal(p.shape) *
                                rng.choice([1e-3, 1.0, 10.0])).astype(dtype))
            p.grad._data = _device(p.grad._data)
            if i in skips and step < 2:
                p.grad = None
        opt.step()
    state = [{k: backend.to_numpy(v._data if hasattr(v, "_data") else np.asarray(v)).copy()
              for k, v in opt.state[p].items()} for p in params]
    return [np.asarray(p._data).copy() for p in params], state


def _same_bits(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("case", BATCHED, ids=case_id)
def test_one_launch_per_step_matches_the_per_parameter_kernels_bit_for_bit(case, capturable,
                                                                         fake_gpu):
    name, options = case
    if options.get("foreach") is False:
        pytest.skip("foreach=False: the per-parameter path by request")
    if capturable and name not in CAPTURABLE:
        pytest.skip(f"{name} has no capturable option")
    options = {**options, **({"capturable": True} if capturable else {})}
    steps = 8       # RAdam rectifies from its sixth step, ASGD(t0=5) averages in its eighth
    batched, batched_state = _run(7, name, options, SIZES, steps)
    launches, per_parameter_calls = HostRawKernel.launches, HostKernel.calls
    assert launches == steps * (2 if capturable else 1)     # + the step counts' increment
    assert per_parameter_calls == 0
    looped, looped_state = _run(7, name, {**options, "foreach": False}, SIZES, steps)
    assert HostKernel.calls > 0 and HostRawKernel.launches == launches
    _same_bits(batched, looped)
    for ours, theirs in zip(batched_state, looped_state):
        assert ours.keys() == theirs.keys()
        _same_bits([ours[k] for k in sorted(ours)], [theirs[k] for k in sorted(theirs)])


@pytest.mark.parametrize("case", BATCHED, ids=case_id)
def test_multi_tensor_update_matches_torch(case, rng, fake_gpu):
    name, options = case
    sizes = [(3, 5), (7,), (1,), (300,)]
    ours, _ = _run(11, name, options, sizes, steps=8)
    # the same parameters and gradients for torch: replay the generator
    gen = np.random.default_rng(11)
    tparams = [torch.tensor(gen.standard_normal(s).astype(np.float32), requires_grad=True)
               for s in sizes]
    topt = getattr(torch.optim, name)(tparams, **options)
    for _ in range(8):
        for p in tparams:
            p.grad = torch.tensor((gen.standard_normal(tuple(p.shape)) *
                                   gen.choice([1e-3, 1.0, 10.0])).astype(np.float32))
        topt.step()
    for a, b in zip(ours, tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name, options", [("RAdam", {"lr": 0.01}),
                                           ("ASGD", {"lr": 0.02, "t0": 1})])
def test_tensors_whose_steps_differ_take_one_launch_per_variant(name, options, fake_gpu):
    """Two parameters without gradients in the first two steps: from RAdam's sixth step (ASGD's
    third) the others are rectified (averaged) while these are not yet, two variants of the
    lines in two launches a step, and the same bits as the per-parameter kernels."""
    steps = 7
    batched, batched_state = _run(8, name, options, SIZES, steps, skips=(1, 3))
    assert HostRawKernel.launches > steps
    looped, looped_state = _run(8, name, {**options, "foreach": False}, SIZES, steps,
                                skips=(1, 3))
    _same_bits(batched, looped)
    for ours, theirs in zip(batched_state, looped_state):
        _same_bits([ours[k] for k in sorted(ours)], [theirs[k] for k in sorted(theirs)])


def test_more_tensors_than_slots_take_several_launches(fake_gpu):
    rng = np.random.default_rng(3)
    sizes = [(int(n),) for n in rng.integers(1, 3 * multi_tensor.CHUNK, 2 * multi_tensor.SLOTS
                                              + 5)]
    batched, _ = _run(5, "AdamW", {"lr": 0.01}, sizes, steps=2)
    assert HostRawKernel.launches == 2 * 3
    looped, _ = _run(5, "AdamW", {"lr": 0.01, "foreach": False}, sizes, steps=2)
    _same_bits(batched, looped)


def test_what_a_launch_cannot_take_goes_one_by_one(fake_gpu):
    """A transposed gradient and a float64 parameter beside float32 ones: the float32 tensors in
    one launch, the float64 in another, the transposed one through its own kernel."""
    rng = np.random.default_rng(9)
    params = [gd.tensor(rng.standard_normal(s).astype(d), requires_grad=True)
              for s, d in [((4, 3), np.float32), ((5,), np.float32), ((3,), np.float64),
                           ((3, 4), np.float32)]]
    for p in params:
        p._data = _device(p._data)
    reference = [np.asarray(p._data).copy() for p in params]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    grads = [rng.standard_normal(p.shape).astype(p._data.dtype) for p in params]
    for p, g in zip(params, grads):
        p.grad = gd.tensor(g)
        p.grad._data = _device(g)
    params[3].grad._data = _device(grads[3].T.copy()).T          # a non-contiguous gradient
    opt.step()
    assert HostRawKernel.launches == 2 and HostKernel.calls == 1
    for p, before, g in zip(params, reference, grads):
        np.testing.assert_allclose(np.asarray(p._data), before - 0.1 * g, rtol=1e-6)


def test_a_tensor_lr_keeps_the_per_parameter_kernels(fake_gpu):
    _run(1, "Adam", {"lr": gd.tensor(0.01)}, [(3,), (4,)], steps=1)
    assert HostRawKernel.launches == 0 and HostKernel.calls == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("columns, scalars", [(2, 0), (4, 2), (6, 1)])
def test_the_tables_numpy_layout_is_the_c_structs(columns, scalars, dtype):
    layout = multi_tensor.table_dtype(columns, scalars, np.dtype(dtype))
    ctype = "float" if dtype == np.float32 else "double"
    fields = ("address", "scalar", "size", "block_end", "count")
    source = (f"#include <cstddef>\ntypedef {ctype} T;\n"
              + multi_tensor.struct_source(columns, scalars, np.dtype(dtype))
              + 'extern "C" void offsets(long* out) {\n'
              + "".join(f"  out[{k}] = offsetof(Table, {f});\n" for k, f in enumerate(fields))
              + f"  out[{len(fields)}] = sizeof(Table);\n}}\n")
    library = _build_shared_library(source, f"layout_{columns}_{scalars}_{ctype}")
    out = (ctypes.c_long * (len(fields) + 1))()
    library.offsets(out)
    assert list(out) == [layout.fields[f][1] for f in fields] + [layout.itemsize]


def test_multi_tensor_kernels_compile_for_the_gpu(fake_gpu):
    pytest.importorskip("cuda.bindings.nvrtc")
    HostRawKernel.sources.clear()
    for name, options in BATCHED:
        for capturable in ([False, True] if name in CAPTURABLE else [False]):
            for dtype in (np.float32, np.float64):
                _run(2, name, {**options, "capturable": capturable} if capturable else options,
                     [(3,), (5, 2)], steps=8, dtype=dtype)   # RAdam rectified, ASGD averaging
    assert len(HostRawKernel.sources) >= 100       # 109: 11 optimizers, options, dtypes
    from gpudl.amp import grad_scaler
    from gpudl.nn import utils
    for update in (utils._SUM_OF_SQUARES, utils._scale_by(np.float32),
                   utils._scale_by(np.float64), grad_scaler._UNSCALE):
        for dtype in (np.float32, np.float64):
            HostRawKernel.sources.add((multi_tensor.source(update, np.dtype(dtype)),
                                       update.name))
    for code, name in sorted(HostRawKernel.sources):
        ptx = nvrtc_ptx(code)
        if "typedef float T;" in code and "capturable" not in name \
                and "scale_by_float64" not in name:
            # the per-element work stays in float; the capturable ones compute their bias
            # corrections in float64 once per thread, as the per-parameter scalar kernel does,
            # and a float64 clipping scale (float32 and float64 gradients) is cast once
            assert not re.search(r"\.f64\b", ptx), f"fp64 in {name}"


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("name, options", [
    ("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}), ("NAdam", {"lr": 0.01, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("Adamax", {"lr": 0.01}), ("Adadelta", {}), ("Rprop", {"lr": 0.01}),
    ("ASGD", {"lr": 0.01, "t0": 1})])
def test_on_the_gpu_one_launch_gives_the_per_parameter_numbers(name, options, capturable):
    """On a GPU (tools/gpu_check.sh): the real RawKernel against the real per-parameter
    kernels, on tensors across chunk and slot boundaries."""
    if backend._cupy is None:
        pytest.skip("needs CuPy and a GPU; the emulation above runs everywhere else")
    if capturable and name not in CAPTURABLE:
        pytest.skip(f"{name} has no capturable option")
    options = {**options, **({"capturable": True} if capturable else {})}
    rng = np.random.default_rng(4)
    sizes = SIZES + [(int(n),) for n in rng.integers(1, 3 * multi_tensor.CHUNK, 40)]
    init = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    # seven steps: RAdam's rectified steps from the sixth
    grads = [[rng.standard_normal(s).astype(np.float32) for s in sizes] for _ in range(7)]
    results = []
    for foreach in (None, False):
        params = [gd.tensor(a, device="cuda", requires_grad=True) for a in init]
        opt = getattr(optim, name)(params, foreach=foreach, **options)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = gd.tensor(g, device="cuda")
            opt.step()
        results.append([p.detach().cpu().numpy() for p in params])
    # NVRTC contracts multiply-adds (-fmad=true, CuPy's default) in both kernels alike, but may
    # choose differently in another kernel body: a last-bit difference is not an error here
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("poison", [None, "inf", "nan"])
def test_grad_scaler_unscales_in_one_launch_as_per_gradient(poison, fake_gpu):
    """GradScaler.unscale_ on device gradients (one launch per dtype) against the same scaler on
    host gradients (the per-gradient reductions): the same bits and the same inf flag; a
    transposed gradient beside them goes the per-gradient way and still sets the flag."""
    rng = np.random.default_rng(12)
    sizes = [(3, 4), (multi_tensor.CHUNK + 3,), (1,), (5,)]
    grads = [(rng.standard_normal(s) * 1e3).astype(np.float32) for s in sizes]
    grads.append(rng.standard_normal((4, 3)).astype(np.float64))
    if poison:
        grads[1][multi_tensor.CHUNK + 1] = float(poison)       # in the second block
    transposed = rng.standard_normal((3, 2)).astype(np.float32)
    results = []
    for device in (True, False):
        params = [gd.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = gd.tensor(g.copy())
            if device:
                p.grad._data = _device(p.grad._data)
        extra = gd.tensor(np.zeros((2, 3), np.float32), requires_grad=True)
        extra.grad = gd.tensor(transposed.T.copy())
        extra.grad._data = (_device(transposed.copy()) if device else transposed.copy()).T
        opt = optim.SGD(params + [extra], lr=0.1)
        scaler = gd.amp.GradScaler("cpu", init_scale=1024.0)
        scaler.scale(gd.tensor(1.0))                        # makes the scale
        if device:                                          # a cuda scaler's state
            scaler._scale = scaler._scale.view(DeviceLike)
        scaler.unscale_(opt)
        found = float(np.asarray(scaler._per_optimizer[id(opt)]["found_inf"]))
        results.append(([np.asarray(p.grad._data).copy() for p in params + [extra]], found))
    assert HostRawKernel.launches == 2                      # float32 and float64
    (ours, found), (theirs, expected) = results
    _same_bits(ours, theirs)
    assert (found > 0) == (expected > 0) == (poison is not None)


@pytest.mark.parametrize("poison", [None, "inf", "nan"])
def test_clip_grad_norm_in_a_few_launches_matches_torch(poison, fake_gpu):
    """clip_grad_norm_ on device gradients: one sum-of-squares launch per dtype (each thread
    its own partial: no atomics) and one scaling launch per dtype, against torch's
    clip_grad_norm_ on the same gradients; inf and NaN reach the norm as in torch."""
    rng = np.random.default_rng(21)
    sizes = [(3, 4), (2 * multi_tensor.CHUNK + 5,), (1,), (0,), (7,)]
    grads = [(rng.standard_normal(s) * rng.choice([0.1, 3.0])).astype(np.float32)
             for s in sizes] + [rng.standard_normal((5, 2))]            # and one float64
    if poison:
        grads[1][multi_tensor.CHUNK + 2] = float(poison)
    params = [gd.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = gd.tensor(g.copy())
        p.grad._data = _device(p.grad._data)
    total = gd.nn.utils.clip_grad_norm_(params, max_norm=1.5)
    assert HostRawKernel.launches == 4              # squares and scaling, float32 and float64
    tparams = [torch.zeros(g.shape, dtype=torch.float64 if g.dtype == np.float64 else
                           torch.float32, requires_grad=True) for g in grads]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm=1.5)
    np.testing.assert_allclose(np.asarray(total._data), expected.numpy(), rtol=1e-6)
    assert total.dtype == gd.float64                # float32 and float64 norms together
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(np.asarray(p.grad._data), t.grad.numpy(), rtol=2e-6,
                                   atol=1e-12)


def test_the_batched_norm_is_the_same_every_run(fake_gpu):
    rng = np.random.default_rng(5)
    arrays = [_device(rng.standard_normal(int(n)).astype(np.float32))
              for n in rng.integers(1, 3 * multi_tensor.CHUNK, 40)]
    from gpudl.nn import utils
    norms = {float(np.asarray(utils._batched_two_norm(arrays))) for _ in range(3)}
    assert len(norms) == 1
    exact = np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in arrays))
    np.testing.assert_allclose(norms.pop(), exact, rtol=1e-6)


def test_a_scaler_on_another_device_than_the_gradients_launches_nothing(fake_gpu):
    """The kernel writes the scaler's flag: a cpu scaler's flag is host memory, so device
    gradients then take the per-gradient path (where CuPy refuses the mix) instead of a launch
    that would write a host address."""
    p = gd.tensor(np.zeros(3, np.float32), requires_grad=True)
    p.grad = gd.tensor(np.ones(3, np.float32))
    p.grad._data = _device(p.grad._data)
    scaler = gd.amp.GradScaler("cpu")
    scaler.scale(gd.tensor(1.0))
    scaler.unscale_(optim.SGD([p], lr=0.1))
    assert HostRawKernel.launches == 0


class _HalfStepSGD(gd.optim.SGD):
    """A user's variant: overrides ``_update`` alone (as gpudl.keras's SGD and Adam do)."""

    def _update(self, param, grad, state, group):
        param -= 0.5 * group["lr"] * grad


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_a_subclass_overriding_update_alone_keeps_its_rule(device, request):
    """The batched updates (multi-tensor kernels on a GPU, kernels/optim_cpu.py's loops on the
    CPU) compute their class's ``_update``: a subclass that overrides only ``_update`` must
    not be bypassed by the inherited batched path (it was on both: Keras's momentum and
    epsilon were lost)."""
    if device == "gpu":
        request.getfixturevalue("fake_gpu")
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s).astype(np.float32) for s in ((3,), (2, 2))]
    grads = [rng.standard_normal(a.shape).astype(np.float32) for a in start]
    params = [gd.tensor(a.copy(), requires_grad=True, device="cpu") for a in start]
    if device == "gpu":
        for p in params:
            p._data = _device(p._data)
    optimizer = _HalfStepSGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, grads):
        p.grad = gd.tensor(g, device="cpu")
        if device == "gpu":
            p.grad._data = _device(g)
    optimizer.step()
    for p, a, g in zip(params, start, grads):
        np.testing.assert_array_equal(np.asarray(p._data), a - np.float32(0.05) * g)
    if device == "gpu":
        assert HostRawKernel.launches == 0
