"""A LeNet-5 training step on a machine whose cores are busy with other processes.

Multi-threaded BLAS calls waiting on helper threads that the scheduler does not run made this step
take ~1,000-2,000 ms instead of ~10 ms beside two busy processes (issue 11); gpudl.cpu_threads now
caps the threads at the cores left free. Each case runs in a fresh interpreter (the import order
of gpudl and torch is fixed at start-up) beside two CPU-bound load processes, started once the
step is warm and killed at the end. gpudl starts no Numba threading layer
(tests/test_no_openmp.py), so the layer is not varied.

The one timed assertion of the suite, because the issue is about time: medians of several steps,
gpudl and PyTorch interleaved in blocks in the same process, and a generous bound (3x PyTorch's
step under the same load; without torch, 5x the same process's step before the load started).
A case that misses its bound is measured once more before failing: other work on a shared
machine comes and goes.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOAD_SECONDS = 30          # a load process ends by itself after this, even if never killed
TORCH_RATIO = 3.0          # gpudl's step / torch's step under the same load (the bound)
IDLE_RATIO = 5.0           # without torch: loaded step / the same step before the load started

CHILD = r"""
import statistics, sys, time
order = sys.argv[1]
if order == "before":
    import torch
import gpudl
if order == "after":
    import torch
from benchmarks.workloads import lenet_step

def block(step, runs=3):
    step()                                  # untimed: the other library's threads settle
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times

steps = {"gpudl": lenet_step(gpudl, "cpu")}
if order != "absent":
    torch.manual_seed(0)
    steps["torch"] = lenet_step(torch, "cpu")
for step in steps.values():
    block(step, 2)
idle = statistics.median(block(steps["gpudl"], 5))
print("ready", flush=True)
sys.stdin.readline()                        # the parent starts the load, then says go
times = {name: [] for name in steps}
for _ in range(3):
    for name, step in steps.items():
        times[name] += block(step)
result = {name: 1e3 * statistics.median(t) for name, t in times.items()}
result["idle"] = 1e3 * idle
print(__import__("json").dumps(result), flush=True)
"""

LOAD = "import time\nend = time.time() + {}\nwhile time.time() < end:\n    pass\n"


def _measure(order):
    """Medians in ms under two busy processes: {"gpudl", "torch" (unless absent), "idle"}."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, order], cwd=ROOT, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    loads = []
    try:
        assert child.stdout.readline().strip() == "ready", child.communicate(timeout=60)[1]
        loads = [subprocess.Popen([sys.executable, "-c", LOAD.format(LOAD_SECONDS)])
                 for _ in range(2)]
        time.sleep(0.5)                                 # the load is running before we time
        out, err = child.communicate("go\n", timeout=LOAD_SECONDS)
        assert child.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in loads + [child]:
            proc.kill()
            proc.wait()


def _within_bound(result):
    if "torch" in result:
        return result["gpudl"] <= TORCH_RATIO * result["torch"]
    return result["gpudl"] <= IDLE_RATIO * result["idle"]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["before", "after", "absent"])
def test_lenet_step_beside_two_busy_processes(order):
    if order != "absent":
        pytest.importorskip("torch")
    results = [_measure(order)]
    if not _within_bound(results[0]):
        results.append(_measure(order))
    reference = "torch" if order != "absent" else "idle"
    bound = TORCH_RATIO if order != "absent" else IDLE_RATIO
    assert _within_bound(results[-1]), (
        f"import order {order!r}: gpudl's LeNet step took "
        + "; ".join(f"{r['gpudl']:.1f} ms vs {reference} {r[reference]:.1f} ms" for r in results)
        + f" (bound {bound}x)")


def test_thread_count_follows_the_cores_other_processes_leave(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from gpudl import cpu_threads

    def blas_threads():
        # through gpudl's own controller: a fresh ThreadpoolController was seen reading 2 right
        # after this one set 1, in about half the runs that follow the attention twin's pool
        # thread (OpenBLAS's count as another handle reads it); gpudl's handle reads back 1.
        return cpu_threads._state["blas"].get_num_threads()

    ceiling = cpu_threads.refresh() and cpu_threads._state["ceiling"]
    try:
        monkeypatch.setattr(cpu_threads, "_busy_elsewhere", lambda now: cpu_threads._CORES - 0.2)
        assert cpu_threads.refresh() == 1 and cpu_threads.count() == 1
        assert blas_threads() == 1
        monkeypatch.setattr(cpu_threads, "_busy_elsewhere", lambda now: 0.0)
        assert cpu_threads.refresh() == ceiling == blas_threads()
        with threadpoolctl.threadpool_limits(1, user_api="blas"):    # the user's limit wins
            assert cpu_threads.refresh() == 1 == blas_threads()
    finally:
        monkeypatch.undo()
        cpu_threads.refresh()
