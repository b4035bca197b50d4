"""Tensor cores from Python kernels: warp-level ``mma.sync`` and ``ldmatrix`` as Numba intrinsics.

Numba-CUDA has no tensor-core API. Each function here is a Numba ``intrinsic`` that emits one PTX
instruction as LLVM inline assembly, so a kernel written in Python calls it like any device
function and the fragments stay in registers: no CUDA C, no linking, no LTO, and
``cuda.compile_ptx`` / the offline gate see the whole kernel (the SASS shows ``HMMA``). Under
Numba's CUDA simulator the same names are Python emulations that follow the PTX ISA's fragment
tables, so the lane-to-element logic of a tensor-core kernel is tested on a CPU (``_emulation``).

The mma, ldmatrix and shuffle ones are warp-collective: every lane of the warp calls them
together, with warp-uniform control flow. They are emitted as volatile assembly (``asm volatile``
in CUDA C), so LLVM neither moves them into divergent code nor merges them, and ldmatrix also
clobbers memory: LLVM otherwise takes it for a pure function of its address and hoists it out of
a loop that rewrites the tile (stale tiles on the hardware, which no simulator would show). The
cp.async copies and waits are volatile and clobber memory for the same reason: LLVM must keep
shared-memory loads and stores on their side of each (a load moved above the wait reads a tile
still in flight). As on the hardware, the emulation requires all 32 lanes of a warp
to reach the call together (it stages fragments through a per-warp scratch and makes the warp's
lanes wait for each other).

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
``&smem[row, col]`` (8 halves = 4 words, 16-byte aligned: ``col % 4 == 0`` in an array declared
with ``alignment=LDMATRIX_ALIGN`` and a row pitch that is a multiple of 4 words): lanes 0-7 the rows
of matrix 0, 8-15 of matrix 1, and so on. Register ``rm`` of lane ``l`` receives word ``l & 3``
of row ``l >> 2`` of matrix ``m``: exactly an A or B fragment. ``ldmatrix_x4_trans`` gives the
transposed matrices (register ``rm`` of lane ``l`` holds elements (2t, g) and (2t+1, g) of
matrix ``m``), which turns a row-major V or weight tile into B fragments.

``cp_async_16(dst, row, col, src, index, src_bytes)`` (``cp.async.cg``, bypassing L1) and
``cp_async_4`` / ``cp_async_8`` (``cp.async.ca``): copy 16 / 4 / 8 bytes from ``&src[index]``
(global memory, ``src`` 1-D, or C-contiguous of any rank with ``index`` its flat index) to
``&dst[row, col]`` (shared memory, ``dst`` 2-D) without passing through registers; only the
first ``src_bytes`` (0..size) are read, the rest of the destination is zero-filled
(``src_bytes = 0``: an out-of-bounds element becomes 0 and nothing is read, but ``&src[index]``
should still point into ``src``). Both addresses must be aligned to the size. The
copies a thread issued since its last ``cp_async_commit()`` form a group; ``cp_async_wait(n)``
(``n`` a compile-time integer) returns once at most ``n`` of the thread's groups are still in
flight, ``cp_async_wait_all()`` once none is. A wait covers the calling thread's own copies only:
other threads see the data after their wait AND a block barrier, and a buffer may be refilled only
after a barrier that follows every thread's last read of it. These are per-thread (not
warp-collective); the emulation performs a group's copies when a wait retires it, so a kernel that
reads a tile before its wait sees stale data in the simulator too.

``quad_max(x)`` / ``quad_sum(x)``: the max / sum of a float32 over the 4 lanes of a group (the
lanes sharing ``g``, which together hold one row of a C/D fragment): the row reductions of an
online softmax. Two ``shfl.sync.bfly`` on the hardware; the simulator, which has no shuffles,
runs the emulation.
"""

from numba import config

# ldmatrix reads 16-byte rows, but Numba aligns a shared array to its element size: declare the
# tiles it reads ``cuda.shared.array(shape, dtype, alignment=ALIGN)`` with ``ALIGN =
# mma.LDMATRIX_ALIGN`` a module constant (Numba wants a literal; an attribute is typed int64). The simulator
# refuses the keyword's value there (and needs no alignment): None.
LDMATRIX_ALIGN = None if config.ENABLE_CUDASIM else 16

__all__ = ["LDMATRIX_ALIGN", "mma_tf32_m16n8k8", "mma_f16_m16n8k16", "mma_bf16_m16n8k16", "to_tf32",
           "pack_f16x2", "pack_bf16x2", "ldmatrix_x4", "ldmatrix_x4_trans", "quad_max",
           "quad_sum", "cp_async_4", "cp_async_8", "cp_async_16", "cp_async_commit",
           "cp_async_wait", "cp_async_wait_all"]

if config.ENABLE_CUDASIM:
    from ._mma_emulation import (cp_async_4, cp_async_8, cp_async_16,  # noqa: F401
                                 cp_async_commit, cp_async_wait, cp_async_wait_all, ldmatrix_x4,
                                 ldmatrix_x4_trans, mma_bf16_m16n8k16, mma_f16_m16n8k16,
                                 mma_tf32_m16n8k8, pack_bf16x2, pack_f16x2, quad_max, quad_sum,
                                 to_tf32)
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
                           "=f,=f,=f,=f," + ",".join(["r"] * n + ["f"] * 4), side_effect=True)
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

    def _item_pointer(context, builder, array_type, array, index_values, index_types):
        """The generic pointer to ``array[indices]`` (no wraparound, no bounds check)."""
        from numba.cuda import cgutils
        array = context.make_array(array_type)(context, builder, array)
        indices = [context.cast(builder, v, t, types.intp)
                   for v, t in zip(index_values, index_types)]
        return cgutils.get_item_pointer(context, builder, array_type, array, indices,
                                        wraparound=False)

    def _shared_address(context, builder, array_type, array, index_values, index_types):
        """The 32-bit shared-window address of ``array[indices]`` (``array`` in shared memory),
        what ``__cvta_generic_to_shared`` gives in CUDA C, computed in 32-bit arithmetic: a
        64-bit pointer from zero-extended unsigned indices keeps NVVM from folding the constant
        part of an index (``(stage + 16) * pitch``) into the instruction's immediate offset."""
        from numba.cuda import cgutils
        array = context.make_array(array_type)(context, builder, array)
        data = array.data
        address = builder.ptrtoint(
            builder.addrspacecast(data, ir.PointerType(data.type.pointee, 3)), _I32)
        strides = cgutils.unpack_tuple(builder, array.strides, array_type.ndim)
        for value, kind, stride in zip(index_values, index_types, strides):
            index = builder.trunc(context.cast(builder, value, kind, types.int64), _I32)
            address = builder.add(address, builder.mul(index, builder.trunc(stride, _I32)))
        return address

    def _ldmatrix(modifier):
        @intrinsic
        def ldmatrix(typingctx, smem, row, col):
            if not (isinstance(smem, types.Array) and smem.dtype == types.uint32
                    and smem.ndim == 2):
                return None

            def codegen(context, builder, sig, args):
                address = _shared_address(context, builder, sig.args[0], args[0], args[1:],
                                          sig.args[1:])
                fnty = ir.FunctionType(ir.LiteralStructType([_I32] * 4), [_I32])
                asm = ir.InlineAsm(
                    fnty,
                    f"ldmatrix.sync.aligned.m8n8.x4{modifier}.shared.b16 {{$0,$1,$2,$3}}, [$4];",
                    "=r,=r,=r,=r,r,~{memory}", side_effect=True)
                words = builder.call(asm, [address])
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
                    "=f,f", side_effect=True)
                return builder.call(asm, args)
            return types.float32(types.float32), codegen
        return reduce

    quad_max = _quad_reduce("max")
    quad_sum = _quad_reduce("add")

    def _cp_async(size, cache):
        @intrinsic
        def cp_async(typingctx, dst, row, col, src, index, src_bytes):
            if not (isinstance(dst, types.Array) and dst.ndim == 2
                    and isinstance(src, types.Array)
                    and (src.ndim == 1 or src.layout == "C")
                    and all(isinstance(v, types.Integer) for v in (row, col, index, src_bytes))):
                return None

            def codegen(context, builder, sig, args):
                to = _shared_address(context, builder, sig.args[0], args[0], args[1:3],
                                     sig.args[1:3])
                if sig.args[3].ndim == 1:
                    source = _item_pointer(context, builder, sig.args[3], args[3], args[4:5],
                                           sig.args[4:5])
                else:                   # C-contiguous: the flat index from the first element
                    data = context.make_array(sig.args[3])(context, builder, args[3]).data
                    source = builder.gep(data, [context.cast(builder, args[4], sig.args[4],
                                                             types.intp)])
                count = context.cast(builder, args[5], sig.args[5], types.uint32)
                asm = ir.InlineAsm(
                    ir.FunctionType(ir.VoidType(), [_I32, source.type, _I32]),
                    f"cp.async.{cache}.shared.global [$0], [$1], {size}, $2;",
                    "r,l,r,~{memory}", side_effect=True)
                builder.call(asm, [to, source, count])
                return context.get_dummy_value()
            return types.none(dst, row, col, src, index, src_bytes), codegen
        return cp_async

    cp_async_4 = _cp_async(4, "ca")
    cp_async_8 = _cp_async(8, "ca")
    cp_async_16 = _cp_async(16, "cg")

    def _statement(text):
        """A codegen emitting ``text`` as a volatile statement that clobbers memory."""
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), text, "~{memory}",
                               side_effect=True)
            builder.call(asm, [])
            return context.get_dummy_value()
        return codegen

    @intrinsic
    def cp_async_commit(typingctx):
        return types.none(), _statement("cp.async.commit_group;")

    @intrinsic
    def cp_async_wait(typingctx, n):
        if not isinstance(n, types.IntegerLiteral):
            return None              # Numba retries with the literal; a variable count fails
        return types.none(n), _statement(f"cp.async.wait_group {n.literal_value};")

    @intrinsic
    def cp_async_wait_all(typingctx):
        return types.none(), _statement("cp.async.wait_all;")
