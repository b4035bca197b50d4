"""Where an eager training step's host time goes: cProfile over the steps of graph_steps.py.

    python -m benchmarks.host_profile                     # gpudl's eager steps, on its device
    python -m benchmarks.host_profile --only LeNet --top 30

On a GPU an eager step is host-bound (benchmarks/RESULTS.md: LeNet-5's step spends 6.2 of its
6.4 ms on the host, PyTorch's 2.1 in all). This runs each model's eager gpudl step ``--steps``
times after warm-up under cProfile and prints the functions that hold the most time themselves
(``tottime``), with their callers folded in by file: Numba's dispatcher, CuPy's kernel launches
and gpudl's autograd show as what they are. benchmarks/kernel_profile.py gives the device's side.
"""

import argparse
import cProfile
import io
import pstats
import sys

import gpudl
from benchmarks import graph_steps, workloads
from benchmarks.common import sync


def profile_step(parts, steps, top, warmup=3):
    """The ``top`` functions by own time over ``steps`` eager steps, as pstats prints them."""
    step = workloads.train_step(*parts(gpudl, gpudl.device()))
    for _ in range(warmup):
        step()
    sync()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    sync()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="steps whose name contains this text")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for name, parts in graph_steps.STEPS:
        if args.only and args.only.lower() not in name.lower():
            continue
        gpudl.manual_seed(0)
        print(f"== {name}, gpudl eager on {gpudl.device()}, {args.steps} steps", flush=True)
        print(profile_step(parts, args.steps, args.top), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
