"""Python emulation of kernels/mma.py for Numba's CUDA simulator, from the PTX ISA's tables.

The simulator runs every CUDA thread of a block as a Python thread, one block at a time. A warp
instruction is emulated in three steps: each lane posts its operands in the warp's scratch, the
block barrier, each lane computes its own result from all 32 posts, the block barrier again
(so no lane posts the next call's operands before every lane has read this one's). Hence the
emulation's one extra rule: all threads of the block call together.

Products are summed in float64 and rounded once to float32: the hardware's order of additions is
unspecified, so tests compare with a tolerance, never bit for bit.

``cp.async`` is per thread, not warp-collective. The hardware lands a copy at some moment between
its issue and the ``wait_group`` that retires its group; a correct kernel reads the destination
only after that wait and a block barrier, and refills a buffer only after a barrier that follows
every read of it, so any landing moment gives it the same values. The emulation takes the
latest: the source bytes (read-only input) are captured at issue, and written to shared memory
when a wait retires their group. A kernel that reads a tile before waiting for it therefore sees
the old contents here, as it could on the hardware; what no emulation shows is a missing barrier
between one thread's wait and another thread's read (the simulator's threads run in lockstep only
at barriers, so that race may go unseen). Alignment, ``src_bytes`` and the source range are
checked as the PTX ISA requires.
"""

import threading

import numpy as np

WARP = 32
_scratch = {}   # (block index, warp) -> [32 posts]


def _exchange(post):
    """Post this lane's ``post``; return (lane, the 32 posts of its warp)."""
    thread = threading.current_thread()
    warp, lane = divmod(thread.thread_id, WARP)
    posts = _scratch.setdefault((tuple(thread.blockIdx), warp), [None] * WARP)
    posts[lane] = post
    thread.syncthreads()
    gathered = list(posts)
    thread.syncthreads()
    if any(p is None for p in gathered):
        raise RuntimeError("tensor-core emulation: a warp's lanes did not all reach the mma "
                           "(the block's threads must call it together)")
    return lane, gathered


def _tf32(x):
    """The value the hardware reads from a float32 given as a TF32 operand (low 13 bits dropped)."""
    bits = np.float32(x).view(np.uint32) & np.uint32(0xFFFFE000)
    return float(bits.view(np.float32))


def to_tf32(x):
    bits = np.float32(x).view(np.uint32)
    if (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000):      # finite: round
        bits = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)    # ties away from zero
    return np.float32(bits.view(np.float32))


def _f16_halves(word):
    return np.array([word], dtype=np.uint32).view(np.float16).astype(np.float64)


def _bf16_halves(word):
    word = int(word)
    halves = np.array([(word & 0xFFFF) << 16, (word >> 16) << 16], dtype=np.uint32)
    return halves.view(np.float32).astype(np.float64)


def pack_f16x2(lo, hi):
    return np.array([lo, hi], dtype=np.float16).view(np.uint32)[0]


def _bf16_bits(x):
    bits = int(np.float32(x).view(np.uint32))
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:        # NaN stays NaN
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF   # to nearest, ties to even


def pack_bf16x2(lo, hi):
    return np.uint32(_bf16_bits(lo) | (_bf16_bits(hi) << 16))


def _result(lane, a, b, c):
    """This lane's d0..d3 of D = A B + C (A 16xK, B Kx8, C 16x8 as float64 arrays)."""
    d = a @ b + c
    g, t = lane >> 2, lane & 3
    return tuple(np.float32(d[r, col]) for r, col in
                 ((g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)))


def _accumulator(posts):
    c = np.zeros((16, 8))
    for lane, post in enumerate(posts):
        g, t = lane >> 2, lane & 3
        c[g, 2 * t], c[g, 2 * t + 1], c[g + 8, 2 * t], c[g + 8, 2 * t + 1] = post[-4:]
    return c


def mma_tf32_m16n8k8(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
    lane, posts = _exchange((a0, a1, a2, a3, b0, b1, c0, c1, c2, c3))
    a, b = np.zeros((16, 8)), np.zeros((8, 8))
    for other, p in enumerate(posts):
        g, t = other >> 2, other & 3
        a[g, t], a[g + 8, t], a[g, t + 4], a[g + 8, t + 4] = (_tf32(v) for v in p[:4])
        b[t, g], b[t + 4, g] = _tf32(p[4]), _tf32(p[5])
    return _result(lane, a, b, _accumulator(posts))


def _half_mma(halves):
    def mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        lane, posts = _exchange((a0, a1, a2, a3, b0, b1, float(c0), float(c1), float(c2),
                                 float(c3)))
        a, b = np.zeros((16, 16)), np.zeros((16, 8))
        for other, p in enumerate(posts):
            g, t = other >> 2, other & 3
            for word, (row, col) in zip(p[:4], ((g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8),
                                                (g + 8, 2 * t + 8))):
                a[row, col:col + 2] = halves(word)
            b[2 * t:2 * t + 2, g] = halves(p[4])
            b[2 * t + 8:2 * t + 10, g] = halves(p[5])
        return _result(lane, a, b, _accumulator(posts))
    return mma


mma_f16_m16n8k16 = _half_mma(_f16_halves)
mma_bf16_m16n8k16 = _half_mma(_bf16_halves)


def _ldmatrix(transpose):
    def ldmatrix(smem, row, col):
        if col % 4:
            raise RuntimeError(f"ldmatrix: the row address must be 16-byte aligned (col % 4 == 0 "
                               f"in uint32 words), got col={col}")
        # this lane's row: 8 halves as 4 words
        lane, posts = _exchange(np.array(smem[row, col:col + 4], dtype=np.uint32))
        words = []
        for m in range(4):
            rows = np.stack(posts[8 * m:8 * m + 8])            # 8 rows x 4 words
            if not transpose:
                words.append(rows[lane >> 2, lane & 3])
            else:
                halves = rows.view(np.uint16)                  # 8 x 8 halves
                g, t = lane >> 2, lane & 3
                pair = np.array([halves[2 * t, g], halves[2 * t + 1, g]], dtype=np.uint16)
                words.append(pair.view(np.uint32)[0])
        return tuple(np.uint32(w) for w in words)
    return ldmatrix


ldmatrix_x4 = _ldmatrix(False)
ldmatrix_x4_trans = _ldmatrix(True)


def _quad(combine):
    def reduce(x):
        lane, posts = _exchange(np.float32(x))
        group = posts[lane & ~3:(lane & ~3) + 4]
        return np.float32(combine(group))
    return reduce


quad_max = _quad(max)
quad_sum = _quad(lambda values: np.float32(values[0] + values[1]) + np.float32(values[2] +
                                                                               values[3]))


def _ndarray(a):
    """The NumPy array behind a simulator kernel argument (shared arrays already are one)."""
    a = getattr(a, "_item", a)
    return getattr(a, "_ary", a)


def _groups():
    """This thread's cp.async state: [the open group, committed groups oldest first]."""
    thread = threading.current_thread()
    if not hasattr(thread, "cp_async_groups"):
        thread.cp_async_groups = [[], []]
    return thread.cp_async_groups


def _cp_async(size):
    def cp_async(dst, row, col, src, index, src_bytes):
        dst, src = _ndarray(dst), _ndarray(src)
        source = src.reshape(-1).view(np.uint8)
        start = int(index) * src.itemsize
        to = (int(row) * dst.shape[1] + int(col)) * dst.itemsize
        if not 0 <= int(src_bytes) <= size:
            raise RuntimeError(f"cp.async: src_bytes must be 0..{size}, got {src_bytes}")
        if start % size or to % size:
            raise RuntimeError(f"cp.async: {size}-byte copy from byte {start} to byte {to}: "
                               f"both addresses must be {size}-byte aligned")
        if not 0 <= start < source.size or start + int(src_bytes) > source.size:
            raise RuntimeError(f"cp.async: source bytes {start}..{start + int(src_bytes)} "
                               f"outside the {source.size}-byte array")
        data = np.zeros(size, np.uint8)
        data[:int(src_bytes)] = source[start:start + int(src_bytes)]
        _groups()[0].append((dst, to, data))
    return cp_async


cp_async_4 = _cp_async(4)
cp_async_8 = _cp_async(8)
cp_async_16 = _cp_async(16)


def cp_async_commit():
    groups = _groups()
    groups[1].append(groups[0])
    groups[0] = []


def cp_async_wait(n):
    committed = _groups()[1]
    while len(committed) > n:
        for dst, to, data in committed.pop(0):
            dst.reshape(-1).view(np.uint8)[to:to + data.size] = data


def cp_async_wait_all():
    cp_async_commit()
    cp_async_wait(0)
