"""Regressions found by the third round of differential program fuzzing (mixed precision and
GradScaler, the transformer stack, packed sequences through the recurrent layers) run in gpudl
and torch: each case runs the same steps on both libraries from fresh random inputs and compares
the results."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpudl as gd  # noqa: E402

RNG = np.random.default_rng()


def _numpy(t):
    return None if t is None else t.detach().double().numpy()


def _both(fn, *arrays):
    """fn(lib, *tensors) on torch and gpudl from the same float64 arrays."""
    return [fn(lib, *arrays) for lib in (torch, gd)]


def _f32(a):
    """``a`` rounded to float32 first: torch makes a float16/bfloat16 tensor from float64 through
    float32 (two roundings; NumPy's one can differ at near-ties), so both start equal."""
    return np.asarray(a, np.float32).astype(np.float64)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------- autocast's weight cache
# A forward under no_grad inside an autocast region cached its cast weight without a graph: a
# later forward with grad in the same region took it and the weight got no gradient (the loss
# did not even require grad). torch does not cache under no_grad.
def test_autocast_forward_under_no_grad_then_with_grad_reaches_the_weight():
    w, x, b = RNG.standard_normal((3, 4)), RNG.standard_normal((2, 4)), RNG.standard_normal(3)
    grads = []
    for lib in (torch, gd):
        lin = lib.nn.Linear(4, 3)
        with lib.no_grad():
            lin.weight.copy_(lib.tensor(w, dtype=lib.float32))
            lin.bias.copy_(lib.tensor(b, dtype=lib.float32))
        xt = lib.tensor(x, dtype=lib.float32)
        with lib.autocast("cpu"):
            with lib.no_grad():
                lin(xt)
            y = lin(xt)
        assert y.requires_grad and y.dtype == (torch.bfloat16 if lib is torch else gd.bfloat16)
        (y.float() ** 2).sum().backward()
        grads.append((_numpy(lin.weight.grad), _dtype_name(lin.weight.grad.dtype)))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=0.05, atol=0.05)
    assert grads[1][1] == grads[0][1] == "float32"


# A weight edited in place inside the region (an optimizer step between two forwards) was
# still cast from its old value. torch reuses the stale cast there too (a torch quirk not
# copied): the reference is a fresh region per forward.
def test_autocast_recasts_a_weight_edited_in_place_within_the_region():
    w, x = RNG.standard_normal((3, 4)), RNG.standard_normal((2, 4))
    lin = gd.nn.Linear(4, 3, bias=False)
    with gd.no_grad():
        lin.weight.copy_(gd.tensor(w, dtype=gd.float32))
    xt = gd.tensor(x, dtype=gd.float32)
    with gd.autocast("cpu"):
        lin(xt)
        with gd.no_grad():
            lin.weight.mul_(-2.0)
        got = lin(xt)
    ref = torch.nn.functional.linear(torch.tensor(x, dtype=torch.bfloat16),
                                     torch.tensor(-2.0 * w, dtype=torch.float32).bfloat16())
    np.testing.assert_allclose(_numpy(got), _numpy(ref), rtol=0.02, atol=0.02)


# ----------------------------------------------------------------- mixed-dtype loss operands
# mse/l1/smooth_l1/kl_div/poisson_nll and cross_entropy with probabilities cast the target to
# the input's dtype: mse_loss(float16, float32) was float16 (torch: float32, the promotion),
# losing the float32 target's precision. Gradients come back in each operand's dtype.
LOSSES = {
    "mse_loss": lambda F, x, t: F.mse_loss(x, t, reduction="none"),
    "l1_loss": lambda F, x, t: F.l1_loss(x, t),
    "smooth_l1_loss": lambda F, x, t: F.smooth_l1_loss(x, t, reduction="sum"),
    "kl_div": lambda F, x, t: F.kl_div(x, t.abs(), reduction="batchmean"),
    "kl_div log_target": lambda F, x, t: F.kl_div(x, t, reduction="none", log_target=True),
    "poisson_nll_loss": lambda F, x, t: F.poisson_nll_loss(x, t.abs()),
    "cross_entropy probabilities": lambda F, x, t: F.cross_entropy(x, t.softmax(-1)),
}
PAIRS = [("float16", "float32"), ("float32", "float16"), ("bfloat16", "float16"),
         ("float32", "float64"), ("bfloat16", "float32")]


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("dtypes", PAIRS, ids="-".join)
def test_pointwise_losses_promote_input_and_target(loss, dtypes):
    xa, ta = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))

    def run(lib, xa, ta):
        x = lib.tensor(xa, dtype=getattr(lib, dtypes[0]), requires_grad=True)
        t = lib.tensor(ta, dtype=getattr(lib, dtypes[1]), requires_grad=True)
        out = LOSSES[loss](lib.nn.functional, x, t)
        (out.double() * 1.5).sum().backward()
        return (_dtype_name(out.dtype), _dtype_name(x.grad.dtype), _dtype_name(t.grad.dtype),
                _numpy(out), _numpy(x.grad), _numpy(t.grad))

    want, got = _both(run, xa, ta)
    assert got[:3] == want[:3]
    for g, w in zip(got[3:], want[3:]):
        np.testing.assert_allclose(g, w, rtol=0.02, atol=0.02 * (1 + np.abs(w).max()))


# ----------------------------------------------------------------- autocast of the cpu cells
# Under cpu autocast torch's GRU, LSTMCell and GRUCell run their matmuls in bfloat16 and the
# state in its own dtype: float32 input with bfloat16 weights gives float32 (gpudl: bfloat16),
# and nn.GRU with weights of another dtype than the input ran at all (gpudl refused it).
@pytest.mark.parametrize("module", ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"])
@pytest.mark.parametrize("dtypes", [("float32", "bfloat16"), ("bfloat16", "float32"),
                                    ("float32", "float32"), ("bfloat16", "bfloat16")],
                         ids="-".join)
def test_cpu_autocast_recurrent_dtypes_follow_the_state(module, dtypes):
    pdt, xdt = dtypes
    torch.manual_seed(int(RNG.integers(1 << 30)))
    tm = getattr(torch.nn, module)(3, 4)
    state = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    gm = getattr(gd.nn, module)(3, 4)
    gm.load_state_dict(state)
    xa = RNG.standard_normal((5, 2, 3) if "Cell" not in module else (2, 3))
    got = []
    for lib, m in ((torch, tm.to(getattr(torch, pdt))), (gd, gm.to(getattr(gd, pdt)))):
        x = lib.tensor(xa, dtype=getattr(lib, xdt), requires_grad=True)
        with lib.autocast("cpu"):
            out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        out.double().sum().backward()
        got.append((_dtype_name(out.dtype), _dtype_name(x.grad.dtype), _numpy(out)))
    assert got[1][:2] == got[0][:2]
    np.testing.assert_allclose(got[1][2], got[0][2], rtol=0.05, atol=0.05)


# ----------------------------------------------------------------- GradScaler
def _scaler_run(lib, steps, params0, **conf):
    params = [lib.tensor(p, dtype=lib.float32, requires_grad=True) for p in params0]
    opt = lib.optim.SGD(params, lr=0.1)
    scaler = (torch.amp.GradScaler if lib is torch else gd.amp.GradScaler)("cpu", **conf)
    log = []
    for step in steps:
        try:
            if step == "backward":
                with np.errstate(over="ignore"):        # the overflow is the point
                    scaler.scale((params[0] ** 2).sum() * 1e30).backward()
            elif step == "zero":
                opt.zero_grad()
            else:
                getattr(scaler, step)(*(() if step == "update" else (opt,)))
            log.append((step, "ok"))
        except (RuntimeError, AssertionError) as e:
            log.append((step, "error"))
            if "No inf checks" not in str(e):
                raise
    return log, scaler.get_scale(), [p.detach().numpy() for p in params]


# unscale_ of an optimizer none of whose parameters has a gradient recorded a clean check:
# step then stepped and update grew the scale, where torch refuses both ("No inf checks were
# recorded"), the sign that scale(loss).backward() never reached these parameters.
@pytest.mark.parametrize("steps", [["backward", "zero", "unscale_", "step"],
                                   ["backward", "zero", "step"],
                                   ["backward", "zero", "unscale_", "update"]])
def test_grad_scaler_refuses_steps_without_gradients(steps):
    params0 = [RNG.standard_normal(3)]
    want, got = _both(lambda lib, p: _scaler_run(lib, steps, [p], init_scale=4.0), *params0)
    assert got[0] == want[0] and got[1] == want[1]
    np.testing.assert_allclose(got[2][0], want[2][0], rtol=1e-6)


# The backoff/growth product was taken in float32 (the factor rounded first): a scale of 3e38
# backed off by 0.9 came out one float32 ulp below torch's (a float64 product rounded once).
@pytest.mark.parametrize("backoff", [0.9, 0.3, 0.7])
def test_grad_scaler_backoff_is_rounded_once(backoff):
    steps = ["backward", "step", "update"]     # 1e30 * init overflows: inf, so backoff
    for init in RNG.uniform(1e3, 3e38, size=12):      # about half differed by one ulp
        want, got = _both(lambda lib, p: _scaler_run(lib, steps, [p], init_scale=float(init),
                                                     backoff_factor=backoff),
                          RNG.standard_normal(3) + 10)
        assert got[1] == want[1], init


# ----------------------------------------------------------------- PackedSequence methods
# torch's PackedSequence has dtype shorthands (packed.double() before a float64 LSTM, say);
# gpudl's raised AttributeError.
@pytest.mark.parametrize("method", ["double", "float", "half", "long", "int", "short", "char",
                                    "byte"])
def test_packed_sequence_dtype_shorthands(method):
    lengths = sorted(RNG.integers(1, 5, size=3).tolist(), reverse=False)
    seqs = [RNG.standard_normal((n, 2)) * 4 for n in lengths]
    got = []
    for lib in (torch, gd):
        rnn = lib.nn.utils.rnn
        packed = rnn.pack_sequence([lib.tensor(s, dtype=lib.float32) for s in seqs],
                                   enforce_sorted=False)
        out = getattr(packed, method)()
        got.append((type(out).__name__, _dtype_name(out.data.dtype), out.data.double().numpy(),
                    out.batch_sizes.numpy(), out.sorted_indices.numpy(),
                    out.unsorted_indices.numpy(), out.is_pinned()))
    assert got[1][:2] == got[0][:2] and got[1][6] == got[0][6]
    for g, w in zip(got[1][2:6], got[0][2:6]):
        np.testing.assert_array_equal(g, w)


# ----------------------------------------------------------------- low precision times a scalar
# x * s and x / s of a float16/bfloat16 tensor by a number (float16) or a 0-d tensor of another
# dtype (both) rounded s to x's dtype first: bfloat16 x * tensor(1/3) was up to 2**-9 relative
# off, the same way for every element (torch: s unrounded in float32, one rounding). GradScaler
# .scale of a float16/bfloat16 loss by a non-power-of-two scale was off the same way.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["mul", "div", "rdiv", "rmul"])
@pytest.mark.parametrize("scalar", ["number", "0-d float32", "0-d float64"])
def test_low_precision_times_a_scalar_rounds_once(dtype, op, scalar):
    if op == "rdiv" and scalar == "number":
        pytest.skip("torch's number / x is x.reciprocal() * number: two roundings, not copied")
    # (a 0-d tensor / x rounds the 0-d tensor to x's dtype first, in both)
    xa, s = _f32(RNG.standard_normal(400) * 3), float(RNG.uniform(0.1, 9.0))
    got = []
    for lib in (torch, gd):
        x = lib.tensor(xa, dtype=getattr(lib, dtype), requires_grad=True)
        v = s if scalar == "number" else lib.tensor(s, dtype=getattr(lib, scalar[4:]))
        y = {"mul": lambda: x * v, "div": lambda: x / v, "rdiv": lambda: v / x,
             "rmul": lambda: v * x}[op]()
        y.backward(lib.ones_like(y) * 0.75)
        got.append((_dtype_name(y.dtype), _numpy(y), _numpy(x.grad)))
    assert got[1][0] == got[0][0]
    np.testing.assert_array_equal(got[1][1], got[0][1])
    # x * s's gradient g * s: one rounding too (div's backward has more steps; torch's
    # 0-d * x rounds the 0-d forward but not in its backward, not copied)
    if op == "mul" or (op == "rmul" and scalar == "number"):
        np.testing.assert_array_equal(got[1][2], got[0][2])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_grad_scaler_scale_of_a_low_precision_loss(dtype):
    init, xa = float(RNG.uniform(1.5, 30.0)), _f32(RNG.standard_normal(50))
    got = []
    for lib in (torch, gd):
        scaler = (torch.amp.GradScaler if lib is torch else gd.amp.GradScaler)(
            "cpu", init_scale=init)
        got.append(_numpy(scaler.scale(lib.tensor(xa, dtype=getattr(lib, dtype)))))
    np.testing.assert_array_equal(got[1], got[0])


# ----------------------------------------------------------------- BatchNorm's counter on load
# A state_dict without num_batches_tracked (a torch checkpoint from before it existed, or any
# state dict rebuilt as a plain dict, which loses torch's version metadata) loads in torch,
# the counter keeping its value; gpudl refused it (strict) or reported it missing.
@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("module", ["BatchNorm1d", "BatchNorm2d", "InstanceNorm1d"])
def test_batchnorm_loads_a_state_dict_without_its_counter(module, strict):
    kwargs = {"track_running_stats": True, "affine": True} if "Instance" in module else {}
    got = []
    for lib in (torch, gd):
        m = getattr(lib.nn, module)(3, **kwargs)
        with lib.no_grad():
            m.num_batches_tracked.fill_(int(RNG.integers(1, 9)) if lib is torch else got[0][2])
        state = {k: lib.tensor(RNG.standard_normal(tuple(v.shape)) if lib is torch else
                               got[0][3][k])
                 for k, v in m.state_dict().items() if k != "num_batches_tracked"}
        result = m.load_state_dict(state, strict=strict)
        got.append((sorted(result.missing_keys), sorted(result.unexpected_keys),
                    int(m.num_batches_tracked), {k: _numpy(v) for k, v in state.items()},
                    {k: _numpy(v) for k, v in m.state_dict().items()}))
    assert got[1][:3] == got[0][:3]
    for k, v in got[0][4].items():
        np.testing.assert_array_equal(got[1][4][k], v)


# x.mul_(s) / x.div_(s) of a float16/bfloat16 tensor (no graph) rounded s first too, so the
# in-place result differed from x * s (and torch's x.mul_(s)).
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["mul_", "div_"])
@pytest.mark.parametrize("scalar", ["number", "0-d float32"])
def test_low_precision_in_place_by_a_scalar_rounds_once(dtype, op, scalar):
    xa, s = _f32(RNG.standard_normal(400) * 3), float(RNG.uniform(0.1, 9.0))
    got = []
    for lib in (torch, gd):
        x = lib.tensor(xa, dtype=getattr(lib, dtype))
        v = s if scalar == "number" else lib.tensor(s, dtype=lib.float32)
        getattr(x, op)(v)
        got.append(_numpy(x))
    np.testing.assert_array_equal(got[1], got[0])


# sigmoid of float16 computed exp(-|x|) in float16: subnormal from |x| > 9.7, so sigmoid(-10)
# and below were up to 8.6 ulp off; silu rounded sigmoid, the product and each backward step.
# torch computes both in float32 and rounds once.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["sigmoid", "silu"])
def test_low_precision_sigmoid_and_silu_round_once(dtype, op):
    xa, ga = _f32(RNG.standard_normal(2000) * 5), _f32(RNG.standard_normal(2000))
    got = []
    for lib in (torch, gd):
        x = lib.tensor(xa, dtype=getattr(lib, dtype), requires_grad=True)
        y = x.sigmoid() if op == "sigmoid" else lib.nn.functional.silu(x)
        y.backward(lib.tensor(ga, dtype=getattr(lib, dtype)))
        got.append((_numpy(y), _numpy(x.grad)))
    ulp = np.spacing(np.abs(got[0][0]).astype(np.float16)).astype(float) if dtype == "float16" \
        else 2.0 ** (np.floor(np.log2(np.maximum(np.abs(got[0][0]), 1e-30))) - 7)
    assert np.max(np.abs(got[1][0] - got[0][0]) / ulp) <= 1.0      # at most 1 ulp (ties)
    assert np.mean(got[1][0] != got[0][0]) < 0.01
    np.testing.assert_allclose(got[1][1], got[0][1], rtol=1e-2, atol=1e-3)


# addcmul/addcdiv of float16/bfloat16 rounded value * tensor1, the product or quotient and the
# sum each in the low dtype: where input + value * tensor1 * tensor2 nearly cancels, the result
# was up to ~30 ulp off (torch's fused kernel rounds once).
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_low_precision_addcmul_addcdiv_round_once(dtype, op):
    a, b = _f32(RNG.standard_normal(3000) * 3), _f32(RNG.standard_normal(3000) + 4)
    c = _f32(-(a * b if op == "addcmul" else a / b) * 0.5 + RNG.standard_normal(3000) * 1e-2)
    got = []
    for lib in (torch, gd):
        x, t1, t2 = (lib.tensor(v, dtype=getattr(lib, dtype), requires_grad=True)
                     for v in (c, a, b))
        y = getattr(lib, op)(x, t1, t2, value=0.5)
        y.backward(lib.ones_like(y))
        got.append([_numpy(y), _numpy(x.grad), _numpy(t1.grad), _numpy(t2.grad)])
    assert np.mean(got[1][0] != got[0][0]) < 0.01
    for g, w in zip(got[1][1:], got[0][1:]):
        np.testing.assert_allclose(g, w, rtol=2e-2, atol=1e-2)


# rsqrt (1 / sqrt, two roundings) and lerp (a composite of three) of float16/bfloat16 were up
# to ~2 ulp off where torch rounds once.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["rsqrt", "lerp number", "lerp tensor"])
def test_low_precision_rsqrt_and_lerp_round_once(dtype, op):
    a, b, w = (_f32(v) for v in (RNG.uniform(0.1, 9, 3000), RNG.standard_normal(3000),
                                 RNG.uniform(-1, 2, 3000)))
    got = []
    for lib in (torch, gd):
        x, e, wt = (lib.tensor(v, dtype=getattr(lib, dtype)) for v in (a, b, w))
        y = {"rsqrt": lambda: x.rsqrt(), "lerp number": lambda: x.lerp(e, 0.3),
             "lerp tensor": lambda: x.lerp(e, wt)}[op]()
        got.append(_numpy(y))
    assert np.mean(got[1] != got[0]) < 0.01
