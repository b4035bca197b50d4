"""capturable=True (the step count and bias corrections on the device) and 0-d Tensor learning
rates, for Adam, AdamW and RMSprop. torch refuses capturable=True on the CPU, so the reference is
torch with capturable=False: the numbers must not change."""

import copy

import numpy as np
import pytest
from fused_emulator import DeviceLike, HostKernel
from optim_cases import CASES, SHAPES, assert_close, case_id, gd_step, gradients, \
    initial_params, run_pair, torch_step

import gpudl as gd
import gpudl.optim as optim
from gpudl import backend

torch = pytest.importorskip("torch")

CAPTURABLE = [c for c in CASES if c[0] in ("Adam", "AdamW", "RMSprop")]


def _run(name, options, init, grads, wrap=None):
    params = [gd.tensor(a, requires_grad=True) for a in init]
    if wrap is not None:
        for p in params:
            p._data = wrap(p._data)
    opt = getattr(optim, name)(params, **options)
    for g in grads:
        gd_step(opt, params, g)
    return [backend.to_numpy(p._data).view(np.ndarray) for p in params], opt


@pytest.mark.parametrize("case", CAPTURABLE, ids=case_id)
def test_capturable_gives_the_same_numbers(case, rng):
    name, options = case
    init, grads = initial_params(rng), gradients(rng, SHAPES, 8)
    plain, _ = _run(name, options, init, grads)
    captured, opt = _run(name, dict(options, capturable=True), init, grads)
    for a, b in zip(plain, captured):
        np.testing.assert_array_equal(a, b)
    step = opt.state[opt.param_groups[0]["params"][0]]["step"]
    assert isinstance(step, gd.Tensor) and step.dtype == gd.float32 and step.shape == ()
    assert step.item() == 8


@pytest.mark.parametrize("case", CAPTURABLE, ids=case_id)
def test_capturable_matches_torch(case, rng):
    name, options = case
    ours, theirs, _ = run_pair(torch, (name, dict(options, capturable=True)), rng, steps=8,
                               torch_options=options)
    assert_close(ours, theirs)


@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="needs a C++ compiler")
@pytest.mark.skipif(backend._cupy is not None, reason="emulates a GPU: on one, "
                    "test_capturable_matches_torch runs the real kernels")
@pytest.mark.parametrize("case", [c for c in CAPTURABLE if c[1]], ids=case_id)
def test_capturable_fused_kernel_matches_the_cpu(case, rng, monkeypatch):
    """The GPU branch (fused kernels run as host C++, tests/optim/fused_emulator.py) with the
    device-side step count gives the CPU's numbers, in one update kernel per parameter and step
    (Adam: and one for its step count and bias corrections, where the composed device math took
    eleven)."""
    name, options = case
    init, grads = initial_params(rng), gradients(rng, SHAPES, 6)
    plain, _ = _run(name, options, init, grads)
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(backend, "elementwise_kernel", HostKernel)
    monkeypatch.setattr(HostKernel, "calls", 0)
    fused, opt = _run(name, dict(options, capturable=True), init, grads,
                      wrap=lambda a: a.view(DeviceLike))
    kernels_per_update = 2 if name.startswith("Adam") else 1
    assert HostKernel.calls == kernels_per_update * 6 * len(SHAPES)
    assert_close(fused, plain)
    for p in opt.param_groups[0]["params"]:
        step = opt.state[p]["step"]
        assert step.dtype == gd.float32 and step.shape == () and step.item() == 6


@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="needs a C++ compiler")
def test_adams_device_bias_corrections_are_the_composed_float64_math(rng):
    """The one-kernel step count and bias corrections (optim/capturable.py) give the float64
    values of the composed version, cast once to the parameter's dtype, at step counts where
    beta**step underflows too; the kernel compiles as CUDA (float64 on purpose: one thread)."""
    from fused_emulator import cuda_source, nvrtc_ptx

    from gpudl.optim import capturable
    for dtype in (np.float32, np.float64):
        for start in (0.0, 1.0, 9.0, 2999.0, 1e6):
            step = np.array(start, np.float32)
            neg, bc2 = np.empty((), dtype), np.empty((), dtype)
            HostKernel(*capturable._BIAS_CORRECTIONS)(1e-3, 0.9, 0.999, step, neg, bc2)
            s = np.float64(start + 1)
            assert step == np.float32(start + 1)
            assert neg == np.array(-1e-3 / (1 - 0.9 ** s)).astype(dtype)
            assert bc2 == np.array((1 - 0.999 ** s) ** 0.5).astype(dtype)
    pytest.importorskip("cuda.bindings.nvrtc")
    in_params, out_params, operation, _ = capturable._BIAS_CORRECTIONS
    arrays = frozenset(("step", "neg_step_size", "bias_correction2_sqrt"))
    for ctype in ("float", "double"):
        nvrtc_ptx(cuda_source(in_params, out_params, operation, arrays, ctype))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_capturable_state_dict_round_trip(name, rng):
    init, grads = initial_params(rng), gradients(rng, SHAPES, 8)
    straight, _ = _run(name, dict(lr=0.01, capturable=True), init, grads)
    first = [gd.tensor(a, requires_grad=True) for a in init]
    opt1 = getattr(optim, name)(first, lr=0.01, capturable=True)
    for g in grads[:4]:
        gd_step(opt1, first, g)
    saved = copy.deepcopy(opt1.state_dict())
    assert isinstance(saved["state"][0]["step"], gd.Tensor)
    resumed = [gd.tensor(p.numpy(), requires_grad=True) for p in first]
    opt2 = getattr(optim, name)(resumed, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["capturable"] is True
    for g in grads[4:]:
        gd_step(opt2, resumed, g)
    assert opt2.state[resumed[0]]["step"].item() == 8
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_switching_capturable_off_after_a_load_keeps_counting(name, rng):
    init, grads = initial_params(rng), gradients(rng, SHAPES, 4)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    opt = getattr(optim, name)(params, lr=0.01, capturable=True)
    gd_step(opt, params, grads[0])
    opt.param_groups[0]["capturable"] = False
    gd_step(opt, params, grads[1])
    assert opt.state[params[0]]["step"] == 2


@pytest.mark.parametrize("name, options", [
    ("Adam", {}), ("Adam", dict(capturable=True)), ("AdamW", dict(capturable=True)),
    ("RMSprop", dict(momentum=0.5)), ("RMSprop", dict(capturable=True)),
    ("SGD", dict(momentum=0.9, weight_decay=0.01))])
def test_tensor_lr_matches_torch_and_a_scheduler_writes_it_in_place(name, options, rng):
    init, grads = initial_params(rng), gradients(rng, SHAPES, 6)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    lr = gd.tensor(0.02)
    opt = getattr(optim, name)(params, lr=lr, **options)
    torch_options = {k: v for k, v in options.items() if k != "capturable"}
    topt = getattr(torch.optim, name)(tparams, lr=torch.tensor(0.02), foreach=False,
                                      **torch_options)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.5)
    for g in grads:
        gd_step(opt, params, g)
        torch_step(torch, topt, tparams, g)
        sched.step()
        tsched.step()
        assert opt.param_groups[0]["lr"] is lr                   # written in place
        assert lr.item() == pytest.approx(float(topt.param_groups[0]["lr"]))
    assert opt.param_groups[0]["initial_lr"].item() == pytest.approx(0.02)
    assert_close([p.numpy() for p in params], [t.detach().numpy() for t in tparams])


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
@pytest.mark.parametrize("lr, message", [(gd.tensor([0.1, 0.2]), "one-element floating"),
                                         (gd.tensor(1), "one-element floating"),
                                         (-0.1, "invalid lr")])
def test_bad_lr_is_refused(name, lr, message):
    with pytest.raises(ValueError, match=f"{name}: .*{message}"):
        getattr(optim, name)([gd.zeros(2, requires_grad=True)], lr=lr)


@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="needs a C++ compiler")
@pytest.mark.skipif(backend._cupy is not None, reason="emulates a GPU: on one, "
                    "test_tensor_lr_matches_torch_and_a_scheduler_writes_it_in_place runs them")
@pytest.mark.parametrize("name, options", [
    ("Adam", {}), ("Adam", dict(capturable=True)), ("RMSprop", dict(momentum=0.5)),
    ("RMSprop", dict(capturable=True)), ("SGD", dict(momentum=0.9, weight_decay=0.01))])
@pytest.mark.parametrize("lr_dtype", [np.float32, np.float64])
def test_tensor_lr_in_the_fused_kernels(name, options, lr_dtype, rng, monkeypatch):
    """A 0-d Tensor lr of either float dtype reaches the fused kernels (emulated, with CuPy's
    rule that a 0-d array argument has its parameter's dtype) as a 0-d array in the
    parameter's dtype, giving the CPU's numbers."""
    init, grads = initial_params(rng), gradients(rng, SHAPES, 4)
    lr = 0.02

    def run(wrap=None):
        tensor_lr = gd.tensor(np.array(lr, lr_dtype))
        if wrap is not None:        # a device array: its arithmetic makes 0-d arrays, as CuPy's
            tensor_lr._data = wrap(tensor_lr._data)
        return _run(name, dict(options, lr=tensor_lr), init, grads, wrap)[0]
    plain = run()
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(backend, "elementwise_kernel", HostKernel)
    assert_close(run(wrap=lambda a: a.view(DeviceLike)), plain)


def test_the_emulator_refuses_mismatched_arrays_as_cupy_does():
    copy_kernel = HostKernel("T a, T b", "T y", "y = a + b;", "gpudl_test_copy")
    with pytest.raises(TypeError, match="Type is mismatched"):      # a 0-d array takes part
        copy_kernel(np.ones(3, np.float32), np.array(1.0), np.empty(3, np.float32))
    with pytest.raises(TypeError, match="Type is mismatched"):      # outputs decide first
        copy_kernel(np.ones(3, np.float64), 1.0, np.empty(3, np.float32))
