"""Device kernels per training step, counted without a GPU.

    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda python -m benchmarks.kernel_count
    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda python -m benchmarks.kernel_count --only LeNet --sites
    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda python -m benchmarks.kernel_count --optimizer NAdam

A replayed CUDA graph costs about its node count times the per-node cost of a small kernel, so
the kernels a whole training step launches (forward, loss, backward, optimizer step; what
``benchmarks.graph_steps`` captures) are issue 14's graphed gap as far as it can be seen
offline. This runs the steps of graph_steps.py at batch 2 on the strict simulator's cuda device
(gpudl/sim_device.py), with the launches counted instead of run: each Numba kernel launch
(kernels/launch.py), each CuPy ElementwiseKernel/ReductionKernel/RawKernel call, and each array
operation of the simulator's CuPy stand-in (a ufunc call or reduction, a NumPy function, a fill
or item assignment, a module function that writes a new array such as ``stack`` or a copying
``array``, a method that copied (``copy``, ``astype``, a ``reshape`` of a strided array): each
one CuPy kernel; cuBLAS through matmul: one). Kernels are not run, so
values are garbage; a step reads nothing back (tests/sim/test_zero_sync_sim.py), so what runs
does not depend on them. CuPy-only branches (``backend.is_device_array``) are taken as on a GPU.
It is an estimate: a CuPy op that launches two kernels counts one, a view counts none.
"""

import argparse
import collections
import contextlib
import functools
import os
import sys
import traceback

import numpy as np

from gpudl import backend

STEPS = (("LeNet-5 SGD-momentum", "lenet_parts", {"batch": 2}),
         ("sunspots LSTM Adam", "sunspots_parts", {"batch": 2, "window": 4}),
         ("transformer 2 layers AdamW", "transformer_parts", {"batch": 2, "seq": 4}))

_NOT_KERNELS = frozenset(("may_share_memory", "shares_memory"))
_MISSING = object()
_PLUMBING = ("sim_device.py", "launch.py", "multi_tensor.py", "kernel_count.py")  # not call sites
# the CuPy module's functions that launch a kernel (a memset, a fill, a copy); the others
# called in a step make views or empty arrays
_WRITING = ("zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "arange", "eye",
            "copy", "ascontiguousarray", "array", "stack", "concatenate", "where")
_COPYING = ("ascontiguousarray", "array")     # counted only when they copied
# the device arrays' methods that may copy (CuPy's cupy_copy kernel): counted when they did
# (session 18: autograd's ten .grad copies a LeNet step, seen by CUPTI, were not counted)
_COPYING_METHODS = ("copy", "astype", "reshape", "ravel", "flatten")


class Counter:
    """Kernels counted while ``counting`` is on, by kind and name and by gpudl call site."""

    def __init__(self):
        self.on = False
        self.kernels = collections.Counter()
        self.sites = collections.Counter()

    def add(self, name):
        if self.on:
            self.kernels[name] += 1
            self.sites[_call_site()] += 1


@functools.cache
def _package_roots():
    """(directory, site prefix) of gpudl and of gpudl.kernels, whose files may lie outside
    gpudl/ (the repository's kernels/, mapped as gpudl.kernels by pyproject.toml)."""
    import gpudl
    import gpudl.kernels
    return tuple((os.path.realpath(package.__path__[0]) + os.sep, prefix)
                 for package, prefix in ((gpudl.kernels, "kernels/"), (gpudl, "")))


def _call_site():
    """The innermost gpudl frame below the counting hooks and launchers (file:function), its
    file named from the package root (``ops/linalg.py``, ``kernels/conv_cuda.py``)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = os.path.realpath(frame.filename)
        if path.endswith(_PLUMBING):
            continue
        for root, prefix in _package_roots():
            if path.startswith(root):
                return prefix + path[len(root):].replace(os.sep, "/") + ":" + frame.name
    return "?"


@contextlib.contextmanager
def counting_hooks(counter):
    """Patch the simulator's device arrays, the launchers and the CuPy kernel builders to
    count (and not run) what a GPU would launch; restore everything after."""
    from numba import cuda

    from gpudl import sim_device
    from gpudl.optim import adam, adam_variants, classic, rmsprop
    from gpudl.kernels import launch as launch_module
    device_array = sim_device.SimDeviceArray
    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, value)

    ufunc, function = device_array.__array_ufunc__, device_array.__array_function__
    fill, setitem, getitem = device_array.fill, device_array.__setitem__, device_array.__getitem__

    def counted_ufunc(self, u, method, *args, **kwargs):
        counter.add(f"cupy {u.__name__}.{method}")
        return ufunc(self, u, method, *args, **kwargs)

    def counted_function(self, f, types_, args, kwargs):
        if f.__name__ not in _NOT_KERNELS:
            counter.add(f"cupy {f.__name__}")
        return function(self, f, types_, args, kwargs)

    def counted_fill(self, value):
        counter.add("cupy fill")
        return fill(self, value)

    def counted_setitem(self, key, value):
        counter.add("cupy setitem")
        return setitem(self, key, value)

    def counted_method(name):
        method = getattr(device_array, name)

        def counted(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            if isinstance(result, np.ndarray) and result.size and \
                    not np.may_share_memory(result, self):      # a copy; a view costs nothing
                counter.add(f"cupy {name} (method)")
            return result
        return counted

    def counted_getitem(self, key):
        result = getitem(self, key)
        if isinstance(result, np.ndarray) and result.size and \
                not np.may_share_memory(result, self):      # a gather; basic indexing: a view
            counter.add("cupy getitem")
        return result

    def cupy_kernel(*spec, reduction=False):
        name = spec[-1]
        n_in = len(spec[0].split(",")) if len(spec) > 2 else None     # a RawKernel: none

        def kernel(*args, **kwargs):
            counter.add(f"cupy kernel {name}")
            return _made_by(n_in, args, reduction, kwargs.get("axis"), device_array)
        return kernel

    def numba_launch(kernel, *args, **kwargs):
        counter.add(f"numba {kernel.__name__}")

    made = adam.new_state_buffer

    def device_state_buffer(param, *fill_value):     # CuPy would make it on the device
        buffer = made(param, *fill_value)
        buffer._data = buffer._data.view(device_array)
        return buffer

    for name in _WRITING:
        patch(sim_device.sim_cuda_module, name,
              _counted_call(counter, getattr(sim_device.sim_cuda_module, name), name))
    patch(device_array, "__array_ufunc__", counted_ufunc)
    patch(device_array, "__array_function__", counted_function)
    patch(device_array, "fill", counted_fill)
    patch(device_array, "__setitem__", counted_setitem)
    patch(device_array, "__getitem__", counted_getitem)
    for name in _COPYING_METHODS:
        patch(device_array, name, counted_method(name))
    patch(backend, "is_device_array", lambda a: isinstance(a, device_array))
    patch(backend, "elementwise_kernel", lambda *spec: cupy_kernel(*spec))
    patch(backend, "reduction_kernel", lambda *spec: cupy_kernel(*spec, reduction=True))
    patch(backend, "raw_kernel", lambda code, name: cupy_kernel(name))
    for module in (adam, adam_variants, classic, rmsprop):
        patch(module, "new_state_buffer", device_state_buffer)
    from gpudl import backends
    patch(backends, "set_cublas_math_mode", lambda *a, **k: None)
    if not hasattr(cuda, "as_cuda_array"):
        patch(cuda, "as_cuda_array", lambda array, sync=False: array)
    real_launch = launch_module.launch
    for module in list(sys.modules.values()):
        if getattr(module, "launch", None) is real_launch:
            patch(module, "launch", numba_launch)
    queued = len(backend._deferred)
    try:
        yield counter
    finally:
        del backend._deferred[queued:]      # device-side checks of values never computed
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def _made_by(n_in, args, reduction, axis, device_array):
    """What a CuPy kernel not run returns, in shape and dtype (its values garbage): the outputs
    passed to it, else one array of the inputs' broadcast shape (reduced over ``axis``, all
    axes by default, for a ReductionKernel) and the first input's dtype; None for a RawKernel."""
    if n_in is None:
        return None
    outs = [a for a in args[n_in:] if isinstance(a, np.ndarray)]
    if outs:
        return outs[0] if len(outs) == 1 else tuple(outs)
    arrays = [a for a in args[:n_in] if isinstance(a, np.ndarray)]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    if reduction:
        shape = np.empty(shape, bool).sum(axis=axis).shape
    return np.empty(shape, arrays[0].dtype).view(device_array)


def _counted_call(counter, make, name):
    def counted(*args, **kwargs):
        result = make(*args, **kwargs)
        if name not in _COPYING or not np.may_share_memory(result, args[0]):
            counter.add(f"cupy {name}")
        return result
    return counted


def count_step(parts):
    """(kernels by name, kernels by call site) of one step of ``parts`` after one warm-up step:
    the optimizer's gradients set to None before it, as graph_steps captures it."""
    model, loss_fn, opt, x, y = parts
    counter = Counter()

    def step():
        opt.zero_grad(set_to_none=True)
        counter.on = counted
        loss_fn(model(x), y).backward()
        opt.step()
        counter.on = False
    with counting_hooks(counter), np.errstate(all="ignore"):     # values never computed
        counted = False
        step()                       # the optimizer's state is made here
        counted = True
        step()
    return counter.kernels, counter.sites


def _import_kernel_modules():
    """Every gpudl.kernels module, so that each one's ``launch`` name can be patched."""
    import importlib
    import pkgutil

    import gpudl.kernels
    for info in pkgutil.iter_modules(gpudl.kernels.__path__):
        with contextlib.suppress(Exception):        # a module needing CuPy itself
            importlib.import_module("gpudl.kernels." + info.name)


def run(only=None, sites=False, per_parameter=False, optimizer=None):
    if not backend.SIM_DEVICE_ARRAYS:
        raise SystemExit("kernel_count: run it on the strict simulator: "
                         "NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")
    import gpudl
    from benchmarks import workloads
    _import_kernel_modules()
    lines = ["| step | kernels per step | optimizer | top kernels |", "|---|---|---|---|"]
    details = []
    for label, builder, sizes in STEPS:
        if only and only not in label:
            continue
        parts = getattr(workloads, builder)(gpudl, "cuda", True, **sizes)
        if optimizer:             # the same model and batch, stepped by another optimizer
            model, loss_fn, _, x, y = parts
            parts = model, loss_fn, getattr(gpudl.optim, optimizer)(model.parameters()), x, y
            label = f"{label.rsplit(' ', 1)[0]} {optimizer}"
        for group in parts[2].param_groups:
            group["foreach"] = not per_parameter and None
        kernels, by_site = count_step(parts)
        stepping = sum(n for site, n in by_site.items() if site.startswith("optim/"))
        top = ", ".join(f"{n} {name}" for name, n in kernels.most_common(4))
        lines.append(f"| {label} | {sum(kernels.values())} | {stepping} | {top} |")
        if sites:
            details += ["", f"{label}, by call site:"]
            details += [f"{n:5d} {site}" for site, n in by_site.most_common()]
    return "\n".join(lines + details)


@functools.cache
def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="only the steps whose label contains this")
    parser.add_argument("--sites", action="store_true", help="also list kernels by call site")
    parser.add_argument("--per-parameter", action="store_true",
                        help="the optimizers' per-parameter kernels (foreach=False)")
    parser.add_argument("--optimizer", help="step every model with this gpudl.optim class "
                        "(its default options) instead of its own optimizer")
    return parser


if __name__ == "__main__":
    arguments = _parser().parse_args()
    print(run(arguments.only, arguments.sites, arguments.per_parameter, arguments.optimizer))
