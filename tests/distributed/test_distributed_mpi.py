"""Real process groups: 2 and 3 CPU ranks under mpiexec, each running cases from worker.py.

Each launch runs several cases so the MPI start-ups stay few (CI has 2 cores). The cases check
themselves (identical parameters on every rank, equality with single-process training on the
concatenated batches, no_sync, unused parameters, buffers, fit and Keras-style fit); here we
check that every case reported ok, and that failures end the whole job with a message naming a
rank and leave no process behind.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "distributed", "worker.py")
LAUNCH_LIMIT_S = 240        # a launch that takes longer is a hang: fail rather than wait
# Open MPI's mpiexec refuses to start as root (as CI containers and the GPU machine run) unless
# both are set; MPICH ignores them
OPENMPI_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

pytestmark = [
    pytest.mark.skipif(shutil.which("mpiexec") is None,
                       reason="mpiexec not found: pip install mpich mpi4py (the test extra)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("mpi4py") is None,
                       reason="mpi4py not installed: pip install mpich mpi4py (the test extra)"),
]


def launch(n, cases, tmp_path, **env):
    return run_mpiexec(n, [WORKER, *cases], tmp_path, **env)


def run_mpiexec(n, args, tmp_path, **env):
    """``mpiexec -n N python ARGS...`` in its own session: past LAUNCH_LIMIT_S the whole session
    (mpiexec, its proxies and the ranks) is killed, so a hang leaves nothing running."""
    environ = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   GPUDL_DEVICE="cpu", GPUDL_TEST_PIDS=str(tmp_path), OMP_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1", **OPENMPI_AS_ROOT, **env)
    with subprocess.Popen(["mpiexec", "-n", str(n), sys.executable, *args], cwd=ROOT,
                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as job:
        try:
            stdout, stderr = job.communicate(timeout=LAUNCH_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
            raise AssertionError(f"mpiexec -n {n} {' '.join(args)} hung for {LAUNCH_LIMIT_S} s; "
                                 "killed it and its ranks") from None
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def assert_cases_ok(result, cases):
    reported = [line.split()[0] for line in result.stdout.splitlines() if line.endswith(" ok")]
    assert result.returncode == 0 and reported == list(cases), (
        f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}")


def assert_no_process_left(pid_folder, ranks):
    """Every rank wrote its pid and its parent's (mpiexec's proxy on the node): all must be gone
    (MPI_Abort kills them; allow a moment)."""
    pids = set()
    for name in os.listdir(pid_folder):
        if name.endswith(".pid"):
            with open(os.path.join(pid_folder, name)) as f:
                pids.update(int(v) for v in f.read().split())
    assert len([n for n in os.listdir(pid_folder) if n.endswith(".pid")]) == ranks, \
        "not every rank started"
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
    cases = ("collectives", "ddp", "no_sync", "unused", "buffers", "fit", "keras", "readme")
    out = tmp_path / "checkpoints"
    out.mkdir()
    assert_cases_ok(launch(2, cases, tmp_path, GPUDL_TEST_OUT=str(out)), cases)


def test_three_ranks(tmp_path):
    cases = ("collectives", "ddp", "no_sync", "fit", "readme")
    assert_cases_ok(launch(3, cases, tmp_path), cases)


def test_a_rank_that_raises_stops_every_rank(tmp_path):
    result = launch(3, ["raise"], tmp_path)
    assert result.returncode != 0
    assert "rank 1 of 3 failed with ValueError: deliberate failure on rank 1" in result.stderr
    assert "did not complete within" not in result.stderr      # the abort, not their timeouts
    assert_no_process_left(tmp_path, 3)


def test_a_rank_that_is_killed_ends_the_job(tmp_path):
    """SIGKILL leaves the rank no time to say anything: mpiexec notices the death and ends the
    others (which would otherwise reach their 60 s timeout). Its report (MPICH's "BAD
    TERMINATION ... PID ...", Open MPI's "... noticed that process rank R with PID P on node N
    exited on signal 9") names whichever process it saw end first, not always the killed one."""
    result = launch(3, ["die"], tmp_path)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and re.search(
        r"BAD TERMINATION|noticed that process rank \d+ with PID \d+ on node \S+ exited\s+on\s+"
        r"signal", said), said
    assert "did not complete within" not in said
    assert_no_process_left(tmp_path, 3)


def test_a_rank_that_never_joins_makes_the_others_time_out(tmp_path):
    result = launch(2, ["hang"], tmp_path, GPUDL_TEST_TIMEOUT="2")
    assert result.returncode != 0
    assert "rank 0 of 2: all_reduce(sum) of 3 elements did not complete within 2 s" \
        in result.stderr
    assert_no_process_left(tmp_path, 2)


def test_the_digits_example_trains_data_parallel(tmp_path):
    """README's ``mpiexec -n 2 python -m gpudl.examples digits --distributed`` (``--fast``: 4
    epochs, so below the full run's 0.95 target): one report, from rank 0, and one plot."""
    result = run_mpiexec(2, ["-m", "gpudl.examples", "digits", "--distributed", "--fast",
                             "--quiet", "--out", str(tmp_path)], tmp_path)
    assert result.stdout.count("data-parallel over 2 ranks") == 1, result.stdout + result.stderr
    accuracy = float(re.search(r"held-out accuracy ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.6, result.stdout                # chance is 0.1
    assert result.stdout.count("held-out accuracy") == 1
    assert os.listdir(tmp_path) == ["digits_training.png"]


def test_the_allreduce_benchmark_reports_each_size(tmp_path):
    result = run_mpiexec(2, ["-m", "benchmarks.allreduce", "--repeats", "3", "--sizes", "4096",
                             "65536"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (\d+) KiB \| ([0-9.e-]+) \(([0-9.]+)\) \| ([0-9.e-]+) ",
                      result.stdout, re.M)
    assert [r[0] for r in rows] == ["4", "64"], result.stdout
    assert "world 2; median ms per all-reduce (bus GB/s)" in result.stdout
    for kib, ms, gbs, _ in rows:       # bus bandwidth: 2 (n - 1) / n of the bytes per rank
        expected = int(kib) * 1024 * 2 * (2 - 1) / 2 / (float(ms) / 1e3) / 1e9
        # both printed figures are rounded: ms to 3 significant digits (up to 0.5% off), GB/s
        # to 2 decimals (0.005): their errors add (0.0104 ms, 0.40 GB/s: 0.3938 from the ms)
        assert abs(float(gbs) - expected) <= 0.006 * expected + 0.0051, (kib, ms, gbs)
