"""One LSTM layer, fwd+bwd, through each of gpudl's paths and PyTorch's cuDNN: time and host time.

    python -m benchmarks.lstm_paths --repeats 11 --markdown out.md      # on a GPU

For hidden sizes 128 and 256 (input 64, batch 64, seq 128; and 512 at batch 8, which the grid
kernels also take) gpudl runs with ``kernels.lstm.FORCE_PATH`` set to each path that can serve
the shape (kernels/lstm.py ``choose_path``: persistent-grid, graphed-steps, per-step), then
torch.nn.LSTM (cuDNN). Per row: the median ms of a synchronised step, the median host ms of the
call alone, and the largest difference of the outputs and input gradient from the per-step
path's (a check of the kernels on the device, not only a timing).
"""

import sys

try:    # before gpudl (see benchmarks/compare.py)
    import torch
except ImportError:
    torch = None

import gpudl as gd  # noqa: E402
import gpudl.nn  # noqa: E402,F401
from benchmarks.common import sync, torch_sync  # noqa: E402
from benchmarks.graph_steps import _times, table_main  # noqa: E402
from gpudl.kernels import lstm as K, lstm_grid_cuda  # noqa: E402

SHAPES = ((128, 64), (256, 64), (512, 8))        # (hidden, batch); input 64, seq 128
INPUT, SEQ = 64, 128
PATHS = ("persistent-grid", "graphed-steps", "per-step")


def _step(lib, device, hidden, batch):
    lib.manual_seed(0)
    lstm = lib.nn.LSTM(INPUT, hidden).to(device)
    x = lib.randn(SEQ, batch, INPUT, device=device, requires_grad=True)

    def step():
        x.grad = None
        out, (h, c) = lstm(x)
        (out.sum() + h.sum() + c.sum()).backward()
        return out, x.grad
    return step


def _difference(a, b):
    return max(float(abs(p - q).max().item()) for p, q in zip(a, b))


def run(repeats):
    lines = ["| layer | variant | ms per step | host ms per step | max diff vs per-step |",
             "|---|---|---|---|---|"]
    device = gd.device()
    for hidden, batch in SHAPES:
        name = f"LSTM({INPUT}->{hidden}) fwd+bwd, batch {batch} x seq {SEQ}"
        reference = None
        for path in reversed(PATHS):            # per-step first: the others compare with it
            K.FORCE_PATH = path
            try:
                chosen = K.choose_path("lstm", "float32", batch, hidden, SEQ,
                                       "cuda" if device == "cuda" else "cpu",
                                       sm_count=lstm_grid_cuda.device_sm_count())
                if chosen != path:
                    line = f"| {name} | gpudl {path} | not taken here ({chosen}) | | |"
                else:
                    step = _step(gd, device, hidden, batch)
                    ms, host = _times(step, sync, repeats)
                    result = step()
                    reference = reference or result
                    line = (f"| {name} | gpudl {path} | {ms:.3f} | {host:.3f} | "
                            f"{_difference(result, reference):.2e} |")
            except Exception as exc:  # noqa: BLE001 - report the row, keep going
                line = f"| {name} | gpudl {path} | failed: {type(exc).__name__}: {exc} |"[:220]
            finally:
                K.FORCE_PATH = None
            print(line, flush=True)
            lines.append(line)
        if torch is not None and device == "cuda":
            ms, host = _times(_step(torch, "cuda", hidden, batch), lambda: torch_sync(torch),
                              repeats)
            line = f"| {name} | torch cuDNN | {ms:.3f} | {host:.3f} | |"
            print(line, flush=True)
            lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    return table_main("python -m benchmarks.lstm_paths", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
