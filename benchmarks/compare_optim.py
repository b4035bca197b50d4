"""Side by side with PyTorch: optimizer steps, a DataLoader epoch and a fit() epoch.

    python -m benchmarks.compare_optim            # CPU; medians in ms, gpudl vs torch
    python -m benchmarks.compare_optim --device cuda

PyTorch's optimizers run their default implementation (single-tensor on the CPU, foreach on a
GPU); each optimizer updates the same parameter shapes with fixed gradients.
"""

import argparse

import gpudl as gd
import gpudl.data
import gpudl.nn
import gpudl.train
from benchmarks.bench_optim import PARAMETER_SETS
from benchmarks.common import side_by_side

CONFIGS = {
    "SGD momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "Adam": ("Adam", {"lr": 1e-3}),
    "AdamW amsgrad": ("AdamW", {"lr": 1e-3, "amsgrad": True}),
    "RMSprop centered+momentum": ("RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.9}),
    "Adagrad": ("Adagrad", {"lr": 1e-2}),
}


def _optimizer_step(lib, device, name, options, shapes):
    params = [lib.randn(*s, device=device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = lib.randn(*p.shape, device=device)
    opt = getattr(lib.optim, name)(params, **options)
    opt.step()
    return opt.step


def _digits(lib, device):
    from gpudl.data import load_digits
    x, y = load_digits(as_tensors=False)
    return lib.tensor(x, device=device), lib.tensor(y, device=device)


def _loader_epoch(lib, device, batch_size):
    x, y = _digits(lib, device)
    data = gd.data if lib is gd else lib.utils.data
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    return lambda: [None for _ in loader]


def _fit_epoch(lib, device):
    """One epoch of an MLP on the digits (batch 32, Adam): gpudl.train.fit vs a torch loop."""
    x, y = _digits(lib, device)
    nn = lib.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model = model.to(device)
    opt, loss_fn = lib.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
    if lib is gd:
        loader = gd.data.DataLoader(gd.data.TensorDataset(x, y), batch_size=32, shuffle=True)
        return lambda: gd.train.fit(model, loss_fn, opt, loader, 1, metrics=["accuracy"],
                                    verbose=False)
    data = lib.utils.data
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=32, shuffle=True)

    def epoch():
        total, correct = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
            correct += (out.argmax(1) == yb).sum()
        return float(total), int(correct)
    return epoch


def workloads(device):
    for label, (name, options) in CONFIGS.items():
        for size, shapes in PARAMETER_SETS.items():
            yield (f"{label} step, {size} params",
                   lambda lib, n=name, o=options, s=shapes: _optimizer_step(lib, device, n, o, s))
    for batch in (32, 256):
        yield (f"DataLoader epoch, digits, batch {batch}, shuffle",
               lambda lib, b=batch: _loader_epoch(lib, device, b))
    yield "fit epoch: MLP 64-64-10 on digits, Adam, batch 32", lambda lib: _fit_epoch(lib, device)


def main():
    import torch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    print(f"| workload ({args.device}) | gpudl ms | torch ms | ratio |\n|---|---|---|---|")
    for label, build in workloads(args.device):
        gd.manual_seed(0)
        torch.manual_seed(0)
        ours, theirs = side_by_side(build(gd), build(torch), torch, repeats=args.repeats)
        print(f"| {label} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
