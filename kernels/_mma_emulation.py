"""Python emulation of kernels/mma.py for Numba's CUDA simulator, from the PTX ISA's tables.

The simulator runs every CUDA thread of a block as a Python thread (tests/sim's runner: as a
greenlet, ``manager.gpudl_wait``), one block at a time. A warp instruction is emulated in two
steps: each lane posts its operands in the warp's scratch, and the last lane to arrive computes
the whole warp's results at once (NumPy on the fragments placed by the PTX ISA's tables) and
wakes the warp's other lanes, each of which takes its own result.
No lane can post the next call's operands before every lane has taken this one's (the next call
completes only when all 32 have posted). Only the warp waits, as on the hardware: the other
warps of the block run on (a block barrier here, as before session 19, would also have hidden
a missing ``syncthreads()`` between warps). Hence the emulation's one extra rule: all 32 lanes
of a warp call together.

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
_G, _T = np.arange(WARP) >> 2, np.arange(WARP) & 3     # each lane's group and thread in it

# The PTX ISA's fragment tables: the (row, column) each register holds, for all 32 lanes at once.
_C_FRAGMENT = ((_G, 2 * _T), (_G, 2 * _T + 1), (_G + 8, 2 * _T), (_G + 8, 2 * _T + 1))  # C, D
_TF32_A = ((_G, _T), (_G + 8, _T), (_G, _T + 4), (_G + 8, _T + 4))
_TF32_B = ((_T, _G), (_T + 4, _G))
# A half register holds (row, col) in its low 16 bits and (row, col + 1) in its high ones; a B
# register (row, col) and (row + 1, col).
_HALF_A = ((_G, 2 * _T), (_G + 8, 2 * _T), (_G, 2 * _T + 8), (_G + 8, 2 * _T + 8))
_HALF_B = ((2 * _T, _G), (2 * _T + 8, _G))


class _Warp:
    """One warp's scratch: this call's posts, and the last completed call's results."""

    def __init__(self):
        self.cond = threading.Condition()
        self.posts = [None] * WARP
        self.arrived = 0
        self.calls = 0
        self.results = None


_STALL_S = 120       # no lane of the warp arrived for this long (OS threads): refused
_STRAGGLERS = ("tensor-core emulation: a warp's lanes did not all reach the mma (its 32 lanes "
               "must call it together)")


def _collective(post, compute):
    """Post this lane's ``post``; the warp's last lane to arrive runs ``compute`` on the 32 posts
    (a list in lane order) for a sequence of the 32 lanes' results. Returns this lane's."""
    thread = threading.current_thread()
    index, lane = divmod(thread.thread_id, WARP)
    # The scratch lives on the simulator's manager of this block run, so a launch that died
    # half-way leaves nothing behind for the next one.
    manager = thread._manager
    warps = vars(manager).setdefault("gpudl_warps", {})
    warp = warps.get(index) or warps.setdefault(index, _Warp())
    with warp.cond:
        warp.posts[lane] = post
        warp.arrived += 1
        call = warp.calls
        if warp.arrived == WARP:
            posts, warp.posts, warp.arrived = warp.posts, [None] * WARP, 0
            warp.results = compute(posts)
            warp.calls += 1
            warp.cond.notify_all()
    # tests/sim's runner (its lanes are greenlets on one OS thread) waits its own way
    wait = getattr(manager, "gpudl_wait", None)
    if wait is not None:
        wait(lambda: warp.calls != call, _STRAGGLERS)
    else:
        _wait_on_threads(warp, call, thread)
    return warp.results[lane]


def _wait_on_threads(warp, call, thread):
    """Until the warp's call ``call`` completes, where the lanes are OS threads (Numba's own
    simulator): refused once no lane arrived for _STALL_S."""
    with warp.cond:
        arrived, waited = warp.arrived, 0.0
        while warp.calls == call:
            if getattr(thread, "abort", False):
                raise RuntimeError("tensor-core emulation: the launch was aborted")
            if waited > _STALL_S:
                raise RuntimeError(_STRAGGLERS)
            warp.cond.wait(0.05)
            waited = 0.0 if warp.arrived != arrived else waited + 0.05
            arrived = warp.arrived


def to_tf32(x):
    bits = np.float32(x).view(np.uint32)
    if (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000):      # finite: round
        bits = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)    # ties away from zero
    return np.float32(bits.view(np.float32))


def _f16_halves(words):
    """(lanes, registers, 2) float64: the low and high half of each uint32 word."""
    return words.view(np.uint16).view(np.float16).reshape(words.shape + (2,)).astype(np.float64)


def _bf16_halves(words):
    upper = words.view(np.uint16).astype(np.uint32) << np.uint32(16)
    return upper.view(np.float32).reshape(words.shape + (2,)).astype(np.float64)


def pack_f16x2(lo, hi):
    return np.array([lo, hi], dtype=np.float16).view(np.uint32)[0]


def _bf16_bits(x):
    bits = int(np.float32(x).view(np.uint32))
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:        # NaN stays NaN
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF   # to nearest, ties to even


def pack_bf16x2(lo, hi):
    return np.uint32(_bf16_bits(lo) | (_bf16_bits(hi) << 16))


def _mma_results(a, b, c):
    """Every lane's (d0..d3) of D = A B + C, for A and B as float64 matrices and C as the
    lanes' c0..c3 (a (32, 4) array)."""
    acc = np.zeros((16, 8))
    for register, (row, col) in enumerate(_C_FRAGMENT):
        acc[row, col] = c[:, register]
    d = (a @ b + acc).astype(np.float32)
    return list(zip(*(d[row, col] for row, col in _C_FRAGMENT)))


def _tf32_warp(posts):
    p = np.array(posts, dtype=np.float64)                         # (32, 10): a0..a3 b0 b1 c0..c3
    bits = p[:, :6].astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)  # TF32 as read
    operands = bits.view(np.float32).astype(np.float64)
    a, b = np.zeros((16, 8)), np.zeros((8, 8))
    for register, (row, col) in enumerate(_TF32_A):
        a[row, col] = operands[:, register]
    for register, (row, col) in enumerate(_TF32_B):
        b[row, col] = operands[:, 4 + register]
    return _mma_results(a, b, p[:, 6:].astype(np.float32))


def mma_tf32_m16n8k8(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
    return _collective((a0, a1, a2, a3, b0, b1, c0, c1, c2, c3), _tf32_warp)


def _half_mma(halves):
    def warp_mma(posts):
        p = np.array(posts, dtype=np.float64)                     # uint32 words exact in float64
        h = halves(np.ascontiguousarray(p[:, :6].astype(np.uint32)))
        a, b = np.zeros((16, 16)), np.zeros((16, 8))
        for register, (row, col) in enumerate(_HALF_A):
            a[row, col], a[row, col + 1] = h[:, register, 0], h[:, register, 1]
        for register, (row, col) in enumerate(_HALF_B):
            b[row, col], b[row + 1, col] = h[:, 4 + register, 0], h[:, 4 + register, 1]
        return _mma_results(a, b, p[:, 6:].astype(np.float32))

    def mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        return _collective((a0, a1, a2, a3, b0, b1, c0, c1, c2, c3), warp_mma)
    return mma


mma_f16_m16n8k16 = _half_mma(_f16_halves)
mma_bf16_m16n8k16 = _half_mma(_bf16_halves)


def _ldmatrix_warp(posts, transpose):
    """Lanes 8m..8m+7 posted the rows of matrix m (4 words = 8 halves each); register m of lane
    l is word l & 3 of row l >> 2 of matrix m, or with ``transpose`` the halves (2t, g) and
    (2t + 1, g) of it."""
    rows = np.array(posts, dtype=np.uint32)                       # (32 rows, 4 words)
    words = np.empty((WARP, 4), np.uint32)
    halves = rows.view(np.uint16)                                 # (32 rows, 8 halves)
    for m in range(4):
        if not transpose:
            words[:, m] = rows[8 * m + _G, _T]
        else:
            lo = halves[8 * m + 2 * _T, _G].astype(np.uint32)
            hi = halves[8 * m + 2 * _T + 1, _G].astype(np.uint32)
            words[:, m] = lo | (hi << np.uint32(16))
    return list(map(tuple, words))


def _ldmatrix(transpose):
    def ldmatrix(smem, row, col):
        if col % 4:
            raise RuntimeError(f"ldmatrix: the row address must be 16-byte aligned (col % 4 == 0 "
                               f"in uint32 words), got col={col}")
        # this lane's row: 8 halves as 4 words
        return _collective(np.array(smem[row, col:col + 4], dtype=np.uint32),
                           lambda posts: _ldmatrix_warp(posts, transpose))
    return ldmatrix


ldmatrix_x4 = _ldmatrix(False)
ldmatrix_x4_trans = _ldmatrix(True)


def _quad(combine):
    def warp_reduce(posts):
        groups = [np.float32(combine(posts[first:first + 4])) for first in range(0, WARP, 4)]
        return [groups[lane >> 2] for lane in range(WARP)]

    def reduce(x):
        return _collective(np.float32(x), warp_reduce)
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
