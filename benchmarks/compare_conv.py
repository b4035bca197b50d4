"""Convolutions side by side with PyTorch on the CPU, in one process (2 threads for PyTorch).

    python -m benchmarks.compare_conv

Each workload runs through the public API in both libraries (``F.conv2d(...).backward(g)``, with
the same float32 inputs and the same contiguous random output gradient ``g``; ``.sum()`` would
hand PyTorch a stride-0 gradient, measured ~1.4x slower there). 21 timed runs per library are
taken in 7 rounds of 3, the libraries alternating round by round; each block starts with a pause
(the other library's threads go idle) and 2 untimed runs (this library's threads wake up), and
the medians are reported. Blocks rather than run-by-run interleaving: OpenBLAS's idle threads
spin for ~0.1 s after each GEMM and PyTorch's OpenMP threads for a while after each op, so a run
that directly follows the other library's competes with its spinning threads for the 2 cores.
``--interleaved`` measures that way instead (benchmarks.common.side_by_side).
"""

import statistics
import time

import numpy as np

import gpudl as gd
import gpudl.nn.functional as gF
from benchmarks.common import side_by_side

# (name, function name, input shape, weight shape, keyword arguments, backward?)
WORKLOADS = [
    ("conv2d fwd (32,16,32,32) x 32 3x3 pad 1", "conv2d", (32, 16, 32, 32), (32, 16, 3, 3),
     {"padding": 1}, False),
    ("conv2d fwd+bwd (32,16,32,32) x 32 3x3 pad 1", "conv2d", (32, 16, 32, 32), (32, 16, 3, 3),
     {"padding": 1}, True),
    ("conv2d fwd+bwd (64,1,28,28) x 6 5x5 pad 2", "conv2d", (64, 1, 28, 28), (6, 1, 5, 5),
     {"padding": 2}, True),
    ("conv2d fwd+bwd (32,32,16,16) x 64 3x3 s2 pad 1", "conv2d", (32, 32, 16, 16), (64, 32, 3, 3),
     {"stride": 2, "padding": 1}, True),
    ("conv_transpose2d fwd+bwd (32,64,8,8) -> 32 4x4 s2 pad 1", "conv_transpose2d",
     (32, 64, 8, 8), (64, 32, 4, 4), {"stride": 2, "padding": 1}, True),
]


def _step(functional, fn_name, x, w, b, kwargs, grad):
    fn = getattr(functional, fn_name)
    if grad is not None:
        def step():
            fn(x, w, b, **kwargs).backward(grad)
    else:
        def step():
            fn(x, w, b, **kwargs)
    return step


def blockwise(ours, theirs, repeats=21, rounds=7, warmup=2, pause=0.3):
    """(gpudl median ms, torch median ms) over ``repeats`` runs each, in alternating blocks."""
    times = ([], [])
    for _ in range(rounds):
        for fn, samples in zip((ours, theirs), times):
            time.sleep(pause)                   # let the other library's threads go idle
            for _ in range(warmup):
                fn()
            for _ in range(repeats // rounds):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
    return tuple(1e3 * statistics.median(samples) for samples in times)


def compare(repeats=21, threads=2, interleaved=False):
    """Rows of (workload, gpudl median ms, torch median ms, ratio gpudl / torch)."""
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, fn_name, x_shape, w_shape, kwargs, backward in WORKLOADS:
        out_channels = w_shape[1] if fn_name == "conv_transpose2d" else w_shape[0]
        arrays = [rng.standard_normal(s).astype(np.float32)
                  for s in (x_shape, w_shape, (out_channels,))]
        ours, theirs = ([lib.tensor(a, requires_grad=backward) for a in arrays]
                        for lib in (gd, torch))
        g = None
        if backward:
            g = rng.standard_normal(getattr(gF, fn_name)(*ours, **kwargs).shape)
            g = g.astype(np.float32)
        ours = _step(gF, fn_name, *ours, kwargs, None if g is None else gd.tensor(g))
        theirs = _step(torch.nn.functional, fn_name, *theirs, kwargs,
                       None if g is None else torch.tensor(g))
        if interleaved:
            mine, ref = side_by_side(ours, theirs, torch, repeats=repeats)
        else:
            mine, ref = blockwise(ours, theirs, repeats=repeats)
        rows.append((name, mine, ref, mine / ref))
    return rows


def main():
    import sys
    rows = compare(interleaved="--interleaved" in sys.argv[1:])
    width = max(len(r[0]) for r in rows)
    print(f"{'workload':<{width}}  gpudl ms  torch ms  ratio")
    for name, mine, ref, ratio in rows:
        print(f"{name:<{width}}  {mine:8.2f}  {ref:8.2f}  {ratio:5.2f}")


if __name__ == "__main__":
    main()
