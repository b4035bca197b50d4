"""Device choice at import, in fresh interpreters (the choice is made once per process)."""

import os
import re
import subprocess
import sys

import pytest


def run(code, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("GPUDL_DEVICE", "NUMBA_ENABLE_CUDASIM")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          timeout=120)


def test_import_loads_neither_numba_nor_cupy_on_cpu():
    out = run("import sys, gpudl; gpudl.ones(2) + 1; print(gpudl.device(), 'numba' in "
              "sys.modules, 'cupy' in sys.modules, 'numba.cuda' in sys.modules, "
              "'gpudl.sim_device' in sys.modules)", GPUDL_DEVICE="cpu")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu", "False", "False", "False", "False"]


def test_auto_without_cupy_falls_back_to_cpu_silently():
    out = run("import importlib.util, gpudl; print(gpudl.device(), "
              "importlib.util.find_spec('cupy') is None)")
    assert out.returncode == 0, out.stderr
    device, no_cupy = out.stdout.split()
    if no_cupy == "True":
        assert device == "cpu" and "Warning" not in out.stderr


def test_cuda_without_a_gpu_is_a_one_line_error():
    out = run("import importlib.util, sys; sys.exit(3 if importlib.util.find_spec('cupy') "
              "else 0)")
    if out.returncode == 3:
        pytest.skip("CuPy is installed here; the no-GPU message is checked where it is absent")
    out = run("import gpudl", GPUDL_DEVICE="cuda")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: GPUDL_DEVICE=cuda but CuPy is not installed")
    assert "GPUDL_DEVICE=cpu" in last and "NUMBA_ENABLE_CUDASIM" in last


def test_unknown_device_name_is_refused():
    out = run("import gpudl", GPUDL_DEVICE="tpu")
    assert out.returncode != 0
    assert "GPUDL_DEVICE must be 'auto', 'cuda' or 'cpu', got 'tpu'" in out.stderr


@pytest.mark.parametrize("strict, array_class", [("1", "SimDeviceArray"), ("0", "ndarray")])
def test_simulator_keeps_numpy_arrays_on_the_cuda_device(strict, array_class):
    # strict (the default): NumPy arrays that refuse host data as CuPy does (gpudl/sim_device.py)
    out = run("import gpudl as gd, numpy as np; t = gd.ones(2); "
              "print(gd.device(), t.device, isinstance(t._data, np.ndarray), "
              "type(t._data).__name__, gd.cuda.is_available())",
              GPUDL_DEVICE="cuda", NUMBA_ENABLE_CUDASIM="1", GPUDL_SIM_STRICT=strict)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cuda", "cuda:0", "True", array_class, "True"]


@pytest.mark.parametrize("value", ["cuda:0", "CUDA:0", " cuda:0 "])
def test_cuda_0_in_the_environment_means_cuda(value):
    out = run("import gpudl as gd; print(gd.device(), gd.ones(2, device='cuda:0').device)",
              GPUDL_DEVICE=value, NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cuda", "cuda:0"]


def test_cpu_0_in_the_environment_means_cpu():
    out = run("import gpudl as gd; print(gd.device())", GPUDL_DEVICE="cpu:0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu"]


@pytest.mark.parametrize("value, message", [
    ("cuda:1", "gpudl uses one GPU per process .* CUDA_VISIBLE_DEVICES"),
    ("cuda:x", "malformed device 'cuda:x'"), ("cpu:1", "does not exist"),
    ("auto:0", "GPUDL_DEVICE must be 'auto', 'cuda' or 'cpu', got 'auto:0'")])
def test_other_device_indices_in_the_environment_are_refused(value, message):
    out = run("import gpudl", GPUDL_DEVICE=value, NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: ") and re.search(message, last), last


def test_other_device_indices_in_the_api_are_refused():
    out = run("import gpudl as gd\nfor d in ('cuda:1', 'cpu:3'):\n    try:\n"
              "        gd.ones(1, device=d)\n    except ValueError as e:\n        print(e)",
              GPUDL_DEVICE="cuda", NUMBA_ENABLE_CUDASIM="1")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("ones: device 'cuda:1' is not available") and "CUDA_VISIBLE" in first
    assert second == "ones: device 'cpu:3' does not exist; the cpu device is 'cpu'"
