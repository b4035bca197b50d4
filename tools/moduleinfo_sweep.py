"""Bug-hunt report: torch's ModuleInfo samples (common_modules.module_db) over gpudl.nn.

    python tools/moduleinfo_sweep.py [--modules Linear,LSTM,...] [--no-signatures]

For every module_db entry whose class gpudl.nn also has, and each of its samples in train and
eval mode, the per-sample comparison of tests/test_opinfo_nn.py runs (torch's state dict loaded
into gpudl's module; outputs, input and parameter gradients and buffers after forward compared).
This report adds, per sample: the freshly constructed modules' state-dict keys / shapes / dtypes
(also when built with device="cpu", dtype=float64) and repr, and the float32 samples' forward
(output dtypes and values); per module: torch's module_error_inputs (construction or forward
must be refused; gpudl refusing at construction what torch refuses at forward is listed apart).
Finally, for every gpudl.nn class torch.nn also has, the keyword names of torch's constructor
gpudl's does not accept (device=, dtype=, padding_mode=, ...).

Prints per module: samples compared, skipped (why), mismatches, crashes. Run from the repository
root with PYTHONPATH=. ; it needs torch with its test internals (expecttest).
"""

import argparse
import collections
import inspect
import os
import sys
import warnings

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import torch  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum  # noqa: E402

import gpudl as gd  # noqa: E402
import gpudl.nn as gn  # noqa: E402
import test_opinfo_nn as sweep  # noqa: E402  (the comparison helpers the tests use)


def _np_dtype(v):
    return np.dtype(str(v.dtype).replace("torch.", "")) if isinstance(v, torch.Tensor) \
        else np.dtype(v.dtype)


def _constructed(name, info, ci):
    """(torch module, gpudl module) from one constructor input, both float64."""
    leaves = []
    cargs = tuple(sweep._ctor_to_gd(a, leaves) for a in ci.args)
    ckw = {k: sweep._ctor_to_gd(v, leaves) for k, v in ci.kwargs.items()}
    return info.module_cls(*ci.args, **ci.kwargs).double(), getattr(gn, name)(*cargs, **ckw).double()


def check_state_dict_and_repr(name, info, ci):
    """(state-dict mismatch or None, repr mismatch or None) of freshly constructed modules."""
    tm, gm = _constructed(name, info, ci)
    t_sd, g_sd = tm.state_dict(), gm.state_dict()
    problem = None
    if list(t_sd) != list(g_sd):
        missing, extra = set(t_sd) - set(g_sd), set(g_sd) - set(t_sd)
        problem = (f"state_dict keys: missing {sorted(missing)}, extra {sorted(extra)}"
                   if missing or extra else f"state_dict key order {list(g_sd)} != {list(t_sd)}")
    else:
        for k, v in t_sd.items():
            g = g_sd[k]
            if isinstance(v, torch.nn.parameter.UninitializedTensorMixin):
                continue                            # a lazy module's: no shape yet
            if tuple(v.shape) != tuple(g.shape) or _np_dtype(v) != _np_dtype(g):
                problem = (f"state_dict[{k!r}]: {tuple(g.shape)} {_np_dtype(g)} != torch "
                           f"{tuple(v.shape)} {_np_dtype(v)}")
                break
    # MultiheadAttention's out_proj: torch's Linear subclass exists only for its quantization
    t_repr = repr(tm).replace("NonDynamicallyQuantizableLinear", "Linear")
    bad_repr = None if t_repr == repr(gm) else f"repr {repr(gm)!r} != torch {t_repr!r}"
    return problem, bad_repr


def check_factory_kwargs(name, info, ci):
    """None when ``device="cpu", dtype=float64`` in the constructor make every parameter and
    buffer gpudl's float64 where torch's are (no ``.double()``), else a description."""
    if "device" in ci.kwargs or "dtype" in ci.kwargs or \
            "dtype" not in inspect.signature(getattr(gn, name).__init__).parameters:
        return None
    leaves = []
    cargs = tuple(sweep._ctor_to_gd(a, leaves) for a in ci.args)
    ckw = {k: sweep._ctor_to_gd(v, leaves) for k, v in ci.kwargs.items()}
    gm = getattr(gn, name)(*cargs, **ckw, device="cpu", dtype=gd.float64)
    tm = info.module_cls(*ci.args, **ci.kwargs, device="cpu", dtype=torch.float64)
    g_sd = gm.state_dict()
    for k, v in tm.state_dict().items():
        if k in g_sd and _np_dtype(v) != _np_dtype(g_sd[k]):
            return f"dtype=float64: state_dict[{k!r}] is {_np_dtype(g_sd[k])}, torch {_np_dtype(v)}"
    return None


def check_float32(name, info, mi, training):
    """None when the modules as constructed (float32 parameters) give outputs of torch's dtypes
    and values (rtol 1e-4) on the float32 sample ``mi``, else a description (forward only: the
    float64 run compares gradients)."""
    ci, fi = mi.constructor_input, mi.forward_input
    leaves = []
    cargs = tuple(sweep._ctor_to_gd(a, leaves) for a in ci.args)
    ckw = {k: sweep._ctor_to_gd(v, leaves) for k, v in ci.kwargs.items()}
    torch.manual_seed(0)
    tm = info.module_cls(*ci.args, **ci.kwargs).train(training)
    for sub in tm.modules():
        if isinstance(sub, torch.nn.TransformerEncoder):
            # torch's float32 eval fast path packs a padded batch into a nested tensor and
            # returns zeros at the padded positions (its slow path, and gpudl, compute them)
            sub.use_nested_tensor = False
    gm = getattr(gn, name)(*cargs, **ckw)
    gm.train(training)
    if getattr(tm, "has_uninitialized_params", lambda: False)():
        tm._infer_parameters(tm, tuple(fi.args))
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    gin = sweep._to_gd(tuple(fi.args), [])
    gkw = {k: sweep._to_gd(v, []) for k, v in fi.kwargs.items()}
    try:
        with torch.no_grad():
            t_out = tm(*fi.args, **fi.kwargs)
    except Exception:  # noqa: BLE001 (the float64 run checks refusals)
        return None
    try:
        out = gm(*gin, **gkw)
    except Exception as e:  # noqa: BLE001
        return f"float32: gpudl raised {type(e).__name__}: {e}"
    outs, t_outs = sweep._flat_out(out), sweep._flat_out(t_out)
    if len(outs) != len(t_outs):
        return f"float32: {len(outs)} outputs, torch {len(t_outs)}"
    for i, (a, b) in enumerate(zip(outs, t_outs)):
        if _np_dtype(a) != _np_dtype(b):
            return f"float32: output {i} is {_np_dtype(a)}, torch {_np_dtype(b)}"
        got, expected = a.numpy(), b.numpy()
        if got.shape != expected.shape:
            return f"float32: output {i} has shape {got.shape}, torch {expected.shape}"
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"float32: output {i} differs by up to {np.max(np.abs(got - expected))}"
    return None


EARLIER = "refused at construction, torch only at forward: "


def check_error_input(name, info, ei):
    """None when gpudl refuses torch's error input where torch does, else a description (one
    starting with EARLIER when gpudl refuses it sooner: not a finding, the argument's own call
    refuses it)."""
    mi = ei.module_error_input
    ci, fi = mi.constructor_input, mi.forward_input
    what = f"error input {ei.error_regex!r} ({ei.error_on.name})"
    try:
        _, gm = _constructed(name, info, ci)
    except sweep.ERRORS:
        return None if ei.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR \
            else f"{EARLIER}{what}"
    except Exception as e:  # noqa: BLE001 (the wrong kind of error is a finding)
        return f"{what}: construction raised {type(e).__name__}: {e}"
    if ei.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        return f"{what}: constructed"
    gin = sweep._to_gd(tuple(fi.args), [])
    gkw = {k: sweep._to_gd(v, []) for k, v in fi.kwargs.items()}
    try:
        gm(*gin, **gkw)
    except sweep.ERRORS:
        return None
    except Exception as e:  # noqa: BLE001
        return f"{what}: forward raised {type(e).__name__}: {e}"
    return f"{what}: forward accepted"


def sweep_module(name):
    """Counts and findings of one module: {'compared', 'skipped': Counter, 'mismatches': [...],
    'crashes': [...], 'state_dict': [...], 'repr': [...], 'errors_checked', 'error_inputs': [...],
    'refused_earlier': [...], 'float32': [...]}."""
    info = sweep._MODULES[name]
    r = {"compared": 0, "skipped": collections.Counter(), "mismatches": [], "crashes": [],
         "state_dict": [], "repr": [], "errors_checked": 0, "error_inputs": [],
         "refused_earlier": [], "float32": []}
    for training in (True, False):
        samples = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                          requires_grad=True, training=training)
        for k, mi in enumerate(samples):
            ci = mi.constructor_input
            where = f"training={training} sample {k} {mi.desc!r} {ci.args} {ci.kwargs}"
            why = sweep._module_departure(ci)
            if why:
                r["skipped"][why] += 1
                continue
            try:
                msg = sweep._check_module_sample(name, info, mi, training, seed=k)
            except sweep.Skip as e:
                r["skipped"][str(e) or "Skip"] += 1
                continue
            except Exception as e:  # noqa: BLE001 (a crash outside forward: construction, load)
                r["crashes"].append(f"{where}: {type(e).__name__}: {e}")
                continue
            r["compared"] += 1
            if msg:
                (r["crashes"] if msg.startswith("gpudl raised") else r["mismatches"]).append(
                    f"{where}: {msg}")
            if training:                         # construction does not depend on the mode
                try:
                    sd, rp = check_state_dict_and_repr(name, info, ci)
                except Exception as e:  # noqa: BLE001
                    sd, rp = f"{type(e).__name__}: {e}", None
                if sd:
                    r["state_dict"].append(f"{where}: {sd}")
                if rp:
                    r["repr"].append(f"{where}: {rp}")
                try:
                    fk = check_factory_kwargs(name, info, ci)
                except Exception as e:  # noqa: BLE001
                    fk = f"device=/dtype= construction: {type(e).__name__}: {e}"
                if fk:
                    r["state_dict"].append(f"{where}: {fk}")
    for training in (True, False):
        samples = info.module_inputs_func(info, device="cpu", dtype=torch.float32,
                                          requires_grad=False, training=training)
        for k, mi in enumerate(samples):
            ci = mi.constructor_input
            if sweep._module_departure(ci):
                continue
            try:
                msg = check_float32(name, info, mi, training)
            except sweep.Skip:
                continue
            except Exception as e:  # noqa: BLE001
                msg = f"float32: {type(e).__name__}: {e}"
            if msg:
                r["float32"].append(f"training={training} sample {k} {mi.desc!r} {ci.args} "
                                    f"{ci.kwargs}: {msg}")
    if info.module_error_inputs_func is not None:
        for training in (True, False):
            for ei in info.module_error_inputs_func(info, device="cpu", dtype=torch.float64,
                                                    requires_grad=False, training=training):
                try:
                    msg = check_error_input(name, info, ei)
                except sweep.Skip as e:
                    r["skipped"][f"error input: {e}"] += 1
                    continue
                r["errors_checked"] += 1
                if msg:
                    r["refused_earlier" if msg.startswith(EARLIER) else "error_inputs"].append(
                        f"training={training}: {msg}")
    return r


def missing_constructor_kwargs():
    """{class name: [torch constructor keywords gpudl's constructor does not accept]}."""
    out = {}
    for name in sorted(dir(gn)):
        ours, theirs = getattr(gn, name), getattr(torch.nn, name, None)
        if not (inspect.isclass(ours) and inspect.isclass(theirs)
                and issubclass(theirs, torch.nn.Module)):
            continue
        try:
            g_params = inspect.signature(ours.__init__).parameters
            t_params = inspect.signature(theirs.__init__).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind == p.VAR_KEYWORD for p in g_params.values()):
            continue
        missing = [k for k, p in t_params.items() if k != "self"
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k not in g_params]
        if missing:
            out[name] = missing
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", help="comma-separated class names (default: all gpudl has)")
    ap.add_argument("--no-signatures", action="store_true", help="skip the constructor check")
    ap.add_argument("--max-lines", type=int, default=4, help="findings printed per kind")
    args = ap.parse_args(argv)
    names = args.modules.split(",") if args.modules else sorted(sweep._MODULES)
    unknown = [n for n in names if n not in sweep._MODULES]
    if unknown:
        ap.error(f"--modules: no module_db entry gpudl.nn has for {unknown}")
    np.seterr(all="ignore")
    warnings.simplefilter("ignore", UserWarning)       # torch's nested-tensor / mask notices
    totals = collections.Counter()
    for name in tqdm(names, desc="modules", file=sys.stderr):
        r = sweep_module(name)
        skipped = sum(r["skipped"].values())
        print(f"{name}: compared {r['compared']}, skipped {skipped}, mismatches "
              f"{len(r['mismatches'])}, crashes {len(r['crashes'])}, float32 {len(r['float32'])}, "
              f"state_dict "
              f"{len(r['state_dict'])}, repr {len(r['repr'])}, error inputs "
              f"{len(r['error_inputs'])}/{r['errors_checked']}")
        for why, n in r["skipped"].items():
            print(f"    skipped {n}: {why}")
        for kind in ("mismatches", "crashes", "float32", "state_dict", "error_inputs",
                     "refused_earlier", "repr"):
            for line in r[kind][:args.max_lines]:
                print(f"    {kind}: {line[:400]}")
        totals.update(compared=r["compared"], skipped=skipped, mismatches=len(r["mismatches"]),
                      crashes=len(r["crashes"]), float32=len(r["float32"]),
                      state_dict=len(r["state_dict"]),
                      repr=len(r["repr"]), error_inputs=len(r["error_inputs"]))
    print("TOTAL", dict(totals))
    if not args.no_signatures:
        missing = missing_constructor_kwargs()
        print(f"constructor keywords torch accepts and gpudl does not ({len(missing)} classes):")
        for name, kws in missing.items():
            print(f"    {name}: {', '.join(kws)}")


if __name__ == "__main__":
    main()
