"""Device-side checks reported at the next device read (backend.defer_check), and the
cross-entropy target range check that uses them on the GPU. Here the GPU path is forced onto
NumPy data: the queueing and reporting logic is the same; the CuPy reduction runs on a GPU only
(tools/gpu_check.sh runs this file with GPUDL_DEVICE=cuda)."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.ops import cross_entropy as ce
from gpudl.ops import sparse


@pytest.fixture
def deferred(monkeypatch):
    """The GPU's deferred target check, whatever the device (the queue is empty before and
    checked after each test: tests/conftest.py)."""
    monkeypatch.setattr(sparse, "deferred", lambda data: True)


def _check(x, target, ignore_index=-100, op="cross_entropy"):
    """The entry's target check alone (NumPy's take_along_axis, unlike CuPy's, would raise on
    the bad index before any read)."""
    ce._check_class_targets(op, x, gd.tensor(target), x.shape[1], ignore_index)


def test_out_of_range_target_is_reported_at_the_next_sync(deferred):
    _check(gd.randn(4, 3), [0, 1, 7, 2])                      # no error yet: nothing was read
    assert len(backend._deferred) == 1
    with pytest.raises(IndexError, match=r"target 7 is out of bounds.*\[0, 2\].*device-side"):
        gd.cuda.synchronize()
    assert backend._deferred == []                             # reported once
    gd.cuda.synchronize()


@pytest.mark.parametrize("read", [lambda: gd.tensor([1.0]).item(), gd.cuda.synchronize])
def test_device_reads_report(deferred, read):
    _check(gd.randn(3, 4), [0, -5, 1], op="nll_loss")
    with pytest.raises(ValueError, match=r"nll_loss: target -5 is out of bounds"):
        read()


def test_loss_with_good_targets_queues_a_passing_check(deferred):
    loss = F.cross_entropy(gd.randn(2, 3), gd.tensor([2, -100]), ignore_index=-100)
    assert len(backend._deferred) == 1
    assert np.isfinite(loss.item())
    assert backend._deferred == []


def test_smallest_bad_index_and_ignore_index():
    data = np.array([[3, -100, 0], [5, -2, 1]])
    assert sparse.smallest_bad_index(data, 3, -100) == -2
    assert sparse.smallest_bad_index(data, 3) == -100
    assert sparse.smallest_bad_index(np.array([0, 2, -100]), 3, -100) == sparse.NO_BAD_INDEX
    assert sparse.smallest_bad_index(np.array([4, 3], np.uint8), 3, -100) == 3
    assert sparse.smallest_bad_index(np.array([0]), 0) == 0          # nothing is in range


def test_embedding_index_check_is_deferred_too(deferred):
    weight = gd.randn(4, 2)
    sparse.check_indices("embedding", "input", gd.tensor([1, 4, 0]), 4)
    with pytest.raises(IndexError, match=r"embedding: input must lie in \[0, 3\] but holds 4"):
        gd.cuda.synchronize()
    assert F.embedding(gd.tensor([3, 0]), weight).shape == (2, 2)
    gd.cuda.synchronize()


def test_a_long_queue_is_read_without_waiting_for_a_sync(deferred, monkeypatch):
    monkeypatch.setattr(backend, "MAX_DEFERRED", 3)
    x = gd.randn(2, 3)
    _check(x, [0, 1])
    _check(x, [9, 1])
    with pytest.raises(IndexError, match="target 9"):
        _check(x, [0, 2])                                      # the third fills the queue
    assert backend._deferred == []


def test_immediate_check_reports_the_first_bad_value(monkeypatch):
    """The CPU's check (forced, so that the test means the same on the cuda device; and
    reduction='none', whose targets ops/sparse.py checks: the reducing cross entropy's own
    kernel checks them on the cuda device, the simulator's included, at the next read)."""
    backend.raise_deferred()
    monkeypatch.setattr(sparse, "deferred", lambda data: False)
    with pytest.raises(IndexError, match=r"target 3 is out of bounds.*\[0, 2\]"):
        F.cross_entropy(gd.randn(4, 3, device="cpu"), gd.tensor([0, 1, 3, -7], device="cpu"),
                        reduction="none")
    with pytest.raises(IndexError, match=r"embedding: input must lie in \[0, 3\] but holds "
                                         r"values in \[-1, 9\]"):
        F.embedding(gd.tensor([2, -1, 9], device="cpu"), gd.randn(4, 2, device="cpu"))
    assert backend._deferred == []


@pytest.mark.parametrize("later", [True, False], ids=["deferred", "immediate"])
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_a_weight_requiring_grad_is_refused_before_the_targets_are_checked(monkeypatch, later,
                                                                           op):
    """torch refuses the weight first (RuntimeError) whatever the targets; the deferred check
    was queued before that refusal, so a later, unrelated read raised the refused call's error."""
    from oracle import torch
    backend.raise_deferred()
    monkeypatch.setattr(sparse, "deferred", lambda data: later)
    x, target = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), [0, 9, 1]
    weight = np.ones(4, np.float32)
    with pytest.raises(RuntimeError, match="not differentiable"):
        getattr(torch.nn.functional, op)(torch.tensor(x), torch.tensor(target),
                                         torch.tensor(weight, requires_grad=True))
    with pytest.raises(RuntimeError, match="weight requires grad"):
        getattr(F, op)(gd.tensor(x), gd.tensor(target), gd.tensor(weight, requires_grad=True))
    assert backend._deferred == []
