"""gd.backends' precision switches against torch 2.13's (defaults, the allow_tf32 <-> float32
matmul precision coupling), their validation, and the cuBLAS math mode the CuPy path sets from
them (through a stand-in for CuPy without a GPU; on a GPU, CuPy's own calls watched)."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

import gpudl as gd
from gpudl import backends
from gpudl.ops import linalg

pytest.importorskip("torch")

# torch's answers from two fresh processes, one per API: torch 2.13 refuses to report the
# precision once its legacy and new precision APIs have both been used in one process
TORCH_PROBES = [
    """
m = torch.backends.cuda.matmul
out = {"defaults": [torch.backends.cudnn.allow_tf32, m.allow_tf32,
                    torch.get_float32_matmul_precision()]}
for p in ("high", "medium", "highest"):
    torch.set_float32_matmul_precision(p)
    out[p] = m.allow_tf32
""",
    """
m = torch.backends.cuda.matmul
m.allow_tf32 = True
out = {"allow_true": torch.get_float32_matmul_precision()}
m.allow_tf32 = False
out["allow_true_false"] = torch.get_float32_matmul_precision()
""",
    """
b = torch.backends
b.cudnn.allow_tf32 = False
out = {"cudnn_off": [torch.get_float32_matmul_precision(), b.cuda.matmul.allow_tf32]}
torch.set_float32_matmul_precision("high")
out["cudnn_after_high"] = b.cudnn.allow_tf32
b.cudnn.allow_tf32 = True
torch.set_float32_matmul_precision("highest")
out["cudnn_after_highest"] = b.cudnn.allow_tf32
for name in ("enabled", "benchmark", "deterministic"):
    out[name] = getattr(b.cudnn, name)
""",
]


@pytest.fixture(scope="module")
def torch_answers():
    answers = {}
    for probe in TORCH_PROBES:
        code = ("import json, warnings, torch\nwarnings.simplefilter('ignore')\n" + probe
                + "print(json.dumps(out))")
        answers.update(json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                                 capture_output=True, text=True).stdout))
    return answers


@pytest.fixture(autouse=True)
def _restore_flags():
    saved = (backends.cudnn.allow_tf32, gd.get_float32_matmul_precision())
    yield
    backends.cudnn.allow_tf32 = saved[0]
    gd.set_float32_matmul_precision(saved[1])


def test_defaults_match_torch(torch_answers):
    assert [backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32,
            gd.get_float32_matmul_precision()] == torch_answers["defaults"]
    assert backends.conv_allows_tf32() is True and backends.matmul_allows_tf32() is False


@pytest.mark.parametrize("precision", ["high", "medium", "highest"])
def test_precision_sets_allow_tf32_as_torch(torch_answers, precision):
    gd.set_float32_matmul_precision(precision)
    assert gd.backends.cuda.matmul.allow_tf32 == torch_answers[precision]
    assert gd.get_float32_matmul_precision() == precision


def test_allow_tf32_sets_precision_as_torch(torch_answers):
    gd.backends.cuda.matmul.allow_tf32 = True
    assert gd.get_float32_matmul_precision() == torch_answers["allow_true"] == "high"
    gd.backends.cuda.matmul.allow_tf32 = False
    assert gd.get_float32_matmul_precision() == torch_answers["allow_true_false"] == "highest"


def test_conv_flag_is_independent_of_matmul_as_torch(torch_answers):
    gd.backends.cudnn.allow_tf32 = False
    assert not backends.conv_allows_tf32()
    assert [gd.get_float32_matmul_precision(), gd.backends.cuda.matmul.allow_tf32] == \
        torch_answers["cudnn_off"]
    gd.set_float32_matmul_precision("high")
    assert gd.backends.cudnn.allow_tf32 is torch_answers["cudnn_after_high"] is False
    gd.backends.cudnn.allow_tf32 = True
    gd.set_float32_matmul_precision("highest")
    assert gd.backends.cudnn.allow_tf32 is torch_answers["cudnn_after_highest"] is True
    assert [getattr(gd.backends.cudnn, n) for n in ("enabled", "benchmark", "deterministic")] \
        == [torch_answers[n] for n in ("enabled", "benchmark", "deterministic")]


def test_bad_values_are_refused_and_change_nothing():
    """Departures from torch 2.13, on purpose (a bad value fails at the call): torch warns and
    ignores an unknown precision string, and raises RuntimeError (here TypeError) for a
    non-bool allow_tf32."""
    with pytest.raises(ValueError, match="precision must be one of"):
        gd.set_float32_matmul_precision("fast")
    with pytest.raises(TypeError, match="expected a bool"):
        gd.backends.cuda.matmul.allow_tf32 = 1
    with pytest.raises(TypeError, match="expected a bool"):
        gd.backends.cudnn.allow_tf32 = "yes"
    assert gd.get_float32_matmul_precision() == "highest" and backends.cudnn.allow_tf32


HANDLE = 1234          # the stand-in's cuBLAS handle; how the calls name CuPy's real one


@pytest.fixture
def fake_cupy(monkeypatch):
    """Every setMathMode call as (handle, mode). Without a GPU: stand-ins for
    cupy.cuda.device.get_cublas_handle and cupy_backends' cublas module, NumPy arrays taken for
    CuPy's. On a GPU the real CuPy runs the GEMMs (a stand-in module would reach CuPy's own code):
    only the real setMathMode is watched, and still called."""
    calls = []
    if gd.backend._cupy is not None:
        import cupy
        from cupy_backends.cuda.libs import cublas
        set_math_mode = cublas.setMathMode

        def record(handle, mode):
            calls.append((HANDLE if handle == cupy.cuda.device.get_cublas_handle() else handle,
                          mode))
            set_math_mode(handle, mode)
        monkeypatch.setattr(cublas, "setMathMode", record)
        return calls
    cublas = types.SimpleNamespace(CUBLAS_DEFAULT_MATH=0, CUBLAS_TF32_TENSOR_OP_MATH=3,
                                   setMathMode=lambda handle, mode: calls.append((handle, mode)))
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(device=types.SimpleNamespace(
        get_cublas_handle=lambda: HANDLE))
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    for name, module in (("cupy", cupy), ("cupy_backends", types.ModuleType("cupy_backends")),
                         ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                         ("cupy_backends.cuda.libs", libs),
                         ("cupy_backends.cuda.libs.cublas", cublas)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(linalg.backend, "is_device_array", lambda a: True)
    return calls


def test_float32_gemms_on_cupy_follow_the_matmul_flag(fake_cupy):
    a = gd.ones(2, 2, dtype=gd.float32)._data       # CuPy's on a GPU
    linalg._follow_tf32_flag(a)
    gd.backends.cuda.matmul.allow_tf32 = True
    linalg._follow_tf32_flag(a)
    gd.set_float32_matmul_precision("highest")
    linalg._follow_tf32_flag(a)
    assert fake_cupy == [(HANDLE, 0), (HANDLE, 3), (HANDLE, 0)]
    linalg._follow_tf32_flag(a.astype(np.float16))     # float16 GEMMs: CuPy picks their mode
    linalg._follow_tf32_flag(a.astype(np.float64))
    assert len(fake_cupy) == 3


def test_matmul_and_linear_set_the_mode_before_every_gemm(fake_cupy):
    """The ops, not only the helper: linear forward + backward (3 GEMMs), a matmul forward +
    backward (3 GEMMs) and einsum (forward, then once for its backward's contractions) set
    cuBLAS's mode from the flag as it is at that call."""
    gd.backends.cuda.matmul.allow_tf32 = True
    x = gd.randn(4, 3, requires_grad=True)
    w = gd.randn(2, 3, requires_grad=True)
    gd.nn.functional.linear(x, w, gd.zeros(2)).sum().backward()
    assert fake_cupy == [(HANDLE, 3)] * 3
    gd.backends.cuda.matmul.allow_tf32 = False
    (x @ w.T).sum().backward()
    assert fake_cupy[3:] == [(HANDLE, 0)] * 3
    gd.backends.cuda.matmul.allow_tf32 = True         # einsum: CuPy's contracts through cuBLAS
    gd.einsum("ij,kj->ik", x, w).sum().backward()
    assert fake_cupy[6:] == [(HANDLE, 3)] * 2           # forward; backward's contractions
