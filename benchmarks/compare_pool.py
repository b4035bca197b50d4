"""Pooling side by side with PyTorch's CPU build (PyTorch on 2 threads; gpudl's pools run on one
at this shape, below kernels.pool.PARALLEL_MIN_ELEMENTS).

    python -m benchmarks.compare_pool          # PyTorch on 2 threads
    python -m benchmarks.compare_pool 1        # PyTorch on 1 thread

Rows: max and average pooling forward+backward at (32, 16, 32, 32), 2x2 stride 2 and 3x3 stride 2
padding 1, backward driven by a fixed output gradient. Medians of 21 runs after 3 warm-up runs,
interleaved in one process, and also each library in its own block of runs (torch's OpenMP
workers keep spinning for a while after each call and slow whatever runs right after them).
"""

import sys

import gpudl as gd
import gpudl.nn  # noqa: F401  (makes gd.nn available, as torch.nn is)
from benchmarks.common import median_ms, side_by_side

THREADS = 2
SHAPE = (32, 16, 32, 32)
WINDOWS = {"2x2": dict(kernel_size=2), "3x3 s2 p1": dict(kernel_size=3, stride=2, padding=1)}


def _pool_step(lib, op, shape, kwargs):
    pool = getattr(lib.nn.functional, f"{op}_pool2d")
    x = lib.randn(*shape).requires_grad_()
    gy = lib.randn(*pool(x, **kwargs).shape)

    def step():
        pool(x, **kwargs).backward(gy)
    return step


def compare(repeats=21, threads=THREADS):
    """Rows (name, gpudl ms, torch ms): interleaved medians, then each library in a block."""
    import torch
    torch.set_num_threads(threads)
    rows = []
    for op in ("max", "avg"):
        for window, kwargs in WINDOWS.items():
            ours = _pool_step(gd, op, SHAPE, kwargs)
            theirs = _pool_step(torch, op, SHAPE, kwargs)
            name = f"{op}_pool2d {window} fwd+bwd {SHAPE}"
            rows.append((name + ", interleaved", *side_by_side(ours, theirs, torch, repeats)))
            rows.append((name + ", blocks", median_ms(ours, repeats),
                         median_ms(theirs, repeats, synchronize=lambda: None)))
    return rows


def main(argv=None):
    threads = int((argv or sys.argv[1:] or [THREADS])[0])
    print(f"PyTorch on {threads} thread(s)")
    print(f"{'workload (median of 21, ms)':62s} {'gpudl':>8s} {'torch':>8s} {'ratio':>6s}")
    for name, ours, theirs in compare(threads=threads):
        print(f"{name:62s} {ours:8.3f} {theirs:8.3f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
