"""gd.autocast against torch.autocast on the CPU (torch 2.13): the state API, the op lists (the
dtype of every output equal to torch's, values within bfloat16's rounding), gradients, the
weight-cast cache; the CUDA list through its policy table."""

import threading
import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl.amp import autocast_mode

torch = pytest.importorskip("torch")
tf = torch.nn.functional


def test_defaults_and_state_match_torch():
    for device in ("cpu", "cuda"):
        assert gd.is_autocast_enabled(device) == torch.is_autocast_enabled(device) is False
        assert str(gd.get_autocast_dtype(device)) == \
            str(torch.get_autocast_dtype(device)).replace("torch.", "")
        assert gd.amp.is_autocast_available(device) == torch.amp.is_autocast_available(device)
    with gd.autocast("cpu"):
        assert gd.is_autocast_enabled("cpu") and not gd.is_autocast_enabled("cuda")
        with gd.autocast("cpu", enabled=False):
            assert not gd.is_autocast_enabled("cpu")
        with gd.amp.autocast("cpu", dtype=gd.float16):
            assert gd.get_autocast_dtype("cpu") == gd.float16
        assert gd.is_autocast_enabled("cpu") and gd.get_autocast_dtype("cpu") == gd.bfloat16
    assert not gd.is_autocast_enabled("cpu")


def test_decorator_and_threads():
    seen = {}

    @gd.autocast("cpu")
    def inside():
        seen["main"] = gd.is_autocast_enabled("cpu")
        worker = threading.Thread(target=lambda: seen.update(thread=gd.is_autocast_enabled("cpu")))
        worker.start()
        worker.join()

    inside()
    assert seen == {"main": True, "thread": False}       # per thread, as torch
    assert not gd.is_autocast_enabled("cpu")


def test_bad_arguments():
    with pytest.raises(ValueError, match="device_type"):
        gd.autocast(gd.device("cpu"))
    with pytest.raises(ValueError, match="device_type"):
        gd.autocast("tpu")
    with pytest.warns(UserWarning, match="float16 and bfloat16"):       # as torch: warn, off
        region = gd.autocast("cpu", dtype=gd.float64)
    with region:
        assert not gd.is_autocast_enabled("cpu")
    if not gd.backend.cuda_available():
        with pytest.warns(UserWarning, match="not available"):
            region = gd.autocast("cuda")
        with region:
            assert not gd.is_autocast_enabled("cuda")


def _both(*arrays):
    """The same values as gpudl and torch cpu tensors (float32 unless the array says otherwise;
    on the cpu whatever the default device, where cpu autocast applies)."""
    return [gd.tensor(a, device="cpu") for a in arrays], [torch.from_numpy(a) for a in arrays]


R = np.random.default_rng(0)
IMG = R.standard_normal((2, 3, 8, 8)).astype(np.float32)
KER = R.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
MAT = R.standard_normal((6, 8)).astype(np.float32)
W = R.standard_normal((5, 8)).astype(np.float32) * 0.3
B = R.standard_normal(5).astype(np.float32)
LABELS = R.integers(0, 5, 6)
PROBS = R.uniform(0.1, 0.9, (6, 5)).astype(np.float32)

# name -> (fn(lib, functional, *tensors), arrays, cast the inputs to bfloat16 first?)
CASES = {
    "linear": (lambda m, f, x, w, b: f.linear(x, w, b), (MAT, W, B), False),
    "matmul": (lambda m, f, x, w: x @ w.T, (MAT, W), False),
    "mm": (lambda m, f, x, w: x.mm(w.T), (MAT, W), False),
    "bmm": (lambda m, f, x, w: x[None].bmm(w.T[None]), (MAT, W), False),
    "addmm": (lambda m, f, b, x, w: b.addmm(x, w.T), (B, MAT, W), False),
    "einsum": (lambda m, f, x, w: m.einsum("ij,kj->ik", x, w), (MAT, W), False),
    "conv2d": (lambda m, f, x, k: f.conv2d(x, k, padding=1), (IMG, KER), False),
    "conv1d": (lambda m, f, x, k: f.conv1d(x[:, :, 0], k[..., 0]), (IMG, KER), False),
    "conv_transpose2d": (lambda m, f, x, k: f.conv_transpose2d(x, k.transpose(0, 1)),
                         (IMG, KER), False),
    "sdpa": (lambda m, f, x: f.scaled_dot_product_attention(x, x, x), (IMG,), False),
    "cross_entropy": (lambda m, f, x: f.cross_entropy(x, m.tensor(LABELS, device="cpu")),
                      (PROBS,), True),
    "nll_loss": (lambda m, f, x: f.nll_loss(x, m.tensor(LABELS, device="cpu")), (PROBS,), True),
    "mse_loss": (lambda m, f, x, y: f.mse_loss(x, y), (PROBS, MAT[:, :5]), True),
    "l1_loss": (lambda m, f, x, y: f.l1_loss(x, y), (PROBS, MAT[:, :5]), True),
    "smooth_l1_loss": (lambda m, f, x, y: f.smooth_l1_loss(x, y), (PROBS, MAT[:, :5]), True),
    "huber_loss": (lambda m, f, x, y: f.huber_loss(x, y), (PROBS, MAT[:, :5]), True),
    "bce_with_logits": (lambda m, f, x, y: f.binary_cross_entropy_with_logits(x, y),
                        (MAT[:, :5], PROBS), True),
    "bce": (lambda m, f, x, y: f.binary_cross_entropy(x, y), (PROBS, PROBS), True),
    "kl_div": (lambda m, f, x, y: f.kl_div(x, y, reduction="batchmean"), (MAT[:, :5], PROBS),
               True),
    "prod": (lambda m, f, x: x.prod(), (PROBS,), True),
    # not in torch's CPU lists: bfloat16 stays bfloat16, float32 stays float32
    "softmax": (lambda m, f, x: f.softmax(x, -1), (MAT,), True),
    "log_softmax": (lambda m, f, x: f.log_softmax(x, -1), (MAT,), True),
    "layer_norm": (lambda m, f, x: f.layer_norm(x, (8,)), (MAT,), True),
    "exp": (lambda m, f, x: x.exp(), (MAT,), True),
    "sum": (lambda m, f, x: x.sum(), (MAT,), True),
    "relu_fp32": (lambda m, f, x: f.relu(x), (MAT,), False),
    "max_pool2d": (lambda m, f, x: f.max_pool2d(x, 2), (IMG,), True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_op_lists_match_torch(name):
    fn, arrays, lowp = CASES[name]
    ours, theirs = _both(*arrays)
    if lowp:
        ours, theirs = [t.bfloat16() for t in ours], [t.bfloat16() for t in theirs]
    with gd.autocast("cpu"):
        y = fn(gd, F, *ours)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = fn(torch, tf, *theirs)
    assert str(y.dtype) == str(ty.dtype).replace("torch.", ""), name
    np.testing.assert_allclose(np.asarray(y.float().numpy()), ty.float().numpy(), rtol=3e-2,
                               atol=3e-2)


def test_promote_ops_take_the_widest():
    a, b = gd.ones(2).bfloat16(), gd.ones(2)
    with gd.autocast("cpu"):
        assert gd.cat([a, b]).dtype == gd.float32 and gd.stack([a, b]).dtype == gd.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.cat([torch.ones(2).bfloat16(), torch.ones(2)]).dtype == torch.float32


def test_float64_is_never_cast():
    x = gd.ones(2, 3, dtype=gd.float64)
    with gd.autocast("cpu"):
        assert (x @ x.T).dtype == gd.float64


def _models():
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))
    ours = gd.nn.Sequential(gd.nn.Conv2d(3, 4, 3, padding=1, device="cpu"), gd.nn.ReLU(),
                            gd.nn.Flatten(), gd.nn.Linear(4 * 8 * 8, 5, device="cpu"))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def test_model_step_matches_torch_autocast_and_grads_keep_the_weights_dtype():
    ours, theirs = _models()
    x, tx = gd.tensor(IMG, device="cpu"), torch.from_numpy(IMG)
    with gd.autocast("cpu"):
        out = ours(x)
        loss = F.cross_entropy(out, gd.tensor(LABELS[:2], device="cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tout = theirs(tx)
        tloss = tf.cross_entropy(tout, torch.from_numpy(LABELS[:2]))
    assert out.dtype == gd.bfloat16 and tout.dtype == torch.bfloat16
    assert loss.dtype == gd.float32 and tloss.dtype == torch.float32
    np.testing.assert_allclose(out.float().numpy(), tout.float().detach().numpy(), rtol=3e-2,
                               atol=3e-2)
    loss.backward()
    tloss.backward()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad.dtype == gd.float32 and tp.grad.dtype == torch.float32, name
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=5e-2,
                                   atol=5e-2 * np.abs(tp.grad.numpy()).max())


def test_outside_autocast_nothing_changes():
    ours, _ = _models()
    assert ours(gd.tensor(IMG, device="cpu")).dtype == gd.float32


def test_weight_casts_are_cached_within_a_region():
    w = gd.nn.Parameter(gd.tensor(W, device="cpu"))
    x = gd.tensor(MAT, device="cpu")
    with gd.autocast("cpu"):
        F.linear(x, w)
        F.linear(x, w)
        cached = [v for k, v in autocast_mode.state.cache.items() if k[0] == id(w)]
        assert len(cached) == 1 and cached[0][-1].dtype == gd.bfloat16
        with gd.autocast("cpu"):                    # nested: the same cache
            F.linear(x, w)
        assert len(autocast_mode.state.cache) == 1
    assert not autocast_mode.state.cache             # emptied with the outermost region
    with gd.autocast("cpu", cache_enabled=False):
        F.linear(x, w)
        assert not autocast_mode.state.cache
    with gd.autocast("cpu"):
        F.linear(x, gd.tensor(W, device="cpu"))      # no grad: not a weight, not cached
        assert not autocast_mode.state.cache


def _cuda_labelled(array):
    """A tensor labelled as on the cuda device (its array stays in NumPy; under the strict
    simulator a device array), to drive the CUDA policy table on a machine without a GPU."""
    return gd.Tensor._make(gd.backend.to_device_array(array, "cuda"), False, None, 0, "cuda")


def test_cuda_policy_table_follows_torch_cuda_lists(monkeypatch):
    state = autocast_mode.state
    monkeypatch.setattr(state, "enabled", {"cuda": True, "cpu": False})
    monkeypatch.setattr(state, "active", True)
    x = _cuda_labelled(MAT)
    h = _cuda_labelled(MAT.astype(np.float16))
    cast = autocast_mode.cast_inputs
    for op in ("linear", "matmul", "conv2d", "scaled_dot_product_attention", "lstm", "gru"):
        assert cast(op, x)[0].dtype == gd.float16, op
    for op in ("softmax", "log_softmax", "layer_norm", "group_norm", "exp", "log", "sum",
               "prod", "cumsum", "pow", "mse_loss", "cross_entropy", "nll_loss", "kl_div",
               "binary_cross_entropy_with_logits", "logsumexp", "softplus"):
        assert cast(op, h)[0].dtype == gd.float32, op
    assert cast("relu", h)[0] is h                   # in neither list: untouched
    with pytest.raises(RuntimeError, match="unsafe to autocast"):
        cast("binary_cross_entropy", h, h)
    cpu_x = gd.tensor(MAT, device="cpu")             # another device's tensors: untouched
    assert cast("linear", cpu_x)[0] is cpu_x


def test_cpu_lists_differ_from_cuda_where_torch_differs():
    cpu, cuda = autocast_mode.POLICIES["cpu"], autocast_mode.POLICIES["cuda"]
    for op in ("softmax", "layer_norm", "exp", "sum"):
        assert op not in cpu and op in cuda
    assert cpu["gru"] == "state" and cuda["gru"] == "lower"
    assert cpu["binary_cross_entropy"] == "fp32" and cuda["binary_cross_entropy"] == "banned"


def test_no_warning_outside_autocast():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.linear(gd.tensor(MAT), gd.tensor(W))


def test_digits_example_trains_as_well_with_amp(tmp_path):
    """``python -m gpudl.examples digits --amp``: bfloat16 autocast on the cpu reaches the
    float32 run's accuracy (fast settings here; the full runs: 0.975 and 0.98)."""
    from gpudl.examples import digits
    plain = digits.run(fast=True, seed=0, out=str(tmp_path), progress=False)
    mixed = digits.run(fast=True, seed=0, out=str(tmp_path), progress=False, amp=True)
    assert mixed["test_accuracy"] > 0.8
    assert abs(mixed["test_accuracy"] - plain["test_accuracy"]) < 0.05
    assert mixed["final_loss"] < mixed["first_loss"] / 3
    # the same seed, data and order: only bfloat16 arithmetic makes the losses differ (an
    # --amp that changed nothing would pass the lines above)
    assert mixed["first_loss"] != plain["first_loss"]
    assert abs(mixed["final_loss"] - plain["final_loss"]) < 0.5 * plain["final_loss"]


def test_fit_steps_through_a_grad_scaler():
    from gpudl.data import DataLoader, TensorDataset
    from gpudl.train import fit
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32) > 0).astype(np.int64)
    model = gd.nn.Linear(4, 2)
    optimizer = gd.optim.SGD(model.parameters(), lr=0.5)
    scaler = gd.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=3)
    history = fit(model, gd.nn.CrossEntropyLoss(), optimizer,
                  DataLoader(TensorDataset(gd.tensor(x), gd.tensor(y)), batch_size=16), 4,
                  verbose=False, autocast=gd.autocast("cpu"), scaler=scaler)
    assert history["loss"][-1] < history["loss"][0]
    assert scaler.get_scale() > 2.0 ** 8            # 16 clean steps: grown every 3


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm", "group_norm"])
def test_norms_of_low_precision_input_with_float32_weights_follow_torch(norm):
    """A float32 model under cpu autocast hands its norms bfloat16 activations: torch's
    mixed-type norms compute in float32 and return the input's dtype; the weights' gradients
    stay float32."""
    x = R.standard_normal((4, 3, 5)).astype(np.float32)
    ours, theirs = gd.tensor(x).bfloat16(), torch.from_numpy(x).bfloat16()
    w, tw = gd.nn.Parameter(gd.ones(5 if norm == "layer_norm" else 3)), None
    tw = torch.nn.Parameter(torch.ones(w.shape[0]))
    calls = {"layer_norm": lambda f, a, p: f.layer_norm(a, (5,), p),
             "batch_norm": lambda f, a, p: f.batch_norm(a, None, None, p, training=True),
             "group_norm": lambda f, a, p: f.group_norm(a, 3, p)}
    y, ty = calls[norm](F, ours, w), calls[norm](tf, theirs, tw)
    assert str(y.dtype) == str(ty.dtype).replace("torch.", "") == "bfloat16"
    np.testing.assert_allclose(y.float().numpy(), ty.float().detach().numpy(), atol=2e-2)
    weights = R.standard_normal(x.shape).astype(np.float32)
    (y.float() * gd.tensor(weights)).sum().backward()
    (ty.float() * torch.from_numpy(weights)).sum().backward()
    assert w.grad.dtype == gd.float32
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=3e-2,
                               atol=3e-2 * np.abs(tw.grad.numpy()).max())


def test_attention_modules_under_autocast_give_torchs_dtypes():
    # cpu autocast acts on cpu tensors only: modules and inputs on the cpu whatever the default
    x = gd.randn(2, 3, 8, device="cpu")
    with gd.autocast("cpu"):
        mha = gd.nn.MultiheadAttention(8, 2, batch_first=True).cpu()(x, x, x)[0]
        layer = gd.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).cpu()(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tmha = torch.nn.MultiheadAttention(8, 2, batch_first=True)(*(torch.randn(2, 3, 8),) * 3)
        tlayer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)(torch.randn(2, 3,
                                                                                          8))
    assert (str(mha.dtype), str(layer.dtype)) == (str(tmha[0].dtype)[6:], str(tlayer.dtype)[6:])


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_recurrent_modules_under_autocast_give_torchs_dtypes(name):
    x = R.standard_normal((3, 2, 8) if "Cell" not in name else (2, 8)).astype(np.float32)
    with gd.autocast("cpu"):            # on cpu tensors, the only ones cpu autocast acts on
        out = getattr(gd.nn, name)(8, 4).cpu()(gd.tensor(x, device="cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tout = getattr(torch.nn, name)(8, 4)(torch.from_numpy(x))
    out, tout = (o[0] if isinstance(o, tuple) else o for o in (out, tout))
    assert str(out.dtype) == str(tout.dtype).replace("torch.", "")
