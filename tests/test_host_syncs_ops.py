"""Which ops read the cuda device, op by op (issue 14): each call below runs with every array
standing for a device array (``device_reads``: the counter and the deferred checks run as on a
GPU) and watched for reads made around the counter (``host_reads.Watched``). An op of a
training step must read nothing; an op whose result needs a device value on the host (a
data-dependent size, a Python bool) must read it through the counter, exactly as often as
listed, so that gd.cuda.sync_count() and a CUDA graph capture see it."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, nn
from cupy_like import fake_cuda  # noqa: F401 (a fixture)
from host_reads import Watched, device_reads, watch, watched  # noqa: F401 (fixtures)

torch = pytest.importorskip("torch")


def _max_unpool(rng):
    x = gd.tensor(rng.standard_normal((2, 3, 4, 6)), requires_grad=True)
    return lambda: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2).sum().backward()


def _ctc_case(rng, T=8, N=3, C=4, S=3):
    lp = gd.tensor(rng.standard_normal((T, N, C)), requires_grad=True)
    target_lengths = rng.integers(1, S + 1, N)
    targets = rng.integers(1, C, (N, S))
    return lp, targets, gd.tensor(rng.integers(2 * S + 1, T + 1, N)), target_lengths


def _ctc_padded(rng):
    lp, targets, input_lengths, target_lengths = _ctc_case(rng)
    targets, target_lengths = gd.tensor(targets), gd.tensor(target_lengths)
    return lambda: F.ctc_loss(lp.log_softmax(2), targets, input_lengths,
                              target_lengths).backward()


def _ctc_concatenated(rng):
    lp, targets, input_lengths, target_lengths = _ctc_case(rng)
    flat = gd.tensor(np.concatenate([row[:n] for row, n in zip(targets, target_lengths)]))
    target_lengths = gd.tensor(target_lengths)
    return lambda: F.ctc_loss(lp.log_softmax(2), flat, input_lengths, target_lengths).backward()


def _cumulative_batch_norm(rng):
    norm = nn.BatchNorm1d(3, momentum=None)
    for p in norm.parameters():
        watch(p)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        watch(getattr(norm, name))
    x = gd.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    return lambda: norm(x).sum().backward()


def _adaptive_softmax(rng):
    model = nn.AdaptiveLogSoftmaxWithLoss(4, 10, [3, 6])
    for p in model.parameters():
        watch(p)
    x = gd.tensor(rng.standard_normal((6, 4)), dtype=gd.float32)
    target = gd.tensor([0, 7, 4, 9, 1, 5])
    return lambda: model(x, target).loss.backward()


def _normal_log_prob(rng):
    """A VAE's or a policy's distribution, validated (the default) in every step."""
    loc = gd.tensor(rng.standard_normal(4), requires_grad=True)
    scale = gd.tensor(rng.uniform(0.5, 2, 4), requires_grad=True)
    x = gd.tensor(rng.standard_normal(4))
    return lambda: gd.distributions.Normal(loc, scale).log_prob(x).sum().backward()


def _categorical_log_prob(rng):
    logits = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    actions = gd.tensor([0, 3, 1])
    return lambda: gd.distributions.Categorical(logits=logits).log_prob(actions).sum().backward()


def _ema_update(rng):
    model = nn.Linear(3, 2)
    ema = gd.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=gd.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    return lambda: ema.update_parameters(model)


def _sparse_adam_step(rng):
    table = nn.Embedding(6, 2, sparse=True)
    watch(table.weight)
    opt = gd.optim.SparseAdam(table.parameters(), lr=0.1)
    index = gd.tensor([[1, 4], [4, 0]])

    def run():
        opt.zero_grad()
        table(index).sum().backward()
        opt.step()
    return run


def _masked_scatter(rng):
    x = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    source = gd.tensor(rng.standard_normal(12), requires_grad=True)
    mask = gd.tensor(rng.random((3, 4)) < 0.5)
    return lambda: (x.masked_scatter(mask, source) * 2).sum().backward()


def _repeat_interleave_sized(rng):
    x = gd.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    repeats = gd.tensor([2, 0, 3])
    return lambda: x.repeat_interleave(repeats, dim=0, output_size=5).sum().backward()


def _repeat_interleave(rng):
    x = gd.tensor(rng.standard_normal(3))
    return lambda: x.repeat_interleave(gd.tensor([2, 0, 3]))


def _quantiles(rng):
    x = gd.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    q = gd.tensor([0.1, 0.5, 0.9], dtype=gd.float64)
    return lambda: (gd.quantile(x, 0.25, dim=1).sum() + gd.nanquantile(x, q).sum()).backward()


def _masked_assignment(rng):
    """The loss-masking and attention-masking idioms: ``x[mask] = number`` on an activation."""
    x = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    keep_rows = gd.tensor([True, False, True])

    def run():
        scores = x * 2
        scores[scores < 0] = -1e9
        scores[keep_rows] = gd.tensor(0.5, dtype=gd.float64)
        scores.sum().backward()
    return run


def _embedding_bag_mean(rng):
    """The text classifier of torch's tutorial: EmbeddingBag(mode='mean') over offsets."""
    bag = nn.EmbeddingBag(8, 3, mode="mean", padding_idx=0)
    watch(bag.weight)
    tokens, offsets = gd.tensor([1, 0, 4, 7, 7, 2]), gd.tensor([0, 2, 5])
    return lambda: bag(tokens, offsets).sum().backward()


def _embedding_scaled_by_frequency(rng):
    """Embedding(scale_grad_by_freq=True): the counts by a scatter-add (CuPy's bincount reads
    the device for its output size)."""
    table = nn.Embedding(6, 2, scale_grad_by_freq=True)
    watch(table.weight)
    index = gd.tensor([[1, 4], [4, 4]])
    return lambda: table(index).sum().backward()


def _equal(rng):
    a = gd.tensor(rng.standard_normal(4))
    return lambda: gd.equal(a, a.clone())


def _anomaly_backward(rng):
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)

    def run():
        with gd.autograd.detect_anomaly():
            (x.exp() * 2).sum().backward()
    return run


def _matrix_exp(rng):
    a = gd.tensor(rng.standard_normal((2, 3, 3)) * 4)
    return lambda: gd.linalg.matrix_exp(a)


def _det_backward(rng):
    a = gd.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    return lambda: gd.linalg.det(a).backward()


def _scatter_prod_double_backward(rng):
    x = gd.tensor(rng.standard_normal(3) + 3, requires_grad=True)
    index = gd.tensor([0, 1, 0, 2])

    def run():
        out = gd.ones(3, dtype=gd.float64).scatter_reduce(0, index, x.repeat(2)[:4], "prod")
        (grad,) = gd.autograd.grad(out.sum(), x, create_graph=True)
        return grad
    return run


# (op, its call, the device reads it makes)
CASES = {
    "max_unpool2d": (_max_unpool, 0),
    "ctc_loss(padded targets, cuda lengths)": (_ctc_padded, 0),
    "BatchNorm1d(momentum=None)": (_cumulative_batch_norm, 0),
    "Normal(validated).log_prob": (_normal_log_prob, 0),
    "AveragedModel(EMA).update_parameters": (_ema_update, 0),
    "Embedding(sparse=True) + SparseAdam": (_sparse_adam_step, 0),
    "masked_scatter": (_masked_scatter, 0),
    "EmbeddingBag(mode='mean', padding_idx)": (_embedding_bag_mean, 0),
    "Embedding(scale_grad_by_freq=True) backward": (_embedding_scaled_by_frequency, 0),
    "x[bool mask] = number": (_masked_assignment, 0),
    "quantile(number q), nanquantile(tensor q)": (_quantiles, 0),
    "repeat_interleave(tensor repeats, output_size=)": (_repeat_interleave_sized, 0),
    "repeat_interleave(tensor repeats): the counts": (_repeat_interleave, 1),
    "Categorical(logits, validated).log_prob": (_categorical_log_prob, 0),
    "ctc_loss(1-D targets): target_lengths": (_ctc_concatenated, 1),
    "AdaptiveLogSoftmaxWithLoss: cluster sizes": (_adaptive_softmax, 1),
    "equal": (_equal, 1),
    "detect_anomaly: one per gradient": (_anomaly_backward, 3),
    "matrix_exp: the squarings": (_matrix_exp, 1),
    "det backward: a singularity check, the solve's error check": (_det_backward, 2),
    "scatter_reduce(prod) create_graph: a zero check": (_scatter_prod_double_backward, 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_device_reads_of_each_op(device_reads, watched, rng, case):
    make, reads = CASES[case]
    call = make(rng)
    call()                                          # a first call may build state
    gd.cuda.synchronize()
    before = gd.cuda.sync_count()
    Watched.reads = []
    call()
    assert Watched.reads == [], "a device read around the counter"
    assert gd.cuda.sync_count() - before == reads


def test_cumulative_batch_norm_matches_torch(device_reads, rng):
    ours, theirs = nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
        np.testing.assert_allclose(ours(gd.tensor(x)).detach().numpy(),
                                   theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(theirs, name).numpy(),
                                   rtol=1e-6)
    assert ours.num_batches_tracked.item() == 3


@pytest.mark.parametrize("bad, message", [
    (dict(input_lengths=[9, 8, 8]), "input_lengths to have value at most 8, but got value 9"),
    (dict(input_lengths=[8, -1, 8]), "input_lengths must be non-negative, got -1"),
    (dict(target_lengths=[4, 1, 1]), "size at least 4 at dimension 1, but got size 3"),
    (dict(targets=4), r"targets must be class indices in \[0, 4\), got 4")])
def test_ctc_checks_of_cuda_lengths_are_deferred(device_reads, rng, bad, message):
    lp, targets, input_lengths, target_lengths = _ctc_case(rng)
    arguments = dict(input_lengths=input_lengths, target_lengths=target_lengths)
    if "targets" in bad:
        targets[0, 0] = bad.pop("targets")
    arguments.update({name: gd.tensor(value) for name, value in bad.items()})
    lengths = (arguments["input_lengths"], gd.tensor(arguments["target_lengths"]))
    before = gd.cuda.sync_count()
    try:
        F.ctc_loss(lp.log_softmax(2), gd.tensor(targets), *lengths)
    except IndexError:              # NumPy refuses what CuPy's indexing would wrap
        pass
    assert gd.cuda.sync_count() == before and backend._deferred
    with pytest.raises((RuntimeError, ValueError), match=f"ctc_loss: .*{message}.*device-side"):
        gd.cuda.synchronize()


def test_max_unpool_index_check_is_deferred(device_reads, rng):
    values = gd.tensor(rng.standard_normal((1, 1, 2, 2)))
    indices = gd.tensor([[[[0, 3], [8, 16]]]])
    try:
        F.max_unpool2d(values, indices, 2)
    except IndexError:              # NumPy refuses what CuPy's indexing would wrap
        pass
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 16\) .*got "
                                         "16.*device-side"):
        gd.cuda.synchronize()


@pytest.mark.parametrize("call, message", [
    (lambda: gd.distributions.Normal(gd.zeros(2), gd.tensor([1.0, -1.0])),
     "Expected parameter scale .* GreaterThan"),
    (lambda: gd.distributions.Poisson(gd.tensor([1.0])).log_prob(gd.tensor([1.5])),
     "within the support"),
    (lambda: gd.distributions.Categorical(probs=gd.tensor([0.5, -0.1])),
     "probs must be non-negative"),
    (lambda: gd.distributions.Uniform(gd.tensor([1.0]), gd.tensor([0.0])), "low < high")])
def test_distribution_validation_is_deferred_on_the_device(device_reads, call, message):
    before = gd.cuda.sync_count()
    call()
    assert gd.cuda.sync_count() == before
    with pytest.raises(ValueError, match=f"{message}.*device-side"):
        gd.cuda.synchronize()


@pytest.mark.parametrize("averaging", ["swa", "ema_multi", "ema"])
def test_averaged_model_matches_torch(device_reads, rng, averaging):
    swa = gd.optim.swa_utils, torch.optim.swa_utils
    options = [{}, {}] if averaging == "swa" else [
        {"multi_avg_fn": m.get_ema_multi_avg_fn(0.8)} if averaging == "ema_multi"
        else {"avg_fn": m.get_ema_avg_fn(0.8)} for m in swa]
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    averaged = swa[0].AveragedModel(ours, **options[0]), swa[1].AveragedModel(theirs, **options[1])
    for _ in range(3):                     # the model moves between updates
        weight, bias = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (2,)))
        with gd.no_grad():
            ours.weight.copy_(gd.tensor(weight)), ours.bias.copy_(gd.tensor(bias))
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(weight)), theirs.bias.copy_(torch.tensor(bias))
        averaged[0].update_parameters(ours)
        averaged[1].update_parameters(theirs)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(getattr(averaged[0].module, name).detach().numpy(),
                                   getattr(averaged[1].module, name).detach().numpy(), rtol=1e-6)
    assert averaged[0].n_averaged.item() == 3


def test_keras_class_weights_are_gathered_on_the_device(device_reads, rng):
    from gpudl.keras.training import ClassWeights
    weights = ClassWeights({0: 1.5, 2: 0.5, 3: 2.0})
    labels = rng.choice([0, 2, 3], 10)
    on_device = gd.tensor(labels)
    before = gd.cuda.sync_count()
    gathered = weights.of(on_device._data, on_device._device)
    assert gd.cuda.sync_count() == before
    np.testing.assert_array_equal(gathered.numpy(), np.array([1.5, 0, 0.5, 2.0])[labels])
    weights.of(gd.tensor([0, 1, 7])._data, on_device._device)
    with pytest.raises(ValueError, match="class_weight has no weight for class 1.*device-side"):
        gd.cuda.synchronize()


def test_masked_scatter_source_length_check_is_deferred(device_reads, rng):
    x = gd.tensor(rng.standard_normal((2, 3)), dtype=gd.float32)
    x.masked_scatter(gd.tensor([[True, False, True], [True, True, False]]), gd.zeros(3))
    with pytest.raises(RuntimeError, match="masked_scatter: expected source to have at least 4 "
                                           "elements .*got 3.*device-side"):
        gd.cuda.synchronize()


@pytest.mark.parametrize("repeats, message", [
    ([2, 0, 2], "output_size is 5 but the repeats add up to 4"),
    ([2, -1, 4], "repeats must be non-negative, got -1")])
def test_repeat_interleave_with_output_size_checks_on_the_device(device_reads, rng, repeats,
                                                                  message):
    x = gd.tensor(rng.standard_normal(3))
    expected = np.repeat(x.numpy(), [2, 0, 3])
    np.testing.assert_array_equal(x.repeat_interleave(gd.tensor([2, 0, 3]), output_size=5).numpy(),
                                  expected)
    x.repeat_interleave(gd.tensor(repeats), output_size=5)
    with pytest.raises(ValueError, match=f"repeat_interleave: {message}.*device-side"):
        gd.cuda.synchronize()


def test_a_queued_distribution_check_keeps_no_tensor_alive(device_reads):
    import gc
    import weakref
    loc = gd.zeros(3, requires_grad=True) * 2            # a step's activation, with its graph
    alive = weakref.ref(loc)
    gd.distributions.Normal(loc, gd.ones(3)).log_prob(gd.zeros(3))
    del loc
    gc.collect()
    assert alive() is None and backend._deferred
    gd.cuda.synchronize()


def test_quantile_q_range_checks(device_reads, rng):
    x = gd.tensor(rng.standard_normal(5))
    with pytest.raises(RuntimeError, match=r"quantile\(\) q values must be in the range"):
        gd.quantile(x, 1.5)                               # a number: refused at once
    gd.quantile(x, gd.tensor([0.5, -0.1], dtype=gd.float64))
    with pytest.raises(RuntimeError, match=r"q values must be in the range \[0, 1\].*device-side"):
        gd.cuda.synchronize()


@pytest.mark.parametrize("value", [-2.5, 3, "0-d", "0-d with grad"])
def test_assignment_through_a_leading_mask_matches_torch(rng, value):
    data = rng.standard_normal((4, 3, 2))
    rows = rng.random(4) < 0.5
    entries = rng.random((4, 3, 2)) < 0.5
    grads = []
    for lib in (gd, torch):
        x = lib.tensor(data, requires_grad=True)
        fill = lib.tensor(1.25, dtype=lib.float64, requires_grad=value == "0-d with grad") \
            if isinstance(value, str) else value
        y = x * 3
        y[lib.tensor(entries)] = fill
        y[lib.tensor(rows), ...] = fill
        (y * lib.tensor(data)).sum().backward()
        grads.append((y.detach().numpy(), x.grad.numpy(),
                      fill.grad.numpy() if isinstance(fill, lib.Tensor) and fill.requires_grad
                      else None))
    (ours, ours_grad, ours_fill), (theirs, theirs_grad, theirs_fill) = grads
    np.testing.assert_allclose(ours, theirs)
    np.testing.assert_allclose(ours_grad, theirs_grad)
    if theirs_fill is not None:
        np.testing.assert_allclose(ours_fill, theirs_fill)


def test_a_cpu_mask_still_assigns_into_a_cuda_tensor(fake_cuda):
    x = gd.zeros(3, 2, device="cuda")
    x[gd.tensor([True, False, True], device="cpu")] = 1.5     # indexing copies the mask over
    np.testing.assert_array_equal(x.cpu().numpy(), [[1.5, 1.5], [0, 0], [1.5, 1.5]])
