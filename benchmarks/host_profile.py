"""Where an eager training step's host time goes: cProfile over the steps of graph_steps.py.

    python -m benchmarks.host_profile                     # gpudl's eager steps, on its device
    python -m benchmarks.host_profile --only LeNet --top 30
    python -m benchmarks.host_profile --ops "max_pool2d 2x2 fwd (64"   # benchmarks.compare rows

On a GPU an eager step is host-bound (benchmarks/RESULTS.md: LeNet-5's step spends 6.2 of its
6.4 ms on the host, PyTorch's 2.1 in all). This runs each model's eager gpudl step ``--steps``
times after warm-up under cProfile and prints the functions that hold the most time themselves
(``tottime``), with their callers folded in by file: Numba's dispatcher, CuPy's kernel launches
and gpudl's autograd show as what they are. benchmarks/kernel_profile.py gives the device's side.
``--ops`` profiles rows of benchmarks.compare instead (single ops such as the pooling rows, whose
gpudl time was 5x torch's on the second GPU run with a kernel that should take a tenth of it).
"""

import argparse
import cProfile
import io
import pstats
import sys

import gpudl
from benchmarks import graph_steps, workloads
from benchmarks.common import sync


def profile_step(step, steps, top, warmup=3):
    """The ``top`` functions by own time over ``steps`` calls of ``step`` after warm-up, as
    pstats prints them."""
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
    parser.add_argument("--ops", help="profile the benchmarks.compare rows whose name contains "
                        "this text (| separates alternatives) instead of the training steps")
    args = parser.parse_args(argv)
    device = gpudl.device()
    if args.ops:
        from benchmarks import compare
        wanted = [part.strip().lower() for part in args.ops.split("|")]
        chosen = [(name, lambda build=build: build(gpudl, device))
                  for name, devices, build in compare.WORKLOADS
                  if device in devices and any(w in name.lower() for w in wanted)]
    else:
        chosen = [(name, lambda parts=parts: workloads.train_step(*parts(gpudl, device)))
                  for name, parts in graph_steps.STEPS
                  if not args.only or args.only.lower() in name.lower()]
    for name, make in chosen:
        gpudl.manual_seed(0)
        print(f"== {name}, gpudl eager on {device}, {args.steps} calls", flush=True)
        print(profile_step(make(), args.steps, args.top), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
