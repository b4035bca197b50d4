"""gd.amp.GradScaler against torch.amp.GradScaler('cpu') driven by the same gradient sequence,
overflows included: scales, skipped steps, growth after growth_interval, state round trip; and
float32 master weights of float16/bfloat16 parameters in the optimizers."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


def _pair(values):
    w = gd.nn.Parameter(gd.tensor(values))
    tw = torch.nn.Parameter(torch.from_numpy(values.copy()))
    return w, tw


def _run(scaler, tscaler, grads, growth_interval):
    """Feed the same raw gradients (already 'scaled') through both; return per-step records."""
    values = np.array([1.0, -2.0, 0.5], np.float32)
    w, tw = _pair(values)
    opt, topt = gd.optim.SGD([w], lr=0.1), torch.optim.SGD([tw], lr=0.1)
    records = []
    for g in grads:
        scale = scaler.get_scale()
        assert scale == tscaler.get_scale()
        scaler.scale(gd.ones(1))
        tscaler.scale(torch.ones(1))
        # what backward of scaler.scale(loss) gives: the gradient times the scale
        w.grad = gd.tensor(np.float32(g) * np.float32(scale))
        tw.grad = torch.from_numpy(np.float32(g) * np.float32(scale))
        out, tout = scaler.step(opt), tscaler.step(topt)
        assert out is None and tout is None
        scaler.update()
        tscaler.update()
        records.append((scaler.get_scale(), tscaler.get_scale(), scaler._get_growth_tracker(),
                        tscaler._get_growth_tracker()))
        np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-6)
    return records


def test_scales_skips_and_growth_follow_torch():
    rng = np.random.default_rng(0)
    grads = []
    for i in range(40):
        g = rng.standard_normal(3).astype(np.float32)
        if i in (3, 4, 17, 30):
            g[i % 3] = [np.inf, np.nan, -np.inf][i % 3]
        grads.append(g)
    kw = dict(init_scale=2.0 ** 10, growth_factor=2.0, backoff_factor=0.5, growth_interval=5)
    records = _run(gd.amp.GradScaler("cpu", **kw), torch.amp.GradScaler("cpu", **kw), grads, 5)
    for ours_scale, their_scale, ours_tracker, their_tracker in records:
        assert ours_scale == their_scale and ours_tracker == their_tracker
    scales = [r[0] for r in records]
    assert scales[3] == 2.0 ** 9 and scales[4] == 2.0 ** 8      # backoff on each overflow
    assert max(scales) > 2.0 ** 10                              # and growth after 5 clean steps


def test_skipped_step_leaves_parameters_and_returns_none():
    w = gd.nn.Parameter(gd.ones(3))
    opt = gd.optim.SGD([w], lr=0.1)
    scaler = gd.amp.GradScaler("cpu")
    loss = (w * gd.tensor([1.0, 2.0, 3.0])).sum()
    scaler.scale(loss).backward()
    w.grad._data[1] = np.inf
    assert scaler.step(opt) is None
    np.testing.assert_array_equal(w.numpy(), 1.0)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15


def test_unscale_then_step_unscales_once_and_clips_on_true_grads():
    w = gd.nn.Parameter(gd.ones(2))
    opt = gd.optim.SGD([w], lr=1.0)
    scaler = gd.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((w * gd.tensor([3.0, 4.0])).sum()).backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3072.0, 4096.0])
    scaler.unscale_(opt)
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 4.0])
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    np.testing.assert_array_equal(w.numpy(), [-2.0, -3.0])
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="No inf checks"):
        scaler.update()


def test_torch_raises_the_same_errors():
    tw = torch.nn.Parameter(torch.ones(2))
    topt = torch.optim.SGD([tw], lr=1.0)
    tscaler = torch.amp.GradScaler("cpu")
    tscaler.scale(tw.sum()).backward()
    tscaler.unscale_(topt)
    with pytest.raises(RuntimeError, match="already been called"):
        tscaler.unscale_(topt)


def test_state_dict_round_trip_matches_torch():
    kw = dict(init_scale=512.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=3)
    scaler, tscaler = gd.amp.GradScaler("cpu", **kw), torch.amp.GradScaler("cpu", **kw)
    _run(scaler, tscaler, [np.ones(3, np.float32)] * 4 + [np.full(3, np.inf, np.float32)], 3)
    state, tstate = scaler.state_dict(), tscaler.state_dict()
    assert state == tstate
    fresh = gd.amp.GradScaler("cpu")
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert gd.amp.GradScaler("cpu", enabled=False).state_dict() == {}
    with pytest.raises(RuntimeError, match="empty"):
        fresh.load_state_dict({})


def test_update_with_new_scale_and_bad_values():
    scaler = gd.amp.GradScaler("cpu")
    scaler.scale(gd.ones(1))
    scaler.update(8.0)
    assert scaler.get_scale() == 8.0
    scaler.update(gd.tensor([16.0]))
    assert scaler.get_scale() == 16.0
    with pytest.raises(ValueError, match="new_scale"):
        scaler.update(gd.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="growth_factor"):
        gd.amp.GradScaler("cpu", growth_factor=0.5)
    with pytest.raises(ValueError, match="device"):
        gd.amp.GradScaler("tpu")


def test_disabled_scaler_passes_through():
    scaler = gd.amp.GradScaler("cpu", enabled=False)
    x = gd.ones(2)
    assert scaler.scale(x) is x and scaler.get_scale() == 1.0 and not scaler.is_enabled()
    w = gd.nn.Parameter(gd.ones(1))
    w.grad = gd.ones(1)
    scaler.step(gd.optim.SGD([w], lr=1.0))
    assert float(w[0]) == 0.0


def test_fp16_gradients_are_refused_as_torch():
    w = gd.nn.Parameter(gd.ones(2).half())
    w.grad = gd.ones(2).half()
    scaler = gd.amp.GradScaler("cpu")
    scaler.scale(gd.ones(1))
    with pytest.raises(ValueError, match="FP16 gradients"):
        scaler.unscale_(gd.optim.SGD([w], lr=1.0))


def test_scaled_loss_keeps_its_dtype():
    scaler = gd.amp.GradScaler("cpu", init_scale=4.0)
    assert scaler.scale(gd.ones(2).bfloat16()).dtype == gd.bfloat16
    assert [t.dtype for t in scaler.scale([gd.ones(1), gd.ones(1)])] == [gd.float32] * 2


# ----------------------------------------------------------------- master weights
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("make", [
    lambda p: gd.optim.SGD(p, lr=1e-3, momentum=0.9), lambda p: gd.optim.Adam(p, lr=1e-4),
    lambda p: gd.optim.AdamW(p, lr=1e-4), lambda p: gd.optim.RMSprop(p, lr=1e-4),
    lambda p: gd.optim.Adagrad(p, lr=1e-3), lambda p: gd.optim.Adam(p, lr=1e-4, capturable=True),
    lambda p: gd.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-2)])
def test_low_precision_parameters_follow_a_float32_master(dtype, make, rng):
    """The low-precision parameter is, after every step, the float32 run's parameter rounded:
    updates far below the parameter's ulp still accumulate (a plain bfloat16 update rounds them
    away: 1 - 1e-4 is 1 in bfloat16)."""
    start = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    low = gd.nn.Parameter(gd.tensor(start).to(dtype))
    ref = gd.nn.Parameter(gd.tensor(low.float().numpy()))
    opt, ref_opt = make([low]), make([ref])
    for _ in range(30):
        g = rng.standard_normal(6).astype(np.float32)
        low.grad = gd.tensor(g).to(dtype)
        ref.grad = gd.tensor(low.grad.float().numpy())
        opt.step()
        ref_opt.step()
        assert low.dtype == gd.dtypes.as_dtype(dtype)
        np.testing.assert_array_equal(low.float().numpy(), ref.to(dtype).float().numpy())
    assert not np.array_equal(ref.numpy(), gd.tensor(start).to(dtype).float().numpy())
    state = opt.state_dict()
    master = state["state"][0]["master_param"]
    assert master.dtype == gd.float32
    np.testing.assert_array_equal(master.numpy(), ref.numpy())
    again = make([gd.nn.Parameter(gd.tensor(start).to(dtype))])
    again.load_state_dict(state)
    loaded = again.state[again.param_groups[0]["params"][0]]["master_param"]
    assert loaded.dtype == gd.float32
    np.testing.assert_array_equal(loaded.numpy(), ref.numpy())   # not the parameter rounded


def test_cuda_scaler_without_cuda_warns_and_disables_as_torch():
    if gd.backend.cuda_available():
        pytest.skip("this process has the cuda device")
    with pytest.warns(UserWarning, match="not available"):
        scaler = gd.amp.GradScaler()
    assert not scaler.is_enabled()
    with pytest.warns(UserWarning, match="not available"):
        assert not torch.amp.GradScaler("cuda").is_enabled()


def test_unscale_of_strided_gradients_matches_torch(rng):
    """The per-gradient unscale multiplies in place (one kernel on a GPU): a transposed, a
    sliced and a float64 gradient, one with an inf, against torch's unscale_ bit for bit."""
    shapes = [((4, 3), np.float32, lambda a: a.T), ((6, 5), np.float32, lambda a: a[::2, 1:4]),
              ((3, 4), np.float64, lambda a: a.T)]
    grads = [view((rng.standard_normal(s) * 1e3).astype(d)) for s, d, view in shapes]
    grads[1][2, 1] = np.inf
    assert not any(g.flags.c_contiguous for g in grads)
    # on the cpu device whatever the default: the gradients are NumPy arrays
    params = [gd.nn.Parameter(gd.tensor(np.zeros(g.shape, g.dtype), device="cpu"))
              for g in grads]
    tparams = [torch.nn.Parameter(torch.from_numpy(np.zeros(g.shape, g.dtype))) for g in grads]
    for p, t, g in zip(params, tparams, grads):
        p.grad = gd.tensor(np.zeros(g.shape, g.dtype), device="cpu")
        p.grad._data = g                       # the strided array itself
        t.grad = torch.from_numpy(g.copy())
    scaler, tscaler = gd.amp.GradScaler("cpu", init_scale=768.0), \
        torch.amp.GradScaler("cpu", init_scale=768.0)
    scaler.scale(gd.ones(1, device="cpu"))
    tscaler.scale(torch.ones(1))
    opt = gd.optim.SGD(params, lr=0.1)
    scaler.unscale_(opt)
    tscaler.unscale_(torch.optim.SGD(tparams, lr=0.1))
    for p, t in zip(params, tparams):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
    assert scaler.step(opt) is None                 # the inf was found


def test_unscale_of_a_strided_bfloat16_gradient_matches_torch(rng):
    """A bfloat16 gradient takes the per-gradient way: its float32 product with the inverse
    scale rounded to bfloat16 in place, as torch rounds it."""
    values = (rng.standard_normal((4, 3)) * 1e3).astype(np.float32)
    param = gd.nn.Parameter(gd.zeros(3, 4).bfloat16())
    param.grad = gd.tensor(values).bfloat16().t()
    tparam = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.bfloat16))
    tparam.grad = torch.from_numpy(values).bfloat16().t()
    scaler, tscaler = gd.amp.GradScaler("cpu", init_scale=3.0), \
        torch.amp.GradScaler("cpu", init_scale=3.0)
    scaler.scale(gd.ones(1))
    tscaler.scale(torch.ones(1))
    scaler.unscale_(gd.optim.SGD([param], lr=0.1))
    tscaler.unscale_(torch.optim.SGD([tparam], lr=0.1))
    assert param.grad.dtype == gd.bfloat16
    np.testing.assert_array_equal(param.grad.float().numpy(), tparam.grad.float().numpy())


def test_unscale_refuses_an_expanded_gradient_as_torch_and_changes_nothing():
    first, second = (gd.nn.Parameter(gd.zeros(3, 4)) for _ in range(2))
    first.grad = gd.full((3, 4), 8.0)
    second.grad = gd.ones(1, 4).expand(3, 4)
    scaler = gd.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(gd.ones(1))
    opt = gd.optim.SGD([first, second], lr=0.1)
    with pytest.raises(RuntimeError, match="unscale_.*more than one element"):
        scaler.unscale_(opt)
    np.testing.assert_array_equal(first.grad.numpy(), np.full((3, 4), 8.0, np.float32))
    second.grad = second.grad.clone()
    scaler.unscale_(opt)                        # refused, so not counted as unscaled
    np.testing.assert_array_equal(first.grad.numpy(), np.full((3, 4), 2.0, np.float32))
