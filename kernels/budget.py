"""What a CUDA kernel may cost on the hardware, written beside the kernel.

Each ``*_cuda`` module's ``SIGNATURES`` entry is ``(kernel, [signature, ...], Budget(...))``: the
offline gate (``python -m gpudl.kernels --gate``) compiles the float32 signature for sm_90, reads
``ptxas -v`` and the SASS, and fails the kernel when a figure breaks its budget. A reader sees the
target where the code is. An entry without a budget (a 2-tuple) fails the gate with "no budget
declared"; entries with no float32 signature (float64-only builds) are not gated.

``threads`` is the block size the launcher uses (the product for 2-D blocks); ``shared_bytes``
the dynamic shared memory it passes (static shared memory comes from ptxas). A budget with
``min_hmma_share`` marks a tensor-core kernel: every signature but float64 is gated (float16 and
bfloat16-as-uint16 included), and its hot loop must hold HMMA at that share.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    threads: int                          # threads per block the launcher uses (for occupancy)
    shared_bytes: int = 0                 # dynamic shared memory per block, if any
    min_occupancy: float = 0.25           # resident warps / 64 on an H100 SM
    min_fma_share: float | None = None    # hot loop: (FFMA + HMMA) / instructions; None: not checked
    min_hmma_share: float | None = None   # tensor-core kernels: hot loop HMMA / instructions (> 0)
    max_spill_bytes: int = 0              # ptxas spill stores + loads
    max_stack_bytes: int = 0              # ptxas stack frame
    max_hot_loop_local: int = 0           # LDL/STL instructions in the hot loop
    max_hot_loop_div64: int = 0           # 64-bit division/remainder call sites in the hot loop
    max_div64: int | None = None          # ... anywhere in the kernel (None: not checked)
