"""Recurrent layers side by side with PyTorch's CPU build (2 threads each).

    python -m benchmarks.compare_rnn [--large]

Each workload is written once against a library module (``gpudl`` or ``torch``). Medians of 21
runs after 3 warm-up runs, interleaved run by run in one process, and also each library in its own
block of runs (torch's OpenMP workers keep spinning a while after each call and slow whatever runs
right after them). PyTorch's CPU LSTM/GRU run oneDNN's fused RNN primitive by default; the
``no mkldnn`` row turns that off (``torch.backends.mkldnn.flags(enabled=False)``), leaving ATen's
per-step GEMM + pointwise path, the same structure as gpudl's.
"""

import contextlib
import sys

import gpudl as gd
import gpudl.nn  # makes gd.nn available, as torch.nn is
from benchmarks.common import median_ms, side_by_side

THREADS = 2
REPEATS = 21


def _recurrent_step(lib, layer, seq, batch, inp, hidden, backward=True):
    """fwd(+bwd) of ``lib.nn.<layer>(inp, hidden)`` on a (seq, batch, inp) input."""
    module = getattr(lib.nn, layer)(inp, hidden)
    x = lib.randn(seq, batch, inp).requires_grad_()
    gout = lib.randn(seq, batch, hidden)

    def step():
        if backward:
            module(x)[0].backward(gout)
        else:
            with lib.no_grad():
                module(x)
    return step


WORKLOADS = [
    ("LSTM(64->128) fwd+bwd, batch 32 x seq 32", ("LSTM", 32, 32, 64, 128, True)),
    ("LSTM(64->128) fwd (no grad), batch 32 x seq 32", ("LSTM", 32, 32, 64, 128, False)),
    ("GRU(64->128) fwd+bwd, batch 32 x seq 32", ("GRU", 32, 32, 64, 128, True)),
]
LARGE = ("LSTM(256->512) fwd+bwd, batch 64 x seq 64", ("LSTM", 64, 64, 256, 512, True))


def _torch_mode(torch, mkldnn):
    return contextlib.nullcontext() if mkldnn else torch.backends.mkldnn.flags(enabled=False)


def compare(repeats=REPEATS, only=None, large=False):
    """Rows (workload, gpudl ms, torch ms, how) of the side-by-side measurements. ``large`` adds
    the (64, 64, 256, 512) LSTM, a GPU-sized workload (minutes on 2 CPU cores)."""
    import torch
    torch.set_num_threads(THREADS)
    rows = []
    for name, args in WORKLOADS + ([LARGE] if large else []):
        if only and only.lower() not in name.lower():
            continue
        gd.manual_seed(0)
        torch.manual_seed(0)
        ours, theirs = _recurrent_step(gd, *args), _recurrent_step(torch, *args)
        rows.append((name, *side_by_side(ours, theirs, torch, repeats), "interleaved"))
        blocked = median_ms(ours, repeats)
        with _torch_mode(torch, True):
            rows.append((name, blocked, median_ms(theirs, repeats), "blocks"))
        if args[0] == "LSTM" and args[-1]:
            with _torch_mode(torch, False):
                rows.append((name, median_ms(ours, repeats), median_ms(theirs, repeats),
                             "blocks, torch no mkldnn"))
    return rows


def main():
    print(f"{'workload':48s} {'how':24s} {'gpudl ms':>9s} {'torch ms':>9s} {'ratio':>6s}")
    for name, ours, theirs, how in compare(large="--large" in sys.argv):
        print(f"{name:48s} {how:24s} {ours:9.2f} {theirs:9.2f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
