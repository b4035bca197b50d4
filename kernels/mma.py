"""Tensor cores from Python kernels: warp-level ``mma.sync`` and ``ldmatrix`` as Numba intrinsics.

Numba-CUDA has no tensor-core API. Each function here is a Numba ``intrinsic`` that emits one PTX
instruction as LLVM inline assembly, so a kernel written in Python calls it like any device
function and the fragments stay in registers: no CUDA C, no linking, no LTO, and
``cuda.compile_ptx`` / the offline gate see the whole kernel (the SASS shows ``HMMA``). Under
Numba's CUDA simulator the same names are Python emulations that follow the PTX ISA's fragment
tables, so the lane-to-element logic of a tensor-core kernel is tested on a CPU (``_emulation``).

All of them are warp-collective: every lane of the warp calls them together, with warp-uniform
control flow. The emulation is stricter: every thread of the BLOCK must reach the call together
(it stages fragments through a per-warp scratch and the block barrier).

Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8" and "...m16n8k16"). For lane ``l``
let ``g = l >> 2`` (the group, 0..7) and ``t = l & 3`` (the thread in the group, 0..3).

``mma_tf32_m16n8k8(a0..a3, b0, b1, c0..c3) -> (d0..d3)``: D (16x8) = A (16x8, row) B (8x8, col) + C,
float32 values whose low 13 mantissa bits the hardware ignores (round first with ``to_tf32``).
    a0 = A[g, t]    a1 = A[g+8, t]    a2 = A[g, t+4]    a3 = A[g+8, t+4]
    b0 = B[t, g]    b1 = B[t+4, g]
    c0 = C[g, 2t]   c1 = C[g, 2t+1]   c2 = C[g+8, 2t]   c3 = C[g+8, 2t+1]   (D likewise)

``mma_f16_m16n8k16`` / ``mma_bf16_m16n8k16(a0..a3, b0, b1, c0..c3) -> (d0..d3)``: D (16x8) =
A (16x16, row) B (16x8, col) + C with float32 C and D; each ``a``/``b`` is a uint32 holding two
halves, the lower-indexed element in the low 16 bits (``pack_f16x2`` / ``pack_bf16x2``).
    a0 = A[g, 2t:2t+2]      a1 = A[g+8, 2t:2t+2]      a2 = A[g, 2t+8:2t+10]   a3 = A[g+8, 2t+8:2t+10]
    b0 = B[2t:2t+2, g]      b1 = B[2t+8:2t+10, g]
    C and D as for TF32.
Note that D's layout for two adjacent n-tiles (columns 0..7 and 8..15) is A's layout for one
k16 step: packing (d0, d1), (d2, d3) of tile j and of tile j+1 gives a0..a3 of the next mma
(how attention feeds P into P.V without shared memory).

``ldmatrix_x4(smem, row, col) -> (r0..r3)``: four 8x8 matrices of 16-bit elements from shared
memory, ``smem`` a 2-D uint32 shared array; lane ``l`` gives the address of one row,
``&smem[row, col]`` (8 halves = 4 words, 16-byte aligned: ``col % 4 == 0``): lanes 0-7 the rows
of matrix 0, 8-15 of matrix 1, and so on. Register ``rm`` of lane ``l`` receives word ``l & 3``
of row ``l >> 2`` of matrix ``m``: exactly an A or B fragment. ``ldmatrix_x4_trans`` gives the
transposed matrices (register ``rm`` of lane ``l`` holds elements (2t, g) and (2t+1, g) of
matrix ``m``), which turns a row-major V or weight tile into B fragments.

``quad_max(x)`` / ``quad_sum(x)``: the max / sum of a float32 over the 4 lanes of a group (the
lanes sharing ``g``, which together hold one row of a C/D fragment): the row reductions of an
online softmax. Two ``shfl.sync.bfly`` on the hardware; the simulator, which has no shuffles,
runs the emulation.
"""

from numba import config

__all__ = ["mma_tf32_m16n8k8", "mma_f16_m16n8k16", "mma_bf16_m16n8k16", "to_tf32",
           "pack_f16x2", "pack_bf16x2", "ldmatrix_x4", "ldmatrix_x4_trans", "quad_max",
           "quad_sum"]

if config.ENABLE_CUDASIM:
    from ._mma_emulation import (ldmatrix_x4, ldmatrix_x4_trans, mma_bf16_m16n8k16,  # noqa: F401
                                 mma_f16_m16n8k16, mma_tf32_m16n8k8, pack_bf16x2, pack_f16x2,
                                 quad_max, quad_sum, to_tf32)
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    _F32 = ir.FloatType()
    _I32 = ir.IntType(32)
    _FOUR_F32 = types.UniTuple(types.float32, 4)
    _FOUR_U32 = types.UniTuple(types.uint32, 4)

    def _emit_mma(context, builder, return_type, instruction, ab_words, accumulators):
        """Call ``instruction`` {d0..d3}, {a..}, {b..}, {c0..c3} on 32-bit A/B words and f32
        accumulators, and return D as a Numba 4-tuple of float32."""
        n = len(ab_words)
        fnty = ir.FunctionType(ir.LiteralStructType([_F32] * 4), [_I32] * n + [_F32] * 4)
        a = ",".join(f"${i}" for i in range(4, 8))
        b = ",".join(f"${i}" for i in range(8, 4 + n))
        c = ",".join(f"${i}" for i in range(4 + n, 8 + n))
        asm = ir.InlineAsm(fnty, f"{instruction} {{$0,$1,$2,$3}}, {{{a}}}, {{{b}}}, {{{c}}};",
                           "=f,=f,=f,=f," + ",".join(["r"] * n + ["f"] * 4))
        d = builder.call(asm, list(ab_words) + list(accumulators))
        return context.make_tuple(builder, return_type,
                                  [builder.extract_value(d, i) for i in range(4)])

    @intrinsic
    def mma_tf32_m16n8k8(typingctx, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        def codegen(context, builder, sig, args):
            words = [builder.bitcast(v, _I32) for v in args[:6]]
            return _emit_mma(context, builder, sig.return_type,
                             "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", words,
                             args[6:])
        return _FOUR_F32(*[types.float32] * 10), codegen

    def _half_mma(instruction):
        @intrinsic
        def mma(typingctx, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
            def codegen(context, builder, sig, args):
                return _emit_mma(context, builder, sig.return_type, instruction, args[:6],
                                 args[6:])
            return _FOUR_F32(*[types.uint32] * 6, *[types.float32] * 4), codegen
        return mma

    mma_f16_m16n8k16 = _half_mma("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")
    mma_bf16_m16n8k16 = _half_mma("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")

    @intrinsic
    def to_tf32(typingctx, x):
        """x rounded to TF32 (10 mantissa bits, to nearest, ties away from zero), as float32."""
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(_I32, [_F32]), "cvt.rna.tf32.f32 $0, $1;",
                               "=r,f")
            return builder.bitcast(builder.call(asm, args), _F32)
        return types.float32(types.float32), codegen

    def _pack(kind):
        @intrinsic
        def pack(typingctx, lo, hi):
            def codegen(context, builder, sig, args):
                # cvt.rn.<kind>x2.f32 d, a, b puts a in the upper half and b in the lower
                asm = ir.InlineAsm(ir.FunctionType(_I32, [_F32, _F32]),
                                   f"cvt.rn.{kind}x2.f32 $0, $1, $2;", "=r,f,f")
                return builder.call(asm, [args[1], args[0]])
            return types.uint32(types.float32, types.float32), codegen
        return pack

    pack_f16x2 = _pack("f16")
    pack_bf16x2 = _pack("bf16")

    def _ldmatrix(modifier):
        @intrinsic
        def ldmatrix(typingctx, smem, row, col):
            if not (isinstance(smem, types.Array) and smem.dtype == types.uint32
                    and smem.ndim == 2):
                return None

            def codegen(context, builder, sig, args):
                from numba.cuda import cgutils
                array_type = sig.args[0]
                array = context.make_array(array_type)(context, builder, args[0])
                indices = [context.cast(builder, v, t, types.intp)
                           for v, t in zip(args[1:], sig.args[1:])]
                pointer = cgutils.get_item_pointer(context, builder, array_type, array,
                                                   indices, wraparound=False)
                fnty = ir.FunctionType(ir.LiteralStructType([_I32] * 4), [pointer.type])
                asm = ir.InlineAsm(
                    fnty,
                    "{ .reg .u64 a; cvta.to.shared.u64 a, $4; "
                    f"ldmatrix.sync.aligned.m8n8.x4{modifier}.shared.b16 {{$0,$1,$2,$3}}, [a]; }}",
                    "=r,=r,=r,=r,l,~{memory}", side_effect=True)   # a load: never hoisted
                # out of a loop that rewrites the tile (LLVM took the asm for a pure function)
                words = builder.call(asm, [pointer])
                return context.make_tuple(builder, sig.return_type,
                                          [builder.extract_value(words, i) for i in range(4)])
            return _FOUR_U32(smem, row, col), codegen
        return ldmatrix

    ldmatrix_x4 = _ldmatrix("")
    ldmatrix_x4_trans = _ldmatrix(".trans")

    def _quad_reduce(combine):
        @intrinsic
        def reduce(typingctx, x):
            def codegen(context, builder, sig, args):
                asm = ir.InlineAsm(
                    ir.FunctionType(_F32, [_F32]),
                    "{ .reg .f32 o; "
                    "shfl.sync.bfly.b32 o, $1, 1, 0x1f, 0xffffffff; "
                    f"{combine}.f32 $0, $1, o; "
                    "shfl.sync.bfly.b32 o, $0, 2, 0x1f, 0xffffffff; "
                    f"{combine}.f32 $0, $0, o; }}",
                    "=f,f")
                return builder.call(asm, args)
            return types.float32(types.float32), codegen
        return reduce

    quad_max = _quad_reduce("max")
    quad_sum = _quad_reduce("add")
