"""The tensor-core conv kernels as the hardware would run them, without a GPU (sm_90 through
NVVM, ptxas and cuobjdump): the hot loop of every build holds its HMMA and LDSM, with the
accumulators in registers (no local memory, no stack), and the shared tiles that ldmatrix reads
are 16-byte aligned. The gate (``python -m gpudl.kernels --gate --only conv_tc``) holds the
budgets; this fails fast on the structure."""

import itertools
import re

import numpy as np
import pytest
from numba import cuda

from gpudl.kernels import conv_tc_cuda, gate, numba_inlining

try:
    gate.tool("ptxas"), gate.tool("cuobjdump")
except RuntimeError as exc:                      # pragma: no cover - the test extra has them
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _helpers_built_once():
    """Compile-only tests: each inlined helper's untyped IR built once for the module, as the
    check builds it (numba_inlining.callee_cache), not once per call site; left afterwards."""
    with numba_inlining.callee_cache():
        yield

HMMA = {"tf32": "HMMA.1688.F32.TF32", "f16": "HMMA.16816.F32", "bf16": "HMMA.16816.F32.BF16"}


@pytest.mark.parametrize("kind", conv_tc_cuda.KINDS)
@pytest.mark.parametrize("which", ["gemm", "grad_weight"])
def test_hot_loop_runs_on_tensor_cores(kind, which, tmp_path):
    kernel = conv_tc_cuda._kernels(kind, conv_tc_cuda.ROW_TILES[-1])[which == "grad_weight"]
    signature = (conv_tc_cuda.gemm_signature if which == "gemm" else
                 conv_tc_cuda.grad_weight_signature)(kind)
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=gate.TARGET)
    shared = re.findall(r"\.shared \.align (\d+) \.b8 \w+\[(\d+)\]", ptx)
    tiles = [int(align) for align, size in shared if int(size) >= 8192]
    assert len(tiles) == 2 and all(a >= 16 for a in tiles), shared
    info, sass = gate.assemble(ptx, str(tmp_path))
    (resources,) = gate.parse_ptxas(info).values()
    assert resources.stack == 0 and resources.spills == 0
    (instructions,) = gate.parse_sass(sass).values()
    hot = gate.summarise(instructions).hot
    body = [i.opcode for i in instructions if hot.span[0] <= i.address <= hot.span[1]]
    mma = [op for op in body if op.startswith("HMMA")]
    assert len(mma) == 32 and all(op == HMMA[kind] for op in mma), sorted(set(mma))
    assert sum(op.startswith("LDSM.16.M88.4") for op in body) == 12       # 2 k-steps x (4 + 2)
    assert not [op for op in body if re.match(r"(LDL|STL)\b", op)]
    # operands reach shared memory by cp.async (global to shared, one 32-bit word per value or
    # value pair), with no register staging (LDG) or shared store (STS) left
    assert any(op.startswith("LDGSTS") for op in body) and "LDGDEPBAR" in body
    assert not [op for op in body if op.startswith(("LDG.", "STS"))], sorted(set(body))


def test_tf32_layout_kernel_indexes_in_32_bits(tmp_path):
    """tf32_chunks' loop forms its offsets in uint32: no signed 64-bit index arithmetic (sign
    extensions, carry halves) is left in it (178 instructions per 4 elements moved with it,
    103 without)."""
    ptx, _ = cuda.compile_ptx(conv_tc_cuda.tf32_chunks.py_func,
                              conv_tc_cuda.TF32_CHUNKS_SIGNATURE, cc=gate.TARGET)
    _, sass = gate.assemble(ptx, str(tmp_path))
    (instructions,) = gate.parse_sass(sass).values()
    hot = gate.summarise(instructions).hot
    body = [i.opcode for i in instructions if hot.span[0] <= i.address <= hot.span[1]]
    assert any(op.startswith("STG") for op in body)
    wide = [op for op in body if op in ("SHF.R.S32.HI", "IMAD.X", "IADD3.X", "LEA.HI.X")]
    assert not wide, sorted(set(wide))


@pytest.mark.parametrize("transposed", [False, True])
def test_every_phases_taps_are_a_slice(transposed):
    """The weights' taps of each phase are picked by basic slicing (an index array would be a
    host-to-device copy, which a CUDA graph capture refuses: the first GPU run's LeNet graph)."""
    for kh, sh, ph, dh in itertools.product(range(1, 8), range(1, 4), range(0, 3), range(1, 3)):
        if ph > (kh - 1) * dh:
            continue
        _, _, picks, _ = conv_tc_cuda._gemm_plan(np, transposed, 4, 4, 8, 8, kh, kh, sh, sh, ph,
                                                 ph, dh, dh, 9, 9, 9, 9, 1)
        for ii, jj in picks:
            for taps in (ii, jj):
                if len(taps):
                    assert np.array_equal(np.arange(kh)[conv_tc_cuda._progression(taps)], taps)
