"""Side by side: the same workloads in gpudl and in PyTorch, interleaved in one process.

    python -m benchmarks.compare                      # CPU workloads, a table of medians
    python -m benchmarks.compare --device cuda        # GPU workloads vs PyTorch + cuDNN
    python -m benchmarks.compare --only conv --markdown out.md
    python -m benchmarks.compare --grid --markdown out.md   # the CPU size grid (benchmarks/grid.py)

Both libraries speak the same dialect, so each workload is written ONCE against a library module
``lib`` (``gpudl`` or ``torch``) and built for each. On a GPU both libraries run twice, on the same
precision settings: strict fp32 (``allow_tf32 = False``) and PyTorch's defaults (TF32 tensor cores
for convolutions: cuDNN's, and gpudl's conv_tc_cuda kernels; cuDNN LSTMs too).
"""

import argparse
import pathlib
import platform
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np

try:    # the import order does not matter: gpudl sets no OpenMP variable and starts no OpenMP pool
    import torch
except ImportError:
    torch = None

import gpudl  # noqa: E402
from benchmarks import workloads  # noqa: E402
from benchmarks.common import SETTLE_S, side_by_side  # noqa: E402
from benchmarks.workloads import randn as _randn  # noqa: E402
from benchmarks.workloads import train_step as _train_step  # noqa: E402

WORKLOADS = []     # (name, devices, build(lib, device) -> step callable)
FLOORS = {}        # name -> (flops, bytes, latency us): the GPU floor
_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Hopper floors (published peaks): FP32 on CUDA cores, TF32 on tensor cores (dense) for both
# chips; HBM differs.
FP32_FLOPS = 66.9e12
TF32_FLOPS = 495e12
HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12}
TC_FP16_FLOPS = 989.4e12     # dense FP16/BF16 tensor cores, fp32 accumulate (both chips)


def workload(name, devices=("cpu",), flops=0, bytes=0, latency_us=0, peak=FP32_FLOPS):
    """Register ``build`` under ``name``; flops/bytes/latency_us give its floor on a GPU: the
    most of flops / ``peak`` (FP32 on CUDA cores unless given), bytes / HBM bandwidth and a
    latency bound."""
    def register(build):
        WORKLOADS.append((name, devices, build))
        if flops or bytes or latency_us:
            FLOORS[name] = (flops, bytes, latency_us, peak)
        return build
    return register


def floor_ms(name, device_name="", peak=None):
    """The workload's floor in ms on the named GPU (H100 bandwidth unless it says H200), its
    flops at ``peak`` (default: the peak the workload registered)."""
    if name not in FLOORS:
        return None
    flops, nbytes, latency_us, registered = FLOORS[name]
    peak = peak or registered
    bandwidth = HBM_BYTES_PER_S["H200" if "H200" in device_name else "H100"]
    return 1e3 * max(flops / peak, nbytes / bandwidth, latency_us * 1e-6)


def tensor_core_mode(name):
    """Whether PyTorch's defaults run this workload on TF32 tensor cores (cuDNN convolutions),
    so that both libraries' "default" times are held to the TF32 floor."""
    return name.startswith("conv")


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


@workload("sunspots LSTM(1->32, 2 layers) Adam step, batch 32 x seq 12", ("cpu", "cuda"))
def sunspots_step(lib, device):
    return _train_step(*workloads.sunspots_parts(lib, device))


@workload("transformer 2 layers (64 wide, 4 heads) AdamW step, batch 32 x seq 32",
          ("cpu", "cuda"))
def transformer_step(lib, device):
    return _train_step(*workloads.transformer_parts(lib, device))


# The same three steps captured whole in a CUDA graph (gd.cuda.graph / torch.cuda.graph), each
# library against its own graph; on the CPU these rows print "n/a on CPU".
for _name, _parts in (("LeNet-5 SGD-momentum step, batch 64 x 1x28x28", workloads.lenet_parts),
                      ("sunspots LSTM(1->32, 2 layers) Adam step, batch 32 x seq 12",
                       workloads.sunspots_parts),
                      ("transformer 2 layers (64 wide, 4 heads) AdamW step, batch 32 x seq 32",
                       workloads.transformer_parts)):
    workload(_name + ", CUDA graph", ("cuda",))(
        lambda lib, device, parts=_parts: workloads.graphed_step(lib, parts(lib, device, True)))


def _conv(lib, device, n, c, hw, k, ks, stride=1, padding=1, backward=True):
    F = lib.nn.functional
    x = _randn(lib, device, n, c, hw, hw, grad=backward)
    w = _randn(lib, device, k, c, ks, ks, grad=backward)
    b = _randn(lib, device, k, grad=backward)

    def step():
        y = F.conv2d(x, w, b, stride=stride, padding=padding)
        if backward:
            y.sum().backward()
    return step


def _conv_flops(n, c, hw, k, ks, stride=1, padding=1):
    """2 N K C R S P Q: one forward pass (backward: twice that)."""
    out = (hw + 2 * padding - ks) // stride + 1
    return 2 * n * k * c * ks * ks * out * out


@workload("conv2d fwd+bwd (32,16,32,32) x 32 3x3 p1", ("cpu",))
def conv_small(lib, device):
    return _conv(lib, device, 32, 16, 32, 32, 3)


@workload("conv2d fwd (64,64,56,56) x 64 3x3 p1", ("cuda",),
          flops=_conv_flops(64, 64, 56, 64, 3))
def conv_56_fwd(lib, device):
    return _conv(lib, device, 64, 64, 56, 64, 3, backward=False)


@workload("conv2d fwd+bwd (64,64,56,56) x 64 3x3 p1", ("cuda",),
          flops=3 * _conv_flops(64, 64, 56, 64, 3))
def conv_56(lib, device):
    return _conv(lib, device, 64, 64, 56, 64, 3)


@workload("conv2d fwd+bwd (128,128,28,28) x 128 3x3 p1", ("cuda",),
          flops=3 * _conv_flops(128, 128, 28, 128, 3))
def conv_28(lib, device):
    return _conv(lib, device, 128, 128, 28, 128, 3)


@workload("conv2d fwd (32,3,224,224) x 64 7x7 s2 p3", ("cuda",),
          flops=_conv_flops(32, 3, 224, 64, 7, 2, 3))
def conv_stem_fwd(lib, device):
    return _conv(lib, device, 32, 3, 224, 64, 7, stride=2, padding=3, backward=False)


@workload("conv2d fwd+bwd (32,3,224,224) x 64 7x7 s2 p3", ("cuda",),
          flops=3 * _conv_flops(32, 3, 224, 64, 7, 2, 3))
def conv_stem(lib, device):
    return _conv(lib, device, 32, 3, 224, 64, 7, stride=2, padding=3)


def _pool(lib, device, shape, kind, backward=True):
    F = lib.nn.functional
    x = _randn(lib, device, *shape, grad=backward)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d

    def step():
        y = pool(x, 2)
        if backward:
            y.sum().backward()
    return step


def _pool_bytes(shape, kind, backward):
    """float32 traffic of a 2x2 pool: read x, write y (+ a 1-byte argmax for max); backward
    reads gy (+ argmax) and writes gx."""
    x = 4 * np.prod(shape)
    once = x + x / 4 + (x / 16 if kind == "max" else 0)
    return int(once * (2 if backward else 1))


@workload("max_pool2d 2x2 fwd+bwd (32,16,32,32)", ("cpu",))
def maxpool_small(lib, device):
    return _pool(lib, device, (32, 16, 32, 32), "max")


@workload("max_pool2d 2x2 fwd (64,64,56,56)", ("cuda",),
          bytes=_pool_bytes((64, 64, 56, 56), "max", False))
def maxpool_big_fwd(lib, device):
    return _pool(lib, device, (64, 64, 56, 56), "max", backward=False)


@workload("max_pool2d 2x2 fwd+bwd (64,64,56,56)", ("cuda",),
          bytes=_pool_bytes((64, 64, 56, 56), "max", True))
def maxpool_big(lib, device):
    return _pool(lib, device, (64, 64, 56, 56), "max")


@workload("avg_pool2d 2x2 fwd+bwd (64,64,56,56)", ("cuda",),
          bytes=_pool_bytes((64, 64, 56, 56), "avg", True))
def avgpool_big(lib, device):
    return _pool(lib, device, (64, 64, 56, 56), "avg")


def _lstm(lib, device, seq, batch, inp, hidden, backward=True, layers=1):
    lstm = lib.nn.LSTM(inp, hidden, num_layers=layers).to(device)
    x = _randn(lib, device, seq, batch, inp, grad=backward)

    def step():
        if not backward:
            with lib.no_grad():
                lstm(x)
            return
        out, (h, c) = lstm(x)
        (out.sum() + h.sum() + c.sum()).backward()
    return step


_LSTM_BIG_FLOPS = 2 * 64 * 64 * (256 + 512) * 4 * 512      # input and recurrent GEMMs, forward


@workload("LSTM(64->128) fwd+bwd, batch 32 x seq 32", ("cpu", "cuda"))
def lstm_small(lib, device):
    return _lstm(lib, device, 32, 32, 64, 128)


@workload("LSTM(256->512) fwd, batch 64 x seq 64", ("cuda",), flops=_LSTM_BIG_FLOPS,
          latency_us=230)
def lstm_big_fwd(lib, device):
    return _lstm(lib, device, 64, 64, 256, 512, backward=False)


@workload("LSTM(256->512) fwd+bwd, batch 64 x seq 64", ("cuda",), flops=3 * _LSTM_BIG_FLOPS)
def lstm_big(lib, device):
    return _lstm(lib, device, 64, 64, 256, 512)


@workload("sunspots LSTM(1->32, 2 layers) fwd+bwd, batch 64 x seq 128", ("cpu", "cuda"))
def lstm_sunspots(lib, device):
    """The sunspots example's recurrence: on a GPU gpudl's persistent LSTM kernels, one launch
    per layer and pass instead of two per time step."""
    return _lstm(lib, device, 128, 64, 1, 32, layers=2)


def _attention(lib, device, shape, causal, backward=True, half=None):
    """SDPA; ``half``: "float16" or "bfloat16" inputs (gpudl: the tensor-core kernels; torch:
    its flash backend, forced)."""
    F = lib.nn.functional
    q, k, v = (_randn(lib, device, *shape) for _ in range(3))
    if half:
        q, k, v = (x.to(getattr(lib, half)) for x in (q, k, v))
    if backward:
        q, k, v = (x.requires_grad_() for x in (q, k, v))

    def attend():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    if half and lib is torch:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        attend = flash

    def step():
        y = attend()
        if backward:
            y.sum().backward()
    return step


def _attention_flops(shape, causal, backward):
    """4 B H N^2 d forward, 10 B H N^2 d backward; causal halves both."""
    b, h, n, d = shape
    return (4 + (10 if backward else 0)) * b * h * n * n * d // (2 if causal else 1)


@workload("causal SDPA fwd+bwd (4,4,256,32)", ("cpu",))
def attention_small(lib, device):
    return _attention(lib, device, (4, 4, 256, 32), True)


_ATTN = (4, 8, 1024, 64)


@workload("SDPA fwd (4,8,1024,64)", ("cuda",), flops=_attention_flops(_ATTN, False, False))
def attention_big_fwd(lib, device):
    return _attention(lib, device, _ATTN, False, backward=False)


@workload("causal SDPA fwd (4,8,1024,64)", ("cuda",), flops=_attention_flops(_ATTN, True, False))
def attention_big_causal_fwd(lib, device):
    return _attention(lib, device, _ATTN, True, backward=False)


@workload("SDPA fwd+bwd (4,8,1024,64)", ("cuda",), flops=_attention_flops(_ATTN, False, True))
def attention_big(lib, device):
    return _attention(lib, device, _ATTN, False)


@workload("causal SDPA fwd+bwd (4,8,1024,64)", ("cuda",),
          flops=_attention_flops(_ATTN, True, True))
def attention_big_causal(lib, device):
    return _attention(lib, device, _ATTN, True)


# the half-precision SDPA rows: (dtype, shape, causal, backward), on tensor cores in both
# libraries (torch: its flash backend)
_HALF_ATTENTION = [
    ("float16", (4, 16, 2048, 64), False, False),
    ("float16", (4, 16, 2048, 64), True, True),
    ("float16", (4, 16, 2048, 64), False, True),
    ("float16", (4, 16, 2048, 128), False, True),
    ("bfloat16", (4, 16, 2048, 64), False, False),
    ("bfloat16", (4, 16, 2048, 64), True, True),
    ("bfloat16", (4, 16, 2048, 128), False, True),
]


def _half_attention_workload(half, shape, causal, backward):
    name = (f"{'fp16' if half == 'float16' else 'bf16'} {'causal ' if causal else ''}SDPA "
            f"{'fwd+bwd' if backward else 'fwd'} ({','.join(map(str, shape))})")

    @workload(name, ("cuda",), flops=_attention_flops(shape, causal, backward),
              peak=TC_FP16_FLOPS)
    def build(lib, device):
        return _attention(lib, device, shape, causal, backward=backward, half=half)


for _row in _HALF_ATTENTION:
    _half_attention_workload(*_row)


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
    """Both libraries on the same precision: strict fp32, or PyTorch's defaults (TF32 convs)."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = False     # PyTorch's default either way
    gpudl.backends.cudnn.allow_tf32 = enabled


def _grid_workloads():
    from benchmarks.grid import GRID
    return [(name, ("cpu",), lambda lib, device, build=build: build(lib)) for name, build in GRID]


def run(device, only=None, repeats=21, isolated=False, grid=False, settle=SETTLE_S):
    """Rows of (workload, gpudl ms, {torch mode: ms})."""
    if torch is None:
        raise SystemExit("benchmarks.compare needs PyTorch: pip install -e '.[bench]'")
    torch.set_num_threads(max(1, len(__import__("os").sched_getaffinity(0))))
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = ("fp32", "default") if device == "cuda" else ("default",)
    name_of_gpu = gpu_name() if device == "cuda" else ""
    print(table([], modes, device, name_of_gpu), flush=True)     # the header, for rows as they come
    rows = []
    for name, devices, build in (_grid_workloads() if grid else WORKLOADS):
        if only and not any(part.strip().lower() in name.lower() for part in only.split("|")):
            continue
        if device not in devices:
            if device == "cpu" and name.endswith("CUDA graph"):
                rows.append((name, None, {"error": "n/a on CPU"}))
                print(_format_row(rows[-1], modes, device, name_of_gpu), flush=True)
            continue
        try:
            if isolated:
                rows.append((name, {"default": _isolated_ms("gpudl", device, name, repeats)},
                             {"default": _isolated_ms("torch", device, name, repeats)}))
                print(_format_row(rows[-1], modes, device, name_of_gpu), flush=True)
                continue
            gpudl.manual_seed(0)
            ours = build(gpudl, device)
            torch.manual_seed(0)
            theirs, gd_ms = {}, {}
            for mode in modes:
                if device == "cuda":
                    _set_tf32(torch, mode == "default")
                gd_ms[mode], theirs[mode] = side_by_side(ours, build(torch, device), torch,
                                                         repeats, settle=settle)
            rows.append((name, gd_ms, theirs))
        except Exception as exc:   # report, keep going: one missing op must not hide the rest
            rows.append((name, None, {"error": f"{type(exc).__name__}: {exc}"[:120]}))
        print(_format_row(rows[-1], modes, device, name_of_gpu), flush=True)
    return rows, modes


def gpu_name():
    """The GPU's name (floors and the table header need it), '' without CuPy."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    except Exception:  # noqa: BLE001 - no CuPy, no device: no name
        return ""


def _format_row(row, modes, device="cpu", device_name=""):
    name, ours, theirs = row
    if ours is None:
        error = theirs["error"]
        return f"| {name} | {error if error.startswith('n/a') else 'failed: ' + error} |"
    cells = []
    for mode in modes:          # each library on the same precision setting
        cells += [f"{ours[mode]:.3f}", f"{theirs[mode]:.3f}", f"{ours[mode] / theirs[mode]:.2f}x"]
    if device == "cuda":        # each library's fraction of the floor (1.0: at the floor)
        for mode in modes:
            tensor = mode == "default" and tensor_core_mode(name)
            floor = floor_ms(name, device_name, TF32_FLOPS if tensor else None)
            cells += [f"{floor:.3f}" + (" (TF32)" if tensor else ""),
                      f"{floor / ours[mode]:.0%}", f"{floor / theirs[mode]:.0%}"] \
                if floor else ["-", "-", "-"]
    return f"| {name} | " + " | ".join(cells) + " |"


def backward_rows(rows, modes):
    """The backward pass alone, for each "... fwd+bwd (shape)" row whose "... fwd (shape)" partner
    was timed too: (name, {mode: gpudl ms}, {mode: torch ms}), the difference of the two medians
    (issue 12 holds attention's backward to <= 2x PyTorch's)."""
    timed = {name: (ours, theirs) for name, ours, theirs in rows if ours is not None}
    out = []
    for name, (ours, theirs) in timed.items():
        forward = timed.get(name.replace(" fwd+bwd ", " fwd ", 1))
        if " fwd+bwd " not in name or forward is None:
            continue
        ours_b = {m: ours[m] - forward[0][m] for m in modes}
        theirs_b = {m: theirs[m] - forward[1][m] for m in modes}
        if all(theirs_b[m] > 0 for m in modes):       # else noise swamped the difference
            out.append((name.replace(" fwd+bwd ", " bwd ", 1) + " = fwd+bwd - fwd", ours_b,
                        theirs_b))
    return out


def table(rows, modes, device, device_name=""):
    header = ["workload"]
    for mode in modes:
        suffix = "" if device == "cpu" else f" {mode}"
        header += [f"gpudl{suffix} ms", f"torch{suffix} ms", "ratio"]
    if device == "cuda":
        for mode in modes:
            header += [f"{mode} floor ms", "gpudl of floor", "torch of floor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_format_row(r, modes, device, device_name) for r in rows]
    lines += [_format_row(r, modes, device, device_name) for r in backward_rows(rows, modes)]
    ratios = [r[1][modes[-1]] / r[2][modes[-1]] for r in rows if r[1] is not None]
    if ratios:
        lines.append(f"\ngeometric mean ratio (vs torch {modes[-1]}): "
                     f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x over {len(ratios)} workloads")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--device", default=gpudl.device(), choices=("cpu", "cuda"))
    parser.add_argument("--only", help="run workloads whose name contains this text (or one of "
                        "several, separated by |)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--isolated", action="store_true",
                        help="time each library alone in a fresh process (CPU)")
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="idle seconds before each block of runs (default %(default)s)")
    parser.add_argument("--grid", action="store_true",
                        help="the CPU size grid of benchmarks/grid.py instead of the workloads")
    args = parser.parse_args(argv)
    if args.device != gpudl.device():
        parser.error(f"gpudl runs on {gpudl.device()} here; set GPUDL_DEVICE={args.device}")
    if args.grid and (args.device != "cpu" or args.isolated):
        parser.error("--grid runs on the cpu device, interleaved in one process")
    rows, modes = run(args.device, args.only, args.repeats, args.isolated, args.grid, args.settle)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name_of_gpu = gpu_name() if args.device == "cuda" else ""
    text = (f"{stamp}, {platform.processor() or platform.machine()}, device {args.device}"
            + (f" ({name_of_gpu}; floors: FP32 66.9 TFLOP/s, conv on PyTorch's defaults TF32 "
               "495 TFLOP/s dense, fp16 rows 989 TFLOP/s tensor cores, HBM of that chip)"
               if name_of_gpu else "") + ", "
            + ("each library alone in a fresh process" if args.isolated else
               "the libraries alternating in blocks of 4 in one process, each block after "
               f"{args.settle * 1e3:g} ms idle")
            + f", median of {args.repeats}+ runs\n\n"
            + table(rows, modes, args.device, name_of_gpu))
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0 if all(r[1] is not None or r[2]["error"].startswith("n/a") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
