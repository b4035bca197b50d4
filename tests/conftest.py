"""Shared test set-up: a fixed seed per test, no failed device-side check carried from one test
to the next, the tests folder importable (oracle.py, device_checks.py), and with
``GPUDL_FAILURE_LOG=path`` every failure written to ``path`` as it happens."""

import os
import re
import zlib

import numpy as np
import pytest

import gpudl as gd


# tools/gpu_check.sh: a device command cut at its limit kills pytest (and its xdist workers)
# before the summary, and with it every failure's reason (session 18's GPU run lost ~150 that
# way); written as they come, they survive. Only the controlling process writes (xdist replays
# the workers' reports there); the counts file is rewritten every 100 reports and at the end.
_FAILURE_LOG = os.environ.pop("GPUDL_FAILURE_LOG", None)    # not for pytest run by a test
_OUTCOMES = {}


def _write_counts():
    text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_OUTCOMES.items()))
    with open(_FAILURE_LOG + ".counts", "w") as counts:
        counts.write(text + "\n")


def pytest_runtest_logreport(report):
    if not _FAILURE_LOG or "PYTEST_XDIST_WORKER" in os.environ:
        return
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.outcome] = _OUTCOMES.get(report.outcome, 0) + 1
        if sum(_OUTCOMES.values()) % 100 == 0:
            _write_counts()
    if report.failed:
        with open(_FAILURE_LOG, "a") as log:
            log.write(f"FAILED {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")


def pytest_sessionfinish(session):
    if _FAILURE_LOG and "PYTEST_XDIST_WORKER" not in os.environ:
        _write_counts()


def pytest_collection_modifyitems(items):
    """A test id holding an object's address (a lambda's repr) differs between processes, and
    pytest-xdist then refuses the whole run (the GPU check's suite, session 20): refuse it here,
    on one process too."""
    addressed = [item.nodeid for item in items if re.search(r" at 0x[0-9a-f]+", item.nodeid)]
    if addressed:
        raise pytest.UsageError("test ids holding object addresses (give the parametrize "
                                f"stable ids): {addressed[:5]}")


@pytest.fixture(autouse=True)
def _seed():
    gd.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _torch_on_one_thread():
    """PyTorch, where a test has imported it (the oracle), computes on one intra-op thread.
    Its inputs here are tiny, and on a machine whose cores are taken (CI runs three stages on
    two cores) its second thread only adds hand-offs: the OpInfo max_pool2d sweep took 7.2 s
    with torch's default 2 threads, 2.1 s with 1 (same values: the results do not depend on
    the thread count beyond rounding, and the tests compare with tolerances). Set again before
    every test, as a benchmark run in-process may raise it. Subprocesses are not affected
    (tests/test_busy_machine.py measures torch's own default there)."""
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _no_failed_device_check_left():
    """On the cuda device a failed device-side check (``backend.defer_check``) raises at the
    next device read, which may come in the next test. After each test, read the queue: a check
    left failing fails the test that left it (it should read it inside its own
    ``pytest.raises``, see ``device_checks.call_then_read``), and the queue is empty either way,
    so no error leaks into another test."""
    from gpudl import backend
    yield
    try:
        backend.raise_deferred()                  # empties the queue, raises the first failure
    except Exception as error:                    # noqa: BLE001 (any check's error type)
        pytest.fail(f"the test left a failed device-side check unread: "
                    f"{type(error).__name__}: {error}", pytrace=False)


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id: different inputs per test, the same on every
    run (crc32, not hash(): string hashes change with PYTHONHASHSEED)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def strict_fp32_conv():
    """On the cuda device, run convolutions in strict fp32 (``cudnn.allow_tf32 = False``) for a
    test whose float32 tolerances are fp32's, as PyTorch's own suite turns TF32 off for its fp32
    checks (modules comparing convs opt in with ``pytest.mark.usefixtures``). The TF32 path has
    its own tests (tests/sim/test_conv_tc_sim.py)."""
    from gpudl import backend, backends
    if backend.DEFAULT_DEVICE != "cuda":
        yield
        return
    saved = backends.cudnn.allow_tf32
    backends.cudnn.allow_tf32 = False
    yield
    backends.cudnn.allow_tf32 = saved


@pytest.fixture
def strict_fp32_attention():
    """On the cuda device, run float32 attention on the strict SIMT kernels
    (``enable_mem_efficient_sdp(False)`` with ``matmul.allow_tf32`` False, its default) for a
    test that needs the SIMT path or cannot afford the emulated 3xTF32 tensor-core kernels
    (their own tests: tests/sim/test_attention_prec_sim.py), as torch's tests pick SDPA
    backends."""
    from gpudl import backend, backends
    if backend.DEFAULT_DEVICE != "cuda":
        yield
        return
    saved = backends.cuda.mem_efficient_sdp_enabled()
    backends.cuda.enable_mem_efficient_sdp(False)
    yield
    backends.cuda.enable_mem_efficient_sdp(saved)


@pytest.fixture
def nan_empty(monkeypatch):
    """``np.empty`` / ``np.empty_like`` called from gpudl's own code hand out float arrays full
    of NaN (what uninitialised memory may hold), for simulator tests, where the cuda path
    allocates its outputs through NumPy: a kernel that leaves an output element unwritten,
    counting on a zero-fill, fails its comparison. The simulator's own shared and local arrays
    are poisoned by tests/sim/sim_blocks.py in every simulator test, this fixture or not (NaN
    in floats; ``GPUDL_SIM_POISON=0`` turns it off)."""
    import sys
    real_empty, real_like = np.empty, np.empty_like

    def poisoned(out):
        if out.dtype.kind in "fc" and sys._getframe(2).f_globals.get(
                "__name__", "").startswith("gpudl."):
            out.fill(np.nan)
        return out
    monkeypatch.setattr(np, "empty", lambda *a, **k: poisoned(real_empty(*a, **k)))
    monkeypatch.setattr(np, "empty_like", lambda *a, **k: poisoned(real_like(*a, **k)))


@pytest.fixture
def conv_paths_ran(monkeypatch):
    """The names of the cuda convolution primitives that run, in order: conv_cuda's
    ("direct.forward", ...), conv_winograd_cuda's ("winograd.grad_input", ...) and
    conv_winograd_fused_cuda's ("fused.forward", ...; its grad_weight is conv_cuda's)."""
    from gpudl.kernels import conv_cuda, conv_winograd_cuda, conv_winograd_fused_cuda
    names = []
    for module, prefix in ((conv_cuda, "direct"), (conv_winograd_cuda, "winograd"),
                           (conv_winograd_fused_cuda, "fused")):
        for name in ("forward", "grad_input", "grad_weight"):
            def call(*args, _real=getattr(module, name), _label=f"{prefix}.{name}", **kwargs):
                names.append(_label)
                return _real(*args, **kwargs)
            monkeypatch.setattr(module, name, call)
    return names


@pytest.fixture
def kernels_launched(monkeypatch):
    """``kernels_launched(module)``: the list (filled as they launch) of the names of the kernels
    a *_cuda module launches through its ``launch`` (the launches still run)."""
    def watch(module):
        names, real = [], module.launch

        def record(kernel, *args, **kwargs):
            names.append(kernel.__name__)
            return real(kernel, *args, **kwargs)
        monkeypatch.setattr(module, "launch", record)
        return names
    return watch
