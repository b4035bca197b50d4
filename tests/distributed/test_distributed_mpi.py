"""Real process groups: 2 and 3 CPU ranks under mpiexec, each running cases from worker.py.

Each launch runs several cases so the MPI start-ups stay few (CI has 2 cores). The cases check
themselves (identical parameters on every rank, equality with single-process training on the
concatenated batches, no_sync, unused parameters, buffers, fit and Keras-style fit); here we
check that every case reported ok, and that failures end the whole job with a message naming a
rank and leave no process behind.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "distributed", "worker.py")
LAUNCH_LIMIT_S = 240        # a launch that takes longer is a hang: fail rather than wait

pytestmark = [
    pytest.mark.skipif(shutil.which("mpiexec") is None,
                       reason="mpiexec not found: pip install mpich mpi4py (the test extra)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("mpi4py") is None,
                       reason="mpi4py not installed: pip install mpich mpi4py (the test extra)"),
]


def launch(n, cases, tmp_path, **env):
    environ = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   GPUDL_DEVICE="cpu", GPUDL_TEST_PIDS=str(tmp_path), OMP_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1", **env)
    return subprocess.run(["mpiexec", "-n", str(n), sys.executable, WORKER, *cases], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=LAUNCH_LIMIT_S)


def assert_cases_ok(result, cases):
    reported = [line.split()[0] for line in result.stdout.splitlines() if line.endswith(" ok")]
    assert result.returncode == 0 and reported == list(cases), (
        f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}")


def assert_no_process_left(pid_folder):
    """Every rank wrote its pid; all must be gone (MPI_Abort kills them; allow a moment)."""
    pids = [int(name.split(".")[0]) for name in os.listdir(pid_folder) if name.endswith(".pid")]
    assert pids, "the ranks did not start"
    for _ in range(100):
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"ranks still running after the job ended: {alive}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:       # a zombie is dead: it only waits for its parent to read its status
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_two_ranks(tmp_path):
    cases = ("collectives", "ddp", "no_sync", "unused", "buffers", "fit", "keras")
    out = tmp_path / "checkpoints"
    out.mkdir()
    assert_cases_ok(launch(2, cases, tmp_path, GPUDL_TEST_OUT=str(out)), cases)


def test_three_ranks(tmp_path):
    cases = ("collectives", "ddp", "no_sync", "fit")
    assert_cases_ok(launch(3, cases, tmp_path), cases)


def test_a_rank_that_raises_stops_every_rank(tmp_path):
    result = launch(3, ["raise"], tmp_path)
    assert result.returncode != 0
    assert "rank 1 of 3 failed with ValueError: deliberate failure on rank 1" in result.stderr
    assert_no_process_left(tmp_path)


def test_a_rank_that_never_joins_makes_the_others_time_out(tmp_path):
    result = launch(2, ["hang"], tmp_path, GPUDL_TEST_TIMEOUT="2")
    assert result.returncode != 0
    assert "rank 0 of 2: all_reduce(sum) of 3 elements did not complete within 2 s" \
        in result.stderr
    assert_no_process_left(tmp_path)
