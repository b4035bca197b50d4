"""Sweep PyTorch's own OpInfo sample inputs over gpudl's core tensor ops (float64, CPU).

For every sample of every op below, the input, args and kwargs are translated to gpudl, the
gpudl equivalent is called, and its outputs and the gradients of ``(out * w).sum()`` (random
``w``) are compared with torch. Samples that use features outside gpudl's API (dtype=, out=, rounding
modes, ...) are skipped and counted; KNOWN, deliberate departures are listed in ``KNOWN`` below.
"""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
cmi = pytest.importorskip("torch.testing._internal.common_methods_invocations")


def _method(name):
    call = lambda x, *a, **k: getattr(x, name)(*a, **k)  # noqa: E731
    call.method_only = True         # gpudl has no functional form: input must be a Tensor
    return call


def _reflected(call):
    call.method_only = True         # the sample input must be a Tensor (number op tensor)
    return call


# (OpInfo name, variant_test_name) -> gpudl callable taking the sample's (input, *args, **kwargs)
GPUDL = {
    ("add", ""): _method("add"),
    ("sub", ""): _method("sub"),
    ("mul", ""): _method("mul"),
    ("div", "no_rounding_mode"): _method("div"),
    ("pow", ""): _method("pow"),
    ("floor_divide", ""): gd.floor_divide,
    ("remainder", ""): gd.remainder,
    ("neg", ""): _method("neg"),
    ("abs", ""): _method("abs"),
    ("exp", ""): gd.exp,
    ("log", ""): gd.log,
    ("sqrt", ""): gd.sqrt,
    ("tanh", ""): gd.tanh,
    ("sigmoid", ""): gd.sigmoid,
    ("nn.functional.relu", ""): gd.relu,
    ("clamp", ""): gd.clamp,
    ("maximum", ""): gd.maximum,
    ("minimum", ""): gd.minimum,
    ("max", "binary"): gd.max,
    ("min", "binary"): gd.min,
    ("where", ""): lambda x, cond, other: gd.where(cond, x, other),
    ("sum", ""): gd.sum,
    ("mean", ""): gd.mean,
    ("amax", ""): gd.amax,
    ("amin", ""): gd.amin,
    ("max", "reduction_with_dim"): gd.max,
    ("max", "reduction_no_dim"): gd.max,
    ("min", "reduction_with_dim"): gd.min,
    ("min", "reduction_no_dim"): gd.min,
    ("var", ""): gd.var,
    ("var", "unbiased"): gd.var,
    ("std", ""): gd.std,
    ("std", "unbiased"): gd.std,
    ("argmax", ""): gd.argmax,
    ("argmin", ""): gd.argmin,
    ("softmax", ""): gd.softmax,
    ("log_softmax", ""): gd.log_softmax,
    ("matmul", ""): gd.matmul,
    ("stft", ""): gd.stft,
    ("reshape", ""): gd.reshape,
    ("view", ""): _method("view"),
    ("flatten", ""): gd.flatten,
    ("squeeze", ""): gd.squeeze,
    ("squeeze", "multiple"): gd.squeeze,
    ("unsqueeze", ""): gd.unsqueeze,
    ("transpose", ""): gd.transpose,
    ("permute", ""): gd.permute,
    ("expand", ""): _method("expand"),
    ("repeat", ""): _method("repeat"),
    ("split", ""): gd.split,
    ("split", "list_args"): gd.split,
    ("chunk", ""): gd.chunk,
    ("cat", ""): gd.cat,
    ("stack", ""): gd.stack,
    ("masked_fill", ""): gd.masked_fill,
    ("__getitem__", ""): lambda x, index: x[index],
    # issue 15: torch's wider core
    ("mm", ""): gd.mm,
    ("bmm", ""): gd.bmm,
    ("addmm", ""): gd.addmm,
    ("addmm", "decomposed"): gd.addmm,
    ("einsum", ""): lambda operands, equation=None, *rest: gd.einsum(*_einsum_args(operands,
                                                                                   equation,
                                                                                   rest)),
    ("outer", ""): gd.outer,
    ("gather", ""): gd.gather,
    ("scatter", ""): gd.scatter,
    ("scatter_add", ""): gd.scatter_add,
    ("index_select", ""): gd.index_select,
    ("index_add", ""): gd.index_add,
    ("masked_select", ""): gd.masked_select,
    ("topk", ""): gd.topk,
    ("sort", ""): gd.sort,
    ("argsort", ""): gd.argsort,
    ("cumsum", ""): gd.cumsum,
    ("cumprod", ""): gd.cumprod,
    ("flip", ""): gd.flip,
    ("roll", ""): gd.roll,
    ("narrow", ""): gd.narrow,
    ("tril", ""): gd.tril,
    ("triu", ""): gd.triu,
    ("diff", ""): gd.diff,
    ("logsumexp", ""): gd.logsumexp,
    ("prod", ""): gd.prod,
    ("clamp_min", ""): gd.clamp_min,
    ("norm", ""): gd.norm,
    ("norm", "fro"): gd.norm,
    ("norm", "inf"): gd.norm,
    ("norm", "nuc"): gd.norm,
    ("linalg.vector_norm", ""): gd.linalg.vector_norm,
    ("erf", ""): gd.erf,
    ("log1p", ""): gd.log1p,
    ("expm1", ""): gd.expm1,
    ("sin", ""): gd.sin,
    ("cos", ""): gd.cos,
    ("rsqrt", ""): gd.rsqrt,
    ("reciprocal", ""): gd.reciprocal,
    ("sign", ""): gd.sign,
    ("floor", ""): gd.floor,
    ("ceil", ""): gd.ceil,
    ("round", ""): gd.round,
    ("round", "decimals_0"): gd.round,
    ("round", "decimals_3"): gd.round,
    ("round", "decimals_neg_3"): gd.round,
    # the sweep-core additions: gpudl methods the sweep had not run
    ("square", ""): gd.square,
    ("isnan", ""): gd.isnan,
    ("isfinite", ""): gd.isfinite,
    ("clamp_max", ""): gd.clamp_max,
    ("clone", ""): _method("clone"),
    ("eq", ""): _method("eq"),
    ("ne", ""): _method("ne"),
    ("lt", ""): _method("lt"),
    ("le", ""): _method("le"),
    ("gt", ""): _method("gt"),
    ("ge", ""): _method("ge"),
    ("any", ""): _method("any"),
    ("all", ""): _method("all"),
    ("t", ""): _method("t"),
    ("T", ""): lambda x: x.T,
    ("mT", ""): lambda x: x.mT,
    ("contiguous", ""): _method("contiguous"),
    ("view_as", ""): _method("view_as"),
    ("expand_as", ""): _method("expand_as"),
    ("__rsub__", ""): _reflected(lambda x, other: other - x),
    ("__rpow__", ""): _reflected(lambda x, other: other ** x),
    ("__radd__", ""): _reflected(lambda x, other: other + x),
    ("__rmul__", ""): _reflected(lambda x, other: other * x),
    ("__rdiv__", ""): _reflected(lambda x, other: other / x),
    ("__rmatmul__", ""): _reflected(lambda x, other: other @ x),
    ("__rmod__", ""): _reflected(lambda x, other: other % x),
    ("float", ""): _method("float"),
    ("double", ""): _method("double"),
    ("long", ""): _method("long"),
    ("int", ""): _method("int"),
    ("bool", ""): _method("bool"),
    ("half", ""): _method("half"),
    # session 26: ops no sweep had run
    ("dot", ""): gd.dot,
    ("mv", ""): gd.mv,
    ("addcmul", ""): gd.addcmul,
    ("addcdiv", ""): gd.addcdiv,
    ("allclose", ""): gd.allclose,
    ("equal", ""): gd.equal,
    ("item", ""): _method("item"),
    ("H", ""): lambda x: x.H,
    ("mH", ""): lambda x: x.mH,
    ("zeros_like", ""): gd.zeros_like,
    ("ones_like", ""): gd.ones_like,
    ("full_like", ""): gd.full_like,
    ("arange", ""): gd.arange,
    ("linspace", "tensor_overload"): gd.linspace,
    ("logspace", "tensor_overload"): gd.logspace,
    # session 10, tensor-ops: torch's wider namespace
    ("take_along_dim", ""): gd.take_along_dim,
    ("meshgrid", "variadic_tensors"): lambda *tensors, **kw: gd.meshgrid(*tensors, **kw),
    ("meshgrid", "list_of_tensors"): lambda tensors, **kw: gd.meshgrid(tensors, **kw),
    ("lerp", ""): gd.lerp,
    ("isclose", ""): gd.isclose,
    ("broadcast_tensors", ""): gd.broadcast_tensors,
    ("diag", ""): gd.diag,
    ("tensordot", ""): gd.tensordot,
    ("kron", ""): gd.kron,
    ("cdist", ""): gd.cdist,
    ("cross", ""): gd.cross,
    ("linalg.cross", ""): lambda x, other, dim=-1: gd.cross(x, other, dim),
    ("searchsorted", ""): gd.searchsorted,
    ("bucketize", ""): gd.bucketize,
    ("histc", ""): gd.histc,
    ("unique", ""): gd.unique,
    ("nonzero", ""): gd.nonzero,
    ("std_mean", ""): gd.std_mean,
    ("std_mean", "unbiased"): gd.std_mean,
    ("var_mean", ""): gd.var_mean,
    ("var_mean", "unbiased"): gd.var_mean,
    ("new_zeros", ""): _method("new_zeros"),
    ("new_ones", ""): _method("new_ones"),
    ("new_full", ""): _method("new_full"),
    ("baddbmm", ""): gd.baddbmm,
    ("addbmm", ""): gd.addbmm,
    ("median", ""): gd.median,
    ("mode", ""): gd.mode,
    ("kthvalue", ""): gd.kthvalue,
    ("nan_to_num", ""): gd.nan_to_num,
    ("unfold", ""): _method("unfold"),
    ("index_fill", ""): gd.index_fill,
    ("repeat_interleave", ""): gd.repeat_interleave,
    ("reshape_as", ""): _method("reshape_as"),
    # session 11, tensor-misc: shape, indexing, reduction and scatter breadth
    **{(name, ""): getattr(gd, name) for name in (
        "block_diag", "combinations", "cartesian_prod", "corrcoef", "cov", "cummax", "cummin",
        "diag_embed", "diagonal", "diagonal_scatter", "fliplr", "flipud", "isin",
        "masked_scatter", "nanmedian", "quantile", "nanquantile", "aminmax", "rot90", "select",
        "select_scatter", "slice_scatter", "tensor_split", "hsplit", "vsplit", "dsplit", "ravel",
        "atleast_1d", "atleast_2d", "atleast_3d", "column_stack", "index_copy", "index_put",
        "unique_consecutive", "put", "take", "bincount", "unbind", "dstack", "msort", "trapz",
        "trapezoid", "cumulative_trapezoid", "logcumsumexp", "argwhere", "nanmean", "nansum",
        "diagflat", "index_reduce", "scatter_reduce")},
    ("split_with_sizes", ""): _method("split_with_sizes"),
    ("sum_to_size", ""): _method("sum_to_size"),
    **{("index_reduce", reduce): gd.index_reduce for reduce in ("mean", "prod", "amin", "amax")},
    **{("scatter_reduce", reduce): gd.scatter_reduce
       for reduce in ("sum", "prod", "mean", "amin", "amax")},
}


def _einsum_args(input, equation, rest):
    """OpInfo passes einsum its operands as the sample input and the equation as an arg."""
    return (equation, *input) if isinstance(input, (list, tuple)) else (equation, input, *rest)

# Variants outside gpudl's API: skipped wholesale (every sample counted as skipped).
SKIP_VARIANTS = {
    ("div", "trunc_rounding"): "rounding_mode= is not in gpudl's API",
    ("div", "floor_rounding"): "rounding_mode= is not in gpudl's API",
    ("softmax", "with_dtype"): "dtype= is not in gpudl's API",
    ("log_softmax", "with_dtype"): "dtype= is not in gpudl's API",
}
UNSUPPORTED_KWARGS = {"out", "alpha", "rounding_mode", "memory_format", "names"}
DTYPES = {getattr(torch, name): getattr(gd, name) for name in (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool")}
# ...except where the op takes it: (op, variant) -> kwargs allowed there
ALLOWED_KWARGS = {("addmm", ""): {"alpha"}, ("addmm", "decomposed"): {"alpha"},
                  ("index_add", ""): {"alpha"}, ("baddbmm", ""): {"alpha"},
                  ("addbmm", ""): {"alpha"}}

# KNOWN, deliberate departures: (op, variant) -> predicate(sample) -> reason, or None.
KNOWN = {}
# session 11, tensor-misc: cov's samples give float32 aweights, whose gradient then agrees with
# torch's to float32 rounding (~1e-7 relative), not to this sweep's float64 tolerance; the
# float64 gradient is compared in test_tensor_misc.py
KNOWN[("cov", "")] = lambda s: "float32 aweights" if s.kwargs.get("aweights") is not None else None

# Samples outside gpudl's API within a supported variant: (op, variant) -> predicate(sample) -> reason.
OUT_OF_API = {}
# gpudl has no complex dtype: stft's return_complex=True samples are compared through
# view_as_real in test_torch_breadth2.py
OUT_OF_API[("stft", "")] = lambda s: "complex output" if s.kwargs.get("return_complex") else None

OPS = sorted({k[0] for k in GPUDL} | {k[0] for k in SKIP_VARIANTS})


def _opinfos(name):
    return [op for op in cmi.op_db if op.name == name]


def _to_gd(x, leaves):
    """torch -> gpudl; float tensors that require grad become gpudl leaves, paired in ``leaves``."""
    if isinstance(x, torch.Tensor):
        t = gd.tensor(x.detach().numpy().copy(), requires_grad=x.requires_grad)
        if x.requires_grad:
            leaves.append((t, x))
        return t
    if isinstance(x, torch.Size):
        return tuple(x)
    if isinstance(x, torch.dtype):
        return DTYPES[x]
    if isinstance(x, list):
        return [_to_gd(i, leaves) for i in x]
    if isinstance(x, tuple):
        return tuple(_to_gd(i, leaves) for i in x)
    if isinstance(x, dict):
        return {k: _to_gd(v, leaves) for k, v in x.items()}
    return x


def _unsupported(sample, key=None):
    def bad(x):
        if isinstance(x, torch.Tensor):
            return x.is_complex() or x.layout != torch.strided or any(getattr(x, "names", ()))
        if isinstance(x, (list, tuple)):
            return any(bad(i) for i in x)
        return isinstance(x, torch.memory_format) or isinstance(x, torch.dtype) and \
            x not in DTYPES
    refused = UNSUPPORTED_KWARGS - ALLOWED_KWARGS.get(key, set())
    if refused & set(sample.kwargs):
        return f"kwargs {sorted(refused & set(sample.kwargs))}"
    if bad(sample.input) or bad(sample.args) or bad(list(sample.kwargs.values())):
        return "complex/sparse/named tensor or dtype argument"
    return None


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"T{tuple(x.shape)}:{str(x.dtype)[6:]}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_describe(i) for i in x) + "]"
    return repr(x)


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _compare(name, sample, fn, i, rtol=1e-7, atol=1e-9, exact_dtype=False):
    """None if gpudl agrees with torch on this sample, else a description of the mismatch;
    ``exact_dtype`` also holds floating outputs to torch's dtype (float32 stays float32)."""
    torch_leaves, gd_leaves = [], []
    t_in, t_args, t_kw = sample.input, sample.args, sample.kwargs
    g_in, g_args, g_kw = (_to_gd(t_in, gd_leaves), _to_gd(t_args, gd_leaves),
                          _to_gd(t_kw, gd_leaves))
    torch_leaves = [t for _, t in gd_leaves]
    for t in torch_leaves:
        t.grad = None
    tag = f"{name} sample {i} ({_describe(t_in)}, args={_describe(t_args)}, kwargs={t_kw})"
    try:
        ty = sample.output_process_fn_grad(OP_CALL[name](t_in, *t_args, **t_kw))
    except Exception as exc:  # torch rejects it: gpudl must reject it too
        try:
            fn(g_in, *g_args, **g_kw)
        except Exception:
            return None
        return f"{tag}: torch raised {type(exc).__name__} but gpudl returned"
    try:
        y = fn(g_in, *g_args, **g_kw)
    except Exception as exc:
        return f"{tag}: gpudl raised {type(exc).__name__}: {exc}"
    if not isinstance(ty, torch.Tensor) and isinstance(ty, (bool, int, float)):
        # item, equal, allclose: a Python number, of torch's type
        if type(y) is not type(ty) or not (y == ty or y != y and ty != ty):
            return f"{tag}: gave {y!r}, torch {ty!r}"
        return None
    ys, tys = _outputs(y), _outputs(ty)
    if len(ys) != len(tys):
        return f"{tag}: {len(ys)} outputs, torch gives {len(tys)}"
    for k, (a, b) in enumerate(zip(ys, tys)):
        if not isinstance(a, gd.Tensor):
            return f"{tag}: output {k} is a {type(a).__name__}, not a Tensor"
        if tuple(a.shape) != tuple(b.shape):
            return f"{tag}: output {k} shape {a.shape}, torch {tuple(b.shape)}"
        if a.dtype.kind != {True: "f", False: a.dtype.kind}[b.dtype.is_floating_point] or \
                ((exact_dtype or not b.dtype.is_floating_point)
                 and a.dtype != b.detach().numpy().dtype):
            return f"{tag}: output {k} dtype {a.dtype}, torch {b.dtype}"
        if not np.allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol, equal_nan=True):
            return f"{tag}: output {k} values differ"
    if not gd_leaves:
        return None
    rng = np.random.default_rng(i)
    pairs = [(a, b, rng.standard_normal(a.shape)) for a, b in zip(ys, tys)
             if b.dtype.is_floating_point and b.requires_grad]
    if not pairs:
        return None
    loss = sum((a * gd.tensor(w)).sum() for a, _, w in pairs)
    tloss = sum((b * torch.tensor(w)).sum() for _, b, w in pairs)
    torch_grads = torch.autograd.grad(tloss, torch_leaves, allow_unused=True)
    try:
        loss.backward()
    except Exception as exc:
        return f"{tag}: gpudl backward raised {type(exc).__name__}: {exc}"
    for k, ((g, _), tg) in enumerate(zip(gd_leaves, torch_grads)):
        expected = np.zeros(g.shape) if tg is None else tg.numpy()
        got = np.zeros(g.shape) if g.grad is None else g.grad.numpy()
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol,
                                                          equal_nan=True):
            return f"{tag}: gradient of leaf {k} differs"
    return None


OP_CALL = {}
STATS = {}


@pytest.mark.parametrize("name", OPS)
def test_opinfo_samples(name):
    infos = _opinfos(name)
    assert infos, f"no OpInfo named {name}"
    mismatches, compared, skipped = [], 0, 0
    for op in infos:
        key = (name, op.variant_test_name)
        samples = list(op.sample_inputs("cpu", torch.float64,
                                        requires_grad=op.supports_autograd))
        if key in SKIP_VARIANTS or key not in GPUDL:
            skipped += len(samples)
            continue
        OP_CALL[name] = op.op
        for i, sample in enumerate(samples):
            reason = _unsupported(sample, key)
            reason = reason or OUT_OF_API.get(key, lambda s: None)(sample)
            known = KNOWN.get(key, lambda s: None)(sample)
            if reason or known:
                skipped += 1
                continue
            compared += 1
            problem = _compare(name, sample, GPUDL[key], i)
            if problem:
                mismatches.append(problem)
    STATS[name] = (compared, skipped)
    print(f"{name}: compared {compared}, skipped {skipped}")
    assert compared > 0
    assert not mismatches, "\n".join(mismatches)


# Error inputs torch rejects but gpudl deliberately accepts (KNOWN departures):
ERROR_KNOWN = {
    # gpudl's maximum/minimum also take a Python number as ``other`` (torch wants a tensor)
    ("maximum", ""): lambda s: isinstance(s.input, torch.Tensor) and not isinstance(
        s.args[0], torch.Tensor) or None,
    ("minimum", ""): lambda s: isinstance(s.input, torch.Tensor) and not isinstance(
        s.args[0], torch.Tensor) or None,
    ("clamp_min", ""): lambda s: not isinstance(s.args[0], torch.Tensor) or None,
    ("clamp_max", ""): lambda s: not isinstance(s.args[0], torch.Tensor) or None,
    # gpudl's mean promotes an integer tensor to the default float dtype (torch refuses)
    ("mean", ""): lambda s: not s.input.dtype.is_floating_point or None,
}
# What a bad input may raise (gpudl's error style: TypeError / ValueError / RuntimeError; IndexError for dims)
ERRORS = (TypeError, ValueError, IndexError, RuntimeError)


def _error_inputs(op):
    if op.error_inputs_func is None:
        return []
    return list(op.error_inputs("cpu"))


@pytest.mark.parametrize("name", [n for n in OPS if any(
    op.error_inputs_func is not None for op in _opinfos(n))])
def test_opinfo_error_inputs(name):
    """Every bad input torch rejects, gpudl rejects too, with one of the contract's exceptions."""
    problems, checked = [], 0
    for op in _opinfos(name):
        key = (name, op.variant_test_name)
        if key in SKIP_VARIANTS or key not in GPUDL:
            continue
        for ei in _error_inputs(op):
            s = ei.sample_input
            if _unsupported(s, key) or ERROR_KNOWN.get(key, lambda s: None)(s):
                continue
            if getattr(GPUDL[key], "method_only", False) and not isinstance(s.input, torch.Tensor):
                continue            # e.g. torch.pow(2, 3): gpudl has no gd.pow to call
            if isinstance(s.input, torch.Tensor) and s.input.dtype not in (
                    torch.float64, torch.float32, torch.int64, torch.int32, torch.bool):
                continue
            checked += 1
            leaves = []
            tag = f"{name}({_describe(s.input)}, {_describe(s.args)}, {s.kwargs})"
            try:        # an index range on the cuda device is refused at the next read
                call_then_read(GPUDL[key], _to_gd(s.input, leaves), *_to_gd(s.args, leaves),
                               **_to_gd(s.kwargs, leaves))
            except ERRORS:
                continue
            except Exception as exc:
                problems.append(f"{tag}: raised {type(exc).__name__}: {exc}")
                continue
            problems.append(f"{tag}: returned; torch raises {ei.error_type.__name__}")
    print(f"{name}: {checked} error inputs checked")
    assert not problems, "\n".join(problems)
