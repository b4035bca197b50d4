"""The tensor-core primitives compiled as the hardware would run them, without a GPU: PTX for
sm_80 and sm_90 through NVVM, SASS through ptxas/cuobjdump (the test extra's NVIDIA wheels).
Each primitive must become its tensor-core instruction with the fragments in registers (no
local memory, no stack)."""

import re

import pytest
from numba import cuda

from gpudl.kernels import gate
from mma_kernels import gemm_tf32, half_gemm, load_fragments, quad_reductions, staged_copy
from gpudl.kernels import mma

try:
    gate.tool("ptxas"), gate.tool("cuobjdump")
except RuntimeError as exc:                      # pragma: no cover - the test extra has them
    pytest.skip(str(exc), allow_module_level=True)

F2 = "float32[:, ::1]"
CASES = {
    "tf32": (gemm_tf32, f"void({F2}, {F2}, {F2})", "HMMA.1688.F32.TF32"),
    "f16": (half_gemm(mma.mma_f16_m16n8k16, mma.pack_f16x2), f"void({F2}, {F2}, {F2})",
            "HMMA.16816.F32"),
    "bf16": (half_gemm(mma.mma_bf16_m16n8k16, mma.pack_bf16x2), f"void({F2}, {F2}, {F2})",
             "HMMA.16816.F32.BF16"),
    "ldmatrix": (load_fragments, "void(uint32[:, ::1], uint32[:, ::1], uint32[:, ::1])",
                 "LDSM.16.M88.4"),
    "quad": (quad_reductions, "void(float32[::1], float32[::1], float32[::1])", "SHFL.BFLY"),
    "cp_async_16": (staged_copy(mma.cp_async_16, 16), "void(float32[::1], float32[::1])",
                    "LDGSTS.E.BYPASS.128"),
    "cp_async_8": (staged_copy(mma.cp_async_8, 8), "void(float32[::1], float32[::1])",
                   "LDGSTS.E.64"),
    "cp_async_4": (staged_copy(mma.cp_async_4, 4), "void(float32[::1], float32[::1])",
                   "LDGSTS.E"),
}


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
@pytest.mark.parametrize("name", list(CASES))
def test_primitive_becomes_its_tensor_core_instruction(name, cc, tmp_path):
    kernel, signature, instruction = CASES[name]
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
    assert ".f64" not in ptx
    gate.TARGET, saved = cc, gate.TARGET
    try:
        info, sass = gate.assemble(ptx, str(tmp_path))
    finally:
        gate.TARGET = saved
    (resources,) = gate.parse_ptxas(info).values()
    assert resources.stack == 0 and resources.spills == 0
    opcodes = [i.opcode for f in gate.parse_sass(sass).values() for i in f]
    assert any(op.startswith(instruction) for op in opcodes), sorted(set(opcodes))
    assert not [op for op in opcodes if re.match(r"(LDL|STL)\b", op)]
    if name == "ldmatrix":
        assert any(op.startswith("LDSM.16.MT88.4") for op in opcodes)   # the .trans form
        # ldmatrix reads 16-byte rows: the tile must be declared 16-byte aligned
        assert re.findall(r"\.shared \.align (\d+) ", ptx) == ["16"]
        # the 32-bit shared address: no generic-to-shared conversion per ldmatrix
        assert "cvta.to.shared" not in ptx
    if name.startswith("cp_async"):
        # global -> shared with no register in between (no LDG/STS), groups committed and waited
        assert not [op for op in opcodes if op.startswith(("LDG.", "STS"))], sorted(set(opcodes))
        assert "LDGDEPBAR" in opcodes and any(op.startswith("DEPBAR") for op in opcodes)
        assert "cvta.to.shared" not in ptx
