"""Whole training steps, eager and replayed from a CUDA graph: time per step and host time.

    python -m benchmarks.graph_steps                  # on the device gpudl runs on
    python -m benchmarks.graph_steps --markdown out.md

For LeNet-5 (batch 64, 28x28), the sunspots LSTM step and a 2-layer transformer step, without
and with dropout 0.1 (benchmarks/workloads.py), each of gpudl eager, gpudl graphed, PyTorch
eager and PyTorch graphed (``torch.cuda.graph`` whole-step capture, on a GPU only): the median
time of one step with the device synchronised after it, and the median host time of the call
alone (what the Python side costs; a graph replay is one launch). On the CPU "graphed" is gpudl's recorded call list
(gpudl.graph_recorder), whose gain is the Python overhead it skips.
"""

import argparse
import functools
import statistics
import sys
import time

try:    # before gpudl (see benchmarks/compare.py)
    import torch
except ImportError:
    torch = None

import gpudl  # noqa: E402
from benchmarks import workloads  # noqa: E402
from benchmarks.common import sync, torch_sync  # noqa: E402

STEPS = (("LeNet-5 SGD-momentum, batch 64 x 1x28x28", workloads.lenet_parts),
         ("sunspots LSTM Adam, batch 32 x seq 12", workloads.sunspots_parts),
         ("transformer 2 layers AdamW, batch 32 x seq 32", workloads.transformer_parts),
         # gpudl's graphed dropout draws from device-side states (kernels/dropout_cuda.py)
         ("transformer 2 layers dropout 0.1 AdamW, batch 32 x seq 32",
          functools.partial(workloads.transformer_parts, dropout=0.1)))


SPLIT_K_OFF = "gpudl graphed, small GEMMs without split-K"     # a GPU's row, session 18


def _times(fn, synchronize, repeats, warmup=3):
    """(median ms per synchronised step, median host ms of the call alone)."""
    for _ in range(warmup):
        fn()
    synchronize()
    total, host = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        queued = time.perf_counter()
        synchronize()
        total.append(queued - start + time.perf_counter() - queued)
        host.append(queued - start)
    return 1e3 * statistics.median(total), 1e3 * statistics.median(host)


def _variants(device):
    """(label, library, synchronise, builder(parts_fn) -> step)."""
    gpu = device == "cuda"

    def graphed(lib):
        # on a GPU Adam's step count must live on the device (torch's capturable=True)
        return lambda parts: workloads.graphed_step(lib, parts(lib, device, gpu))

    def eager(lib):
        return lambda parts: workloads.train_step(*parts(lib, device))

    def graphed_without_split_k(parts):
        # capture_blas.SMALL_GEMM_WORKSPACE_BYTES (off by default until this row says): small
        # products captured with no cuBLAS workspace, so no split-K reductions
        from gpudl import capture_blas
        saved = capture_blas.SMALL_GEMM_WORKSPACE_BYTES
        capture_blas.SMALL_GEMM_WORKSPACE_BYTES = 0
        try:
            return graphed(gpudl)(parts)
        finally:
            capture_blas.SMALL_GEMM_WORKSPACE_BYTES = saved

    rows = [("gpudl eager", gpudl, sync, eager(gpudl)),
            ("gpudl graphed", gpudl, sync, graphed(gpudl))]
    if torch is not None:
        rows.append(("torch eager", torch, lambda: torch_sync(torch), eager(torch)))
        if gpu:
            rows.append(("torch graphed", torch, lambda: torch_sync(torch), graphed(torch)))
    if gpu:
        rows.append((SPLIT_K_OFF, gpudl, sync, graphed_without_split_k))
    return rows


def run(device, repeats):
    """The table, a row per (step, variant); each step's rows end with the ratios issue 14's
    targets are stated in (gpudl graphed against torch eager and torch graphed)."""
    lines = ["| step | variant | ms per step | host ms per step |", "|---|---|---|---|"]
    for name, parts in STEPS:
        ms = {}
        for label, lib, synchronize, build in _variants(device):
            try:
                lib.manual_seed(0)
                ms[label], host = _times(build(parts), synchronize, repeats)
                line = f"| {name} | {label} | {ms[label]:.3f} | {host:.3f} |"
            except Exception as exc:  # noqa: BLE001 - report the row, keep going
                line = f"| {name} | {label} | failed: {type(exc).__name__}: {exc} |"[:220]
            print(line, flush=True)
            lines.append(line)
        if device == "cpu":
            lines.append(f"| {name} | torch graphed | n/a on CPU | |")
        ratios = [f"{ms['gpudl graphed'] / ms[theirs]:.2f}x {theirs}"
                  for theirs in ("torch eager", "torch graphed")
                  if "gpudl graphed" in ms and theirs in ms]
        if ratios:
            lines.append(f"| {name} | gpudl graphed / | {', '.join(ratios)} | |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def table_main(prog, description, table, argv=None):
    """The command line of a step-timing table: ``--repeats``, ``--markdown FILE``;
    ``table(repeats)`` returns the markdown rows."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = (f"device {gpudl.device()}, median of {args.repeats} steps after 3 warm-up steps\n\n"
            + table(args.repeats))
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


def main(argv=None):
    return table_main("python -m benchmarks.graph_steps", __doc__,
                      lambda repeats: run(gpudl.device(), repeats), argv)


if __name__ == "__main__":
    sys.exit(main())
