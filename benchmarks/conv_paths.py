"""One convolution, fwd and fwd+bwd, through each of gpudl's kernel paths and PyTorch's cuDNN.

    python -m benchmarks.conv_paths --repeats 11 --markdown out.md      # on a GPU

The first GPU run (benchmarks/RESULTS.md, "First run on a GPU") measured gpudl's float32
convolutions slower with TF32 allowed (the tensor-core kernels, conv_tc_cuda) than without it
(the SIMT FP32 kernels, conv_cuda) on 4 of 5 rows, by up to 2x, but across two separate runs of
compare.py. This table times the paths side by side in one process: float32 with
``gd.backends.cudnn.allow_tf32`` False (strict: the default path, which for the 3x3 stride-1
shapes is the fused Winograd F(2x2, 3x3) kernel, kernels/conv_winograd_fused_cuda.py) and True
(TF32 tensor cores), float16 (tensor cores), then torch's cuDNN in float32 with TF32 off and on.
Strict float32 3x3 stride-1 rows also time the direct sum (conv_cuda, the fused kernel turned
off) and the unfused Winograd (kernels/conv_winograd_cuda.py, off by default since session 18's
GPU figures: two transform kernels around cuBLAS) with its default chunks of images and with
chunks whose V and M would stay in the L2 cache (more launches, less DRAM traffic).
Shapes: compare.py's convolutions, the (128,128,28,28) layer of issue 12 and LeNet-5's two (the
training step that ran 2x slower with TF32). Per row: the median ms of a synchronised call, the
median host ms of the call alone, and the largest difference of the output from the SIMT
path's, relative to its largest magnitude (a check on the device too).
"""

import sys

try:    # before gpudl (see benchmarks/compare.py)
    import torch
except ImportError:
    torch = None

import gpudl as gd  # noqa: E402
import gpudl.nn.functional as F  # noqa: E402
from benchmarks.common import sync, torch_sync  # noqa: E402
from benchmarks.graph_steps import _times, table_main  # noqa: E402

# (label, input shape, out channels, kernel, stride, padding)
# (issue 12's missed 3x3 row first: a run cut at its limit still has it)
SHAPES = (
    ("3x3 (128,128,28,28) x 128 p1", (128, 128, 28, 28), 128, 3, 1, 1),
    ("3x3 (64,64,56,56) x 64 p1", (64, 64, 56, 56), 64, 3, 1, 1),
    ("3x3 (64,128,28,28) x 128 p1", (64, 128, 28, 28), 128, 3, 1, 1),
    ("7x7 s2 (32,3,224,224) x 64 p3", (32, 3, 224, 224), 64, 7, 2, 3),
    ("LeNet conv1 5x5 (64,1,28,28) x 6 p2", (64, 1, 28, 28), 6, 5, 1, 2),
    ("LeNet conv2 5x5 (64,6,14,14) x 16", (64, 6, 14, 14), 16, 5, 1, 0),
)
# (label, dtype, TF32 allowed, Winograd shapes only, settings for the row: {(module, name):
# value} of conv_winograd_fused_cuda ("fused") and conv_winograd_cuda ("unfused"))
DIRECT = {("fused", "ENABLED"): False}
UNFUSED = {**DIRECT, ("unfused", "ENABLED"): True}
VARIANTS = (("float32, strict (default path)", "float32", False, False, {}),
            ("float32, strict, direct sum (conv_cuda)", "float32", False, True, DIRECT),
            ("float32, strict, unfused Winograd F(2x2,3x3)", "float32", False, True, UNFUSED),
            ("float32, strict, unfused Winograd, 32 MB chunks", "float32", False, True,
             {**UNFUSED, ("unfused", "CHUNK_BYTES"): 32 << 20}),
            # every image in one chunk (V and M 410 MB at (128,128,28,28)): half the launches
            # of the default 256 MB chunks there, whose host time hid the device's in session 20
            ("float32, strict, unfused Winograd, one chunk (1 GB)", "float32", False, True,
             {**UNFUSED, ("unfused", "CHUNK_BYTES"): 1 << 30}),
            ("float32, TF32 tensor cores", "float32", True, False, {}),
            ("float16, tensor cores", "float16", True, False, {}))


def _modules():
    from gpudl.kernels import conv_winograd_cuda, conv_winograd_fused_cuda
    return {"fused": conv_winograd_fused_cuda, "unfused": conv_winograd_cuda}


def _winograd_applies(shape, out_channels, kernel, stride, padding):
    from gpudl.kernels import conv
    geo = conv.ConvGeometry(shape, (out_channels, shape[1], kernel, kernel), (stride, stride),
                            (padding, padding), (1, 1), 1)
    return any(m.applies(geo, "float32") for m in _modules().values())


def _call(lib, shape, out_channels, kernel, stride, padding, dtype, backward):
    lib.manual_seed(0)
    device = "cuda"
    x = lib.randn(*shape, device=device).to(getattr(lib, dtype)).requires_grad_(backward)
    w = (lib.randn(out_channels, shape[1], kernel, kernel, device=device) * 0.1).to(
        getattr(lib, dtype)).requires_grad_(backward)
    conv = (F if lib is gd else torch.nn.functional).conv2d

    def call():
        y = conv(x, w, None, stride, padding)
        if backward:
            x.grad = w.grad = None
            y.float().sum().backward()
        return y
    return call


def _difference(y, reference):
    y, reference = y.float(), reference.float()
    return float((y - reference).abs().max().item()) / max(
        float(reference.abs().max().item()), 1e-30)


def run(repeats):
    lines = ["| convolution | pass | variant | ms | host ms | max diff / max vs SIMT |",
             "|---|---|---|---|---|---|"]
    if gd.device() != "cuda":
        return "\n".join(lines + ["| (needs a GPU) | | | | | |"])
    modules = _modules()
    for label, shape, out_channels, kernel, stride, padding in SHAPES:
        for backward in (False, True):
            pass_name = "fwd+bwd" if backward else "fwd"
            reference = None
            winograd = _winograd_applies(shape, out_channels, kernel, stride, padding)
            for variant, dtype, tf32, winograd_only, settings in VARIANTS:
                if winograd_only and not winograd:
                    continue
                saved = {key: getattr(modules[key[0]], key[1]) for key in settings}
                for (module, name), value in settings.items():
                    setattr(modules[module], name, value)
                gd.backends.cudnn.allow_tf32 = tf32
                try:
                    call = _call(gd, shape, out_channels, kernel, stride, padding, dtype,
                                 backward)
                    ms, host = _times(call, sync, repeats)
                    y = call()
                    reference = reference if reference is not None else y
                    line = (f"| {label} | {pass_name} | gpudl {variant} | {ms:.3f} | "
                            f"{host:.3f} | {_difference(y, reference):.1e} |")
                except Exception as exc:  # noqa: BLE001 - report the row, keep going
                    line = (f"| {label} | {pass_name} | gpudl {variant} | failed: "
                            f"{type(exc).__name__}: {exc} |")[:220]
                finally:
                    gd.backends.cudnn.allow_tf32 = True
                    for (module, name), value in saved.items():
                        setattr(modules[module], name, value)
                print(line, flush=True)
                lines.append(line)
            if torch is None or not torch.cuda.is_available():
                continue
            for tf32 in (False, True):
                torch.backends.cudnn.allow_tf32 = tf32
                call = _call(torch, shape, out_channels, kernel, stride, padding, "float32",
                             backward)
                ms, host = _times(call, lambda: torch_sync(torch), repeats)
                line = (f"| {label} | {pass_name} | torch cuDNN float32, TF32 "
                        f"{'on' if tf32 else 'off'} | {ms:.3f} | {host:.3f} | |")
                print(line, flush=True)
                lines.append(line)
            torch.backends.cudnn.allow_tf32 = True
    return "\n".join(lines)


def main(argv=None):
    return table_main("python -m benchmarks.conv_paths", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
