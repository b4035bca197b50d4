"""kernels/kernel_cache.py: the key of a compiled kernel, and the PTX kept on disk. Offline: a
key is the same in every process, differs between every two kernels (or signatures) the check
compiles, and changes with any code or value a kernel reaches; PTX read back from the cache is
what the compiler gave. (Numba's cubin cache under that key needs a GPU: tools/gpu_check.sh runs
tools/kernel_cache_check.py, two processes, before it turns the cache on.)"""

import os
import subprocess
import sys
import types

import numpy as np
import pytest
from numba import cuda

from gpudl.kernels import kernel_cache

SIGNATURE = "void(float32[::1], float32[::1])"


EVERY_KEY = """
from gpudl.kernels import kernel_cache
from gpudl.kernels.__main__ import cuda_modules
for m in cuda_modules():
    for i, (k, sigs, *_) in enumerate(m.SIGNATURES):
        for sig in sigs:
            print(m.__name__, i, sig.replace(" ", ""), kernel_cache.code_key(k, sig))
"""


def test_every_kernel_has_a_key_of_its_own_and_the_same_in_another_process():
    runs = [subprocess.run([sys.executable, "-c", EVERY_KEY], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")]
    assert runs[0] == runs[1]                       # other processes, other string hashes
    keys = [line.split()[-1] for line in runs[0].splitlines()]
    assert len(set(keys)) == len(keys) > 200


def _module(source, name="gpudl._kernel_cache_probe"):
    """A module of kernels made from ``source`` (names starting with gpudl: its own)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


SOURCE = """
from numba import cuda
import numpy as np
SCALE = {scale}

@cuda.jit(device=True, inline="always")
def helper(v):
    return v * SCALE + {offset}

def make(shift):
    @cuda.jit
    def kernel(x, y):
        i = cuda.grid(1)
        if i < x.size:
            y[i] = helper(x[i]) + shift
    return kernel
"""


def _key(scale=2.0, offset=1.0, shift=3, signature=SIGNATURE):
    module = _module(SOURCE.format(scale=scale, offset=offset))
    return kernel_cache.code_key(module.make(shift), signature)


def test_the_key_changes_with_everything_the_kernel_reaches():
    base = _key()
    assert _key() == base                                   # the same code again
    assert _key(scale=2.5) != base                          # a global a device function reads
    assert _key(offset=1.5) != base                         # a device function's code
    assert _key(shift=4) != base                            # a closure value
    assert _key(signature="void(float64[::1], float64[::1])") != base


def test_a_gpudl_module_is_followed_through_the_attributes_the_code_names():
    probe = _module("from numba import cuda\nW = 1\n", name="gpudl._kernel_cache_consts")

    def make():
        def kernel(x, y):
            y[0] = x[0] * consts.W
        return kernel
    kernel = make()
    kernel.__globals__["consts"] = probe          # this test module's globals, as an import
    try:
        before = kernel_cache.code_key(kernel, SIGNATURE)
        probe.W = 2
        assert kernel_cache.code_key(kernel, SIGNATURE) != before
    finally:
        del kernel.__globals__["consts"]


def test_a_kernel_reaching_an_array_is_not_cached():
    module = _module("import numpy as np\nTABLE = np.arange(4)\n"
                     "def kernel(x, y):\n    y[0] = x[0] + TABLE[1]\n")
    with pytest.raises(kernel_cache.Uncacheable, match="ndarray"):
        kernel_cache.code_key(module.kernel, SIGNATURE)


def _counting_compiler(calls):
    def compile_ptx(func, signature, cc, **options):
        calls.append((func, signature, cc))
        return cuda.compile_ptx(func, signature, cc=cc, **options)
    return compile_ptx


def test_ptx_comes_back_from_the_cache_as_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUDL_KERNEL_CACHE", str(tmp_path))
    kernel = _module(SOURCE.format(scale=2.0, offset=1.0)).make(3)
    calls = []
    first = kernel_cache.ptx(kernel.py_func, SIGNATURE, (9, 0), {}, _counting_compiler(calls))
    again = kernel_cache.ptx(kernel.py_func, SIGNATURE, (9, 0), {}, _counting_compiler(calls))
    assert len(calls) == 1 and again == first and ".entry" in first
    assert [p.suffix for p in (tmp_path / "ptx").iterdir()] == [".ptx"]
    other = kernel_cache.ptx(kernel.py_func, SIGNATURE, (8, 0), {}, _counting_compiler(calls))
    assert len(calls) == 2 and ".target sm_80" in other     # another target, another entry


def test_without_the_setting_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUDL_KERNEL_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert kernel_cache.directory() is None
    kernel = _module(SOURCE.format(scale=2.0, offset=1.0)).make(3)
    calls = []
    for _ in range(2):
        kernel_cache.ptx(kernel.py_func, SIGNATURE, (9, 0), {}, _counting_compiler(calls))
    assert len(calls) == 2 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("setting, expected", [("", None), ("0", None), ("1", "home"),
                                               ("some/dir", "absolute")])
def test_the_setting_names_the_directory(monkeypatch, setting, expected):
    monkeypatch.setenv("GPUDL_KERNEL_CACHE", setting)
    where = kernel_cache.directory()
    if expected is None:
        assert where is None
    elif expected == "home":
        assert where.endswith("/.cache/gpudl/kernels")
    else:
        assert where.endswith("/some/dir") and where.startswith("/")


def test_an_uncacheable_kernels_ptx_is_compiled_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUDL_KERNEL_CACHE", str(tmp_path))
    module = _module("import numpy as np\nTABLE = np.arange(4.0)\n"
                     "def kernel(x, y):\n    y[0] = x[0]\n    z = TABLE\n")
    calls = []
    for _ in range(2):
        kernel_cache.ptx(module.kernel, SIGNATURE, (9, 0), {}, _counting_compiler(calls))
    assert len(calls) == 2 and not (tmp_path / "ptx").exists()
    assert np.all(module.TABLE == np.arange(4.0))
