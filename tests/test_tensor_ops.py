"""torch's functions and Tensor methods added in session 10 (tensor-ops), against torch 2.13 CPU
on fresh random float64 inputs: values, and the gradients of a random contraction of the
outputs (tests/oracle.py)."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from oracle import check_against_torch

torch = pytest.importorskip("torch")


def test_lerp_tensor_and_number_weights(rng):
    a, b, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.uniform(-1, 2, (3, 4))
    check_against_torch(lambda x, y, z: x.lerp(y, z), torch.lerp, a, b, w)
    for weight in (0.3, 0.7, 1.0):
        check_against_torch(lambda x, y: gd.lerp(x, y, weight),
                            lambda x, y: torch.lerp(x, y, weight), a, b)
    ones = gd.tensor(b)
    assert np.array_equal(gd.tensor(a).lerp(ones, 1.0).numpy(), b)       # exactly end


def test_take_along_dim_broadcasts_and_flattens(rng):
    x = rng.standard_normal((3, 5, 4))
    index = rng.integers(0, 5, (1, 6, 4))
    check_against_torch(lambda t: gd.take_along_dim(t, gd.tensor(index), 1),
                        lambda t: torch.take_along_dim(t, torch.tensor(index), 1), x)
    flat = rng.integers(0, x.size, (7,))
    check_against_torch(lambda t: t.take_along_dim(gd.tensor(flat)),
                        lambda t: torch.take_along_dim(t, torch.tensor(flat)), x)


@pytest.mark.parametrize("offset", [-2, 0, 1, 3])
def test_diag_both_ways(rng, offset):
    check_against_torch(lambda t: t.diag(offset), lambda t: t.diag(offset),
                        rng.standard_normal(4))
    check_against_torch(lambda t: gd.diag(t, offset), lambda t: torch.diag(t, offset),
                        rng.standard_normal((4, 6)))


def test_tensordot_kron_cdist(rng):
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 4, 2))
    check_against_torch(lambda x, y: gd.tensordot(x, y, ([1, 2], [1, 0])),
                        lambda x, y: torch.tensordot(x, y, ([1, 2], [1, 0])), a, b)
    check_against_torch(lambda x, y: gd.tensordot(x, y, 1),
                        lambda x, y: torch.tensordot(x, y, 1), a, b)
    check_against_torch(gd.kron, torch.kron, rng.standard_normal((2, 3)),
                        rng.standard_normal((4, 1, 2)))
    x1, x2 = rng.standard_normal((2, 5, 3)), rng.standard_normal((6, 3))
    x2[1] = x1[0, 2]                  # a zero distance: gradient 0 there, as torch
    for p in (1.0, 2.0, 3.0, 0.5, float("inf")):
        check_against_torch(lambda u, v: gd.cdist(u, v, p),
                            lambda u, v: torch.cdist(u, v, p,
                                                     compute_mode="donot_use_mm_for_euclid_dist"),
                            x1, x2)


def test_cdist_through_matrix_products(rng):
    """p = 2 with more than 25 rows takes |x1|^2 + |x2|^2 - 2 x1.x2 by default, as torch."""
    x1, x2 = rng.standard_normal((2, 30, 4)), rng.standard_normal((1, 7, 4))
    for mode in ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist"):
        check_against_torch(lambda u, v: gd.cdist(u, v, compute_mode=mode),
                            lambda u, v: torch.cdist(u, v, compute_mode=mode), x1, x2,
                            rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="compute_mode"):
        gd.cdist(gd.tensor(x1), gd.tensor(x2), compute_mode="fast")


def test_cross_meshgrid_broadcast_tensors(rng):
    check_against_torch(lambda x, y: gd.cross(x, y, dim=1),
                        lambda x, y: torch.cross(x, y, dim=1),
                        rng.standard_normal((4, 3, 2)), rng.standard_normal((1, 3, 2)))
    for indexing in ("ij", "xy"):
        check_against_torch(lambda *t: gd.meshgrid(*t, indexing=indexing),
                            lambda *t: torch.meshgrid(*t, indexing=indexing),
                            rng.standard_normal(3), rng.standard_normal(4),
                            rng.standard_normal(2))
    check_against_torch(gd.broadcast_tensors, torch.broadcast_tensors,
                        rng.standard_normal((3, 1)), rng.standard_normal(4))


def test_median_kthvalue_mode(rng):
    x = rng.standard_normal((4, 7))
    check_against_torch(lambda t: t.median(), lambda t: t.median(), x)
    check_against_torch(lambda t: t.median(1, keepdim=True), lambda t: t.median(1, True), x)
    check_against_torch(lambda t: gd.kthvalue(t, 3, 0), lambda t: torch.kthvalue(t, 3, 0), x)
    repeated = rng.integers(0, 4, (5, 9)).astype(np.float64)
    check_against_torch(lambda t: t.mode(1), lambda t: t.mode(1), repeated)
    check_against_torch(lambda t: t.median(0), lambda t: t.median(0), repeated)


def test_median_of_all_shares_the_gradient_among_ties():
    check_against_torch(lambda t: t.median(), lambda t: t.median(),
                        np.array([3.0, 1.0, 2.0, 2.0, 5.0, 2.0]))


def test_median_nan_propagates():
    x = np.array([[1.0, np.nan, 3.0, 0.0], [2.0, 1.0, 4.0, 3.0]])
    values, indices = gd.tensor(x).median(1)
    expected = torch.tensor(x).median(1)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected.indices.numpy())


def test_nan_to_num_and_in_place(rng):
    x = rng.standard_normal((3, 5))
    x[0, 1], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    check_against_torch(lambda t: t.nan_to_num(), lambda t: t.nan_to_num(), x)
    check_against_torch(lambda t: gd.nan_to_num(t, 1.0, 2.0, -3.0),
                        lambda t: torch.nan_to_num(t, 1.0, 2.0, -3.0), x)
    inplace = gd.tensor(x)
    assert inplace.nan_to_num_(posinf=9.0) is inplace
    np.testing.assert_array_equal(inplace.numpy(), torch.tensor(x).nan_to_num_(posinf=9.0))
    assert inplace._version == 1


def test_unfold_overlapping_windows(rng):
    x = rng.standard_normal((3, 10, 2))
    for args in [(1, 3, 2), (1, 4, 1), (-1, 2, 1), (0, 3, 3)]:
        check_against_torch(lambda t: t.unfold(*args), lambda t: t.unfold(*args), x)


def test_index_fill_repeat_interleave_reshape_as(rng):
    x = rng.standard_normal((4, 5))
    rows = np.array([3, 0, 3])
    check_against_torch(lambda t, v: t.index_fill(0, gd.tensor(rows), v),
                        lambda t, v: t.index_fill(0, torch.tensor(rows), v), x,
                        np.array(rng.standard_normal()))
    check_against_torch(lambda t: t.repeat_interleave(3, dim=1),
                        lambda t: t.repeat_interleave(3, dim=1), x)
    counts = rng.integers(0, 3, 4)
    check_against_torch(lambda t: gd.repeat_interleave(t, gd.tensor(counts), dim=0),
                        lambda t: torch.repeat_interleave(t, torch.tensor(counts), dim=0), x)
    check_against_torch(lambda t: t.repeat_interleave(2), lambda t: t.repeat_interleave(2), x)
    np.testing.assert_array_equal(gd.repeat_interleave(gd.tensor(counts)).numpy(),
                                  torch.repeat_interleave(torch.tensor(counts)).numpy())
    check_against_torch(lambda t: t.reshape_as(gd.zeros(2, 10)),
                        lambda t: t.reshape_as(torch.zeros(2, 10)), x)
    filled = gd.tensor(x)
    filled.index_fill_(1, gd.tensor([4, 1]), -2.0)
    np.testing.assert_array_equal(filled.numpy(),
                                  torch.tensor(x).index_fill_(1, torch.tensor([4, 1]), -2.0))


def test_baddbmm_addbmm(rng):
    m, b1, b2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 3, 5)), \
        rng.standard_normal((2, 5, 4))
    check_against_torch(lambda s, x, y: s.baddbmm(x, y, beta=0.5, alpha=2.0),
                        lambda s, x, y: s.baddbmm(x, y, beta=0.5, alpha=2.0), m, b1, b2)
    check_against_torch(lambda s, x, y: gd.addbmm(s, x, y, alpha=-1.0),
                        lambda s, x, y: torch.addbmm(s, x, y, alpha=-1.0), m, b1, b2)


def test_std_mean_var_mean(rng):
    x = rng.standard_normal((3, 6))
    check_against_torch(lambda t: gd.std_mean(t, 1), lambda t: torch.std_mean(t, 1), x)
    check_against_torch(lambda t: gd.var_mean(t, 0, keepdim=True, correction=0),
                        lambda t: torch.var_mean(t, 0, keepdim=True, correction=0), x)


def test_search_and_counting(rng):
    boundaries = np.sort(rng.integers(0, 10, (3, 6)), axis=1).astype(np.float64)
    values = rng.integers(-1, 11, (3, 4)).astype(np.float64)       # ties with boundaries
    for right in (False, True):
        got = gd.searchsorted(gd.tensor(boundaries), gd.tensor(values), right=right)
        np.testing.assert_array_equal(got.numpy(), torch.searchsorted(
            torch.tensor(boundaries), torch.tensor(values), right=right).numpy())
        got = gd.bucketize(gd.tensor(values), gd.tensor(boundaries[0]), right=right)
        np.testing.assert_array_equal(got.numpy(), torch.bucketize(
            torch.tensor(values), torch.tensor(boundaries[0]), right=right).numpy())
    x = rng.standard_normal(200)
    np.testing.assert_array_equal(gd.histc(gd.tensor(x), bins=7).numpy(),
                                  torch.histc(torch.tensor(x), bins=7).numpy())
    np.testing.assert_array_equal(gd.histc(gd.tensor(x), 5, -1, 1).numpy(),
                                  torch.histc(torch.tensor(x), 5, -1, 1).numpy())
    ints = rng.integers(0, 6, (4, 5))
    got = gd.unique(gd.tensor(ints), return_inverse=True, return_counts=True)
    want = torch.unique(torch.tensor(ints), return_inverse=True, return_counts=True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    mask = ints > 2
    np.testing.assert_array_equal(gd.tensor(mask).nonzero().numpy(),
                                  torch.tensor(mask).nonzero().numpy())
    for a, b in zip(gd.nonzero(gd.tensor(ints), as_tuple=True),
                    torch.nonzero(torch.tensor(ints), as_tuple=True)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_isclose_allclose_and_small_functions(rng):
    a = rng.standard_normal(6)
    b = a + rng.choice([0.0, 1e-6, 1e-3], 6)
    b[0], a[1], b[1] = np.nan, np.inf, np.inf
    for equal_nan in (False, True):
        np.testing.assert_array_equal(
            gd.isclose(gd.tensor(a), gd.tensor(b), equal_nan=equal_nan).numpy(),
            torch.isclose(torch.tensor(a), torch.tensor(b), equal_nan=equal_nan).numpy())
    assert gd.allclose(gd.tensor(a[2:]), gd.tensor(a[2:] + 1e-9))
    assert not gd.allclose(gd.tensor(a[2:]), gd.tensor(a[2:] + 1e-3))
    assert gd.is_tensor(gd.zeros(1)) and not gd.is_tensor(np.zeros(1))
    assert gd.numel(gd.zeros(3, 4)) == 12
    np.testing.assert_allclose(gd.logspace(-1, 2, 5, base=2.0, dtype=gd.float64).numpy(),
                               torch.logspace(-1, 2, 5, base=2.0, dtype=torch.float64).numpy())


def test_as_tensor_shares_where_it_can():
    array = np.arange(4.0)
    shared = gd.as_tensor(array)
    array[0] = 7.0
    assert shared[0].item() == 7.0
    t = gd.ones(3)
    assert gd.as_tensor(t) is t
    assert gd.as_tensor(t, dtype=gd.float64).dtype == gd.float64
    assert gd.as_tensor([1, 2]).dtype == gd.int64


def test_new_factories_take_self_dtype():
    x = gd.ones(2, dtype=gd.float64)
    assert x.new_zeros(3, 2).shape == (3, 2) and x.new_zeros(3).dtype == gd.float64
    assert x.new_ones((2,), dtype=gd.int32).dtype == gd.int32
    assert x.new_full((2, 2), 3).dtype == gd.float64
    assert x.new_empty(4).shape == (4,)
    assert gd.ones(1, dtype=gd.int64).new_tensor([1.5]).dtype == gd.int64     # as torch


def test_in_place_forms_refuse_leaves_that_require_grad():
    w = gd.zeros(3, requires_grad=True)
    before = w.numpy().copy()
    for call in (lambda: w.lerp_(gd.ones(3), 0.5), lambda: w.index_fill_(0, gd.tensor([1]), 1.0),
                 lambda: w.nan_to_num_(), lambda: w.masked_fill_(w > 0, 1.0)):
        with pytest.raises(RuntimeError, match="in-place"):
            call()
    np.testing.assert_array_equal(w.numpy(), before)
    x = gd.zeros(3)
    x.lerp_(gd.ones(3), 0.25)
    np.testing.assert_allclose(x.numpy(), 0.25)


def test_errors_name_the_argument():
    x = gd.randn(3, 4)
    with pytest.raises(IndexError, match="kthvalue: k"):
        x.kthvalue(5, 1)
    with pytest.raises(RuntimeError, match="unfold: needs 0 <= size"):
        x.unfold(1, 5, 1)
    with pytest.raises(ValueError, match="diag: input must be 1-D or 2-D"):
        gd.diag(gd.zeros(2, 2, 2))
    with pytest.raises(RuntimeError, match="lerp: expected end of dtype"):
        x.lerp(x.double(), 0.5)
    with pytest.raises(ValueError, match="repeats must be non-negative"):
        x.repeat_interleave(-1)
    with pytest.raises(ValueError, match="searchsorted: side"):
        gd.searchsorted(gd.arange(3.0), x, side="middle")
    with pytest.raises(ValueError, match="histc: min"):
        gd.histc(x, 4, 1, 0)
    with pytest.raises(ValueError, match="cdist: x1 and x2"):
        gd.cdist(gd.zeros(2, 3), gd.zeros(2, 4))
    with pytest.raises(ValueError, match="meshgrid: indexing"):
        gd.meshgrid(gd.zeros(2), indexing="yx")
    with pytest.raises(ValueError, match="take_along_dim: indices"):
        x.take_along_dim(gd.tensor([0]), 1)
    with pytest.raises(RuntimeError, match="cross: input and other must share a dtype"):
        gd.cross(gd.zeros(3), gd.zeros(3, dtype=gd.float64))


# ------------------------------------------------------------------ random draws


def _generator(seed):
    """A Generator on the default device (where gd.randn draws)."""
    return gd.Generator(gd.zeros(1).device).manual_seed(seed)


def test_generator_streams_are_reproducible_and_independent():
    g1, g2 = _generator(5), _generator(5)
    a = gd.randn(4, generator=g1)
    gd.manual_seed(0)                       # the global seed leaves a Generator alone
    b = gd.randn(4, generator=g2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert g1.initial_seed() == 5
    for draw in (lambda g: gd.rand(3, generator=g), lambda g: gd.randint(0, 9, (5,), generator=g),
                 lambda g: gd.randperm(6, generator=g),
                 lambda g: gd.multinomial(gd.ones(5), 3, generator=g),
                 lambda g: gd.bernoulli(gd.full((6,), 0.5), generator=g),
                 lambda g: gd.normal(gd.zeros(3), 1.0, generator=g),
                 lambda g: gd.empty(4).uniform_(-1, 1, generator=g),
                 lambda g: gd.empty(4).normal_(2, 3, generator=g),
                 lambda g: gd.empty(6).bernoulli_(0.3, generator=g)):
        first = draw(_generator(11)).numpy()
        np.testing.assert_array_equal(first, draw(_generator(11)).numpy())
    with pytest.raises(TypeError, match="seed must be an int"):
        gd.Generator().manual_seed(1.5)


def test_dataloader_accepts_a_generator():
    data = gd.data.TensorDataset(gd.arange(10))
    orders = [[int(v) for (batch,) in gd.data.DataLoader(
        data, batch_size=10, shuffle=True, generator=gd.Generator().manual_seed(3))
        for v in batch] for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(10))


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial_frequencies(replacement):
    gd.manual_seed(1)
    weights = np.array([0.1, 0.0, 0.6, 0.3])
    draws = gd.multinomial(gd.tensor(np.tile(weights, (4000, 1))), 1,
                           replacement=replacement).numpy()
    assert draws.shape == (4000, 1)
    frequencies = np.bincount(draws.ravel(), minlength=4) / draws.size
    np.testing.assert_allclose(frequencies, weights, atol=0.03)
    rows = gd.multinomial(gd.tensor(np.tile(weights, (50, 1))), 3, replacement=False).numpy()
    assert all(len(set(r)) == 3 and 1 not in r for r in rows)      # distinct, never weight 0


def test_multinomial_refuses_bad_weights():
    # on the cuda device the weights are checked on the device, reported at the next read
    with pytest.raises(ValueError, match="non-negative"):
        gd.multinomial(gd.tensor([0.5, -0.1]), 1).numpy()
    with pytest.raises(ValueError, match="fewer than 2"):
        gd.multinomial(gd.tensor([0.5, 0.0]), 2).numpy()
    with pytest.raises(ValueError, match="without replacement"):
        gd.multinomial(gd.tensor([0.5, 0.5]), 3)


def test_bernoulli_and_normal_moments():
    gd.manual_seed(2)
    p = gd.tensor(np.linspace(0.1, 0.9, 5)).reshape(5, 1).expand(5, 4000)
    draws = gd.bernoulli(p).numpy()
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(1), np.linspace(0.1, 0.9, 5), atol=0.03)
    mean, std = gd.tensor([[-3.0], [4.0]]), gd.tensor([0.5, 2.0, 1.0])
    samples = np.stack([gd.normal(mean, std).numpy() for _ in range(3000)])
    np.testing.assert_allclose(samples.mean(0), np.broadcast_to(mean.numpy(), (2, 3)), atol=0.1)
    np.testing.assert_allclose(samples.std(0), np.broadcast_to(std.numpy(), (2, 3)), rtol=0.06)
    filled = gd.empty(5, 4000).bernoulli_(gd.tensor(np.linspace(0.1, 0.9, 5)).reshape(5, 1))
    np.testing.assert_allclose(filled.numpy().mean(1), np.linspace(0.1, 0.9, 5), atol=0.03)
    assert gd.normal(1.0, 2.0, (3, 2)).shape == (3, 2)
    assert gd.normal(gd.zeros(3), 2.0).shape == (3,)
    with pytest.raises(ValueError, match="std must be non-negative"):
        gd.normal(gd.zeros(2), gd.tensor([1.0, -1.0])).numpy()
    with pytest.raises(ValueError, match="bernoulli: input must hold probabilities"):
        gd.bernoulli(gd.tensor([0.5, 1.5])).numpy()


# ------------------------------------------------------------------ reads of the device


@pytest.fixture
def device_reads(monkeypatch):
    """Every array counts as on the cuda device (as under the simulator): the read counter and
    the deferred checks run as on a GPU (tests/test_host_syncs.py's fixture)."""
    monkeypatch.setattr(backend, "_READS_DEVICE", True)


def test_only_data_dependent_sizes_read_the_device(device_reads, rng):
    x = gd.tensor(rng.standard_normal((4, 6)))
    boundaries = gd.tensor(np.sort(rng.standard_normal((4, 5)), axis=1))
    no_reads = {
        "median": lambda: x.median(1), "median()": lambda: x.median(), "mode": lambda: x.mode(),
        "kthvalue": lambda: x.kthvalue(2), "searchsorted": lambda: gd.searchsorted(boundaries, x),
        "bucketize": lambda: gd.bucketize(x, boundaries[0]), "histc": lambda: gd.histc(x, 4),
        "take_along_dim": lambda: x.take_along_dim(gd.tensor([[1], [0], [2], [5]]), 1),
        "index_fill": lambda: x.index_fill(1, gd.tensor([0, 3]), 2.0),
        "repeat_interleave(int)": lambda: x.repeat_interleave(2, 0),
        "unfold": lambda: x.unfold(1, 2, 2), "diag": lambda: x.diag(1),
        "multinomial": lambda: gd.multinomial(x.abs(), 3),
        "multinomial(replacement)": lambda: gd.multinomial(x.abs(), 3, True),
        "bernoulli": lambda: gd.bernoulli(x.abs().clamp_max(1.0)),
        "normal": lambda: gd.normal(x, x.abs()), "cdist": lambda: gd.cdist(x, x),
        "isclose": lambda: gd.isclose(x, x), "nan_to_num": lambda: x.nan_to_num()}
    for name, call in no_reads.items():
        before = gd.cuda.sync_count()
        call()
        assert gd.cuda.sync_count() == before, name
    one_read = {"nonzero": lambda: (x > 0).nonzero(), "unique": lambda: gd.unique(x),
                "repeat_interleave(tensor)": lambda: x.repeat_interleave(gd.tensor([1, 0, 2, 1]),
                                                                         0)}
    for name, call in one_read.items():
        before = gd.cuda.sync_count()
        call()
        assert gd.cuda.sync_count() == before + 1, name


def test_equal_as_torch(rng):
    a = rng.standard_normal((3, 4))
    nan = a.copy()
    nan[1, 2] = np.nan
    cases = [(a, a.copy()), (a, a + 1e-12), (a, a[:1]), (a, a.reshape(4, 3)), (nan, nan),
             (np.round(a * 3), np.round(a * 3).astype(np.int64))]
    for x, y in cases:
        assert gd.equal(gd.tensor(x), gd.tensor(y)) is torch.equal(torch.tensor(x),
                                                                   torch.tensor(y))
        assert gd.tensor(x).equal(gd.tensor(y)) is torch.tensor(x).equal(torch.tensor(y))
    with pytest.raises(TypeError, match="equal: other must be a Tensor, got list"):
        gd.equal(gd.tensor(a), a.tolist())


@pytest.mark.parametrize("name", ["addcmul", "addcdiv"])
def test_addcmul_addcdiv_and_in_place_forms(name, rng):
    base, t1 = rng.standard_normal((3, 4)), rng.standard_normal((1, 4))
    t2 = rng.standard_normal((3, 1))
    t2 += np.sign(t2)                                     # away from zero for addcdiv
    check_against_torch(lambda a, b, c: getattr(gd, name)(a, b, c, value=-0.7),
                        lambda a, b, c: getattr(torch, name)(a, b, c, value=-0.7), base, t1, t2)
    check_against_torch(lambda a, b, c: getattr(a, name)(b, c),
                        lambda a, b, c: getattr(a, name)(b, c), base, t1, t2)
    # in place on a non-leaf in the graph, as a hand-written optimizer or model does
    check_against_torch(lambda a, b, c: getattr(a * 1, name + "_")(b, c, value=0.3),
                        lambda a, b, c: getattr(a * 1, name + "_")(b, c, value=0.3),
                        base, t1, t2)
    ours = gd.tensor(base)
    assert getattr(ours, name + "_")(gd.tensor(t1), gd.tensor(t2), value=2.0) is ours
    expected = getattr(torch.tensor(base), name + "_")(torch.tensor(t1), torch.tensor(t2),
                                                       value=2.0)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12)
    with pytest.raises(TypeError, match=f"{name}: tensor2 must be a Tensor, got list"):
        getattr(gd, name)(gd.tensor(base), gd.tensor(t1), [1.0])


def test_mask_and_limit_names_as_torch(rng):
    a = rng.standard_normal((3, 4))
    a[0, 1], a[1, 2], a[2, 0], a[2, 3] = 0.0, np.inf, -np.inf, np.nan
    b = rng.integers(0, 2, 4)
    ours, theirs = (gd.tensor(a), gd.tensor(b)), (torch.tensor(a), torch.tensor(b))
    calls = {
        "logical_and": lambda L, x, y: L.logical_and(x, y),
        "logical_or": lambda L, x, y: x.logical_or(y),
        "logical_xor": lambda L, x, y: L.logical_xor(x, y),
        "logical_not": lambda L, x, y: L.logical_not(x),
        "isinf": lambda L, x, y: L.isinf(x),
        "count_nonzero": lambda L, x, y: L.count_nonzero(x, dim=1),
        "count_nonzero(all)": lambda L, x, y: x.count_nonzero(),
        "all": lambda L, x, y: L.all(x > -1, dim=0),
        "any": lambda L, x, y: L.any(x > 1),
        "pow": lambda L, x, y: L.pow(x, 3),
        "t": lambda L, x, y: L.t(x),
    }
    for name, call in calls.items():
        expected = call(torch, *theirs).numpy()
        got = call(gd, *ours).numpy()
        assert got.dtype == expected.dtype, name
        np.testing.assert_allclose(got, expected, rtol=1e-15, err_msg=name)
    for ours_dtype, torch_dtype in ((gd.float32, torch.float32), (gd.float64, torch.float64),
                                    (gd.float16, torch.float16), (gd.bfloat16, torch.bfloat16)):
        for field in ("eps", "max", "min", "tiny", "bits", "resolution"):
            assert float(getattr(gd.finfo(ours_dtype), field)) == \
                float(getattr(torch.finfo(torch_dtype), field)), (ours_dtype, field)
    assert gd.finfo().eps == torch.finfo().eps
    assert (gd.iinfo(gd.int32).max, gd.iinfo(gd.int64).min) == \
        (torch.iinfo(torch.int32).max, torch.iinfo(torch.int64).min)
    with pytest.raises(TypeError, match="finfo: expected a floating dtype, got int64"):
        gd.finfo(gd.int64)
    with pytest.raises(TypeError, match="logical_and: other must be a Tensor, got float"):
        gd.logical_and(ours[0], 1.0)


def test_shape_helpers_as_torch(rng):
    x, v, w = rng.standard_normal((2, 3, 4)), rng.standard_normal(4), rng.standard_normal(4)
    m = rng.standard_normal((3, 4))
    calls = {
        "movedim": lambda L, x: L.movedim(x, 0, -1),
        "movedim(seq)": lambda L, x: x.movedim((0, 2), (1, 0)),
        "moveaxis": lambda L, x: L.moveaxis(x, -1, 0),
        "broadcast_to": lambda L, x: L.broadcast_to(x[:, :1], (5, 2, 3, 4)),
        "tile": lambda L, x: L.tile(x, (2,)),
        "tile(more)": lambda L, x: x.tile((2, 1, 1, 3)),
        "unflatten": lambda L, x: x.unflatten(2, (2, -1)),
        "hstack": lambda L, x: L.hstack([x, x * 2]),
        "vstack": lambda L, x: L.vstack([x[0], x[1, 0]]),
    }
    for name, call in calls.items():
        check_against_torch(lambda t, call=call: call(gd, t), lambda t, call=call: call(torch, t),
                            x)
    check_against_torch(lambda a, b: gd.dot(a, b), torch.dot, v, w)
    check_against_torch(lambda a, b: a.mv(b), lambda a, b: a.mv(b), m, v)
    assert gd.is_floating_point(gd.tensor(x))
    assert not gd.zeros(2, dtype=gd.int64).is_floating_point()
    with pytest.raises(RuntimeError, match="dot: expected a 1-D input and a 1-D other"):
        gd.dot(gd.tensor(m), gd.tensor(v))
    with pytest.raises(ValueError, match="movedim: source and destination must have the same"):
        gd.movedim(gd.tensor(x), (0, 1), 2)


def test_trace_and_triangle_indices_as_torch(rng):
    m = rng.standard_normal((4, 6))
    check_against_torch(lambda t: gd.trace(t), torch.trace, m)
    check_against_torch(lambda t: t.trace(), lambda t: t.trace(), m[:, :4])
    for row, col, offset in [(4, 4, 0), (3, 5, 1), (5, 3, -2), (4, 6, 7)]:
        for name in ("triu_indices", "tril_indices"):
            ours = getattr(gd, name)(row, col, offset)
            theirs = getattr(torch, name)(row, col, offset)
            assert ours.dtype == gd.int64
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=name)
    with pytest.raises(RuntimeError, match="trace: expected a matrix"):
        gd.trace(gd.ones(3))
