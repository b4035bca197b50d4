"""The host-sync counter (gd.cuda.sync_count), its one gate (backend.count_read), a capture guard
that refuses reads, and the ops that no longer read the device, checked without a GPU.

``device_reads`` makes every array count as a cuda array, as the simulator does with the cuda
device chosen: the counting and the deferred checks run exactly as on a GPU, on NumPy data.
"""

import math

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, nn
from gpudl.ops import sparse
from host_reads import device_reads  # noqa: F401 (a fixture)

torch = pytest.importorskip("torch")


@pytest.fixture
def refuse_reads(monkeypatch):
    """A capture guard as a CUDA graph capture sets it (``why`` given where the call is not a
    device read): any call raises, naming the op."""
    def guard(what, why="reads the device"):
        raise RuntimeError(f"{what} {why} during a graph capture")
    monkeypatch.setattr(backend, "capture_guard", guard)


# Under the simulator every NumPy array stands for a device array: no host data to check there.
host_data = pytest.mark.skipif(backend._READS_DEVICE and backend._cupy is None,
                               reason="the simulator counts every array")


@host_data
def test_cpu_tensors_do_not_count():
    t = gd.randn(3, device="cpu")
    before = gd.cuda.sync_count()
    t.item() if t.numel() == 1 else t.sum().item()
    t.numpy(), repr(t), t.tolist(), float(t[0]), bool(t[1] > 0)
    assert gd.cuda.sync_count() == before
    assert not backend.on_device(t._data)


def test_each_read_counts_once(device_reads):
    t = gd.randn(3)
    reads = [lambda: t.sum().item(), t.numpy, t.tolist, lambda: repr(t), lambda: float(t[0]),
             lambda: bool(t[1] > 0), lambda: int(t.argmax()), gd.cuda.synchronize,
             lambda: np.asarray(t)]
    for read in reads:
        before = gd.cuda.sync_count()
        read()
        assert gd.cuda.sync_count() == before + 1, read


def test_count_read_reports_and_returns_whether_it_counted(device_reads):
    before = backend.sync_count()
    assert backend.count_read(gd.zeros(2)._data, "a test") is True
    assert backend.sync_count() == before + 1
    assert backend.host_value(gd.tensor(2.5)._data, "a test") == 2.5
    assert backend.sync_count() == before + 2


@pytest.mark.parametrize("read, name", [
    (lambda t: t.sum().item(), "Tensor.item"), (lambda t: t.numpy(), "Tensor.numpy"),
    (lambda t: repr(t), r"Tensor.__repr__"), (lambda t: float(t[0]), "Tensor.item"),
    (lambda t: gd.cuda.synchronize(), "synchronize"),
    (lambda t: t[t > 0], "boolean-mask indexing"),
    (lambda t: F.one_hot(gd.tensor([0, 2])), r"one_hot\(num_classes=-1\)"),
    (lambda t: nn.utils.clip_grad_norm_(_with_grad(t), 1.0, error_if_nonfinite=True),
     r"clip_grad_norm_\(error_if_nonfinite=True\)")])
def test_a_refused_read_raises_naming_the_op_and_is_not_counted(device_reads, refuse_reads,
                                                                 read, name, rng):
    t = gd.tensor(rng.standard_normal(4), dtype=gd.float32)    # a GPU capture refuses randn
    before = gd.cuda.sync_count()
    with pytest.raises(RuntimeError, match=f"^{name} reads the device"):
        read(t)
    assert gd.cuda.sync_count() == before


def _with_grad(t):
    p = gd.zeros(*t.shape, requires_grad=True)
    p.grad = t
    return [p]


@host_data
def test_the_guard_sees_device_reads_only_through_the_counter(refuse_reads):
    t = gd.randn(3, device="cpu")
    before = gd.cuda.sync_count()
    # host data is no device read (a CPU graph capture refuses reading it, but for another
    # reason: see tests/test_cuda_graphs.py), so the counter's guard is not called
    assert backend.count_read(t._data, "test") is False
    assert gd.cuda.sync_count() == before


def test_a_full_deferred_queue_is_a_counted_read(device_reads, monkeypatch):
    monkeypatch.setattr(backend, "MAX_DEFERRED", 2)
    before = gd.cuda.sync_count()
    x = gd.randn(2, 3)
    F.cross_entropy(x, gd.tensor([0, 1]))
    assert gd.cuda.sync_count() == before
    F.cross_entropy(x, gd.tensor([2, 1]))                 # fills the queue: read now
    assert gd.cuda.sync_count() == before + 1 and backend._deferred == []


# ---------------------------------------------------------------- ops that no longer read
def _grads(rng, shapes, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_reads_nothing_and_matches_torch(device_reads, rng, norm_type, max_norm):
    shapes = [(3, 4), (5,), (2, 2, 2)]
    grads = _grads(rng, shapes, 2.0)
    params = [gd.zeros(*s, requires_grad=True) for s in shapes]
    tparams = [torch.zeros(s, requires_grad=True) for s in shapes]
    for p, tp, g in zip(params, tparams, grads):
        p.grad, tp.grad = gd.tensor(g), torch.tensor(g)
    before = gd.cuda.sync_count()
    total = nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    assert gd.cuda.sync_count() == before
    assert isinstance(total, gd.Tensor) and total.shape == ()
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type, foreach=True)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-5)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_error_if_nonfinite_reads_once(device_reads):
    p = gd.zeros(3, requires_grad=True)
    p.grad = gd.tensor([1.0, 2.0, 2.0])
    before = gd.cuda.sync_count()
    assert nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True).item() == \
        pytest.approx(3.0)
    assert gd.cuda.sync_count() == before + 2                      # the check, then item()
    p.grad = gd.tensor([1.0, np.inf, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_clip_grad_value_reads_nothing_and_matches_torch(device_reads, rng):
    g = _grads(rng, [(4, 3)], 3.0)[0]
    p, tp = gd.zeros(4, 3, requires_grad=True), torch.zeros(4, 3, requires_grad=True)
    p.grad, tp.grad = gd.tensor(g), torch.tensor(g)
    before = gd.cuda.sync_count()
    nn.utils.clip_grad_value_([p], 1.5)
    assert gd.cuda.sync_count() == before
    torch.nn.utils.clip_grad_value_([tp], 1.5)
    np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())


OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, capturable=True)),
    ("AdamW", dict(lr=0.01)), ("AdamW", dict(lr=0.01, capturable=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, capturable=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01))]
SCHEDULERS = [
    lambda o: gd.optim.lr_scheduler.StepLR(o, 2, 0.5),
    lambda o: gd.optim.lr_scheduler.MultiStepLR(o, [1, 3], 0.5),
    lambda o: gd.optim.lr_scheduler.ExponentialLR(o, 0.9),
    lambda o: gd.optim.lr_scheduler.CosineAnnealingLR(o, 4),
    lambda o: gd.optim.lr_scheduler.LambdaLR(o, lambda epoch: 1 / (1 + epoch))]


@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize("name, options", OPTIMIZERS,
                         ids=[f"{n}-{'-'.join(o)}" for n, o in OPTIMIZERS])
def test_optimizer_and_scheduler_steps_read_nothing(device_reads, rng, name, options,
                                                    tensor_lr):
    if tensor_lr and name == "Adagrad":
        pytest.skip("Adagrad takes a number lr here")
    params = [gd.tensor(a, requires_grad=True) for a in _grads(rng, [(3, 2), (4,)])]
    if tensor_lr:
        options = dict(options, lr=gd.tensor(options["lr"]))
    opt = getattr(gd.optim, name)(params, **options)
    schedulers = [make(opt) for make in SCHEDULERS[:1 if tensor_lr else None]]
    before = gd.cuda.sync_count()
    for _ in range(3):
        for p, g in zip(params, _grads(rng, [(3, 2), (4,)])):
            p.grad = gd.tensor(g)
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for scheduler in schedulers:
            scheduler.step()
        opt.zero_grad()
    assert gd.cuda.sync_count() == before


# ---------------------------------------------------------------- device-side index checks
@pytest.mark.parametrize("op, call", [
    ("gather", lambda x, i: x.gather(1, i.reshape(1, -1))),
    ("scatter", lambda x, i: x.scatter(1, i.reshape(1, -1), 0.0)),
    ("scatter_add", lambda x, i: x.scatter_add(1, i.reshape(1, -1),
                                               gd.ones(1, i.numel(), device="cpu"))),
    ("index_select", lambda x, i: x.index_select(1, i)),
    ("index_add", lambda x, i: x.index_add(1, i, gd.ones(1, i.numel(), device="cpu"))),
    ("embedding", lambda x, i: F.embedding(i, x.t())),
    ("one_hot", lambda x, i: F.one_hot(i, 3))])
@host_data
def test_index_checks_raise_at_once_on_the_cpu(op, call):
    x = gd.randn(1, 3, device="cpu")
    call(x, gd.tensor([0, 2], device="cpu"))
    with pytest.raises(IndexError, match=f"{op}: .*(3|out of range)"):
        call(x, gd.tensor([0, 3], device="cpu"))


@pytest.mark.parametrize("op, check", [
    ("index_select", lambda i: __import__("gpudl.tensor_index").tensor_index._check_rows(
        "index_select", i._data, 3)),
    ("gather", lambda i: __import__("gpudl.tensor_index").tensor_index._along(
        "gather", i._data.reshape(1, -1), 1, gd.zeros(1, 3)._data, 3)),
    ("one_hot", lambda i: sparse.check_indices("one_hot", "tensor", i, 3))])
def test_index_checks_on_the_device_are_deferred_to_the_next_read(device_reads, op, check):
    before = gd.cuda.sync_count()
    check(gd.tensor([0, 2]))
    check(gd.tensor([1, 5]))                       # out of range: queued, not raised
    assert gd.cuda.sync_count() == before and len(backend._deferred) == 2
    with pytest.raises(IndexError, match=f"{op}: .*5.*device-side"):
        gd.cuda.synchronize()
    assert backend._deferred == []


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_binary_cross_entropy_range_checks_are_deferred(device_reads):
    p = gd.tensor([0.2, 0.9])
    F.binary_cross_entropy(p, gd.tensor([0.0, 1.0]))
    F.binary_cross_entropy(p, gd.tensor([0.0, 2.0]))
    with pytest.raises(RuntimeError, match="target should be between 0 and 1.*device-side"):
        gd.cuda.synchronize()
    F.binary_cross_entropy(gd.tensor([1.5, 0.5]), gd.tensor([0.0, 1.0]))
    with pytest.raises(RuntimeError, match="input should be between 0 and 1.*device-side"):
        gd.cuda.synchronize()


def test_embedding_max_norm_reads_nothing(device_reads, rng):
    weight = rng.standard_normal((5, 4)) * 3
    ours, theirs = gd.tensor(weight), torch.tensor(weight)
    idx = np.array([4, 1, 1, 0])
    before = gd.cuda.sync_count()
    F.embedding(gd.tensor(idx), ours, max_norm=1.0)
    assert gd.cuda.sync_count() == before
    torch.nn.functional.embedding(torch.tensor(idx), theirs, max_norm=1.0)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("index, dim, size", [
    (lambda i: i, 0, 2), (lambda i: (slice(None), i), 1, 3), (lambda i: (Ellipsis, i), 2, 4),
    (lambda i: (None, 0, i), 1, 3),
    (lambda i: (gd.tensor([[True, False, True], [False, True, False]]), i[1:]), 2, 4),
    (lambda i: (gd.tensor([1, 0]), slice(None), i), 2, 4)])
def test_integer_tensor_indices_are_range_checked_on_the_device(device_reads, index, dim,
                                                                 size):
    """CuPy wraps an out-of-range integer index where NumPy raises: on the device the check is
    deferred, for the dim each index part addresses."""
    x = gd.randn(2, 3, 4)
    x[index(gd.tensor([0, -1]))]                  # in range for every dim: nothing queued fails
    gd.cuda.synchronize()
    _index_out_of_range(lambda: x[index(gd.tensor([0, size]))], x)
    with pytest.raises(IndexError, match=f"indexing: index {size} is out of bounds for dim "
                                         f"{dim} with size {size}.*device-side"):
        gd.cuda.synchronize()


def test_setitem_with_an_integer_tensor_is_range_checked_on_the_device(device_reads):
    x = gd.zeros(3)
    x[gd.tensor([2, -3])] = 1.0
    gd.cuda.synchronize()
    _index_out_of_range(lambda: x.__setitem__(gd.tensor([7]), 1.0), x)
    with pytest.raises(IndexError, match="__setitem__: index 7 is out of bounds for dim 0"):
        gd.cuda.synchronize()


def _index_out_of_range(call, x):
    """``call`` indexes ``x`` out of range: NumPy data raises its own IndexError at once; CuPy
    wraps the index silently, leaving the error to the queued check."""
    if isinstance(x._data, np.ndarray):
        with pytest.raises(IndexError):
            call()
    else:
        call()
