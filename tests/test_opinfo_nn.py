"""Sweep PyTorch's own OpInfo samples (common_methods_invocations.op_db) over gpudl.nn.functional.

For every sample (float64, CPU) the input, args and kwargs are translated to gpudl, the op runs in
both libraries, and the outputs, the gradients of (out * random weights).sum() and any tensor the
op updates in place (batch_norm's running stats) are compared. The op's ``error_inputs`` must make
gpudl raise one of TypeError/ValueError/IndexError/RuntimeError/NotImplementedError.

Samples using features outside gpudl's public API (out=, complex, non-constant pad modes...) are
skipped and counted; deliberate departures are listed in ``DEPARTURES`` with the reason.
"""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_modules import module_db

import gpudl.nn as gn

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 conv on cuda

# gpudl name -> OpInfo full names (name.variant) whose samples it must match
OPS = {
    "conv2d": ["nn.functional.conv2d"],
    "conv_transpose2d": ["nn.functional.conv_transpose2d"],
    "max_pool2d": ["nn.functional.max_pool2d"],
    "avg_pool2d": ["nn.functional.avg_pool2d"],
    "adaptive_avg_pool2d": ["nn.functional.adaptive_avg_pool2d"],
    "linear": ["nn.functional.linear"],
    "relu": ["nn.functional.relu"],
    "leaky_relu": ["nn.functional.leaky_relu"],
    "gelu": ["nn.functional.gelu"],
    "silu": ["nn.functional.silu"],
    "elu": ["nn.functional.elu"],
    "softplus": ["nn.functional.softplus"],
    "hardtanh": ["nn.functional.hardtanh"],
    "dropout": ["nn.functional.dropout"],
    "batch_norm": ["nn.functional.batch_norm", "nn.functional.batch_norm.without_cudnn"],
    "layer_norm": ["nn.functional.layer_norm"],
    "embedding": ["nn.functional.embedding"],
    "mse_loss": ["nn.functional.mse_loss"],
    "l1_loss": ["nn.functional.l1_loss"],
    "smooth_l1_loss": ["nn.functional.smooth_l1_loss"],
    "huber_loss": ["nn.functional.huber_loss"],
    "cross_entropy": ["nn.functional.cross_entropy"],
    "nll_loss": ["nn.functional.nll_loss"],
    "binary_cross_entropy": ["nn.functional.binary_cross_entropy"],
    "binary_cross_entropy_with_logits": ["nn.functional.binary_cross_entropy_with_logits"],
    "kl_div": ["nn.functional.kl_div"],
    "softmax": ["softmax", "softmax.with_dtype"],
    "log_softmax": ["log_softmax", "log_softmax.with_dtype"],
    "pad": ["nn.functional.pad.constant"],
    "one_hot": ["nn.functional.one_hot"],
    "scaled_dot_product_attention": ["nn.functional.scaled_dot_product_attention"],
    # issue 15
    "conv1d": ["nn.functional.conv1d"],
    "max_pool1d": ["nn.functional.max_pool1d"],
    "avg_pool1d": ["nn.functional.avg_pool1d"],
    "group_norm": ["nn.functional.group_norm"],
    "instance_norm": ["nn.functional.instance_norm"],
    "mish": ["nn.functional.mish"],
    "glu": ["nn.functional.glu"],
    "pad_by_index": ["nn.functional.pad.reflect", "nn.functional.pad.replicate",
                     "nn.functional.pad.circular", "nn.functional.pad.replicate_negative"],
    "cosine_similarity": ["nn.functional.cosine_similarity"],
    "normalize": ["nn.functional.normalize"],
    "unfold": ["nn.functional.unfold"],
    "pixel_shuffle": ["nn.functional.pixel_shuffle"],
    "interpolate": [f"nn.functional.interpolate.{mode}" for mode in (
        "nearest", "linear", "bilinear", "nearest-exact", "bicubic", "trilinear", "area")],
    # session 10, nn breadth (rrelu, alpha_dropout, dropout2d draw random masks: own tests)
    **{name: [f"nn.functional.{name}"] for name in (
        "prelu", "selu", "celu", "hardswish", "hardsigmoid", "softsign", "logsigmoid",
        "hardshrink", "softshrink", "tanhshrink", "threshold", "rms_norm", "pairwise_distance",
        "margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss",
        "triplet_margin_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
        "multi_margin_loss", "poisson_nll_loss", "gaussian_nll_loss", "adaptive_max_pool1d",
        "adaptive_max_pool2d", "adaptive_avg_pool1d", "bilinear")},
    "softmin": ["nn.functional.softmin", "nn.functional.softmin.with_dtype"],
    # session 11, nn-utils
    "ctc_loss": ["nn.functional.ctc_loss"],
    "multilabel_margin_loss": ["nn.functional.multilabel_margin_loss"],
    # session 11, nn-vision
    **{name: [f"nn.functional.{name}"] for name in (
        "conv3d", "conv_transpose1d", "conv_transpose3d", "max_pool3d", "avg_pool3d",
        "adaptive_avg_pool3d", "adaptive_max_pool3d", "local_response_norm", "grid_sample",
        "pdist", "pixel_unshuffle", "channel_shuffle", "upsample_bilinear", "upsample_nearest")},
    **{name: [f"nn.functional.{name}", f"nn.functional.{name}.grad"] for name in (
        "max_unpool1d", "max_unpool2d", "max_unpool3d")},
    # session 26: the variants and ops no sweep had run
    "relu6": ["nn.functional.relu6"],
    "embedding_bag": ["nn.functional.embedding_bag"],
    "triplet_margin_with_distance_loss": ["nn.functional.triplet_margin_with_distance_loss"],
}

ERRORS = (TypeError, ValueError, IndexError, RuntimeError, NotImplementedError)
RTOL, ATOL = 1e-7, 1e-9


class Skip(Exception):
    """A sample that uses a feature outside gpudl's contract (counted, not compared)."""


def _departure(op, sample):
    """A documented, deliberate departure from torch for this sample, or None."""
    kw = sample.kwargs
    if op == "dropout" and kw.get("training", True) and kw.get("p", 0.5) not in (0, 0.0):
        return "random mask (only p=0 or eval compared)"
    if op == "scaled_dot_product_attention" and kw.get("dropout_p", 0) > 0:
        return "random dropout on the attention probabilities"
    if op == "embedding" and kw.get("sparse"):
        return "sparse: NotImplementedError by design"
    if op in ("relu", "relu6", "elu", "hardtanh", "selu", "celu", "softshrink", "hardshrink") \
            and bool(torch.isnan(sample.input).any()):
        # The gradient at a NaN input: torch's own CPU kernels disagree with themselves for elu
        # and hardtanh (the scalar path for small tensors passes the gradient, the vectorised
        # one gives 0 / NaN); relu passes it always, gpudl's elementwise.Relu gives 0 (a core
        # op, reported, not changed here).
        return "gradient at NaN inputs"
    if op == "interpolate" and kw.get("antialias"):
        return "antialias=True: NotImplementedError by design"
    if op == "batch_norm" and sample.input.ndim < 2:
        return "batch_norm needs (N, C, ...) input; torch also takes a 1-D empty tensor"
    return None


def _call(op, inp, args, kwargs):
    """F.<op> with the OpInfo's argument order (its embedding wrapper takes weight first)."""
    if op in ("embedding", "embedding_bag"):
        return getattr(F, op)(args[0], inp, *args[1:], **kwargs)
    if op == "pad_by_index":                 # the same F.pad, its non-constant modes
        return F.pad(inp, *args, **kwargs)
    return getattr(F, op)(inp, *args, **kwargs)


# --------------------------------------------------------------------------- translation
_DTYPES = {torch.float64: gd.float64, torch.float32: gd.float32}


def _to_gd(x, leaves):
    """x with every torch tensor replaced by a gpudl copy; ``leaves`` gets (gpudl tensor, fresh
    torch leaf) pairs (fresh leaves: OpInfo's expanded or strided views need not get grads)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.layout != torch.strided:
            raise Skip("complex or sparse tensor")
        a = x.detach().numpy().copy()
        if a.dtype.kind in "iu":
            a = a.astype(np.int64)
        t = gd.tensor(a, requires_grad=bool(x.requires_grad and a.dtype.kind == "f"))
        leaves.append((t, x.detach().clone().requires_grad_(t.requires_grad)))
        return t
    if isinstance(x, torch.dtype):
        if x not in _DTYPES:
            raise Skip(f"dtype {x}")
        return _DTYPES[x]
    if isinstance(x, torch.Size):
        return tuple(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_gd(v, leaves) for v in x)
    if isinstance(x, (torch.memory_format, torch.device)):
        raise Skip(f"unsupported argument {x!r}")
    if isinstance(x, torch.nn.PairwiseDistance):         # a distance_function
        return gn.PairwiseDistance(p=x.norm, eps=x.eps, keepdim=x.keepdim)
    return x


def _to_torch(x, fresh):
    """x with every torch tensor replaced by its fresh leaf (same traversal order as _to_gd)."""
    if isinstance(x, torch.Tensor):
        return next(fresh)
    if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
        return type(x)(_to_torch(v, fresh) for v in x)
    return x


def _translate(sample):
    """(gpudl input, args, kwargs, leaves, torch input, args, kwargs)."""
    if "out" in sample.kwargs:
        raise Skip("out=")
    leaves = []
    inp = _to_gd(sample.input, leaves)
    args = _to_gd(tuple(sample.args), leaves)
    kwargs = {k: _to_gd(v, leaves) for k, v in sample.kwargs.items()}
    fresh = iter([t for _, t in leaves])
    t_inp, t_args = _to_torch(sample.input, fresh), _to_torch(tuple(sample.args), fresh)
    t_kwargs = {k: _to_torch(v, fresh) for k, v in sample.kwargs.items()}
    return inp, args, kwargs, leaves, t_inp, t_args, t_kwargs


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _close(got, expected, what):
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return f"{what}: shape {got.shape} != torch {expected.shape}"
    if expected.dtype.kind in "iub":
        return None if np.array_equal(got, expected) else f"{what}: differs"
    try:
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=True)
    except AssertionError as e:
        return f"{what}: {str(e).strip().splitlines()[2:5]}"
    return None


# --------------------------------------------------------------------------- one sample
def _check_sample(op, torch_fn, sample, seed):
    """None when gpudl matches torch on this sample, else a description of the mismatch."""
    inp, args, kwargs, leaves, t_inp, t_args, t_kwargs = _translate(sample)
    try:
        t_out = torch_fn(t_inp, *t_args, **t_kwargs)
    except Exception as e:  # noqa: BLE001 (torch refuses it: gpudl must refuse too)
        try:
            _call(op, inp, args, kwargs)
        except ERRORS:
            return None
        return f"torch raised {type(e).__name__} but gpudl did not"
    try:
        out = _call(op, inp, args, kwargs)
    except Exception as e:  # noqa: BLE001 (any gpudl failure is a finding)
        return f"gpudl raised {type(e).__name__}: {e}"
    outs, t_outs = _flat(out), _flat(t_out)
    if len(outs) != len(t_outs):
        return f"{len(outs)} outputs, torch {len(t_outs)}"
    for i, (a, b) in enumerate(zip(outs, t_outs)):
        msg = _close(a.numpy(), b.detach().numpy(), f"output {i}")
        if msg:
            return msg
    for i, (g, t) in enumerate(leaves):                 # in-place updates (running stats)
        if not t.requires_grad:
            msg = _close(g.numpy(), t.detach().numpy(), f"arg {i} after call")
            if msg:
                return msg
    # gradients of a random contraction of the float outputs
    rng = np.random.default_rng(seed)
    loss, t_loss = None, None
    for a, b in zip(outs, t_outs):
        if b.dtype.is_floating_point and b.requires_grad:
            w = rng.standard_normal(tuple(b.shape))
            term, t_term = (a * gd.tensor(w)).sum(), (b * torch.tensor(w)).sum()
            loss = term if loss is None else loss + term
            t_loss = t_term if t_loss is None else t_loss + t_term
    t_leaves = [(g, t) for g, t in leaves if t.requires_grad]
    if t_loss is None or not t_leaves:
        return None
    t_grads = torch.autograd.grad(t_loss, [t for _, t in t_leaves], allow_unused=True)
    if loss.requires_grad:
        loss.backward()
    for i, ((g, t), tg) in enumerate(zip(t_leaves, t_grads)):
        expected = np.zeros(tuple(t.shape)) if tg is None else tg.numpy()
        got = np.zeros(g.shape) if g.grad is None else g.grad.numpy()
        msg = _close(got, expected, f"grad of leaf {i}")
        if msg:
            return msg
    return None


def _check_error(op, error_input):
    sample = error_input.sample_input
    inp, args, kwargs = _translate(sample)[:3]
    try:
        _call(op, inp, args, kwargs)
    except ERRORS:
        return None
    except Exception as e:  # noqa: BLE001 (the wrong kind of error is a finding)
        return f"error input ({error_input.error_regex!r}): raised {type(e).__name__}: {e}"
    return f"error input ({error_input.error_regex!r}): accepted"


# --------------------------------------------------------------------------- sweep
_BY_NAME = {(o.name + ("." + o.variant_test_name if o.variant_test_name else "")): o
            for o in op_db}


def sweep(op):
    """{'compared', 'skipped', 'departures', 'errors_checked'} counts and a list of mismatches."""
    stats = {"compared": 0, "skipped": 0, "departures": 0, "errors_checked": 0}
    problems = []
    torch.manual_seed(0)
    for full in OPS[op]:
        info = _BY_NAME[full]
        samples = list(info.sample_inputs("cpu", torch.float64, requires_grad=True))
        if info.reference_inputs_func is not None:     # the larger reference set, where defined
            samples += list(info.reference_inputs("cpu", torch.float64, requires_grad=True))
        for k, sample in enumerate(samples):
            if _departure(op, sample):
                stats["departures"] += 1
                continue
            try:
                msg = _check_sample(op, info.op, sample, seed=k)
            except Skip:
                stats["skipped"] += 1
                continue
            stats["compared"] += 1
            if msg:
                problems.append(f"{full} sample {k} ({sample}): {msg}")
        if info.error_inputs_func is not None:
            for ei in info.error_inputs("cpu"):
                try:
                    msg = _check_error(op, ei)
                except Skip:
                    stats["skipped"] += 1
                    continue
                stats["errors_checked"] += 1
                if msg:
                    problems.append(f"{full}: {msg}")
    return stats, problems


@pytest.mark.parametrize("op", sorted(OPS))
def test_opinfo_samples(op):
    stats, problems = sweep(op)
    assert stats["compared"] > 0 or op == "one_hot", stats
    assert not problems, "\n".join(problems[:20])


# --------------------------------------------------------------------------- module_db sweep
# The same comparison for torch's ModuleInfo samples (common_modules.module_db) of every layer
# gpudl.nn also has: same constructor arguments, torch's state dict loaded, forward compared,
# then the gradients of the inputs and parameters and the buffers after the call.
_MODULES = {m.module_cls.__name__: m for m in module_db if hasattr(gn, m.module_cls.__name__)}


def _module_departure(ci):
    """Constructor features outside the contract (skipped and counted), or None."""
    kw = ci.kwargs
    if any(isinstance(a, torch.nn.Module) and not isinstance(a, torch.nn.TransformerEncoderLayer)
           for a in tuple(ci.args) + tuple(kw.values())):
        return "a torch module as a constructor argument"
    if "device" in kw or "dtype" in kw:
        return "device= / dtype= constructor arguments"
    return None


def _ctor_to_gd(x, leaves):
    """Constructor arguments: torch.nn.functional callables (activations) map to gpudl's, a
    torch TransformerEncoderLayer (TransformerEncoder's argument) to gpudl's with its settings."""
    if isinstance(x, torch.nn.TransformerEncoderLayer):
        attn = x.self_attn
        return gn.TransformerEncoderLayer(
            attn.embed_dim, attn.num_heads, x.linear1.out_features, x.dropout.p,
            _ctor_to_gd(x.activation, leaves), x.norm1.eps, attn.batch_first, x.norm_first,
            x.linear1.bias is not None)
    if callable(x) and not isinstance(x, torch.Tensor) and hasattr(F, getattr(x, "__name__", "")):
        return getattr(F, x.__name__)
    return _to_gd(x, leaves)


def _flat_out(o):
    if isinstance(o, (tuple, list)):
        return [x for y in o for x in _flat_out(y)]
    return [] if o is None else [o]


def _check_module_sample(name, info, mi, training, seed):
    ci, fi = mi.constructor_input, mi.forward_input
    leaves = []
    cargs = tuple(_ctor_to_gd(a, leaves) for a in ci.args)
    ckw = {k: _ctor_to_gd(v, leaves) for k, v in ci.kwargs.items()}
    tkw = dict(ci.kwargs)
    torch.manual_seed(0)
    tm = info.module_cls(*ci.args, **tkw).double().train(training)
    gm = getattr(gn, name)(*cargs, **ckw).double()
    gm.train(training)
    if getattr(tm, "has_uninitialized_params", lambda: False)():     # a lazy module (nn-utils):
        tm._infer_parameters(tm, tuple(fi.args))                        # its shapes, no forward
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    fl = []
    gin = _to_gd(tuple(fi.args), fl)
    gkw = {k: _to_gd(v, fl) for k, v in fi.kwargs.items()}
    fresh = iter([t for _, t in fl])
    tin = _to_torch(tuple(fi.args), fresh)
    tfkw = {k: _to_torch(v, fresh) for k, v in fi.kwargs.items()}
    try:
        t_out = tm(*tin, **tfkw)
    except Exception as e:  # noqa: BLE001 (torch refuses it: gpudl must refuse too)
        try:
            gm(*gin, **gkw)
        except ERRORS:
            return None
        return f"torch raised {type(e).__name__} but gpudl did not"
    try:
        out = gm(*gin, **gkw)
    except Exception as e:  # noqa: BLE001 (any gpudl failure is a finding)
        return f"gpudl raised {type(e).__name__}: {e}"
    outs, t_outs = _flat_out(out), _flat_out(t_out)
    if len(outs) != len(t_outs):
        return f"{len(outs)} outputs, torch {len(t_outs)}"
    for i, (a, b) in enumerate(zip(outs, t_outs)):
        msg = _close(a.numpy(), b.detach().numpy(), f"output {i}")
        if msg:
            return msg
    rng = np.random.default_rng(seed)
    loss = t_loss = None
    for a, b in zip(outs, t_outs):
        if b.dtype.is_floating_point and b.requires_grad:
            w = rng.standard_normal(tuple(b.shape))
            term, t_term = (a * gd.tensor(w)).sum(), (b * torch.tensor(w)).sum()
            loss = term if loss is None else loss + term
            t_loss = t_term if t_loss is None else t_loss + t_term
    if t_loss is not None:
        t_loss.backward()
        loss.backward()
        pairs = [(f"input {i}", g, t) for i, (g, t) in enumerate(fl) if t.requires_grad]
        t_params = dict(tm.named_parameters())
        pairs += [(f"parameter {k}", p, t_params[k]) for k, p in gm.named_parameters()]
        for what, g, t in pairs:
            expected = np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy()
            got = np.zeros(g.shape) if g.grad is None else g.grad.numpy()
            msg = _close(got, expected, f"grad of {what}")
            if msg:
                return msg
    t_buffers = dict(tm.named_buffers())
    for k, b in gm.named_buffers():
        if k in t_buffers:
            msg = _close(b.numpy(), t_buffers[k].numpy(), f"buffer {k} after call")
            if msg:
                return msg
    return None


def module_sweep(name):
    info = _MODULES[name]
    stats = {"compared": 0, "skipped": 0, "departures": 0}
    problems = []
    for training in (True, False):
        samples = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                          requires_grad=True, training=training)
        for k, mi in enumerate(samples):
            if _module_departure(mi.constructor_input):
                stats["departures"] += 1
                continue
            try:
                msg = _check_module_sample(name, info, mi, training, seed=k)
            except Skip:
                stats["skipped"] += 1
                continue
            stats["compared"] += 1
            if msg:
                problems.append(f"{name} training={training} sample {k} {mi.desc!r} "
                                f"{mi.constructor_input.args} {mi.constructor_input.kwargs}: {msg}")
    return stats, problems


@pytest.mark.parametrize("name", sorted(_MODULES))
def test_moduledb_samples(name):
    stats, problems = module_sweep(name)
    assert stats["compared"] > 0, stats
    assert not problems, "\n".join(problems[:20])


if __name__ == "__main__":                  # a report: python tests/test_opinfo_nn.py [names]
    import sys
    for name in sys.argv[1:] or sorted(OPS) + sorted(_MODULES):
        s, p = sweep(name) if name in OPS else module_sweep(name)
        print(name, s)
        for line in p[:8]:
            print("   ", line[:400])


# --------------------------------------------------------------------------- regressions
# Bugs the sweeps found, pinned directly (each fixed in gpudl/ops/).
def test_regressions_found_by_the_sweep():
    from oracle import check_against_torch
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    # pad: negative widths crop (padding.py)
    check_against_torch(lambda a: F.pad(a, (-1, 2, 1, -2), value=0.5),
                        lambda a: TF.pad(a, (-1, 2, 1, -2), value=0.5), x)
    with pytest.raises(ValueError):
        F.pad(gd.tensor(x), (-3, -3))
    # kl_div: a negative target gives NaN, as torch's xlogy (loss.py)
    t = np.array([0.0, -1.0, 0.5])
    check_against_torch(lambda a, b: F.kl_div(a, b, reduction="none"),
                        lambda a, b: TF.kl_div(a, b, reduction="none"), np.zeros(3), t,
                        grad=False)
    # cross_entropy / nll_loss: every target ignored -> NaN loss, zero gradient (cross_entropy.py)
    target = np.array([1, 1, 1])
    for f, tf in ((F.cross_entropy, TF.cross_entropy), (F.nll_loss, TF.nll_loss)):
        with np.errstate(all="ignore"):
            check_against_torch(lambda a, f=f: f(a, gd.tensor(target), ignore_index=1),
                                lambda a, tf=tf: tf(a, torch.tensor(target), ignore_index=1),
                                rng.standard_normal((3, 4)))
    # batch_norm: an empty batch in training mode is fine and leaves the running stats alone
    rm, rv = gd.zeros(4, dtype=gd.float64), gd.ones(4, dtype=gd.float64)
    y = F.batch_norm(gd.tensor(np.zeros((0, 4, 3)), requires_grad=True), rm, rv, training=True)
    assert y.shape == (0, 4, 3)
    assert rm.numpy().tolist() == [0.0] * 4 and rv.numpy().tolist() == [1.0] * 4
