"""Side by side: the same workloads in gpudl and in PyTorch, interleaved in one process.

    python -m benchmarks.compare                      # CPU workloads, a table of medians
    python -m benchmarks.compare --device cuda        # GPU workloads vs PyTorch + cuDNN
    python -m benchmarks.compare --only conv --markdown out.md
    python -m benchmarks.compare --grid --markdown out.md   # the CPU size grid (benchmarks/grid.py)

Both libraries speak the same dialect, so each workload is written ONCE against a library module
``lib`` (``gpudl`` or ``torch``) and built for each. On a GPU PyTorch runs twice: strict fp32
(``allow_tf32 = False``) and its defaults (TF32 tensor cores for cuDNN convolutions and LSTMs).
"""

import argparse
import pathlib
import platform
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np

try:    # before gpudl, which defaults OMP_WAIT_POLICY to PASSIVE: PyTorch keeps its own defaults
    import torch
except ImportError:
    torch = None

import gpudl  # noqa: E402
from benchmarks import workloads  # noqa: E402
from benchmarks.common import side_by_side  # noqa: E402
from benchmarks.workloads import randn as _randn  # noqa: E402
from benchmarks.workloads import train_step as _train_step  # noqa: E402

WORKLOADS = []     # (name, devices, build(lib, device) -> step callable)
_ROOT = pathlib.Path(__file__).resolve().parents[1]


def workload(name, devices=("cpu",)):
    def register(build):
        WORKLOADS.append((name, devices, build))
        return build
    return register


@workload("MLP 32-64-10 SGD step, batch 16", ("cpu", "cuda"))
def mlp_step(lib, device):
    nn = lib.nn
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    opt = lib.optim.SGD(model.parameters(), lr=0.01)
    x, y = _randn(lib, device, 16, 32), lib.randint(0, 10, (16,), device=device)
    return _train_step(model, nn.CrossEntropyLoss(), opt, x, y)


@workload("LeNet-5 SGD-momentum step, batch 64 x 1x28x28", ("cpu", "cuda"))
def lenet_step(lib, device):
    return workloads.lenet_step(lib, device)


def _conv(lib, device, n, c, hw, k, ks, stride=1, padding=1):
    F = lib.nn.functional
    x = _randn(lib, device, n, c, hw, hw, grad=True)
    w = _randn(lib, device, k, c, ks, ks, grad=True)
    b = _randn(lib, device, k, grad=True)

    def step():
        F.conv2d(x, w, b, stride=stride, padding=padding).sum().backward()
    return step


@workload("conv2d fwd+bwd (32,16,32,32) x 32 3x3 p1", ("cpu",))
def conv_small(lib, device):
    return _conv(lib, device, 32, 16, 32, 32, 3)


@workload("conv2d fwd+bwd (64,64,56,56) x 64 3x3 p1", ("cuda",))
def conv_56(lib, device):
    return _conv(lib, device, 64, 64, 56, 64, 3)


@workload("conv2d fwd+bwd (128,128,28,28) x 128 3x3 p1", ("cuda",))
def conv_28(lib, device):
    return _conv(lib, device, 128, 128, 28, 128, 3)


@workload("conv2d fwd+bwd (32,3,224,224) x 64 7x7 s2 p3", ("cuda",))
def conv_stem(lib, device):
    return _conv(lib, device, 32, 3, 224, 64, 7, stride=2, padding=3)


def _pool(lib, device, shape, kind):
    F = lib.nn.functional
    x = _randn(lib, device, *shape, grad=True)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d

    def step():
        pool(x, 2).sum().backward()
    return step


@workload("max_pool2d 2x2 fwd+bwd (32,16,32,32)", ("cpu",))
def maxpool_small(lib, device):
    return _pool(lib, device, (32, 16, 32, 32), "max")


@workload("max_pool2d 2x2 fwd+bwd (64,64,56,56)", ("cuda",))
def maxpool_big(lib, device):
    return _pool(lib, device, (64, 64, 56, 56), "max")


@workload("avg_pool2d 2x2 fwd+bwd (64,64,56,56)", ("cuda",))
def avgpool_big(lib, device):
    return _pool(lib, device, (64, 64, 56, 56), "avg")


def _lstm(lib, device, seq, batch, inp, hidden):
    lstm = lib.nn.LSTM(inp, hidden).to(device)
    x = _randn(lib, device, seq, batch, inp, grad=True)

    def step():
        out, (h, c) = lstm(x)
        (out.sum() + h.sum() + c.sum()).backward()
    return step


@workload("LSTM(64->128) fwd+bwd, batch 32 x seq 32", ("cpu", "cuda"))
def lstm_small(lib, device):
    return _lstm(lib, device, 32, 32, 64, 128)


@workload("LSTM(256->512) fwd+bwd, batch 64 x seq 64", ("cuda",))
def lstm_big(lib, device):
    return _lstm(lib, device, 64, 64, 256, 512)


def _attention(lib, device, shape, causal):
    F = lib.nn.functional
    q, k, v = (_randn(lib, device, *shape, grad=True) for _ in range(3))

    def step():
        F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()
    return step


@workload("causal SDPA fwd+bwd (4,4,256,32)", ("cpu",))
def attention_small(lib, device):
    return _attention(lib, device, (4, 4, 256, 32), True)


@workload("SDPA fwd+bwd (4,8,1024,64)", ("cuda",))
def attention_big(lib, device):
    return _attention(lib, device, (4, 8, 1024, 64), False)


@workload("causal SDPA fwd+bwd (4,8,1024,64)", ("cuda",))
def attention_big_causal(lib, device):
    return _attention(lib, device, (4, 8, 1024, 64), True)


def _isolated_ms(library, device, name, repeats):
    """Median ms of one workload for one library, alone in a fresh interpreter: no other
    library's threads in the process (the alternating numbers include that interference)."""
    code = (f"import sys, {library} as lib; sys.path.insert(0, {repr(str(_ROOT))});"
            "from benchmarks.compare import WORKLOADS; from benchmarks.common import median_ms;"
            f"build = next(b for n, _, b in WORKLOADS if n == {name!r});"
            f"lib.manual_seed(0); print(median_ms(build(lib, {device!r}), {repeats}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return float(out.stdout.split()[-1])


def _set_tf32(torch, enabled):
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = False     # PyTorch's default either way


def _grid_workloads():
    from benchmarks.grid import GRID
    return [(name, ("cpu",), lambda lib, device, build=build: build(lib)) for name, build in GRID]


def run(device, only=None, repeats=21, isolated=False, grid=False):
    """Rows of (workload, gpudl ms, {torch mode: ms})."""
    if torch is None:
        raise SystemExit("benchmarks.compare needs PyTorch: pip install -e '.[bench]'")
    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = ("fp32", "default") if device == "cuda" else ("default",)
    rows = []
    for name, devices, build in (_grid_workloads() if grid else WORKLOADS):
        if device not in devices or (only and only.lower() not in name.lower()):
            continue
        try:
            if isolated:
                rows.append((name, _isolated_ms("gpudl", device, name, repeats),
                             {"default": _isolated_ms("torch", device, name, repeats)}))
                print(_format_row(rows[-1], modes), flush=True)
                continue
            gpudl.manual_seed(0)
            ours = build(gpudl, device)
            torch.manual_seed(0)
            theirs = {}
            gd_ms = None
            for mode in modes:
                if device == "cuda":
                    _set_tf32(torch, mode == "default")
                ms, theirs[mode] = side_by_side(ours, build(torch, device), torch, repeats)
                gd_ms = ms if gd_ms is None else min(gd_ms, ms)
            rows.append((name, gd_ms, theirs))
        except Exception as exc:   # report, keep going: one missing op must not hide the rest
            rows.append((name, None, {"error": f"{type(exc).__name__}: {exc}"[:120]}))
        print(_format_row(rows[-1], modes), flush=True)
    return rows, modes


def _format_row(row, modes):
    name, ours, theirs = row
    if ours is None:
        return f"| {name} | failed: {theirs['error']} |"
    cells = [f"{ours:.3f}"]
    for mode in modes:
        cells += [f"{theirs[mode]:.3f}", f"{ours / theirs[mode]:.2f}x"]
    return f"| {name} | " + " | ".join(cells) + " |"


def table(rows, modes, device):
    header = ["workload", "gpudl ms"]
    for mode in modes:
        label = "torch" if mode == "default" and device == "cpu" else f"torch {mode}"
        header += [f"{label} ms", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_format_row(r, modes) for r in rows]
    ratios = [r[1] / r[2][modes[-1]] for r in rows if r[1] is not None]
    if ratios:
        lines.append(f"\ngeometric mean ratio (vs torch {modes[-1]}): "
                     f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x over {len(ratios)} workloads")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--device", default=gpudl.device(), choices=("cpu", "cuda"))
    parser.add_argument("--only", help="run workloads whose name contains this text")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--isolated", action="store_true",
                        help="time each library alone in a fresh process (CPU)")
    parser.add_argument("--grid", action="store_true",
                        help="the CPU size grid of benchmarks/grid.py instead of the workloads")
    args = parser.parse_args(argv)
    if args.device != gpudl.device():
        parser.error(f"gpudl runs on {gpudl.device()} here; set GPUDL_DEVICE={args.device}")
    if args.grid and (args.device != "cpu" or args.isolated):
        parser.error("--grid runs on the cpu device, interleaved in one process")
    rows, modes = run(args.device, args.only, args.repeats, args.isolated, args.grid)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"{stamp}, {platform.processor() or platform.machine()}, device {args.device}, "
            + ("each library alone in a fresh process" if args.isolated else
               "the libraries alternating in blocks of 4 in one process")
            + f", median of {args.repeats}+ runs\n\n" + table(rows, modes, args.device))
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0 if all(r[1] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
