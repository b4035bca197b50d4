"""Attention side by side with PyTorch's CPU build (2 threads each).

    python -m benchmarks.compare_attention

Rows: causal SDPA fwd+bwd at (4, 4, 256, 32) (medians of 21 runs after warm-up, interleaved in
one process; also each library in its own block of runs, since torch's OpenMP workers keep
spinning a while after each call and slow whatever runs right after them),
and the peak memory of the forward at L = S = 8192, one head, E = 64: tracemalloc for gpudl's
twin (it allocates only through NumPy, which reports to tracemalloc); for torch, the growth of
a fresh child process's peak RSS over the call (VmHWM, reset through /proc/self/clear_refs).
"""

import subprocess
import sys
import tracemalloc

import numpy as np

import gpudl as gd
import gpudl.nn  # noqa: F401  (makes gd.nn available, as torch.nn is)
from benchmarks.common import median_ms, side_by_side
from gpudl.kernels import attention as K

THREADS = 2
MIB = 2 ** 20

_PEAK_RSS = """
import numpy as np
{setup}

def rss(field):
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith(field))
    return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")                   # reset the peak RSS (VmHWM) to the current RSS
before = rss("VmRSS:")
{call}
print(rss("VmHWM:") - before)
"""
_SETUPS = {
    "gpudl": ("from gpudl.kernels import attention as K\n"
              "q, k, v = (np.random.default_rng(0).standard_normal((1, 8192, 64), "
              "dtype=np.float32) for _ in range(3))\n"
              "K.attention_forward(q[:, :64], k, v)",
              "K.attention_forward(q, k, v)"),
    "torch": (f"import torch\ntorch.set_num_threads({THREADS})\n"
              "q, k, v = (torch.randn(1, 1, 8192, 64) for _ in range(3))\n"
              "torch.nn.functional.scaled_dot_product_attention(q[:, :, :64], k, v)",
              "torch.nn.functional.scaled_dot_product_attention(q, k, v)"),
}


def _sdpa_step(lib, shape, is_causal):
    q, k, v = (lib.randn(*shape).requires_grad_() for _ in range(3))
    gout = lib.randn(*shape)

    attend = lib.nn.functional.scaled_dot_product_attention

    def step():
        attend(q, k, v, is_causal=is_causal).backward(gout)
    return step


def sdpa_fwd_bwd(torch, shape=(4, 4, 256, 32), is_causal=True, repeats=21):
    """((gpudl ms, torch ms) interleaved run by run, (gpudl ms, torch ms) in separate blocks):
    medians after warm-up."""
    ours, theirs = _sdpa_step(gd, shape, is_causal), _sdpa_step(torch, shape, is_causal)
    interleaved = side_by_side(ours, theirs, torch, repeats=repeats)
    separate = (median_ms(ours, repeats), median_ms(theirs, repeats, synchronize=lambda: None))
    return interleaved, separate


def gpudl_forward_peak(n=8192, e=64):
    """Peak bytes NumPy allocates during the CPU twin's forward (inputs excluded)."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, n, e), dtype=np.float32) for _ in range(3))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        K.attention_forward(q, k, v, None, False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def forward_peak_rss(lib):
    """Growth of a fresh process's peak RSS across one SDPA forward at L = S = 8192 (bytes;
    Linux). A short warm-up call first, so lazy imports and thread pools are not counted."""
    setup, call = _SETUPS[lib]
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS.format(setup=setup, call=call)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def compare():
    """Rows (name, gpudl, torch, unit) of the side-by-side measurements."""
    import torch
    torch.set_num_threads(THREADS)
    interleaved, separate = sdpa_fwd_bwd(torch)
    rows = [("causal SDPA fwd+bwd (4, 4, 256, 32), interleaved", *interleaved, "ms"),
            ("causal SDPA fwd+bwd (4, 4, 256, 32), separate blocks", *separate, "ms")]
    rows.append(("SDPA fwd L = S = 8192, E = 64: peak RSS growth", forward_peak_rss("gpudl") / MIB,
                 forward_peak_rss("torch") / MIB, "MiB"))
    rows.append(("  the same, gpudl's NumPy allocations by tracemalloc",
                 gpudl_forward_peak() / MIB, None, "MiB"))
    return rows


def main():
    print(f"{'workload':52s} {'gpudl':>10s} {'torch':>10s} {'ratio':>6s}")
    for name, ours, theirs, unit in compare():
        if theirs is None:
            print(f"{name:52s} {ours:7.2f}{unit:>3s}")
        else:
            print(f"{name:52s} {ours:7.2f}{unit:>3s} {theirs:7.2f}{unit:>3s} "
                  f"{ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
