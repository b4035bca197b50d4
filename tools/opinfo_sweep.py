"""Bug hunt: run EVERY PyTorch OpInfo (``op_db``) whose name resolves in gpudl against torch.

    PYTHONPATH=$PWD python tools/opinfo_sweep.py [--ops name,...] [--dtype float64,float32,...]
                                                  [--verbose] [--timeout 120]

An OpInfo resolves when its name, or one of its aliases, is ``gd.nn.functional.<x>`` (for
``nn.functional.x``), ``gd.linalg.<x>``, ``gd.special.<x>``, ``gd.<x>`` or a Tensor method; the
hand-written adapters of the OpInfo test tables (tests/test_opinfo_*.py, tests/test_special.py)
take precedence. Every sample runs in float64 and float32 (forward and the gradients of
``(out * w).sum()``) and in int64 / bool where torch supports them, through the comparison of
tests/test_opinfo_core.py (``_compare``: values, dtype, shape, gradients); then each
``error_inputs`` sample must make gpudl raise torch's exception type.

Per op it prints: samples run, skipped (with the reason: out=, complex / sparse tensors, a keyword
gpudl does not take, a dtype it refuses, NotImplementedError), mismatches by kind (values, dtype,
shape, gradient, accepts what torch refuses), wrong exception type on error inputs, and crashes
(gpudl raising on a valid sample, in forward or backward). ``--verbose`` prints each problem.
The machine is shared: split a full run with ``--ops`` (a comma list of OpInfo names, or
``--chunk k/n``).

First full run (session 11): the bugs it found in gpudl were fixed with tests in
tests/test_opinfo_sweep_fixes.py (arange/linspace/logspace with float bounds and an integer
dtype, randint(high, size), integer pow to negative tensor powers, dtype= of sum/mean/prod/
cumsum/cumprod, square of bool, narrow/roll/unbind/masked_fill errors, normal_/uniform_
parameter checks). What it still reports is by design or out of reach here: norm(p='nuc') (no
SVD yet), integer addbmm/baddbmm with float alpha/beta, gpudl's IndexError / TypeError /
ValueError where torch raises RuntimeError for out-of-range indices, wrong dtypes and empty
dims, and the tool's own limits (bfloat16 outputs, torch modules passed as arguments).
"""

import argparse
import collections
import os
import re
import signal
import sys
import warnings
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import gpudl as gd  # noqa: E402
import gpudl.nn.functional as F  # noqa: E402
import test_opinfo_core as core  # noqa: E402
import test_opinfo_math  # noqa: E402
import test_opinfo_nn  # noqa: E402
import test_special  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32, "int64": torch.int64,
          "bool": torch.bool}
TOLERANCE = {torch.float64: (1e-7, 1e-9)}       # anything else: float32 results
FLOAT32_TOLERANCE = (1e-4, 1e-4)
GD_DTYPES = {torch.float64: gd.float64, torch.float32: gd.float32, torch.float16: gd.float16,
             torch.int64: gd.int64, torch.int32: gd.int32, torch.bool: gd.bool,
             torch.int8: gd.int8, torch.uint8: gd.uint8, torch.int16: gd.int16}
# ops whose values are random or uninitialised: only shapes and dtypes are compared
RANDOM = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "randn",
          "randn_like", "rand_like", "randint", "randint_like", "multinomial", "normal",
          "bernoulli", "uniform", "nn.functional.dropout2d", "nn.functional.dropout3d",
          "nn.functional.alpha_dropout", "nn.functional.feature_alpha_dropout", "cauchy",
          "exponential", "geometric", "log_normal"}
# ops returning indices of values that may tie (integer and bool samples tie often): which
# output holds the indices; with tied values torch and gpudl may pick different ones, so the
# indices are only compared on floating samples
TIED_INDICES = {"sort": 1, "argsort": 0, "topk": 1, "kthvalue": 1, "mode": 1, "median": 1,
                "nanmedian": 1}
# OpInfos whose lambda takes the arguments in another order than the gpudl name
ADAPTERS = {
    ("nn.functional.embedding_bag", ""): lambda weight, idx, **kw: F.embedding_bag(idx, weight,
                                                                                    **kw),
    ("zero_", ""): lambda x: x.clone().zero_(),
    ("normal", "in_place"): lambda x, *args, **kw: x.clone().normal_(*args, **kw),
    ("normal", "number_mean"): lambda std, mean, *args, **kw: gd.normal(mean, std, *args, **kw),
}
NAMESPACES = (("nn.functional.", F), ("linalg.", gd.linalg), ("special.", gd.special))


def _table_adapters():
    """(OpInfo name, variant) -> gpudl callable, from the test tables' hand-written adapters."""
    table = dict(ADAPTERS)
    table.update(core.GPUDL)
    table.update(test_opinfo_math.GPUDL)
    table.update(test_special.OPINFO)
    for gname, fulls in test_opinfo_nn.OPS.items():
        for full in fulls:
            op = test_opinfo_nn._BY_NAME.get(full)
            if op is not None:
                table[(op.name, op.variant_test_name)] = (
                    lambda inp, *a, _g=gname, **k: test_opinfo_nn._call(_g, inp, a, k))
    return table


def _departures():
    """(OpInfo name, variant) -> predicate(sample) -> reason or None: the tables' deliberate
    departures (test_opinfo_core.KNOWN, test_opinfo_nn._departure: random masks, ...)."""
    known = dict(core.KNOWN)
    for gname, fulls in test_opinfo_nn.OPS.items():
        for full in fulls:
            op = test_opinfo_nn._BY_NAME.get(full)
            if op is not None:
                known[(op.name, op.variant_test_name)] = (
                    lambda s, _g=gname: test_opinfo_nn._departure(_g, s))
    known[("nn.functional.rrelu", "")] = lambda s: (
        "random slopes in training" if s.kwargs.get("training") else None)
    return known


DEPARTURES = {}


def _by_name(name):
    """The gpudl callable an OpInfo name denotes, or None."""
    for prefix, namespace in NAMESPACES:
        if name.startswith(prefix):
            return getattr(namespace, name[len(prefix):], None)
    if "." in name:
        return None
    if callable(getattr(gd, name, None)) and not isinstance(getattr(gd, name), type):
        return getattr(gd, name)
    if hasattr(gd.Tensor, name):
        return core._method(name)
    return None


def resolve(op, table):
    """The gpudl callable for an OpInfo (its table adapter, its name or an alias), or None."""
    if (op.name, op.variant_test_name) in table:
        return table[(op.name, op.variant_test_name)]
    for name in [op.name] + [alias.name for alias in op.aliases]:
        fn = _by_name(name)
        if fn is not None:
            return fn
    return None


def _gd_dtypes(x):
    if isinstance(x, torch.dtype):
        return GD_DTYPES.get(x, x)
    if isinstance(x, (list, tuple)):
        return type(x)(_gd_dtypes(i) for i in x)
    if isinstance(x, dict):
        return {k: _gd_dtypes(v) for k, v in x.items()}
    return x


def _default_format(key, value):
    """memory_format=torch.preserve_format: torch's default, dropped for gpudl (no formats)."""
    return key == "memory_format" and value == torch.preserve_format


def _with_gd_dtypes(fn):
    """fn taking torch dtypes (dtype=torch.float32) as gpudl ones, without torch's default
    memory_format."""
    def call(*args, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if not _default_format(k, v)}
        return fn(*_gd_dtypes(args), **_gd_dtypes(kwargs))
    call.method_only = getattr(fn, "method_only", False)
    return call


def _as_tensors(fn, tensor):
    """fn whose Python-number / shape outputs (item, allclose, broadcast_shapes) come back as
    tensors, so the shared comparison reads them."""
    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, (bool, int, float)) or (isinstance(out, tuple) and all(
                isinstance(i, int) for i in out)):
            return tensor(out if not isinstance(out, tuple) else list(out))
        return out
    call.method_only = getattr(fn, "method_only", False)
    return call


def _zeroed(fn, zeros_like, which=None):
    """fn with its outputs (or output number ``which``) replaced by zeros of their shape and
    dtype (random ops, tied indices)."""
    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, (tuple, list)):
            return tuple(zeros_like(o) if which in (None, k) else o for k, o in enumerate(out))
        return zeros_like(out) if which in (None, 0) else out
    call.method_only = getattr(fn, "method_only", False)
    return call


def _skip_reason(sample):
    """Why the sample cannot be put to gpudl at all (out=, complex/sparse/named tensors)."""
    def no_dtype(x):
        if isinstance(x, (list, tuple)):
            return [no_dtype(i) for i in x]
        return None if isinstance(x, torch.dtype) else x
    kwargs = {k: no_dtype(v) for k, v in sample.kwargs.items()
              if k not in ("dtype", "alpha", "rounding_mode") and not _default_format(k, v)}
    return core._unsupported(SimpleNamespace(input=sample.input, args=no_dtype(sample.args),
                                             kwargs=kwargs))


_RAISED = re.compile(r": gpudl raised (\w+): (.*)$", re.S)


def classify(problem):
    """(kind, detail) of a _compare description: kind 'skip:<reason>' or a mismatch kind."""
    m = _RAISED.search(problem)
    if m:
        exc, msg = m.groups()
        if exc == "TypeError" and ("unexpected keyword" in msg or "positional argument" in msg):
            return "skip:argument not taken", msg.splitlines()[0][:90]
        if ("dtype" in msg.lower() or "floating" in msg) and exc in ("TypeError", "ValueError", "NotImplementedError"):
            return "skip:dtype refused", msg.splitlines()[0][:90]
        if exc == "NotImplementedError":
            return "skip:not implemented", msg.splitlines()[0][:90]
        return "crash", problem
    for kind in ("gradient", "backward raised", "values differ", "dtype", "shape", "outputs",
                 "torch raised", "not a Tensor"):
        if kind in problem:
            return {"backward raised": "crash", "torch raised": "accepts invalid",
                    "outputs": "shape", "not a Tensor": "dtype"}.get(kind, kind.split()[0]), problem
    return "other", problem


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def sweep_samples(op, fn, dtype, report, limit):
    if dtype not in op.supported_dtypes("cpu"):
        return
    grad = dtype.is_floating_point and op.supports_autograd and \
        dtype in op.supported_backward_dtypes("cpu") and op.name not in test_opinfo_math.NO_GRADIENT
    rtol, atol = TOLERANCE.get(dtype, FLOAT32_TOLERANCE)
    name = op.name
    core.OP_CALL[name] = _as_tensors(op.op, torch.tensor)
    if name in RANDOM:
        core.OP_CALL[name] = _zeroed(core.OP_CALL[name], torch.zeros_like)
        fn = _zeroed(fn, gd.zeros_like)
    elif TIED_INDICES.get(name) is not None and not dtype.is_floating_point:
        core.OP_CALL[name] = _zeroed(core.OP_CALL[name], torch.zeros_like, TIED_INDICES[name])
        fn = _zeroed(fn, gd.zeros_like, TIED_INDICES[name])
    known = DEPARTURES.get((op.name, op.variant_test_name), lambda s: None)
    try:
        samples = list(op.sample_inputs("cpu", dtype, requires_grad=grad))
    except Exception as exc:  # noqa: BLE001  (torch's own sample generator)
        report["skipped"][f"no samples: {type(exc).__name__}"] += 1
        return
    for i, sample in enumerate(samples):
        reason = _skip_reason(sample) or known(sample)
        if reason:
            report["skipped"][reason] += 1
            continue
        signal.alarm(limit)
        try:
            problem = core._compare(name, sample, fn, i, rtol, atol, exact_dtype=True)
        except _Timeout:
            problem = f"{name} sample {i}: gpudl raised Timeout: over {limit} s"
        except Exception as exc:  # noqa: BLE001  (an error outside gpudl's call: reported)
            problem = f"{name} sample {i}: gpudl raised {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        report["run"] += 1
        if problem is None:
            continue
        kind, detail = classify(problem)
        if kind.startswith("skip:"):
            report["skipped"][f"{kind[5:]}: {detail}"] += 1
            report["run"] -= 1
        else:
            report["problems"][kind].append(f"{dtype}: {detail}")


def sweep_errors(op, fn, report):
    try:
        error_inputs = core._error_inputs(op)
    except Exception:  # noqa: BLE001
        return
    for ei in error_inputs:
        s = ei.sample_input
        if _skip_reason(s) or core.ERROR_KNOWN.get((op.name, op.variant_test_name),
                                                    lambda s: None)(s):
            continue
        if getattr(fn, "method_only", False) and not isinstance(s.input, torch.Tensor):
            continue
        leaves = []
        tag = f"{op.name}({core._describe(s.input)}, {core._describe(s.args)}, {s.kwargs})"
        report["errors"] += 1
        try:
            fn(core._to_gd(s.input, leaves), *core._to_gd(s.args, leaves),
               **core._to_gd(s.kwargs, leaves))
        except ei.error_type:
            continue
        except core.ERRORS as exc:
            if isinstance(exc, ValueError) and ei.error_type is RuntimeError:
                report["skipped"]["error input: ValueError (gpudl's shape errors)"] += 1
                continue
            report["problems"]["wrong exception"].append(
                f"{tag}: {type(exc).__name__} ({str(exc)[:80]}), torch "
                f"{ei.error_type.__name__}")
        except Exception as exc:  # noqa: BLE001
            report["problems"]["crash"].append(f"{tag}: {type(exc).__name__}: {exc}")
        else:
            report["problems"]["accepts invalid"].append(
                f"{tag}: returned; torch raises {ei.error_type.__name__}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma list of OpInfo names (default: all that resolve)")
    parser.add_argument("--chunk", help="k/n: the k-th (1-based) of n equal slices of the ops")
    parser.add_argument("--dtype", default="float64,float32,int64,bool")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per sample")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, _alarm)
    from torch.testing._internal.common_methods_invocations import op_db
    table = _table_adapters()
    DEPARTURES.update(_departures())
    wanted = set(args.ops.split(",")) if args.ops else None
    ops = [(op, resolve(op, table)) for op in op_db if wanted is None or op.name in wanted]
    ops = [(op, fn) for op, fn in ops if fn is not None]
    if args.chunk:
        k, n = map(int, args.chunk.split("/"))
        ops = ops[(k - 1) * len(ops) // n: k * len(ops) // n]
    dtypes = [DTYPES[d] for d in args.dtype.split(",")]
    totals = collections.Counter()
    lines = []
    for op, fn in tqdm(ops, file=sys.stderr):
        fn = _as_tensors(_with_gd_dtypes(fn), gd.tensor)
        report = {"run": 0, "errors": 0, "skipped": collections.Counter(),
                  "problems": collections.defaultdict(list)}
        for dtype in dtypes:
            sweep_samples(op, fn, dtype, report, args.timeout)
        sweep_errors(op, fn, report)
        full = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
        bad = sum(len(v) for v in report["problems"].values())
        totals.update(run=report["run"], skipped=sum(report["skipped"].values()), bad=bad)
        kinds = ", ".join(f"{k} {len(v)}" for k, v in sorted(report["problems"].items()))
        line = (f"{full}: run {report['run']}, skipped {sum(report['skipped'].values())}, "
                f"error inputs {report['errors']}, problems {bad}" + (f" ({kinds})" if kinds
                                                                        else ""))
        lines.append(line)
        tqdm.write(line, file=sys.stdout)
        if args.verbose:
            for reason, count in report["skipped"].most_common():
                tqdm.write(f"    skipped {count}: {reason}", file=sys.stdout)
            for kind, items in sorted(report["problems"].items()):
                for item in items[:5]:
                    tqdm.write(f"    {kind}: {item[:300]}", file=sys.stdout)
                if len(items) > 5:
                    tqdm.write(f"    {kind}: ... {len(items) - 5} more", file=sys.stdout)
    print(f"TOTAL: {len(ops)} ops, run {totals['run']}, skipped {totals['skipped']}, "
          f"problems {totals['bad']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
