"""Grad mode is per thread, as in PyTorch: no thread's no_grad (or backward) changes another's.

Each test forces the interleaving that broke the process-wide flag with events and barriers,
so it fails deterministically on the old code instead of by luck of scheduling.
"""

import threading

import numpy as np

import gpudl as gd
from gpudl.autograd import Function, _topological_order

TIMEOUT = 30


def _run(*targets):
    """Run each target in its own thread; re-raise the first exception a thread hit."""
    errors = []

    def guard(target):
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a test thread hung"
    if errors:
        raise errors[0]


def _chain(x, n):
    y = x
    for _ in range(n):
        y = y * 1.5 + 0.25
    return y


def test_thread_records_a_full_graph_while_another_sits_in_no_grad(rng):
    inside, done = threading.Event(), threading.Event()
    result = {}

    def a():
        with gd.no_grad():
            inside.set()
            done.wait(TIMEOUT)

    def b():
        inside.wait(TIMEOUT)
        x = gd.tensor(rng.standard_normal(3).astype(np.float64), requires_grad=True)
        y = _chain(x, 50)
        result["nodes"] = len(_topological_order(y.grad_fn))
        y.sum().backward()
        result["grad"] = x.grad.numpy()
        done.set()

    _run(a, b)
    assert result["nodes"] == 100               # 50 * (mul, add): none lost
    np.testing.assert_allclose(result["grad"], np.full(3, 1.5 ** 50))


def test_crossed_no_grad_blocks_in_two_threads_leave_recording_on():
    # A enters, B enters, A exits, B exits: with one process-wide flag B restored "off"
    step = threading.Barrier(2, timeout=TIMEOUT)
    seen = {}

    def a():
        with gd.no_grad():
            step.wait()                             # both inside
            step.wait()                             # A leaves first
        seen["a"] = gd.is_grad_enabled()
        step.wait()

    def b():
        with gd.no_grad():
            step.wait()
            step.wait()
            step.wait()                             # B leaves after A has left
        seen["b"] = gd.is_grad_enabled()

    _run(a, b)
    assert seen == {"a": True, "b": True}
    assert gd.is_grad_enabled()
    x = gd.ones(2, requires_grad=True)
    assert (x * 2).requires_grad


def test_one_no_grad_instance_shared_by_threads():
    guard = gd.no_grad()
    step = threading.Barrier(2, timeout=TIMEOUT)
    seen = []

    def worker():
        with guard:
            step.wait()
            seen.append(gd.is_grad_enabled())
            step.wait()
        seen.append(gd.is_grad_enabled())

    _run(worker, worker)
    assert sorted(seen) == [False, False, True, True]
    assert gd.is_grad_enabled()


def test_new_threads_start_with_grad_enabled():
    seen = []
    with gd.no_grad():
        _run(lambda: seen.append(gd.is_grad_enabled()))
        assert not gd.is_grad_enabled()
    assert seen == [True]


class _WaitingBackward(Function):
    """Identity whose backward holds the walk open until told to finish."""

    inside = None
    release = None

    @staticmethod
    def forward(ctx, a):
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        _WaitingBackward.inside.set()
        _WaitingBackward.release.wait(TIMEOUT)
        return g


def test_backward_does_not_turn_recording_off_in_other_threads(rng):
    _WaitingBackward.inside, _WaitingBackward.release = threading.Event(), threading.Event()
    result = {}

    def a():
        x = gd.ones(3, requires_grad=True)
        _WaitingBackward.apply(x).sum().backward()

    def b():
        _WaitingBackward.inside.wait(TIMEOUT)       # A is inside its backward walk
        x = gd.tensor(rng.standard_normal(3), requires_grad=True)
        y = (x * x).sum()
        result["requires_grad"] = y.requires_grad
        y.backward()
        result["grad"] = x.grad.numpy()
        result["x"] = x.numpy()
        _WaitingBackward.release.set()

    _run(a, b)
    assert result["requires_grad"]
    np.testing.assert_allclose(result["grad"], 2 * result["x"])
    assert gd.is_grad_enabled()
