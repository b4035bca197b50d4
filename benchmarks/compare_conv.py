"""Convolutions side by side with PyTorch on the CPU, in one process (2 threads for PyTorch).

    python -m benchmarks.compare_conv

Each workload runs through the public API in both libraries (``F.conv2d`` ... ``.sum().backward()``)
with the same float32 inputs; the two are interleaved run by run after a warm-up and the medians
of 21 runs are reported (benchmarks.common.side_by_side).
"""

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


def _step(functional, fn_name, x, w, b, kwargs, backward):
    fn = getattr(functional, fn_name)
    if backward:
        def step():
            fn(x, w, b, **kwargs).sum().backward()
    else:
        def step():
            fn(x, w, b, **kwargs)
    return step


def compare(repeats=21, threads=2):
    """Rows of (workload, gpudl median ms, torch median ms, ratio gpudl / torch)."""
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, fn_name, x_shape, w_shape, kwargs, backward in WORKLOADS:
        out_channels = w_shape[1] if fn_name == "conv_transpose2d" else w_shape[0]
        arrays = [rng.standard_normal(s).astype(np.float32)
                  for s in (x_shape, w_shape, (out_channels,))]
        ours = _step(gF, fn_name, *[gd.tensor(a, requires_grad=backward) for a in arrays],
                     kwargs, backward)
        theirs = _step(torch.nn.functional, fn_name, *[torch.tensor(a, requires_grad=backward) for a in arrays],
                       kwargs, backward)
        mine, ref = side_by_side(ours, theirs, torch, repeats=repeats)
        rows.append((name, mine, ref, mine / ref))
    return rows


def main():
    rows = compare()
    width = max(len(r[0]) for r in rows)
    print(f"{'workload':<{width}}  gpudl ms  torch ms  ratio")
    for name, mine, ref, ratio in rows:
        print(f"{name:<{width}}  {mine:8.2f}  {ref:8.2f}  {ratio:5.2f}")


if __name__ == "__main__":
    main()
