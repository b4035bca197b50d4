"""gpudl's host cost per op and per eager training step, at sizes where the maths is negligible.

    python -m benchmarks.host_overhead                         # this tree's gpudl, a table
    python -m benchmarks.host_overhead --torch                 # torch's times beside it
    python -m benchmarks.host_overhead --baseline /tmp/main    # another gpudl tree beside it

(a tree for --baseline: ``git archive <commit> | tar -x -C /tmp/main`` and, as pyproject maps
``gpudl.kernels`` to ``kernels/``, ``ln -s ../kernels /tmp/main/gpudl/kernels``)

On a GPU an eager step is host-bound (benchmarks/RESULTS.md, "Second run on a GPU": LeNet-5's
step 6.36 ms, 6.24 of it on the host), and the Python each op runs (argument checks, Tensor
creation, autograd recording, the backward walk, the optimizer's loop) is the same on every
device. Here the steps of benchmarks/workloads.py run on the CPU with batch 2, so that what is
timed is that Python path. Two figures per row:

- ``calls``: Python function calls per call of the row (``sys.setprofile`` "call" events, C
  functions not counted), exact and independent of the machine's load: the figure to compare
  between two versions;
- ``host us``: the row's time, the minimum over ``--repeats`` blocks of the mean of up to
  ``--number`` calls, as many as fit in ~2 ms (the minimum of short blocks is the least
  disturbed by other processes on a shared machine). With
  ``--baseline``, the two trees run in separate processes, alternately, ``--rounds`` times, and
  each row keeps its minimum over the rounds: both see the same machine states.

gpudl runs with ``GPUDL_CPU_THREADS=1`` and torch with ``set_num_threads(1)``: at these sizes
neither would split an op across threads, and one thread count makes gpudl's paths (and so its
call counts) the same whatever the load.

asv: ``track_calls_*`` report the counts, ``time_*`` the times.
"""

import argparse
import json
import os
import subprocess
import sys
import time

STEP_SIZES = {"lenet": {"batch": 2}, "sunspots": {"batch": 2}, "transformer": {"batch": 2, "seq": 8}}


def step_rows(lib, device="cpu", names=tuple(STEP_SIZES)):
    """{name: callable} of the eager training steps of benchmarks/workloads.py (``names``)."""
    from benchmarks import workloads
    rows = {}
    for name in names:
        sizes = STEP_SIZES[name]
        lib.manual_seed(0)
        parts = getattr(workloads, f"{name}_parts")(lib, device, **sizes)
        rows[f"{name} step"] = workloads.train_step(*parts)
    return rows


def op_rows(lib, device="cpu"):
    """{name: callable} of single hot ops on tiny tensors, forward with autograd recording
    (inputs require grad) unless the name says otherwise."""
    F, nn = lib.nn.functional, lib.nn
    lib.manual_seed(0)

    def randn(*shape, grad=True):
        x = lib.randn(*shape, device=device)
        return x.requires_grad_() if grad else x

    x, w, b = randn(2, 64), randn(32, 64), randn(32)
    a, m = randn(2, 64), randn(64, 64)
    image, kernel, kernel_bias = randn(2, 3, 8, 8), randn(4, 3, 3, 3), randn(4)
    plain = randn(2, 64, grad=False)
    ln_weight, ln_bias = randn(64), randn(64)
    target = lib.randint(0, 32, (2,), device=device)
    logits = randn(2, 32)
    chain_input = randn(2, 64)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(device)
    batch, labels = randn(2, 64, grad=False), lib.randint(0, 10, (2,), device=device)
    sgd = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    adam = lib.optim.Adam(model.parameters(), lr=1e-3)
    F.cross_entropy(model(batch), labels).backward()

    def backward_chain():
        """Five recorded ops and their backward: the walk's cost per node."""
        h = F.linear(chain_input, w, b).relu()
        F.cross_entropy(h * 2.0 + 1.0, target).backward()

    def zero_grad():
        sgd.zero_grad(set_to_none=False)

    return {
        "linear": lambda: F.linear(x, w, b),
        "conv2d": lambda: F.conv2d(image, kernel, kernel_bias, padding=1),
        "relu": lambda: F.relu(x),
        "add": lambda: a + x,
        "add (no grad)": lambda: plain + plain,
        "matmul": lambda: a @ m,
        "layer_norm": lambda: F.layer_norm(a, (64,), ln_weight, ln_bias),
        "softmax": lambda: F.softmax(a, -1),
        "cross_entropy": lambda: F.cross_entropy(logits, target),
        "linear-relu-mul-add-CE backward": backward_chain,
        "SGD momentum step (4 params)": sgd.step,
        "Adam step (4 params)": adam.step,
        "zero_grad (4 params, to zeros)": zero_grad,
    }


def python_calls(fn):
    """Python function calls made by one call of ``fn`` (after one untimed call: first-call
    caches and compilations are not the steady state)."""
    fn()
    _settle_threads()
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count - 1        # fn itself (the row's lambda or step closure)


def _settle_threads():
    """gpudl re-measures the machine's load every 0.2 s inside some op (gpudl.cpu_threads):
    measured now, it does not during the counted call, whose count is then the same every run."""
    cpu_threads = sys.modules.get("gpudl.cpu_threads")
    if cpu_threads is not None:
        cpu_threads.refresh()


BLOCK_S = 0.002     # a timed block's length: short blocks fit between other processes' slices


def host_us(fn, repeats=15, number=20):
    """Microseconds per call: the least of ``repeats`` blocks' means of up to ``number`` calls,
    as many as take ~BLOCK_S (a 1 ms step: 2 calls a block)."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    number = max(1, min(number, int(BLOCK_S / max(time.perf_counter() - start, 1e-9))))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def measure(lib_name, repeats, number, counts=True):
    """{row: [calls or None, host us]} for ``lib_name`` ("gpudl" or "torch") on the CPU."""
    lib = __import__(lib_name)
    if lib_name == "torch":
        lib.set_num_threads(1)          # as gpudl's GEMMs at these sizes: one thread
    rows = {**step_rows(lib), **op_rows(lib)}
    return {name: [python_calls(fn) if counts else None, host_us(fn, repeats, number)]
            for name, fn in rows.items()}


def _measure_in(path, lib_name, repeats, number):
    """measure() in a fresh process with ``path`` first on sys.path (another gpudl tree)."""
    env = dict(os.environ, GPUDL_CPU_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (path, os.environ.get("PYTHONPATH")) if p))
    script = ("import json, sys; sys.path.insert(0, %r); sys.path.insert(0, %r); "
              "from host_overhead import measure; "
              "print(json.dumps(measure(%r, %d, %d, %r)))"
              % (path, os.path.dirname(os.path.abspath(__file__)), lib_name, repeats, number,
                 lib_name != "torch"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(columns, rounds, repeats, number):
    """{label: {row: [calls, us]}}: each (label, path, lib) of ``columns`` measured in its own
    process, alternately for ``rounds`` rounds; times are the minimum over the rounds."""
    merged = {}
    for _ in range(rounds):
        for label, path, lib_name in columns:
            result = _measure_in(path, lib_name, repeats, number)
            if label not in merged:
                merged[label] = result
            else:
                for row, (calls, us) in result.items():
                    merged[label][row][1] = min(merged[label][row][1], us)
    return merged


def table(merged):
    labels = list(merged)
    rows = list(merged[labels[0]])
    head = f"| {'row':34s} |" + "".join(f" {label} calls | {label} host us |" for label in labels)
    lines = [head, "|" + "---|" * (1 + 2 * len(labels))]
    for row in rows:
        cells = ""
        for label in labels:
            calls, us = merged[label].get(row, [None, float("nan")])
            cells += f" {'' if calls is None else calls} | {us:.1f} |"
        lines.append(f"| {row:34s} |" + cells)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="root of another gpudl tree (e.g. `git archive` of "
                        "main) measured beside this one")
    parser.add_argument("--torch", action="store_true", help="torch's times beside gpudl's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--number", type=int, default=20)
    args = parser.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    columns = [("gpudl", here, "gpudl")]
    if args.baseline:
        columns.insert(0, ("baseline", os.path.abspath(args.baseline), "gpudl"))
    if args.torch:
        columns.append(("torch", here, "torch"))
    print(table(compare(columns, args.rounds, args.repeats, args.number)))
    return 0


# ----------------------------------------------------------------- asv
class HostOverhead:
    """Per-call host time and Python call counts of the steps and hot ops, on the CPU."""
    params = [sorted(STEP_SIZES)]
    param_names = ["step"]

    def setup(self, step):
        import gpudl
        gpudl.cpu_threads.set_ceiling(1)    # as the table's GPUDL_CPU_THREADS=1: fixed paths
        self.step = step_rows(gpudl, names=(step,))[f"{step} step"]

    def time_step(self, step):
        self.step()

    def track_calls(self, step):
        return python_calls(self.step)


if __name__ == "__main__":
    sys.exit(main())
