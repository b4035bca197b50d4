"""Differential sweep of public ops on the CUDA path (Numba's simulator) against torch on the CPU.

Run from the repository root, one family a process (the simulator is slow; keep chunks small):

    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda PYTHONPATH=$PWD nice -n 10 \
        python tools/sim_sweep.py conv --cases 40 --seed 0

Each case draws a random small configuration from its own seed (``--seed`` + case number),
runs the op forward and backward (a random upstream gradient) in gpudl and in torch, and
compares values and gradients with the float64 torch result as the truth. The tolerance is
calibrated per tensor: gpudl's error may be ``SLACK`` times torch's own error at the input
dtype, plus PyTorch's fp32 ``rtol``/``atol`` (scaled by the output's magnitude where the op
reduces). A call that torch refuses must raise the same exception type in gpudl (deferred
device-side checks are read with ``gd.cuda.synchronize()``). Failing cases print their family,
seed and configuration; ``--only SEED`` reruns one.
"""

import argparse
import math
import sys
import time
import traceback

import numpy as np
import torch

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, backends

TF = torch.nn.functional
SLACK = 8.0
FAMILIES = {}
TF32 = [False]          # --tf32: conv on TF32, attention on its emulated 3xTF32 kernels


def family(fn):
    FAMILIES[fn.__name__.removeprefix("case_")] = fn
    return fn


class Case:
    """One configuration: ``arrays`` (name -> NumPy input, float32/float16/int), which of them
    need grads (``grad``), and ``run(lib, F, t)`` returning the output tensor(s) and a dict of
    further tensors whose grads to compare (module parameters)."""

    def __init__(self, config, arrays, grad, run, tol=None, unit_tf32=False):
        self.config, self.arrays, self.grad, self.run = config, arrays, grad, run
        self.tol = tol or {}
        self.unit_tf32 = unit_tf32


def _lib(name):
    return (gd, F) if name == "gd" else (torch, TF)


def _execute(lib_name, case, dtype_override=None, upstream_seed=0):
    """Outputs and grads of ``case`` in one library, inputs cast to ``dtype_override`` (floats)."""
    lib, fn = _lib(lib_name)
    tensors = {}
    for name, a in case.arrays.items():
        if dtype_override is not None and a.dtype.kind == "f":
            a = a.astype(dtype_override)
        tensors[name] = lib.tensor(a, requires_grad=name in case.grad and a.dtype.kind == "f")
    result = case.run(lib, fn, tensors)
    outs, extra = result if isinstance(result, tuple) and len(result) == 2 and \
        isinstance(result[1], dict) else (result, {})
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    rng = np.random.default_rng(upstream_seed)
    loss = None
    for o in outs:
        if o is None or not (o.dtype.is_floating_point if lib is torch else
                             np.dtype(o._data.dtype).kind == "f") or not o.requires_grad:
            continue
        up = rng.standard_normal(tuple(o.shape)).astype(np.float64)
        term = (o * lib.tensor(up.astype(str(o.dtype).split(".")[-1]))).sum()
        loss = term if loss is None else loss + term
    if lib is gd:
        gd.cuda.synchronize()          # reads deferred device-side checks
    if loss is not None:
        loss.backward()
    values = [None if o is None else _np(o) for o in outs]
    grads = {k: _np(t.grad) for k, t in tensors.items() if k in case.grad and t.grad is not None}
    grads.update({k: _np(t.grad) if t.grad is not None else None for k, t in extra.items()})
    if lib is gd:
        gd.cuda.synchronize()
    return values, grads


def _np(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return t.detach().numpy()


def _close(name, ours, theirs, truth, tol):
    if ours is None or truth is None:
        return None if (ours is None) == (truth is None) else f"{name}: one side is None"
    if ours.shape != truth.shape:
        return f"{name}: shape {ours.shape} != torch {truth.shape}"
    if ours.dtype.kind != truth.dtype.kind:
        return f"{name}: dtype {ours.dtype} vs torch {theirs.dtype}"
    if ours.dtype.kind in "biu":
        bad = ours != truth
        if bad.any():
            return f"{name}: {bad.sum()} of {bad.size} integers differ"
        return None
    o, t, r = (a.astype(np.float64) for a in (ours, theirs, truth))
    nan_o, nan_t = np.isnan(o), np.isnan(r)
    if (nan_o != nan_t).any():
        return f"{name}: NaN where torch has none ({nan_o.sum()} vs {nan_t.sum()})"
    fin = ~nan_t
    inf = np.isinf(r) & fin
    if (o[inf] != r[inf]).any():
        return f"{name}: inf mismatch"
    fin &= ~inf
    if not fin.any():
        return None
    o, t, r = o[fin], t[fin], r[fin]
    torch_err = np.abs(t - r).max() if t.size else 0.0
    scale = np.abs(r).max()
    bound = (SLACK * torch_err + tol.get("atol", 1e-5) + tol.get("rtol", 1.3e-6) * np.abs(r)
             + tol.get("rel_max", 2e-6) * scale)
    err = np.abs(o - r)
    if (err > bound).any():
        i = int(np.argmax(err - bound))
        return (f"{name}: max err {err.max():.3g} (bound {bound[i]:.3g} at the worst element; "
                f"torch's own err {torch_err:.3g}, |truth| max {scale:.3g})")
    return None


def check(case, fam, seed):
    """None or a message."""
    half = any(a.dtype == np.float16 for a in case.arrays.values())
    # torch at the input dtype (its own rounding error calibrates the bound) and in float64
    try:
        theirs = _execute("torch", case)
        truth = _execute("torch", case, np.float64)
    except Exception as exc:           # torch refuses: gpudl must refuse with the same type
        # (torch's float32 and float64 kernels may disagree: an empty float32 output where
        # float64 refuses; either refusal counts)
        try:
            _execute("gd", case)
        except Exception as ours:
            # a check deferred on the GPU may also have raised at once here (NumPy indexing
            # refuses what CuPy wraps); its queued twin is then stale
            backend._deferred.clear()
            if type(ours) is not type(exc) and not isinstance(ours, type(exc)):
                return f"raises {type(ours).__name__} where torch raises {type(exc).__name__}: " \
                       f"{str(ours)[:200]} | torch: {str(exc)[:200]}"
            return None
        return f"runs where torch raises {type(exc).__name__}: {str(exc)[:200]}"
    try:
        ours = _execute("gd", case)
    except Exception:
        return "gpudl raised where torch runs:\n" + traceback.format_exc(limit=6)
    tol = dict(case.tol)
    if half:          # float16 tensor-core kernels round P and dS to float16, as flash does
        tol.setdefault("atol", 2e-3)
        tol.setdefault("rtol", 2e-3)
        tol.setdefault("rel_max", 2e-3)
    elif TF32[0] and fam == "conv":             # TF32 inputs: 10 mantissa bits
        tol.setdefault("rel_max", 1e-2)
    elif TF32[0]:                                # attention's 3xTF32 claims fp32 accuracy
        tol.setdefault("rel_max", 1e-5)
    problems = []
    for i, (o, t, r) in enumerate(zip(ours[0], theirs[0], truth[0])):
        problems.append(_close(f"out[{i}]", o, t, r, tol))
    if len(ours[0]) != len(truth[0]):
        problems.append(f"{len(ours[0])} outputs vs torch {len(truth[0])}")
    for k in truth[1]:
        if k not in ours[1]:
            problems.append(f"grad {k}: missing")
            continue
        problems.append(_close(f"grad {k}", ours[1][k], theirs[1].get(k), truth[1][k], tol))
    problems = [p for p in problems if p]
    return "; ".join(problems) or None


def _loaded(lib, module, t, dtype):
    """``module`` with its parameters set from the inputs ``t["p.<name>"]`` (in ``dtype``)."""
    if lib is torch:
        module = module.to(dtype)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(t["p." + name])
    else:
        module.load_state_dict({name: _np(t["p." + name]) for name, _ in
                                module.named_parameters()})
    return module


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- families
@family
def case_conv(rng):
    transpose = rng.random() < 0.3
    one_d = not transpose and rng.random() < 0.2
    g = int(rng.choice([1, 1, 2, 3]))
    depthwise = not transpose and rng.random() < 0.2
    N = int(rng.choice([1, 2]))
    cin = g * int(rng.integers(1, 3))
    if depthwise:
        g = cin = int(rng.integers(1, 4))
    cout = g * int(rng.integers(1, 3)) * (int(rng.integers(1, 3)) if depthwise else 1)
    kh, kw = (1 if one_d else int(rng.integers(1, 4))), int(rng.integers(1, 4))
    sh, sw = (1 if one_d else int(rng.integers(1, 3))), int(rng.integers(1, 4))
    dh, dw = (1 if one_d else int(rng.integers(1, 3))), int(rng.integers(1, 3))
    H = 1 if one_d else int(rng.integers(max(1, dh * (kh - 1) + 1), 8))
    W = int(rng.integers(max(1, dw * (kw - 1) + 1), 9))
    if rng.random() < 0.15:           # more than one 128-column tile of output pixels
        N, H, W = 3, 9, 9
    # the weight gradient's reduction split over blocks (a GPU splits above 1024 pixels)
    min_split = 16 if rng.random() < 0.4 else 1024
    bias = bool(rng.random() < 0.6)
    pad_kind = rng.choice(["int", "pair", "same", "valid"]) if not transpose else "pair"
    if pad_kind == "same":
        sh = sw = 1
    ph, pw = int(rng.integers(0, kh // 2 + 2)), int(rng.integers(0, kw // 2 + 2))
    padding = {"int": min(ph, pw), "pair": (ph, pw), "same": "same", "valid": "valid"}[pad_kind]
    config = dict(transpose=transpose, one_d=one_d, N=N, cin=cin, cout=cout, groups=g,
                  k=(kh, kw), stride=(sh, sw), dilation=(dh, dw), HW=(H, W), bias=bias,
                  padding=padding, min_split=min_split)
    arrays = {"x": _f32(rng, N, cin, H, W)}
    if transpose:
        oph = int(rng.integers(0, max(sh, dh)))
        opw = int(rng.integers(0, max(sw, dw)))
        config["output_padding"] = (oph, opw)
        arrays["w"] = _f32(rng, cin, cout // g, kh, kw)
    else:
        arrays["w"] = _f32(rng, cout, cin // g, kh, kw)
    if bias:
        arrays["b"] = _f32(rng, cout)
    if one_d:
        arrays["x"] = arrays["x"][:, :, 0]
        arrays["w"] = arrays["w"][:, :, 0]
    if config.get("unbatched", rng.random() < 0.1) and not transpose:
        config["unbatched"] = True
        arrays["x"] = arrays["x"][0]
    stride, dilation = (sh, sw), (dh, dw)
    if rng.random() < 0.15:           # the tensor-core kernels (emulated mma: slow)
        config["fp16"] = True
        arrays = {k: v.astype(np.float16) for k, v in arrays.items()}

    strided = arrays["x"].ndim >= 3 and rng.random() < 0.15
    if strided:                       # x a transposed view: (..., W, H) storage
        config["strided"] = True
        arrays["x"] = np.ascontiguousarray(np.swapaxes(arrays["x"], -1, -2))

    def run(lib, fn, t):
        b = t.get("b")
        if strided:
            t = dict(t, x=t["x"].transpose(-1, -2))
        if lib is gd:
            from gpudl.kernels import conv_cuda
            conv_cuda.MIN_SPLIT = min_split
        if transpose:
            return fn.conv_transpose2d(t["x"], t["w"], b, stride, (ph, pw),
                                       config["output_padding"], g, dilation)
        if one_d:
            p = padding if isinstance(padding, str) else (padding[1] if isinstance(
                padding, tuple) else padding)
            return fn.conv1d(t["x"], t["w"], b, sw, p, dw, g)
        return fn.conv2d(t["x"], t["w"], b, stride, padding, dilation, g)
    return Case(config, arrays, {"x", "w", "b"}, run)


def _empty_window(n, k, s, p, d, ceil):
    """Whether a pooling window along an axis of ``n`` cells holds no input cell."""
    from gpudl.kernels.pool import pool_output_size
    return any(all(not 0 <= o * s - p + i * d < n for i in range(k))
               for o in range(max(0, pool_output_size(n, k, s, p, d, ceil))))


@family
def case_pool(rng):
    kind = rng.choice(["max", "avg", "adaptive", "max1d", "avg1d"])
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 9)), int(rng.integers(1, 10))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
    dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    ceil = bool(rng.random() < 0.4)
    if kind.startswith("max") and (_empty_window(W, kw, sw, pw, dw, ceil) or (
            kind == "max" and _empty_window(H, kh, sh, ph, dh, ceil))):
        # a max window over padding only: torch's gradient lands in the NEXT plane (past the
        # last one: heap corruption, the process dies); gpudl gives -inf and gradient 0
        dh = dw = 1
    config = dict(kind=kind, shape=(N, C, H, W), k=(kh, kw), s=(sh, sw), p=(ph, pw),
                  d=(dh, dw), ceil=ceil)
    x = _f32(rng, N, C, H, W)
    if rng.random() < 0.2:      # ties
        x = np.round(x).astype(np.float32)
        config["ties"] = True
    if kind == "max":
        ret = bool(rng.random() < 0.4)
        config["return_indices"] = ret

        def run(lib, fn, t):
            return fn.max_pool2d(t["x"], (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil, ret)
    elif kind == "avg":
        cip = bool(rng.random() < 0.5)
        div = int(rng.integers(1, 6)) if rng.random() < 0.3 else None
        config.update(count_include_pad=cip, divisor_override=div)

        def run(lib, fn, t):
            return fn.avg_pool2d(t["x"], (kh, kw), (sh, sw), (ph, pw), ceil, cip, div)
    elif kind == "adaptive":
        out = (int(rng.integers(1, H + 2)), int(rng.integers(1, W + 2)))
        config["out"] = out

        def run(lib, fn, t):
            return fn.adaptive_avg_pool2d(t["x"], out)
    elif kind == "max1d":
        x = x[:, :, 0]

        def run(lib, fn, t):
            return fn.max_pool1d(t["x"], kw, sw, pw, dw, ceil)
    else:
        x = x[:, :, 0]
        cip = bool(rng.random() < 0.5)
        config["count_include_pad"] = cip

        def run(lib, fn, t):
            return fn.avg_pool1d(t["x"], kw, sw, pw, ceil, cip)
    if rng.random() < 0.1:
        x = x[0]
        config["unbatched"] = True
    if rng.random() < 0.15:
        x = x.astype(np.float16)
        config["fp16"] = True
    return Case(config, {"x": x}, {"x"}, run)


@family
def case_sdpa(rng):
    fp16 = rng.random() < 0.25
    batch = tuple(int(v) for v in rng.integers(1, 3, size=int(rng.integers(0, 3))))
    L, S = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    if rng.random() < 0.1:            # past one 64-row block of queries or keys
        L, S = int(rng.choice([L, 65, 70])), int(rng.choice([S, 65, 70]))
    E = int(rng.choice([4, 8, 16, 17, 32, 33, 48, 64, 65, 96, 128]))
    Ev = E if rng.random() < 0.7 else int(rng.choice([4, 16, 32, 64, 128]))
    causal = bool(rng.random() < 0.3)
    mask_kind = "none" if causal else rng.choice(["none", "bool", "float"])
    scale = float(rng.uniform(0.05, 1.0)) if rng.random() < 0.3 else None
    config = dict(batch=batch, L=L, S=S, E=E, Ev=Ev, causal=causal, mask=mask_kind,
                  scale=scale, fp16=fp16)
    dt = np.float16 if fp16 else np.float32
    arrays = {"q": _f32(rng, *batch, L, E).astype(dt), "k": _f32(rng, *batch, S, E).astype(dt),
              "v": _f32(rng, *batch, S, Ev).astype(dt)}
    if mask_kind != "none":
        mshape = tuple(int(rng.choice([1, n])) for n in batch + (L, S))
        mshape = mshape[int(rng.integers(0, len(mshape) - 1)):] if rng.random() < 0.5 else mshape
        config["mask_shape"] = mshape
        if mask_kind == "bool":
            keep = rng.random(mshape) > 0.4
            if rng.random() < 0.5 and keep.ndim >= 2 and keep.shape[-2] > 0:
                keep[..., 0, :] = False          # a fully masked row
                config["dead_row"] = True
            arrays["mask"] = keep
        else:
            arrays["mask"] = _f32(rng, *mshape).astype(dt)
            if rng.random() < 0.3:
                arrays["mask"][..., ::2] = -np.inf
                config["inf_mask"] = True

    gqa = not fp16 and len(batch) >= 1 and batch[-1] == 2 and rng.random() < 0.2
    if gqa:                               # keys and values with one head for the query's two
        arrays["k"], arrays["v"] = arrays["k"][..., :1, :, :], arrays["v"][..., :1, :, :]
        config["enable_gqa"] = True
    grads = {"q", "k", "v"}
    if mask_kind == "float" and rng.random() < 0.3:
        grads.add("mask")                 # the plain path: the mask gets a gradient
        config["mask_grad"] = True

    # (..., L, heads, E) storage seen as (..., heads, L, E), as a multi-head layer makes them
    strided = len(batch) >= 1 and rng.random() < 0.25
    if strided:
        config["strided"] = True
        for name in "qkv":
            arrays[name] = np.ascontiguousarray(np.swapaxes(arrays[name], -2, -3))

    def run(lib, fn, t):
        kwargs = {"enable_gqa": True} if gqa else {}
        q, k, v = (t[n].transpose(-2, -3) if strided else t[n] for n in "qkv")
        return fn.scaled_dot_product_attention(q, k, v, attn_mask=t.get("mask"),
                                               is_causal=causal, scale=scale, **kwargs)
    return Case(config, arrays, grads, run)


@family
def case_mha(rng):
    E = int(rng.choice([4, 8, 12]))
    heads = int(rng.choice([h for h in (1, 2, 4) if E % h == 0]))
    L, S, N = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
    batch_first = bool(rng.random() < 0.5)
    bias = bool(rng.random() < 0.7)
    self_attn = bool(rng.random() < 0.5)
    need_weights = bool(rng.random() < 0.5)
    causal_mask = self_attn and rng.random() < 0.3
    kpm = rng.random() < 0.3
    config = dict(E=E, heads=heads, L=L, S=S, N=N, batch_first=batch_first, bias=bias,
                  self_attn=self_attn, need_weights=need_weights, causal_mask=causal_mask,
                  key_padding_mask=kpm)
    if self_attn:
        S = L
    shape_q = (N, L, E) if batch_first else (L, N, E)
    shape_k = (N, S, E) if batch_first else (S, N, E)
    arrays = {"q": _f32(rng, *shape_q), "k": _f32(rng, *shape_k), "v": _f32(rng, *shape_k)}
    ref = torch.nn.MultiheadAttention(E, heads, bias=bias, batch_first=batch_first)
    state = {k: (np.random.default_rng(1).standard_normal(tuple(v.shape)) * 0.3).astype(
        np.float32) for k, v in ref.state_dict().items()}
    for k, v in state.items():
        arrays["p." + k] = v
    if kpm:
        keep = rng.random((N, S)) < 0.3
        keep[:, 0] = False
        arrays["kpm"] = keep
    if causal_mask:
        arrays["am"] = np.triu(np.ones((L, L), bool), 1)

    def run(lib, fn, t):
        m = _loaded(lib, lib.nn.MultiheadAttention(E, heads, bias=bias, batch_first=batch_first),
                    t, t["q"].dtype)
        params = dict(m.named_parameters())
        q = t["q"]
        k = q if self_attn else t["k"]
        v = q if self_attn else t["v"]
        out, w = m(q, k, v, key_padding_mask=t.get("kpm"), need_weights=need_weights,
                   attn_mask=t.get("am"))
        return (out, w), params
    return Case(config, arrays, {"q", "k", "v"}, run)


@family
def case_rnn(rng):
    kind = rng.choice(["LSTM", "GRU", "RNN_tanh", "RNN_relu"])
    I, H = int(rng.integers(1, 5)), int(rng.choice([1, 2, 3, 5, 8]))
    if rng.random() < 0.05:
        H = 65                                   # the grid kernels' range
    layers = int(rng.integers(1, 3))
    bidir = bool(rng.random() < 0.4)
    batch_first = bool(rng.random() < 0.4)
    bias = bool(rng.random() < 0.8)
    T, B = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    given = bool(rng.random() < 0.5)
    unbatched = rng.random() < 0.1
    config = dict(kind=kind, I=I, H=H, layers=layers, bidir=bidir, batch_first=batch_first,
                  bias=bias, T=T, B=B, h0_given=given, unbatched=unbatched)
    shape = (B, T, I) if batch_first else (T, B, I)
    arrays = {"x": _f32(rng, *shape)}
    if unbatched:
        arrays["x"] = arrays["x"][0] if batch_first else arrays["x"][:, 0]
    D = 2 if bidir else 1
    hshape = (layers * D, H) if unbatched else (layers * D, B, H)
    if given:
        arrays["h0"] = _f32(rng, *hshape)
        if kind == "LSTM":
            arrays["c0"] = _f32(rng, *hshape)
    mode = kind.split("_")
    extra = {} if len(mode) == 1 else {"nonlinearity": mode[1]}
    ref = getattr(torch.nn, mode[0])(I, H, layers, bias=bias, batch_first=batch_first,
                                      bidirectional=bidir, **extra)
    for k, p in ref.named_parameters():
        arrays["p." + k] = rng.uniform(-0.6, 0.6, tuple(p.shape)).astype(np.float32)

    def run(lib, fn, t):
        m = _loaded(lib, getattr(lib.nn, mode[0])(I, H, layers, bias=bias,
                                                  batch_first=batch_first, bidirectional=bidir,
                                                  **extra), t, t["x"].dtype)
        hx = None
        if given:
            hx = (t["h0"], t["c0"]) if kind == "LSTM" else t["h0"]
        out, hn = m(t["x"], hx)
        outs = (out,) + (tuple(hn) if kind == "LSTM" else (hn,))
        return outs, dict(m.named_parameters())
    return Case(config, arrays, {"x", "h0", "c0"}, run)


@family
def case_loss(rng):
    kind = rng.choice(["ce_index", "ce_prob", "nll", "ce_bad"])
    N, C = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    extra_dims = tuple(int(v) for v in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    reduction = rng.choice(["mean", "sum", "none"])
    weight = rng.random() < 0.4
    smoothing = float(rng.choice([0.0, 0.0, 0.1, 0.5]))
    ignore = int(rng.choice([-100, 0, 1])) if rng.random() < 0.4 else -100
    config = dict(kind=kind, N=N, C=C, extra=extra_dims, reduction=reduction, weight=weight,
                  label_smoothing=smoothing, ignore_index=ignore)
    arrays = {"x": _f32(rng, N, C, *extra_dims)}
    if weight:
        arrays["w"] = rng.uniform(0.1, 2.0, C).astype(np.float32)
    if kind == "ce_prob":
        p = rng.random((N, C, *extra_dims)).astype(np.float32)
        arrays["y"] = (p / p.sum(1, keepdims=True)).astype(np.float32)
    else:
        y = rng.integers(0, C, (N, *extra_dims))
        if kind == "ce_bad":
            y.flat[int(rng.integers(0, y.size))] = int(rng.choice([C, C + 3, -1, -5]))
        arrays["y"] = y.astype(np.int64)

    def run(lib, fn, t):
        kwargs = dict(weight=t.get("w"), reduction=reduction)
        if kind == "nll":
            return fn.nll_loss(fn.log_softmax(t["x"], 1), t["y"], ignore_index=ignore, **kwargs)
        if kind == "ce_prob":
            return fn.cross_entropy(t["x"], t["y"], label_smoothing=smoothing, **kwargs)
        return fn.cross_entropy(t["x"], t["y"], ignore_index=ignore, label_smoothing=smoothing,
                                **kwargs)
    grad = {"x", "w"} if kind == "ce_prob" or rng.random() < 0.15 else {"x"}
    config["weight_grad"] = "w" in grad and weight
    return Case(config, arrays, grad, run, tol={"atol": 2e-5})


@family
def case_misc(rng):
    kind = rng.choice(["embedding", "batch_norm", "layer_norm", "softmax", "log_softmax",
                       "reduce", "matmul", "group_norm", "cat_stack", "getitem"])
    config = {"kind": kind}
    if kind == "embedding":
        V, D = int(rng.integers(1, 7)), int(rng.integers(1, 5))
        idx = rng.integers(0, V, tuple(int(v) for v in rng.integers(1, 4, size=2)))
        pad = int(rng.integers(0, V)) if rng.random() < 0.4 else None
        max_norm = float(rng.uniform(0.5, 2)) if rng.random() < 0.2 else None
        bad = rng.random() < 0.15
        if bad:
            idx.flat[0] = V + 1
        config.update(V=V, D=D, shape=idx.shape, padding_idx=pad, bad=bad, max_norm=max_norm)
        arrays = {"w": _f32(rng, V, D), "i": idx.astype(np.int64)}

        def run(lib, fn, t):
            w = t["w"] * 1.0          # max_norm renormalises in place: never the leaf
            return fn.embedding(t["i"], w, padding_idx=pad, max_norm=max_norm)
        return Case(config, arrays, {"w"}, run)
    if kind == "batch_norm":
        N, C = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        rest = tuple(int(v) for v in rng.integers(1, 4, size=int(rng.integers(0, 3))))
        training = bool(rng.random() < 0.7)
        affine = bool(rng.random() < 0.7)
        config.update(shape=(N, C, *rest), training=training, affine=affine)
        arrays = {"x": _f32(rng, N, C, *rest), "rm": _f32(rng, C),
                  "rv": rng.uniform(0.5, 2, C).astype(np.float32)}
        if affine:
            arrays.update(w=_f32(rng, C), b=_f32(rng, C))

        def run(lib, fn, t):
            rm, rv = t["rm"].detach().clone(), t["rv"].detach().clone()
            if training and N * math.prod(rest) == 1:
                return fn.batch_norm(t["x"], rm, rv, t.get("w"), t.get("b"), training)
            y = fn.batch_norm(t["x"], rm, rv, t.get("w"), t.get("b"), training, 0.3, 1e-5)
            return y, rm, rv
        return Case(config, arrays, {"x", "w", "b"}, run)
    if kind in ("layer_norm", "group_norm"):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(2, 5))))
        if kind == "group_norm":
            G = int(rng.choice([g for g in (1, 2, 3) if shape[1] % g == 0]))
            config.update(shape=shape, groups=G)
            arrays = {"x": _f32(rng, *shape), "w": _f32(rng, shape[1]), "b": _f32(rng, shape[1])}
            return Case(config, arrays, {"x", "w", "b"},
                        lambda lib, fn, t: fn.group_norm(t["x"], G, t["w"], t["b"]))
        k = int(rng.integers(1, len(shape) + 1))
        ns = shape[-k:]
        affine = bool(rng.random() < 0.7)
        config.update(shape=shape, normalized=ns, affine=affine)
        arrays = {"x": _f32(rng, *shape)}
        if affine:
            arrays.update(w=_f32(rng, *ns), b=_f32(rng, *ns))
        return Case(config, arrays, {"x", "w", "b"},
                    lambda lib, fn, t: fn.layer_norm(t["x"], ns, t.get("w"), t.get("b")))
    if kind in ("softmax", "log_softmax"):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        dim = int(rng.integers(-len(shape), len(shape)))
        x = _f32(rng, *shape) * 5
        if rng.random() < 0.2:
            x.flat[0] = -np.inf
            config["neg_inf"] = True
        config.update(shape=shape, dim=dim)
        return Case(config, {"x": x}, {"x"},
                    lambda lib, fn, t: getattr(fn, kind)(t["x"], dim))
    if kind == "reduce":
        shape = tuple(int(v) for v in rng.integers(1, 6, size=int(rng.integers(1, 5))))
        op = rng.choice(["sum", "mean", "amax", "amin", "var", "std", "logsumexp", "prod",
                         "norm"])
        dim = int(rng.integers(-len(shape), len(shape)))
        keep = bool(rng.random() < 0.5)
        config.update(shape=shape, op=op, dim=dim, keepdim=keep)

        def run(lib, fn, t):
            return getattr(t["x"], op)(dim, keepdim=keep) if op != "norm" else \
                t["x"].norm(dim=dim, keepdim=keep)
        return Case(config, {"x": _f32(rng, *shape)}, {"x"}, run)
    if kind == "matmul":
        a_nd, b_nd = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        n, k, m = (int(v) for v in rng.integers(1, 8, size=3))
        bs = tuple(int(v) for v in rng.integers(1, 3, size=max(a_nd, b_nd) - 2)) \
            if max(a_nd, b_nd) > 2 else ()
        ash = (k,) if a_nd == 1 else tuple(int(rng.choice([1, s])) for s in bs[len(bs) -
                                                                          (a_nd - 2):]) + (n, k)
        bsh = (k,) if b_nd == 1 else tuple(int(rng.choice([1, s])) for s in bs[len(bs) -
                                                                          (b_nd - 2):]) + (k, m)
        config.update(a=ash, b=bsh)
        return Case(config, {"a": _f32(rng, *ash), "b": _f32(rng, *bsh)}, {"a", "b"},
                    lambda lib, fn, t: t["a"] @ t["b"])
    if kind == "cat_stack":
        shape = tuple(int(v) for v in rng.integers(1, 4, size=int(rng.integers(1, 4))))
        dim = int(rng.integers(-len(shape), len(shape)))
        n = int(rng.integers(1, 4))
        op = rng.choice(["cat", "stack"])
        config.update(shape=shape, dim=dim, n=n, op=op)
        arrays = {f"x{i}": _f32(rng, *shape) for i in range(n)}
        return Case(config, arrays, set(arrays),
                    lambda lib, fn, t: getattr(lib, op)([t[f"x{i}"] for i in range(n)], dim))
    # getitem with a boolean mask and index arrays
    shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 4))))
    mask = rng.random(shape[:1]) < 0.5
    idx = rng.integers(-shape[-1], shape[-1], int(rng.integers(1, 5)))
    config.update(shape=shape, mask=mask.tolist(), idx=idx.tolist())
    return Case(config, {"x": _f32(rng, *shape), "m": mask, "i": idx.astype(np.int64)}, {"x"},
                lambda lib, fn, t: (t["x"][t["m"]], t["x"][..., t["i"]]))


@family
def case_optim(rng):
    kind = rng.choice(["SGD", "Adam", "AdamW", "RMSprop"])
    shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    steps = int(rng.integers(1, 4))
    opts = {"lr": float(rng.choice([0.1, 0.01]))}
    if rng.random() < 0.5:
        opts["weight_decay"] = float(rng.choice([0.0, 0.1]))
    if rng.random() < 0.3:
        opts["maximize"] = True
    if kind == "SGD":
        opts["momentum"] = float(rng.choice([0.0, 0.9]))
        if opts["momentum"] and rng.random() < 0.5:
            opts["nesterov"] = True
        elif rng.random() < 0.3:
            opts["dampening"] = 0.5
    elif kind in ("Adam", "AdamW"):
        opts["amsgrad"] = bool(rng.random() < 0.3)
        opts["capturable"] = bool(rng.random() < 0.5)
    else:
        opts["momentum"] = float(rng.choice([0.0, 0.9]))
        opts["centered"] = bool(rng.random() < 0.5)
    config = dict(kind=kind, shape=shape, steps=steps, **opts)
    arrays = {"p": _f32(rng, *shape)}
    grads = [_f32(rng, *shape) for _ in range(steps)]

    def run(lib, fn, t):
        p = t["p"].detach().clone().requires_grad_(True) if lib is torch else \
            lib.nn.Parameter(t["p"].detach() * 1.0)
        theirs = dict(opts)
        if lib is torch:
            theirs.pop("capturable", None)     # torch's needs a GPU; the numbers are the same
        opt = getattr(lib.optim, kind)([p], **theirs)
        for g in grads:
            p.grad = lib.tensor(g.astype(str(t["p"].dtype).split(".")[-1]))
            opt.step()
        return p.detach() * 1.0
    return Case(config, arrays, set(), run)


@family
def case_amp(rng):
    kind = rng.choice(["conv2d", "linear", "matmul", "sdpa", "lstm"])
    config = {"kind": kind}
    if kind == "conv2d":
        arrays = {"x": _f32(rng, 1, 2, 5, 4), "w": _f32(rng, 3, 2, 3, 2)}
        call = lambda fn, t: fn.conv2d(t["x"], t["w"], padding=1)      # noqa: E731
    elif kind in ("linear", "matmul"):
        arrays = {"x": _f32(rng, 3, 5), "w": _f32(rng, 4, 5)}
        call = (lambda fn, t: fn.linear(t["x"], t["w"])) if kind == "linear" else \
            (lambda fn, t: t["x"] @ t["w"].t())
    elif kind == "sdpa":
        arrays = {"x": _f32(rng, 1, 3, 16), "w": _f32(rng, 1, 4, 16)}
        call = lambda fn, t: fn.scaled_dot_product_attention(t["x"], t["w"], t["w"])  # noqa
    else:
        arrays = {"x": _f32(rng, 3, 2, 4), "w": rng.uniform(-0.5, 0.5, (16, 4)).astype(
            np.float32), "u": rng.uniform(-0.5, 0.5, (16, 4)).astype(np.float32)}
    # the reference runs on the float16-rounded inputs, in float64 (torch's CPU autocast is
    # bfloat16): gpudl under autocast('cuda') must compute float16 from the same values
    arrays = {k: v.astype(np.float16).astype(np.float32) for k, v in arrays.items()}

    def run(lib, fn, t):
        if kind == "lstm":
            if lib is torch:
                return torch._VF.lstm(t["x"], (torch.zeros(1, 2, 4, dtype=t["x"].dtype),) * 2,
                                      (t["w"], t["u"]), False, 1, 0.0, False, False, False)[0]
            from gpudl.ops import rnn
            with gd.autocast("cuda"):
                out = rnn.lstm_layer(t["x"], None, None, t["w"], t["u"])[0]
            assert out.dtype == np.float16, out.dtype
            return out.float()
        if lib is torch:
            return call(fn, t)
        with gd.autocast("cuda"):
            out = call(fn, t)
        assert out.dtype == np.float16, out.dtype
        return out.float()
    return Case(config, arrays, set(arrays), run,
                tol={"atol": 2e-3, "rtol": 2e-3, "rel_max": 3e-3})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, default=None, help="run this seed only")
    parser.add_argument("--tf32", action="store_true",
                        help="leave conv TF32 / attention's mem-efficient path on (defaults)")
    args = parser.parse_args(argv)
    if not (backend.SIMULATOR and backend.DEFAULT_DEVICE == "cuda"):
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")
    TF32[0] = args.tf32
    if not args.tf32:
        backends.cudnn.allow_tf32 = False
        backends.cuda.enable_mem_efficient_sdp(False)
    torch.manual_seed(0)
    seeds = [args.only] if args.only is not None else range(args.seed, args.seed + args.cases)
    failures = 0
    for seed in seeds:
        case = FAMILIES[args.family](np.random.default_rng(seed))
        gd.manual_seed(seed)
        start = time.perf_counter()
        problem = check(case, args.family, seed)
        print(f"  seed {seed}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        try:
            gd.cuda.synchronize()
        except Exception as exc:
            problem = (problem or "") + f" | a deferred check leaked out of the case: {exc}"
        if problem:
            failures += 1
            print(f"FAIL {args.family} seed={seed} {case.config}\n    {problem}", flush=True)
    print(f"{args.family}: {len(seeds)} cases, {failures} failing", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
