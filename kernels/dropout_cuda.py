"""Numba-CUDA dropout whose random numbers are drawn and advanced on the device, so that each
replay of a captured CUDA graph draws new ones.

CuPy's generator keeps its state on the host: a graph captured around it would repeat the
captured draws at every replay. Here the cuda generator owns ``STATES`` xoroshiro128+ states in
a device array (gpudl/random.py: made from the global seed at first use, reseeded in place by
``gd.manual_seed``); a launch uses at most that many threads, thread t draws from state t and
stores it back advanced, so consecutive launches (eager, or replays of a graph that holds the
launch) see advanced states in stream order, with no host work per call.

- ``forward``: a grid-stride loop over the elements; each 64-bit draw gives two 24-bit numbers,
  one per element (k / 2**24, which is what a float32 uniform holds); element i is kept when its
  number is at least ``threshold`` = ceil(p * 2**24), i.e. when u >= p, so P(keep) = 1 - p to
  within 2**-24. Writes ``y = x * (keep / (1 - p))`` and the keep mask as uint8 for backward.
- ``backward``: ``gx = g * (mask / (1 - p))``.

The step is Numba's (numba.cuda.random: xoroshiro128+ with rotations 55, 14, 36), applied to a
state held in registers for the whole loop, and the states are seeded with Numba's host-side
initialiser, which puts consecutive states 2**64 draws apart. Arithmetic in float32 for float16
and float32 data, float64 for float64; a dropped NaN or infinity gives NaN, as torch's
``x * mask * scale``.
"""

import functools

import numpy as np
from numba import cuda, float32, float64, uint8, uint32, uint64

from gpudl import backend

from .budget import Budget
from .launch import launch

THREADS = 256
# enough threads to keep an H200's memory busy (two blocks per SM); a smaller grid under the
# simulator, which runs each thread in Python
BLOCKS = 4 if backend.SIMULATOR else 264
STATES = BLOCKS * THREADS
UNIT_BITS = 24                  # bits per uniform number: two per 64-bit draw
BUDGET = Budget(threads=THREADS, min_occupancy=0.5, max_div64=0)
DTYPES = (np.float16, np.float32, np.float64)


def _make_kernels(acc):
    """The two kernels computing in ``acc`` (float32 for float16 and float32 data)."""
    low = uint64((1 << UNIT_BITS) - 1)

    @cuda.jit(device=True, inline="always")
    def keep_one(x, y, mask, i, number, threshold, scale):
        keep = number >= threshold
        y[i] = acc(x[i]) * (scale if keep else acc(0))
        mask[i] = uint8(1) if keep else uint8(0)

    @cuda.jit
    def forward(x, states, threshold, scale, y, mask):
        t = cuda.grid(1)
        stride = cuda.gridsize(1)
        n = x.shape[0]
        s0, s1 = states[t, 0], states[t, 1]
        i = t
        while i < n:            # a while: range with a step divides for its trip count
            r = s0 + s1                                 # xoroshiro128+ (numba.cuda.random)
            s1 ^= s0
            s0 = ((s0 << uint32(55)) | (s0 >> uint32(9))) ^ s1 ^ (s1 << uint32(14))
            s1 = (s1 << uint32(36)) | (s1 >> uint32(28))
            keep_one(x, y, mask, i, r >> uint32(64 - UNIT_BITS), threshold, scale)
            i += stride
            if i < n:
                keep_one(x, y, mask, i, (r >> uint32(64 - 2 * UNIT_BITS)) & low, threshold,
                         scale)
                i += stride
        states[t, 0] = s0
        states[t, 1] = s1

    @cuda.jit(device=True, inline="always")
    def grad_one(g, mask, i, scale, gx):
        gx[i] = acc(g[i]) * (scale if mask[i] else acc(0))

    @cuda.jit
    def backward(g, mask, scale, gx):
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        n = g.shape[0]
        while i < n:
            grad_one(g, mask, i, scale, gx)
            i += stride
            # two elements a step, as forward: a loop of one step has a trip count that LLVM
            # computes with a 64-bit division (to unroll it)
            if i < n:
                grad_one(g, mask, i, scale, gx)
                i += stride

    return {"forward": forward, "backward": backward}


_KERNELS = {np.float32: _make_kernels(float32), np.float64: _make_kernels(float64)}


def _kernels(dtype):
    return _KERNELS[np.float64 if dtype == np.float64 else np.float32]


def _acc_name(dtype):
    return "float64" if dtype == np.float64 else "float32"


def _signature(name, dtype):
    d = np.dtype(dtype).name
    v, acc = f"{d}[::1]", _acc_name(dtype)
    args = {"forward": (v, "uint64[:, ::1]", "uint64", acc, v, "uint8[::1]"),
            "backward": (v, "uint8[::1]", acc, v)}[name]
    return f"void({', '.join(args)})"


def supports(x):
    """Whether these kernels take dropout of ``x``: float16, float32 or float64."""
    return x.dtype in DTYPES


def new_states(seed):
    """``STATES`` generator states on the cuda device, seeded from ``seed`` (an int)."""
    return backend.to_device_array(_seeded(seed).copy(), "cuda")   # the kernels write them


def reseed(states, seed):
    """Overwrite ``states`` (from ``new_states``) in place: a graph holding them sees the seed."""
    states[...] = backend.to_device_array(_seeded(seed), "cuda")


@functools.lru_cache(maxsize=4)
def _seeded(seed):
    """The host states for ``seed``, read-only. Cached; under the simulator made by
    ``_python_states`` (Numba's initialiser runs there as Python on NumPy scalars: 25 s for
    1,024 states), on a GPU by Numba's initialiser compiled for the CPU at the first call."""
    if backend.SIMULATOR:
        states = np.array(_python_states(STATES, seed), dtype=np.uint64)
    else:
        from numba.cuda.random import init_xoroshiro128p_states_cpu, xoroshiro128p_dtype
        host = np.empty(STATES, xoroshiro128p_dtype)
        init_xoroshiro128p_states_cpu(host, np.uint64(seed), np.uint64(0))
        states = np.ascontiguousarray(host.view(np.uint64).reshape(STATES, 2))
    states.flags.writeable = False
    return states


_U64 = (1 << 64) - 1
_JUMP = (0xBEAC0467EBA5FACB, 0xD86B048B86AA9922)     # xoroshiro128+'s 2**64-step jump


def _python_states(n, seed):
    """What ``numba.cuda.random.init_xoroshiro128p_states_cpu`` makes (n states, subsequence
    0), on Python ints: [s0, s1] per state, state 0 from SplitMix64 of ``seed``, each next one
    the previous one 2**64 draws on."""
    z = (seed + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    s0 = s1 = z ^ (z >> 31)
    states = [[s0, s1]]
    for _ in range(n - 1):
        j0 = j1 = 0
        for word in _JUMP:
            for bit in range(64):
                if word >> bit & 1:
                    j0 ^= s0
                    j1 ^= s1
                s1 ^= s0                                            # xoroshiro128+'s step
                s0 = (((s0 << 55) | (s0 >> 9)) & _U64) ^ s1 ^ ((s1 << 14) & _U64)
                s1 = ((s1 << 36) | (s1 >> 28)) & _U64
        s0, s1 = j0, j1
        states.append([s0, s1])
    return states


def _blocks(n):
    """Blocks for ``n`` elements: two or more per thread, at most ``BLOCKS``."""
    return min(BLOCKS, (n + 2 * THREADS - 1) // (2 * THREADS))


def forward(x, p, states):
    """(y, mask) for dropout with probability ``p`` (0 < p < 1) of ``x``, drawing from and
    advancing ``states``; mask is uint8 (1: kept), flat."""
    xp = backend.get_array_module(x)
    flat = xp.ascontiguousarray(x).reshape(-1)
    y, mask = xp.empty_like(flat), xp.empty(flat.shape, np.uint8)
    threshold = min(int(np.ceil(p * (1 << UNIT_BITS))), 1 << UNIT_BITS)
    acc = np.dtype(_acc_name(x.dtype)).type
    launch(_kernels(x.dtype)["forward"], _signature("forward", x.dtype), _blocks(flat.size),
           THREADS, flat, states, threshold, acc(1 / (1 - p)), y, mask)
    return y.reshape(x.shape), mask


def backward(g, mask, p, dtype):
    """The gradient of ``forward``'s y w.r.t. x for the upstream gradient ``g``."""
    xp = backend.get_array_module(mask)
    shape = g.shape
    g = xp.ascontiguousarray(backend.cast(g, dtype)).reshape(-1)
    gx = xp.empty_like(g)
    acc = np.dtype(_acc_name(dtype)).type
    launch(_kernels(dtype)["backward"], _signature("backward", dtype), _blocks(g.size),
           THREADS, g, mask, acc(1 / (1 - p)), gx)
    return gx.reshape(shape)


SIGNATURES = [
    (_kernels(np.dtype(dtype))[name], [_signature(name, dtype)], BUDGET)
    for name in ("forward", "backward")
    for dtype in ("float32", "float16", "float64")
]
