"""PyTorch's OpInfo samples over gpudl's elementwise maths (gpudl.math_ops, math_bits), as
test_opinfo_core.py sweeps the core ops (its comparison is reused): float64 samples with the
gradients of ``(out * w).sum()``, and int64 and bool samples (values and dtypes) where torch
supports those dtypes; then the error inputs torch rejects."""

from types import SimpleNamespace

import pytest

import gpudl as gd

torch = pytest.importorskip("torch")
core = pytest.importorskip("test_opinfo_core")


# OpInfo name -> gpudl callable taking the sample's (input, *args, **kwargs)
GPUDL = {
    "add": gd.add, "sub": gd.sub, "mul": gd.mul, "true_divide": gd.true_divide,
    ("div", "no_rounding_mode"): gd.div, ("div", "trunc_rounding"): gd.div,
    ("div", "floor_rounding"): gd.div, "rsub": gd.rsub, "neg": gd.neg,
    "positive": gd.positive, "tan": gd.tan, "sinh": gd.sinh, "cosh": gd.cosh, "asin": gd.asin,
    "acos": gd.acos, "atan": gd.atan, "asinh": gd.asinh, "acosh": gd.acosh, "atanh": gd.atanh,
    "atan2": gd.atan2, "exp2": gd.exp2, "log2": gd.log2, "log10": gd.log10, "trunc": gd.trunc,
    "frac": gd.frac, "fmod": gd.fmod, "remainder": gd.remainder, "hypot": gd.hypot,
    "copysign": gd.copysign, "logaddexp": gd.logaddexp, "logaddexp2": gd.logaddexp2,
    "xlogy": gd.xlogy, "float_power": gd.float_power, "heaviside": gd.heaviside,
    "nextafter": gd.nextafter, "signbit": gd.signbit, "sgn": gd.sgn, "sinc": gd.sinc,
    "logit": gd.logit, "deg2rad": gd.deg2rad, "rad2deg": gd.rad2deg, "gcd": gd.gcd,
    "lcm": gd.lcm, "ldexp": gd.ldexp, "frexp": gd.frexp, "fmax": gd.fmax, "fmin": gd.fmin,
    "bitwise_and": gd.bitwise_and, "bitwise_or": gd.bitwise_or, "bitwise_xor": gd.bitwise_xor,
    "bitwise_not": gd.bitwise_not, "bitwise_left_shift": gd.bitwise_left_shift,
    "bitwise_right_shift": gd.bitwise_right_shift, "eq": gd.eq, "ne": gd.ne, "lt": gd.lt,
    "le": gd.le, "gt": gd.gt, "ge": gd.ge, "isneginf": gd.isneginf, "isposinf": gd.isposinf,
    "isreal": gd.isreal, "clone": gd.clone, "nn.functional.threshold": gd.threshold,
    "nn.functional.hardshrink": gd.hardshrink, "nn.functional.celu": gd.celu,
    "nn.functional.selu": gd.selu, "nn.functional.prelu": gd.prelu,
    # session 26: ops no sweep had run (int64 and bool samples too)
    "logical_not": gd.logical_not, "logical_and": gd.logical_and, "logical_or": gd.logical_or,
    "logical_xor": gd.logical_xor, "isinf": gd.isinf, "count_nonzero": gd.count_nonzero,
    "trace": gd.trace, "tile": gd.tile, "movedim": gd.movedim, "unflatten": gd.unflatten,
    "broadcast_to": gd.broadcast_to, "hstack": gd.hstack, "vstack": gd.vstack,
    "__rand__": core._reflected(lambda x, other: other & x),
    "__ror__": core._reflected(lambda x, other: other | x),
    "__rxor__": core._reflected(lambda x, other: other ^ x),
}
GPUDL = {(k, "") if isinstance(k, str) else k: v for k, v in GPUDL.items()}
OPS = sorted({name for name, _ in GPUDL})
DTYPES = (torch.float64, torch.int64, torch.bool)


def _unsupported(sample):
    """Why gpudl cannot take this sample (None if it can): out=, dtype=, complex, sparse or
    named tensors (test_opinfo_core's rule, with alpha= and rounding_mode= taken here)."""
    kwargs = {k: v for k, v in sample.kwargs.items() if k not in ("alpha", "rounding_mode")}
    return core._unsupported(SimpleNamespace(input=sample.input, args=sample.args,
                                             kwargs=kwargs))


# forward only: torch's gradient of sgn is a ZeroTensor, which the shared comparison cannot
# read (test_math_ops checks it); F.threshold takes floating tensors only (gpudl.nn's rule)
NO_GRADIENT = {"sgn"}
FLOATING_ONLY = {"nn.functional.threshold"}


def _samples(op, dtype):
    """The samples of ``op`` in ``dtype``: integer and bool ones only where torch's result keeps
    an exact dtype (a float32 result of torch's libm is not bitwise gpudl's: test_math_ops
    compares those with float32 tolerances)."""
    if dtype not in op.supported_dtypes("cpu") or (
            dtype != torch.float64 and op.name in FLOATING_ONLY):
        return []
    grad = dtype == torch.float64 and op.supports_autograd and op.name not in NO_GRADIENT
    samples = list(op.sample_inputs("cpu", dtype, requires_grad=grad))
    if dtype == torch.float64:
        return samples
    return [s for s in samples if not _floating_result(op, s)]


def _floating_result(op, sample):
    try:
        out = op.op(sample.input, *sample.args, **sample.kwargs)
    except Exception:                     # noqa: BLE001 (compared: gpudl must refuse too)
        return False
    return any(o.is_floating_point() for o in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("name", OPS)
def test_opinfo_samples(name):
    mismatches, compared = [], 0
    for op in core._opinfos(name):
        key = (name, op.variant_test_name)
        if key not in GPUDL:
            continue
        core.OP_CALL[name] = op.op
        for dtype in DTYPES:
            for i, sample in enumerate(_samples(op, dtype)):
                if _unsupported(sample):
                    continue
                compared += 1
                problem = core._compare(name, sample, GPUDL[key], i)
                if problem:
                    mismatches.append(f"{dtype}: {problem}")
    print(f"{name}: compared {compared}")
    assert compared > 0
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("name", [n for n in OPS if any(
    op.error_inputs_func is not None for op in core._opinfos(n))])
def test_opinfo_error_inputs(name):
    """Every bad input torch rejects, gpudl rejects too, with one of the contract's exceptions."""
    problems = []
    for op in core._opinfos(name):
        key = (name, op.variant_test_name)
        if key not in GPUDL:
            continue
        for error in core._error_inputs(op):
            s = error.sample_input
            if _unsupported(s) or (getattr(GPUDL[key], "method_only", False)
                                   and not isinstance(s.input, torch.Tensor)):
                continue                  # a method called on a number: no gpudl call to make
            tag = f"{name}({core._describe(s.input)}, {core._describe(s.args)}, {s.kwargs})"
            leaves = []
            try:
                GPUDL[key](core._to_gd(s.input, leaves), *core._to_gd(s.args, leaves),
                           **core._to_gd(s.kwargs, leaves))
            except core.ERRORS:
                continue
            except Exception as exc:      # noqa: BLE001
                problems.append(f"{tag}: raised {type(exc).__name__}: {exc}")
                continue
            problems.append(f"{tag}: returned; torch raises {error.error_type.__name__}")
    assert not problems, "\n".join(problems)
