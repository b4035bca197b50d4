"""Where a workload's device time goes: every kernel and copy it runs, recorded by CUPTI.

    python -m benchmarks.kernel_profile                       # on a GPU
    python -m benchmarks.kernel_profile --only LeNet --markdown out.md

PyTorch's profiler (Kineto over CUPTI) records every kernel the process launches, whichever
library launched it: gpudl's Numba and CuPy kernels as much as cuDNN's and cuBLAS's. Each
workload (the training steps of benchmarks/graph_steps.py, eager and graphed, and the conv,
pool and attention rows of benchmarks/compare.py) runs ``--steps`` times inside the profiler
after warm-up, for gpudl and for PyTorch. Per step the table gives the wall time, the kernels'
summed time, how many kernels and copies ran, and the kernels that took the most time, grouped
by name. Wall time minus kernel time is what the device spent idle: launch latency and the host.
Where that idle time lies comes from the activities' timestamps: the device's idle time between
one activity's end and the next one's start, per step, and the pairs of kernels with the most
idle time between them (session 18's run: ~3.4 us between each of a graphed LeNet step's 58
kernels against ~0.7 us in torch's graph, with no way to tell which kernels).
Issue 12's "if a target is missed, the profile that says why" is this table.

Needs a GPU: on a CPU CUPTI has nothing to record, and the script says so and stops.
"""

import argparse
import collections
import re
import sys
import time

try:    # before gpudl (see benchmarks/compare.py)
    import torch
except ImportError:
    torch = None

import gpudl  # noqa: E402
from benchmarks import compare, graph_steps  # noqa: E402
from benchmarks.common import sync, torch_sync  # noqa: E402

TOP = 8                     # kernels listed per workload and library
TOP_GAPS = 5                # kernel pairs listed by the idle time between them
COMPARE_ROWS = ("conv2d fwd (64,64,56,56)", "conv2d fwd+bwd (64,64,56,56)",
                "conv2d fwd+bwd (128,128,28,28)", "7x7 s2 p3", "max_pool2d 2x2 fwd (",
                "max_pool2d 2x2 fwd+bwd (",
                "SDPA fwd (4,8,1024,64)", "SDPA fwd+bwd (4,8,1024,64)")
# the 3x3 rows again through the direct sum (conv_cuda): their default since session 24 is the
# fused Winograd kernel (kernels/conv_winograd_fused_cuda.py), this the before
# the causal SDPA forward again with its key split off (kernels/attention_tc_cuda.py
# ``_key_splits``, session 24): the before
SPLIT_ROWS = ("causal SDPA fwd (4,8,1024,64)",)
WINOGRAD_ROWS = ("conv2d fwd (64,64,56,56)", "conv2d fwd+bwd (128,128,28,28)")


def short_name(name):
    """A kernel's name as a reader knows it: Numba's mangled ``_ZN5gpudl7kernels9pool_cuda...
    7max_fwdB2v1...E5Array...`` becomes ``pool_cuda.max_fwd``; other names are cut at 70
    characters (CuPy's ``cupy_multiply__float_float_float``, cuBLAS's ``sm90_xmma_gemm_...``)."""
    if not name.startswith("_ZN"):
        return name[:70]
    parts, i = [], 3
    while i < len(name) and (name[i].isdigit() or name[i] == "B"):
        tag = name[i] == "B"                     # an ABI tag: B<length><text>, not a name part
        j = i + tag
        digits = re.match(r"\d+", name[j:])
        if not digits:
            break
        start = j + len(digits.group())
        text = name[start:start + int(digits.group())]
        if not tag and not text.startswith("_3clocals"):
            parts.append(text)
        i = start + int(digits.group())
    # factories and closures (``_make_kernels``) say nothing: the module and the kernel do
    named = [part for k, part in enumerate(parts) if k == len(parts) - 1 or part[0] != "_"]
    return ".".join(named[-2:]) if named else name[:70]


def kernel_table(records, steps, wall_ms):
    """The summary and top rows of one profiled run. ``records``: (name, microseconds, is a
    copy or fill) for every device activity over ``steps`` steps of ``wall_ms`` each."""
    by_name = collections.defaultdict(lambda: [0, 0.0])
    kernels = copies = 0
    busy_us = 0.0
    for name, us, is_copy in records:
        copies += is_copy
        kernels += not is_copy
        busy_us += us
        entry = by_name[short_name(name)]
        entry[0] += 1
        entry[1] += us
    top = sorted(by_name.items(), key=lambda item: -item[1][1])[:TOP]
    summary = {"wall_ms": wall_ms, "busy_ms": busy_us / 1e3 / steps,
               "kernels": kernels / steps, "copies": copies / steps}
    rows = [(name, calls / steps, us / steps) for name, (calls, us) in top]
    return summary, rows


def gap_table(timeline, steps):
    """The device's idle time between activities. ``timeline``: (name, start us, end us) of
    every device activity over ``steps`` steps. Returns (idle us a step, rows): rows are
    (kernel before -> kernel after, times a step, mean idle us) for the TOP_GAPS pairs with the
    most idle time between them. Activities that overlap (other streams) leave no gap."""
    by_pair = collections.defaultdict(lambda: [0, 0.0])
    idle = 0.0
    ordered = sorted(timeline, key=lambda item: item[1])
    for (before, _, _), (after, start, _), end in zip(
            ordered, ordered[1:], _running_max(end for _, _, end in ordered)):
        gap = start - end
        if gap > 0:
            idle += gap
            entry = by_pair[f"{short_name(before)} -> {short_name(after)}"]
            entry[0] += 1
            entry[1] += gap
    top = sorted(by_pair.items(), key=lambda item: -item[1][1])[:TOP_GAPS]
    return idle / steps, [(pair, n / steps, us / n) for pair, (n, us) in top]


def _running_max(values):
    best = float("-inf")
    for value in values:
        best = max(best, value)
        yield best


def _device_records(profile):
    """(name, us, is a copy or fill) for each device activity the profiler recorded, and
    (name, start us, end us) of each."""
    from torch.autograd import DeviceType
    out, timeline = [], []
    for event in profile.events():
        if event.device_type != DeviceType.CUDA:
            continue
        name = event.name
        copy = name.startswith(("Memcpy", "Memset")) or name.startswith("[memory]")
        out.append((name, event.time_range.elapsed_us(), copy))
        timeline.append((name, event.time_range.start, event.time_range.end))
    return out, timeline


def profile_run(step, synchronize, steps, warmup=3):
    """(summary, top rows, idle us a step, top gaps) of ``steps`` calls of ``step`` after
    ``warmup``."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(warmup):
        step()
    synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as recorded:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        wall_ms = 1e3 * (time.perf_counter() - start) / steps
    records, timeline = _device_records(recorded)
    return kernel_table(records, steps, wall_ms) + gap_table(timeline, steps)


def _with(module, name, value, step):
    """``step`` with ``module.name`` set to ``value`` for the call."""
    def changed_step():
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            step()
        finally:
            setattr(module, name, saved)
    return changed_step


def _direct(step):
    """``step`` with the fused Winograd kernel turned off for the call: the 3x3 stride-1
    convolutions run conv_cuda's direct sum."""
    from gpudl.kernels import conv_winograd_fused_cuda as fused
    return _with(fused, "ENABLED", False, step)


def _unsplit(step):
    """``step`` with the causal forward's key split off for the call (every query block's key
    tiles in one block, as before session 24)."""
    from gpudl.kernels import attention_tc_cuda
    return _with(attention_tc_cuda, "SPLIT_WAVE", 0, step)


def _workloads(only):
    """(name, step builder(), synchronise) for every profiled workload: the compare rows first
    (issue 12's open targets), then the training steps (issue 14's, met in session 20)."""
    out = []
    for name, devices, build in compare.WORKLOADS:
        if "cuda" in devices and any(key in name for key in COMPARE_ROWS):
            out.append((f"{name}, gpudl", lambda b=build: b(gpudl, "cuda"), sync))
            if any(key in name for key in WINOGRAD_ROWS):
                out.append((f"{name}, gpudl direct sum",
                             lambda b=build: _direct(b(gpudl, "cuda")), sync))
            if name.startswith(SPLIT_ROWS):
                out.append((f"{name}, gpudl unsplit",
                             lambda b=build: _unsplit(b(gpudl, "cuda")), sync))
            out.append((f"{name}, torch", lambda b=build: b(torch, "cuda"),
                        lambda: torch_sync(torch)))
    for step_name, parts in graph_steps.STEPS:
        for label, lib, synchronize, build in graph_steps._variants("cuda"):
            if label == graph_steps.SPLIT_K_OFF and not step_name.startswith("LeNet"):
                continue        # its kernels where split-K was seen; the step's time budget
            out.append((f"{step_name}, {label}", lambda b=build, p=parts: b(p), synchronize))
    return [w for w in out if not only or only.lower() in w[0].lower()]


def _format(name, summary, rows, idle_us, gaps):
    lines = [f"**{name}**: {summary['wall_ms']:.3f} ms a step, kernels busy "
             f"{summary['busy_ms']:.3f} ms ({summary['kernels']:.0f} kernels, "
             f"{summary['copies']:.0f} copies or fills a step), device idle between them "
             f"{idle_us / 1e3:.3f} ms a step", "",
             "| kernel | calls a step | us a step |", "|---|---|---|"]
    lines += [f"| `{kernel}` | {calls:g} | {us:.1f} |" for kernel, calls, us in rows]
    lines += ["", "| idle between | times a step | mean idle us |", "|---|---|---|"]
    lines += [f"| `{pair}` | {n:g} | {us:.1f} |" for pair, n, us in gaps]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="workloads whose name contains this text")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args(argv)
    if torch is None or gpudl.device() != "cuda" or not torch.cuda.is_available():
        print("benchmarks.kernel_profile needs a GPU, PyTorch with CUDA and GPUDL_DEVICE=cuda "
              "(CUPTI records device activity)")
        return 0
    torch.backends.cudnn.benchmark = True
    compare._set_tf32(torch, False)        # strict fp32, as compare's first mode
    out = []
    for name, build, synchronize in _workloads(args.only):
        try:
            gpudl.manual_seed(0)
            torch.manual_seed(0)
            text = _format(name, *profile_run(build(), synchronize, args.steps))
        except Exception as exc:  # noqa: BLE001 - report the workload, keep going
            text = f"**{name}**: failed: {type(exc).__name__}: {exc}"[:240] + "\n"
        print(text, flush=True)
        out.append(text)
        if args.markdown:                  # after each workload: a time limit keeps the rest
            with open(args.markdown, "w") as f:
                f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
