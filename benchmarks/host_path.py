"""Host microseconds of single cuda op calls, offline: the strict simulator with launches stubbed.

    NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda PYTHONPATH=$PWD python -m benchmarks.host_path
    ... python -m benchmarks.host_path --profile "max_pool2d fwd+bwd" --top 30   # cProfile a row

On a GPU a small op is host-bound (benchmarks/RESULTS.md, "Third run on a GPU": max_pool2d 2x2
forward 0.190 ms against torch's 0.063 with ~10 us of kernel). What this measures is gpudl's own
Python around the kernels of one call: argument checks, planning, output allocation, Tensor and
autograd-node creation, the backward walk. It runs the cuda device's code path under Numba's
simulator, where cuda arrays are ``gpudl.sim_device.SimDeviceArray`` (NumPy arrays that refuse
host data), with every Numba launch (``kernels.launch.launch``, as each kernel module imported
it) replaced by a no-op: the kernels do not run, everything else of the call does. Shapes are
tiny, so the NumPy work the simulator does for CuPy's own kernels (fills, adds, sums) costs ~1 us
each. Three figures per row:

- ``calls``: Python function calls per call (``sys.setprofile``), exact: compare versions by
  it; beside it those neither in sim_device.py nor below it (on a GPU, CuPy's array methods are
  compiled code: that column is about what would run as Python there);
- ``host us``: the median over blocks of ~2 ms of the mean time per call (and the least block);
  SimDeviceArray's ufunc/function checks cost a few us per CuPy-like op that CuPy does not
  spend in Python, while CuPy spends ~5-10 us of host time per kernel it launches (allocation
  ~2-4 us) that NumPy does not: the absolute figures are not a GPU's, the differences are;
- ``kernels``: what a GPU would launch per call, as benchmarks.kernel_count counts it (Numba
  kernels and CuPy kernels, fills and copies): each costs host time on a GPU (Numba ~79 us today,
  CuPy ~5-10 us), so a kernel fewer is host time saved that this simulator cannot time;
- ``syncs``: device reads per call (gpudl.cuda.sync_count, with the launches stubbed): any is a
  bug on a GPU (a stalled host).

It refuses nothing: on the CPU device it times the CPU path (and says so); on a GPU it times the
real CuPy path with only the Numba launches stubbed (no kernel counts there: kernel_count's
hooks fake CuPy's kernels), which gives the host time of a call less its Numba launches.
"""

import argparse
import cProfile
import collections
import io
import pstats
import statistics
import sys
import timeit

import numpy as np

import gpudl
from gpudl import backend

BLOCK_S = 0.002


def rows(device):
    """{name: callable}: the single-call rows, on tiny tensors."""
    F = gpudl.nn.functional
    gpudl.manual_seed(0)

    def randn(*shape, grad=False):
        x = gpudl.randn(*shape, device=device)
        return x.requires_grad_() if grad else x

    x = randn(2, 3, 8, 8)
    xg = randn(2, 3, 8, 8, grad=True)
    gy = randn(2, 3, 4, 4)
    image, weight, bias = randn(2, 3, 8, 8), randn(4, 3, 3, 3), randn(4)
    q, k, v = randn(2, 2, 8, 16), randn(2, 2, 8, 16), randn(2, 2, 8, 16)

    def max_fwd_bwd():
        F.max_pool2d(xg, 2).sum().backward()

    def max_fwd_bwd_g():
        F.max_pool2d(xg, 2).backward(gy)

    def avg_fwd_bwd():
        F.avg_pool2d(xg, 2).sum().backward()

    def sum_bwd():
        xg.sum().backward()

    return {
        "max_pool2d fwd": lambda: F.max_pool2d(x, 2),
        "max_pool2d fwd (x requires grad)": lambda: F.max_pool2d(xg, 2),
        "max_pool2d fwd+bwd (sum)": max_fwd_bwd,
        "max_pool2d fwd+bwd (backward(g))": max_fwd_bwd_g,
        "avg_pool2d fwd": lambda: F.avg_pool2d(x, 2),
        "avg_pool2d fwd+bwd (sum)": avg_fwd_bwd,
        "x.sum().backward() (no pool)": sum_bwd,
        "conv2d fwd 3x3 p1": lambda: F.conv2d(image, weight, bias, padding=1),
        "sdpa fwd (2,2,8,16)": lambda: F.scaled_dot_product_attention(q, k, v),
    }


def calls_by_origin(fn):
    """(all Python calls, those neither in the simulator's device arrays nor below them) of one
    call of ``fn`` after one untimed call. The second figure is what would run as Python on a
    GPU too: the simulator's SimDeviceArray checks and the NumPy Python they reach stand for
    CuPy's compiled (Cython) array methods there."""
    from benchmarks.host_overhead import _settle_threads
    fn()
    _settle_threads()           # no load re-measurement (every 0.2 s) inside the counted call
    counts = collections.Counter()
    inside = []                 # the sim_device frames being run (calls below them are theirs)

    def profile(frame, event, arg):
        if event == "call":
            sim = frame.f_code.co_filename.endswith("sim_device.py")
            counts["sim" if sim or inside else "rest"] += 1
            if sim:
                inside.append(frame)
        elif event == "return" and inside and inside[-1] is frame:
            inside.pop()

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(counts.values()) - 1, counts["rest"] - 1      # fn itself not counted


def syncs(fn):
    """Device reads/synchronisations (gpudl.cuda.sync_count) per call of ``fn``."""
    fn()
    before = gpudl.cuda.sync_count()
    fn()
    return gpudl.cuda.sync_count() - before


def stub_launches():
    """Replace every kernel module's ``launch`` by a no-op (returns the restore function)."""
    from gpudl.kernels import launch as launch_module
    real = launch_module.launch
    patched = [m for m in list(sys.modules.values()) if getattr(m, "launch", None) is real]

    def nothing(*args, **kwargs):
        return None
    for module in patched:
        module.launch = nothing

    def restore():
        for module in patched:
            module.launch = real
    return restore


def timed(fn, blocks=40):
    """(median, least) microseconds per call over ``blocks`` blocks of ~BLOCK_S (timeit, the
    garbage collector left on as in a training loop)."""
    timer = timeit.Timer(fn, "import gc; gc.enable()")
    timer.repeat(1, 5)                                      # warm-up
    number = max(1, int(BLOCK_S / max(timer.timeit(1), 1e-9)))
    means = [t / number * 1e6 for t in timer.repeat(blocks, number)]
    return statistics.median(means), min(means)


def kernels(fn):
    """Kernels a GPU would launch in one call of ``fn`` (after a warm-up call)."""
    from benchmarks.kernel_count import Counter, counting_hooks
    counter = Counter()     # (the kernel modules imported before: each keeps its launch)
    with counting_hooks(counter), np.errstate(all="ignore"):
        counter.on = False
        fn()
        counter.on = True
        fn()
        counter.on = False
    return sum(counter.kernels.values()), dict(counter.kernels)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_path",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="rows whose name contains this text")
    parser.add_argument("--profile", help="cProfile the rows whose name contains this text")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--kernels", action="store_true", help="list each row's kernels")
    args = parser.parse_args(argv)
    from benchmarks.kernel_count import _import_kernel_modules
    _import_kernel_modules()        # before any patching: each module binds launch at import
    device = gpudl.device()
    if not backend.SIM_DEVICE_ARRAYS:
        print(f"(device {device}, not the strict simulator: this times the {device} path)")
    chosen = {n: f for n, f in rows(device).items()
              if not args.only or args.only.lower() in n.lower()}
    counted = backend.SIM_DEVICE_ARRAYS     # kernel_count's hooks fake CuPy: the simulator only
    if counted:
        counts = {n: kernels(f) for n, f in chosen.items()}
    restore = stub_launches()
    try:
        if args.profile:
            for name, fn in chosen.items():
                if args.profile.lower() not in name.lower():
                    continue
                for _ in range(5):
                    fn()
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(200):
                    fn()
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
                print(f"== {name} (200 calls)\n{text.getvalue()}")
            return
        print(f"| row ({device}, launches stubbed) | calls | of them not sim | "
              "host us median | least | kernels | syncs |")
        print("|---|---|---|---|---|---|---|")
        for name, fn in chosen.items():
            calls, own = calls_by_origin(fn)
            median, least = timed(fn, args.blocks)
            n = counts[name][0] if counted else ""
            print(f"| {name} | {calls} | {own} | {median:.1f} | {least:.1f} | {n} | "
                  f"{syncs(fn)} |", flush=True)
            if args.kernels and counted:
                print("    ", counts[name][1])
    finally:
        restore()


if __name__ == "__main__":
    main()
