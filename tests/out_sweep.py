"""OpInfo samples with out= for tests/test_out_argument.py: torch (the oracle) and gpudl."""

import numpy as np
import torch
from torch.testing._internal import common_methods_invocations as cmi

import gpudl as gd
from gpudl import out_arg

DTYPES = {getattr(torch, n): getattr(gd, n) for n in (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool")}
NAMESPACES = (("", out_arg.TOP_LEVEL), ("linalg.", out_arg.LINALG),
              ("special.", out_arg.SPECIAL), ("nn.functional.", out_arg.NN_FUNCTIONAL))
RANDOM = {"bernoulli", "multinomial", "normal", "rand", "randint", "randn", "randperm",
          "empty", "poisson", "binomial"}


def torch_fn(qualified):
    module, _, name = qualified.rpartition(".")
    return getattr(torch.nn.functional if module == "nn.functional" else
                   getattr(torch, module) if module else torch, name)


def gd_fn(qualified):
    module, _, name = qualified.rpartition(".")
    if module == "nn.functional":
        import gpudl.nn.functional as F
        return getattr(F, name)
    return getattr(getattr(gd, module) if module else gd, name)


def _by_name():
    by_name = {}
    for op in cmi.op_db:
        for name in (op.name,) + tuple(alias.name for alias in op.aliases):
            by_name.setdefault(name, []).append(op)
    return by_name


BY_NAME = _by_name()
QUALIFIED = sorted(prefix + name for prefix, names in NAMESPACES for name in names)


def cases(qualified, samples_per_variant=2, samples_per_name=4):
    """(OpInfo, sample) pairs for a function with out= that has an OpInfo under its name or
    as an alias: each variant's first supported float32 samples."""
    found = []
    for op in BY_NAME.get(qualified, []):
        if "out" in op.variant_test_name:
            continue
        try:
            samples = op.sample_inputs("cpu", torch.float32, requires_grad=False)
            kept = [s for s in samples if supported(s)][:samples_per_variant]
        except Exception:   # noqa: BLE001  (an OpInfo without float32 samples)
            continue
        found += [(op, sample) for sample in kept]
    return found[:samples_per_name]


def supported(sample):
    def bad(x):
        if isinstance(x, torch.Tensor):
            return x.is_complex() or x.layout != torch.strided or x.dtype not in DTYPES
        if isinstance(x, (list, tuple)):
            return any(bad(i) for i in x)
        return isinstance(x, (torch.memory_format, torch.device, torch.Generator)) or \
            isinstance(x, torch.dtype) and x not in DTYPES
    return not ({"out", "dtype", "device", "generator", "layout", "memory_format"}
                & set(sample.kwargs)) and not (bad(sample.input) or bad(sample.args)
                                              or bad(list(sample.kwargs.values())))


def to_gd(x):
    if isinstance(x, torch.Tensor):
        return gd.tensor(x.detach().numpy().copy())
    if isinstance(x, torch.Size):
        return tuple(x)
    if isinstance(x, torch.dtype):
        return DTYPES[x]
    if isinstance(x, (list, tuple)):
        return type(x)(to_gd(i) for i in x) if type(x) in (list, tuple) else tuple(
            to_gd(i) for i in x)
    if isinstance(x, dict):
        return {k: to_gd(v) for k, v in x.items()}
    return x


def call(fn, sample, convert=lambda x: x, **extra):
    """fn on the sample's arguments (OpInfos for creation functions take no input)."""
    args = (sample.input,) + tuple(sample.args)
    return fn(*convert(args), **convert(dict(sample.kwargs)), **extra)


def outputs(y):
    return list(y) if isinstance(y, tuple) else [y]
