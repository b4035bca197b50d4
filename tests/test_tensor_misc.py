"""torch's shape, indexing, reduction and scatter breadth added in session 11 (tensor-misc),
against torch 2.13 CPU on fresh random inputs: values, dtypes, gradients (tests/oracle.py),
views sharing memory where torch's do, in-place versions and refusals, errors, and the
process-wide state (default dtype, generator state, threads, dtype queries)."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read
from oracle import check_against_torch

torch = pytest.importorskip("torch")


def same(gd_fn, torch_fn, *arrays, grad=True, **tolerances):
    """check_against_torch, plus every output's dtype equal to torch's."""
    y = check_against_torch(gd_fn, torch_fn, *arrays, grad=grad, **tolerances)
    ty = torch_fn(*(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in arrays))
    ys = y if isinstance(y, (tuple, list)) else (y,)
    tys = ty if isinstance(ty, (tuple, list)) else (ty,)
    for a, b in zip(ys, tys):
        assert str(a.dtype) == str(b.dtype).replace("torch.", ""), (a.dtype, b.dtype)
    return y


def values(gd_out, torch_out):
    """Outputs (tensors or tuples of them) equal in shape, dtype and value (NaN equal)."""
    outs = gd_out if isinstance(gd_out, (tuple, list)) else (gd_out,)
    touts = torch_out if isinstance(torch_out, (tuple, list)) else (torch_out,)
    assert len(outs) == len(touts)
    for a, b in zip(outs, touts):
        assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
        assert str(a.dtype) == str(b.dtype).replace("torch.", ""), (a.dtype, b.dtype)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-12)


def refused_out_of_range(call, message):
    """``call()`` refused with an IndexError matching ``message``: at once on the cpu, at the
    next read on the cuda device (a device-side check)."""
    with pytest.raises(IndexError, match=message):
        call_then_read(call)


def edited_in_graph_as_torch(x, edit, rng):
    """``edit`` (in place) on a non-leaf in the graph: the leaf's gradient as torch's; the same
    edit on a leaf that requires grad refused, as torch refuses it, and the leaf unchanged."""
    leaf, tleaf = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = leaf * 2, tleaf * 2
    edit(y)
    edit(ty)
    w = rng.standard_normal(tuple(ty.shape))
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy())
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        edit(leaf)
    np.testing.assert_array_equal(leaf.detach().numpy(), x)


# ----------------------------------------------------------------- views
@pytest.mark.parametrize("offset,dim1,dim2", [(0, 0, 1), (1, 0, 2), (-2, 2, 0), (5, -1, -2),
                                               (0, 1, -1)])
def test_diagonal_is_a_view_with_torch_values_and_grads(rng, offset, dim1, dim2):
    x = rng.standard_normal((3, 4, 5))
    same(lambda t: gd.diagonal(t, offset, dim1, dim2), lambda t: torch.diagonal(t, offset, dim1,
                                                                               dim2), x)
    base = gd.tensor(x)
    view = base.diagonal(offset, dim1, dim2)
    view.mul_(2)                                 # an edit through the view reaches the base
    expected = torch.tensor(x)
    expected.diagonal(offset, dim1, dim2).mul_(2)
    np.testing.assert_array_equal(base.numpy(), expected.numpy())
    assert view.stride() == expected.diagonal(offset, dim1, dim2).stride()
    assert view.storage_offset() == expected.diagonal(offset, dim1, dim2).storage_offset()


def test_in_place_edit_of_a_diagonal_view_in_the_graph(rng):
    x = rng.standard_normal((4, 4))
    w = rng.standard_normal((4, 4))

    def run(lib, t):
        y = t * 1
        y.diagonal().mul_(3)
        return (y * lib.tensor(w)).sum()
    a, ta = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    run(gd, a).backward()
    run(torch, ta).backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy())


@pytest.mark.parametrize("dim,size,step", [(1, 3, 1), (1, 2, 2), (0, 1, 3), (-1, 5, 1),
                                           (2, 2, 3), (1, 0, 1)])
def test_unfold_is_a_view_and_overlaps_add_their_grads(rng, dim, size, step):
    x = rng.standard_normal((3, 5, 6))
    same(lambda t: t.unfold(dim, size, step), lambda t: t.unfold(dim, size, step), x)
    base, tbase = gd.tensor(x), torch.tensor(x)
    view, tview = base.unfold(dim, size, step), tbase.unfold(dim, size, step)
    assert view.stride() == tview.stride()
    assert view._version_counter is base._version_counter or not view.numel()
    base.add_(1)
    tbase.add_(1)
    np.testing.assert_array_equal(view.numpy(), tview.numpy())


def test_unfold_of_a_0d_tensor_and_errors():
    same(lambda t: t.unfold(0, 1, 1), lambda t: t.unfold(0, 1, 1), np.array(2.5))
    x = gd.randn(3, 4)
    with pytest.raises(RuntimeError, match="unfold: needs 0 <= size"):
        x.unfold(1, 5, 1)
    with pytest.raises(RuntimeError, match="step > 0"):
        x.unfold(1, 2, 0)
    with pytest.raises(TypeError, match="unfold: size must be an int"):
        x.unfold(1, 2.0, 1)


def test_select_swapdims_ravel_and_their_errors(rng):
    x = rng.standard_normal((3, 4, 2))
    for dim, index in ((0, 2), (1, -1), (-1, 0)):
        same(lambda t: gd.select(t, dim, index), lambda t: torch.select(t, dim, index), x)
    same(lambda t: gd.swapdims(t, 0, 2), lambda t: torch.swapdims(t, 0, 2), x)
    same(lambda t: t.swapaxes(-1, 1), lambda t: t.swapaxes(-1, 1), x)
    same(gd.ravel, torch.ravel, x)
    same(lambda t: t.transpose(0, 1).ravel(), lambda t: t.transpose(0, 1).ravel(), x)
    t = gd.tensor(x)
    assert t.select(1, 2)._version_counter is t._version_counter
    with pytest.raises(IndexError, match="select: index 4 out of range"):
        t.select(1, 4)
    with pytest.raises(IndexError, match="dim 3 is out of range"):
        t.select(3, 0)


@pytest.mark.parametrize("split", [3, 4, 7, [1, 4], [0, -2, 9], [3, 1]])
def test_tensor_split_by_count_and_by_indices(rng, split):
    x = rng.standard_normal((2, 7))
    same(lambda t: gd.tensor_split(t, split, 1), lambda t: torch.tensor_split(t, split, 1), x)
    tensor_arg = gd.tensor(split) if isinstance(split, int) else gd.tensor(np.array(split))
    parts = gd.tensor_split(gd.tensor(x), tensor_arg, dim=-1)
    expected = torch.tensor_split(torch.tensor(x), torch.tensor(split), dim=-1)
    values(parts, expected)
    with pytest.raises(RuntimeError, match="number of sections must be larger than 0"):
        gd.tensor_split(gd.tensor(x), 0, 1)


def test_hsplit_vsplit_dsplit_split_with_sizes(rng):
    x = rng.standard_normal((4, 6, 2))
    same(lambda t: gd.hsplit(t, 3), lambda t: torch.hsplit(t, 3), x)
    same(lambda t: gd.vsplit(t, [1, 3]), lambda t: torch.vsplit(t, [1, 3]), x)
    same(lambda t: gd.dsplit(t, 2), lambda t: torch.dsplit(t, 2), x)
    same(lambda t: gd.hsplit(t, 2), lambda t: torch.hsplit(t, 2), rng.standard_normal(6))
    same(lambda t: t.split_with_sizes([2, 0, 4], 1), lambda t: t.split_with_sizes([2, 0, 4], 1), x)
    t = gd.tensor(x)
    for call, message in ((lambda: gd.hsplit(t, 4), "not divisible"),
                          (lambda: gd.dsplit(gd.zeros(2, 2), 2), "at least 3 dimensions"),
                          (lambda: gd.vsplit(gd.zeros(2), 2), "at least 2 dimensions"),
                          (lambda: t.split_with_sizes([2, 3], 1), "do not add up")):
        with pytest.raises((RuntimeError, ValueError), match=message):
            call()


def test_unbind_concat_row_stack(rng):
    x, y = rng.standard_normal((3, 2)), rng.standard_normal((1, 2))
    same(lambda t: gd.unbind(t, 1), lambda t: torch.unbind(t, 1), x)
    same(lambda a, b: gd.concat([a, b]), lambda a, b: torch.concat([a, b]), x, y)
    same(lambda a, b: gd.concatenate((a, b), 0), lambda a, b: torch.concatenate((a, b), 0), x, y)
    same(lambda a, b: gd.row_stack([a, b]), lambda a, b: torch.row_stack([a, b]), x, y)


# ----------------------------------------------------------------- reorderings and joins
@pytest.mark.parametrize("k,dims", [(1, (0, 1)), (2, (1, 2)), (3, (2, 0)), (-1, (0, 2)),
                                    (4, (0, 1)), (5, (-1, -2))])
def test_rot90(rng, k, dims):
    same(lambda t: gd.rot90(t, k, dims), lambda t: torch.rot90(t, k, dims),
         rng.standard_normal((2, 3, 4)))


def test_rot90_fliplr_flipud_errors_and_values(rng):
    x = rng.standard_normal((3, 4))
    same(gd.fliplr, torch.fliplr, x)
    same(gd.flipud, torch.flipud, x)
    same(gd.flipud, torch.flipud, rng.standard_normal(5))
    for call, message in ((lambda: gd.rot90(gd.zeros(3)), "total dims >= 2"),
                          (lambda: gd.rot90(gd.zeros(2, 2), 1, (0, 0)), "different"),
                          (lambda: gd.rot90(gd.zeros(2, 2), 1, (0,)), "rotation dims == 2"),
                          (lambda: gd.fliplr(gd.zeros(3)), ">= 2-d"),
                          (lambda: gd.flipud(gd.tensor(1.0)), ">= 1-d")):
        with pytest.raises(RuntimeError, match=message):
            call()


def test_msort_argwhere_take(rng):
    x = rng.standard_normal((4, 3))
    x[1, 0] = x[2, 0]                      # a tie
    same(gd.msort, torch.msort, x)
    ints = rng.integers(-2, 3, (3, 4))
    values(gd.argwhere(gd.tensor(ints)), torch.argwhere(torch.tensor(ints)))
    index = rng.integers(-12, 12, (2, 5))
    same(lambda t: gd.take(t, gd.tensor(index)), lambda t: torch.take(t, torch.tensor(index)), x)
    refused_out_of_range(lambda: gd.take(gd.tensor(x), gd.tensor([12])), "index 12")


def test_atleast_nd(rng):
    for shape in ((), (3,), (2, 3), (2, 3, 4)):
        x = rng.standard_normal(shape)
        for name in ("atleast_1d", "atleast_2d", "atleast_3d"):
            same(getattr(gd, name), getattr(torch, name), x)
    many = gd.atleast_2d(gd.tensor(1.0), gd.zeros(3))
    assert isinstance(many, tuple) and [t.shape for t in many] == [(1, 1), (1, 3)]
    assert gd.atleast_1d([gd.zeros(())])[0].shape == (1,)


def test_column_stack_dstack_block_diag_cartesian_prod(rng):
    a, b, c = rng.standard_normal(3), rng.standard_normal((3, 2)), rng.standard_normal(())
    same(lambda x, y: gd.column_stack([x, y]), lambda x, y: torch.column_stack([x, y]), a, b)
    same(lambda x, y: gd.dstack([x, y]), lambda x, y: torch.dstack([x, y]), b, b[::-1].copy())
    same(lambda x, y, z: gd.block_diag(x, y, z), lambda x, y, z: torch.block_diag(x, y, z),
         a, b, c)
    values(gd.block_diag(gd.tensor([1, 2]), gd.tensor([[1.5]])),
           torch.block_diag(torch.tensor([1, 2]), torch.tensor([[1.5]])))
    same(lambda x, y: gd.cartesian_prod(x, y), lambda x, y: torch.cartesian_prod(x, y), a,
         rng.standard_normal(2))
    same(gd.cartesian_prod, torch.cartesian_prod, a)
    with pytest.raises(RuntimeError, match="2 or fewer dimensions"):
        gd.block_diag(gd.zeros(1, 1, 1))


@pytest.mark.parametrize("r", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("with_replacement", [False, True])
def test_combinations(rng, r, with_replacement):
    x = rng.standard_normal(4)
    same(lambda t: gd.combinations(t, r, with_replacement),
         lambda t: torch.combinations(t, r, with_replacement), x, grad=r > 0)


@pytest.mark.parametrize("n", [None, 0, 1, 4])
@pytest.mark.parametrize("increasing", [False, True])
def test_vander(rng, n, increasing):
    x = rng.standard_normal(3)
    x[1] = 0.0                                       # the gradient at zero, as torch's
    same(lambda t: gd.vander(t, n, increasing), lambda t: torch.vander(t, n, increasing), x,
         grad=False)
    # torch 2.13's own vander backward fails (it edits a saved view in place): the gradients
    # against the same columns as powers; with fewer than 2 columns nothing depends on x
    leaf = gd.tensor(x, requires_grad=True)
    assert gd.vander(leaf, n).requires_grad == torch.vander(torch.tensor(x, requires_grad=True),
                                                            n).requires_grad
    if n is None or n > 1:
        powers = list(range(x.size if n is None else n))
        order = powers if increasing else powers[::-1]
        check_against_torch(lambda t: gd.vander(t, n, increasing),
                            lambda t: torch.stack([t ** k for k in order], 1), x)
    ints = rng.integers(-3, 4, 3).astype(np.int32)
    values(gd.vander(gd.tensor(ints), n, increasing),
           torch.vander(torch.tensor(ints), n, increasing))


@pytest.mark.parametrize("offset,dim1,dim2", [(0, -2, -1), (1, 0, 2), (-2, 2, 0), (0, 1, 0)])
def test_diag_embed_and_diagflat(rng, offset, dim1, dim2):
    x = rng.standard_normal((2, 3))
    same(lambda t: gd.diag_embed(t, offset, dim1, dim2),
         lambda t: torch.diag_embed(t, offset, dim1, dim2), x)
    same(lambda t: gd.diagflat(t, offset), lambda t: torch.diagflat(t, offset), x)
    with pytest.raises(RuntimeError, match="diag_embed"):
        gd.diag_embed(gd.tensor(x), 0, 1, 1)


# ----------------------------------------------------------------- in-place metadata ops
@pytest.mark.parametrize("op,args", [("t_", ()), ("transpose_", (0, 1)), ("swapaxes_", (1, 0)),
                                     ("swapdims_", (0, 1)), ("unsqueeze_", (1,)),
                                     ("squeeze_", ()), ("squeeze_", (0,))])
def test_in_place_metadata_ops_as_torch(rng, op, args):
    x = rng.standard_normal((1, 3)) if op.startswith("squeeze") else rng.standard_normal((2, 3))
    a, ta = gd.tensor(x), torch.tensor(x)
    assert getattr(a, op)(*args) is a
    getattr(ta, op)(*args)
    assert a.shape == tuple(ta.shape) and a.stride() == ta.stride()
    assert a._version == ta._version
    np.testing.assert_array_equal(a.numpy(), ta.numpy())
    edited_in_graph_as_torch(x, lambda t: getattr(t, op)(*args), rng)


def test_t_on_a_view_keeps_it_a_view_of_its_base(rng):
    base = gd.tensor(rng.standard_normal((3, 4)))
    view = base[:2]
    view.t_()
    assert view.shape == (4, 2)
    view.add_(1)
    expected = torch.tensor(base.numpy())
    np.testing.assert_array_equal(base.numpy()[:2], expected.numpy()[:2])
    before = rng.standard_normal((3, 4))
    b, tb = gd.tensor(before), torch.tensor(before)
    v, tv = b[1:], tb[1:]
    v.t_()
    tv.t_()
    v.mul_(2)
    tv.mul_(2)
    np.testing.assert_array_equal(b.numpy(), tb.numpy())


# ----------------------------------------------------------------- metadata
def test_storage_metadata_as_torch(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for index in (np.s_[...], np.s_[1:, ::2], np.s_[:, 2], np.s_[..., 1:3]):
        a, ta = gd.tensor(x)[index], torch.tensor(x)[index]
        assert a.stride() == ta.stride() and a.storage_offset() == ta.storage_offset()
        assert a.is_contiguous() == ta.is_contiguous()
        assert a.stride(-1) == ta.stride(-1)
    a, ta = gd.tensor(x), torch.tensor(x)
    assert a.transpose(0, 2).stride() == ta.transpose(0, 2).stride()
    assert not a.transpose(0, 2).is_contiguous()
    assert a.expand(2, 3, 4, 5).stride() == (0, 20, 5, 1) == ta.expand(2, 3, 4, 5).stride()
    assert (a.element_size(), a.itemsize, a.nbytes) == (ta.element_size(), ta.itemsize,
                                                        ta.nbytes)
    assert (a.nelement(), a.ndimension()) == (ta.nelement(), ta.ndimension())
    assert a[1].data_ptr() - a.data_ptr() == 20 * 4
    on_cpu = a.device.type == "cpu"
    assert a.get_device() == (-1 if on_cpu else 0) and a.is_cpu == on_cpu
    assert not a.is_pinned()
    assert gd.tensor([1, 2], dtype=gd.int16).element_size() == 2


def test_pin_memory_refused_without_a_gpu_as_torch():
    if gd.cuda.is_available():
        pytest.skip("a GPU is there: pin_memory copies")
    with pytest.raises(RuntimeError, match="accelerator device"):
        gd.zeros(2).pin_memory()


# ----------------------------------------------------------------- scans and reductions
@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cummax_cummin_with_ties_and_nan(rng, name):
    x = rng.standard_normal((4, 6))
    x[0, 2] = x[0, 0]
    x[1, 1:4] = x[1, 0]                          # ties: the latest index, as torch
    same(lambda t: getattr(gd, name)(t, 1), lambda t: getattr(torch, name)(t, 1), x)
    same(lambda t: getattr(t, name)(-2), lambda t: getattr(t, name)(-2), x)
    x[2, 3] = x[3, 0] = np.nan
    values(getattr(gd, name)(gd.tensor(x), 1), getattr(torch, name)(torch.tensor(x), 1))
    ints = rng.integers(-3, 3, (3, 7))
    values(getattr(gd, name)(gd.tensor(ints), 1), getattr(torch, name)(torch.tensor(ints), 1))
    values(getattr(gd, name)(gd.zeros(0, 3), 0), getattr(torch, name)(torch.zeros(0, 3), 0))


def test_logcumsumexp_extremes_and_grads(rng):
    x = rng.standard_normal((3, 7)) * 5
    x[0, :3] = [-1000.0, 0.0, 800.0]
    same(lambda t: gd.logcumsumexp(t, 1), lambda t: torch.logcumsumexp(t, 1), x)
    same(lambda t: t.logcumsumexp(0), lambda t: t.logcumsumexp(0), x)
    values(gd.logcumsumexp(gd.tensor([1, 2, 3]), 0),
           torch.logcumsumexp(torch.tensor([1, 2, 3]).float(), 0))


def test_nansum_nanmean(rng):
    x = rng.standard_normal((4, 5))
    x[rng.random((4, 5)) < 0.3] = np.nan
    x[2] = np.nan
    for dim, keepdim in ((None, False), (1, False), (0, True), ((0, 1), False)):
        same(lambda t: gd.nansum(t, dim, keepdim), lambda t: torch.nansum(t, dim, keepdim), x)
        same(lambda t: gd.nanmean(t, dim, keepdim), lambda t: torch.nanmean(t, dim, keepdim), x)
    ints = rng.integers(0, 5, (3, 2))
    values(gd.nansum(gd.tensor(ints), 0), torch.nansum(torch.tensor(ints), 0))
    with pytest.raises(RuntimeError, match="nanmean"):
        gd.nanmean(gd.tensor(ints))


def test_nanmedian(rng):
    x = rng.standard_normal((4, 5))
    x[0, 1] = x[1, 1:] = np.nan
    x[2, 2] = x[2, 4]
    values(gd.nanmedian(gd.tensor(x), 1), torch.nanmedian(torch.tensor(x), 1))
    x[1, 0] = np.nan          # a row of NaN only: NaN (torch's index among them is arbitrary)
    values(gd.nanmedian(gd.tensor(x), 1)[0], torch.nanmedian(torch.tensor(x), 1)[0])
    values(gd.nanmedian(gd.tensor(x), 0, True), torch.nanmedian(torch.tensor(x), 0, True))
    same(lambda t: gd.nanmedian(t), torch.nanmedian, x)
    y = rng.standard_normal((3, 6))
    y[0, 0] = np.nan
    same(lambda t: gd.nanmedian(t, 1)[0], lambda t: torch.nanmedian(t, 1)[0], y)
    ints = rng.integers(0, 9, (3, 4))
    values(gd.nanmedian(gd.tensor(ints), 1), torch.nanmedian(torch.tensor(ints), 1))


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantile_and_nanquantile(rng, interpolation):
    x = rng.standard_normal((4, 7))
    x[1, 2] = x[1, 5]
    q = np.array([0.0, 0.25, 0.5, 0.9, 1.0])
    for dim, keepdim in ((None, False), (None, True), (1, False), (0, True), (-1, True)):
        same(lambda t: gd.quantile(t, gd.tensor(q), dim, keepdim, interpolation=interpolation),
             lambda t: torch.quantile(t, torch.tensor(q), dim, keepdim,
                                      interpolation=interpolation), x)
        same(lambda t: gd.quantile(t, 0.3, dim, keepdim, interpolation=interpolation),
             lambda t: torch.quantile(t, 0.3, dim, keepdim, interpolation=interpolation), x)
    x[0, 3] = x[2, :] = np.nan
    for name in ("quantile", "nanquantile"):
        values(getattr(gd, name)(gd.tensor(x), gd.tensor(q), 1, interpolation=interpolation),
               getattr(torch, name)(torch.tensor(x), torch.tensor(q), 1,
                                    interpolation=interpolation))
        values(getattr(gd, name)(gd.tensor(x.astype(np.float32)), 0.4),
               getattr(torch, name)(torch.tensor(x.astype(np.float32)), 0.4))


def test_quantile_errors():
    x = gd.randn(3, 4)
    for call, error, message in (
            (lambda: gd.quantile(x, 1.5), RuntimeError, r"range \[0, 1\]"),
            (lambda: gd.quantile(gd.tensor([1, 2]), 0.5), RuntimeError, "float or double"),
            (lambda: gd.quantile(x, gd.tensor([0.5], dtype=gd.float64)), RuntimeError,
             "same dtype"),
            (lambda: gd.quantile(gd.zeros(0), 0.5), RuntimeError, "non-empty"),
            (lambda: gd.quantile(x, 0.5, interpolation="cubic"), ValueError, "interpolation"),
            (lambda: gd.quantile(x, gd.zeros(2, 2)), RuntimeError, "1D tensor")):
        with pytest.raises(error, match=message):
            call()


def test_aminmax(rng):
    x = rng.standard_normal((3, 5))
    x[0, 1] = x[0, 3] = x[0].max() + 1            # tied maxima share the gradient
    for kwargs in ({}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"keepdim": True}):
        same(lambda t: gd.aminmax(t, **kwargs), lambda t: torch.aminmax(t, **kwargs), x)
    out = gd.tensor(x).aminmax()
    assert out.min.shape == () and out.max.item() == x.max()
    with pytest.raises(RuntimeError, match="empty"):
        gd.aminmax(gd.zeros(0, 3))


def test_bincount_isin_unique_consecutive(rng):
    ints = rng.integers(0, 6, 20)
    for minlength in (0, 3, 10):
        values(gd.bincount(gd.tensor(ints), minlength=minlength),
               torch.bincount(torch.tensor(ints), minlength=minlength))
    weights = rng.standard_normal(20).astype(np.float32)
    values(gd.bincount(gd.tensor(ints), gd.tensor(weights)),
           torch.bincount(torch.tensor(ints), torch.tensor(weights)))
    values(gd.bincount(gd.tensor(ints), gd.tensor(ints.astype(np.int32))),
           torch.bincount(torch.tensor(ints), torch.tensor(ints.astype(np.int32))))
    values(gd.bincount(gd.zeros(0, dtype=gd.int64)), torch.bincount(torch.zeros(0).long()))
    with pytest.raises(RuntimeError, match="non-negative"):
        gd.bincount(gd.tensor([1, -1]))
    test = rng.integers(0, 6, 4)
    for invert in (False, True):
        values(gd.isin(gd.tensor(ints), gd.tensor(test), invert=invert),
               torch.isin(torch.tensor(ints), torch.tensor(test), invert=invert))
    values(gd.isin(gd.tensor(ints), 3), torch.isin(torch.tensor(ints), 3))
    values(gd.isin(2, gd.tensor(test)), torch.isin(2, torch.tensor(test)))
    values(gd.isin(gd.tensor([1, 2, 3]), gd.tensor([1.5, 2.0])),
           torch.isin(torch.tensor([1, 2, 3]), torch.tensor([1.5, 2.0])))
    runs = np.array([1, 1, 2, 2, 2, 1, 3, 3, np.nan, np.nan])
    for kwargs in ({}, {"return_inverse": True}, {"return_counts": True},
                   {"return_inverse": True, "return_counts": True}):
        values(gd.unique_consecutive(gd.tensor(runs), **kwargs),
               torch.unique_consecutive(torch.tensor(runs), **kwargs))
    rows = rng.integers(0, 2, (5, 3))
    rows[1] = rows[0]
    for dim in (0, 1):
        values(gd.unique_consecutive(gd.tensor(rows), True, True, dim),
               torch.unique_consecutive(torch.tensor(rows), True, True, dim))


def test_cov_and_corrcoef(rng):
    x = rng.standard_normal((3, 6))
    fw, aw = rng.integers(0, 4, 6), rng.uniform(0.1, 2, 6)
    for kwargs in ({}, {"correction": 0}, {"correction": 3}, {"fweights": fw},
                   {"aweights": aw}, {"fweights": fw, "aweights": aw, "correction": 2}):
        fweights, aweights = kwargs.pop("fweights", None), kwargs.pop("aweights", None)
        same(lambda t, a: gd.cov(t, fweights=None if fweights is None else gd.tensor(fweights),
                                 aweights=a, **kwargs),
             lambda t, a: torch.cov(t, fweights=None if fweights is None else torch.tensor(
                 fweights), aweights=a, **kwargs), x, aweights)
    same(gd.cov, torch.cov, rng.standard_normal(5))
    same(gd.corrcoef, torch.corrcoef, x)
    same(gd.corrcoef, torch.corrcoef, rng.standard_normal(4))
    ints = rng.integers(0, 9, (2, 5))
    values(gd.cov(gd.tensor(ints)), torch.cov(torch.tensor(ints)))
    with pytest.raises(ValueError, match="fweights cannot be negative"):
        gd.cov(gd.tensor(x), fweights=gd.tensor(-fw - 1))


def test_trapezoid_family(rng):
    y, x = rng.standard_normal((3, 5)), np.sort(rng.standard_normal(5))
    for kwargs in ({}, {"dx": 0.5}, {"dim": 0}):
        same(lambda t: gd.trapezoid(t, **kwargs), lambda t: torch.trapezoid(t, **kwargs), y)
        same(lambda t: gd.cumulative_trapezoid(t, **kwargs),
             lambda t: torch.cumulative_trapezoid(t, **kwargs), y)
    same(lambda t, s: gd.trapezoid(t, s), lambda t, s: torch.trapezoid(t, s), y, x)
    same(lambda t, s: gd.trapz(t, s), lambda t, s: torch.trapz(t, s), y, x)
    same(lambda t, s: gd.cumulative_trapezoid(t, s),
         lambda t, s: torch.cumulative_trapezoid(t, s), y, x)
    xs = np.sort(rng.standard_normal((3, 5)), axis=1)
    same(lambda t, s: gd.trapezoid(t, s), lambda t, s: torch.trapezoid(t, s), y, xs)
    values(gd.trapezoid(gd.tensor([1, 2, 4])), torch.trapezoid(torch.tensor([1, 2, 4])))
    values(gd.trapezoid(gd.zeros(2, 0)), torch.trapezoid(torch.zeros(2, 0)))


def test_sum_to_size(rng):
    x = rng.standard_normal((2, 3, 4))
    for size in ((3, 4), (1, 4), (2, 1, 1), (2, 3, 4), ()):
        same(lambda t: t.sum_to_size(size), lambda t: t.sum_to_size(size), x)
    same(lambda t: t.sum_to_size(3, 1), lambda t: t.sum_to_size(3, 1), x)
    with pytest.raises(RuntimeError, match="not expandable"):
        gd.tensor(x).sum_to_size(2, 4)


@pytest.mark.parametrize("op,args", [("cumsum_", (1,)), ("cumprod_", (0,)), ("tril_", (0,)),
                                     ("triu_", (-1,))])
def test_in_place_scans_and_triangles(rng, op, args):
    x = rng.standard_normal((3, 4))
    a, ta = gd.tensor(x), torch.tensor(x)
    assert getattr(a, op)(*args) is a
    getattr(ta, op)(*args)
    np.testing.assert_allclose(a.numpy(), ta.numpy())
    assert a._version == ta._version == 1
    edited_in_graph_as_torch(x, lambda t: getattr(t, op)(*args), rng)
    ints = gd.tensor(rng.integers(0, 4, (3, 4)).astype(np.int32))
    getattr(ints, op)(*args)
    assert ints.dtype == gd.int32


# ----------------------------------------------------------------- scatters
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_values_and_grads(rng, reduce, include_self):
    x, src = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    index = rng.integers(0, 5, (3, 4))
    x[1, index[1, 0]] = 0.0                     # zeros: the product's gradient without 1/0
    src[0, 1] = src[2, 3] = 0.0
    src[1, 2] = src[1, 3] = 0.0
    index[1, 2] = index[1, 3]                   # two zeros in one slot
    src[2, 0] = src[2, 1]
    index[2, 0] = index[2, 1]                   # tied extremes share the gradient
    same(lambda t, s: gd.scatter_reduce(t, 1, gd.tensor(index), s, reduce,
                                        include_self=include_self),
         lambda t, s: torch.scatter_reduce(t, 1, torch.tensor(index), s, reduce,
                                           include_self=include_self), x, src)
    ints, int_src = rng.integers(-5, 5, (3, 5)).astype(np.int32), rng.integers(-5, 5, (3, 4))
    int_src = int_src.astype(np.int32)                   # integer means floor, as torch's
    values(gd.tensor(ints).scatter_reduce(1, gd.tensor(index), gd.tensor(int_src), reduce,
                                          include_self=include_self),
           torch.tensor(ints).scatter_reduce(1, torch.tensor(index), torch.tensor(int_src),
                                             reduce, include_self=include_self))
    with pytest.raises(RuntimeError, match="reduce argument"):
        gd.tensor(x).scatter_reduce(1, gd.tensor(index), gd.tensor(src), "max")


def test_gather_and_scatters_refuse_an_index_out_of_range(rng):
    """An index past the dim: IndexError at the call on the cpu, at the next device read on the
    cuda device (torch's device-side assert), read here inside ``pytest.raises``."""
    x = gd.tensor(rng.standard_normal((3, 5)))
    index = gd.tensor(np.array([[0, 4], [7, 1]]))
    src = gd.tensor(rng.standard_normal((2, 2)))
    message = "index 7 out of range for dim 1 of size 5"
    refused_out_of_range(lambda: x.gather(1, index), "gather: " + message)
    refused_out_of_range(lambda: x.scatter(1, index, src), "scatter: " + message)
    refused_out_of_range(lambda: x.scatter_add(1, index, src), "scatter_add: " + message)
    refused_out_of_range(lambda: gd.scatter_reduce(x, 1, index, src, "amax"),
                         "scatter_reduce: " + message)


@pytest.mark.parametrize("op", ["scatter", "scatter_add", "scatter_reduce", "index_add",
                                "embedding", "index_put", "index_put values",
                                "embedding_bag weight", "embedding_bag input",
                                "embedding_bag padding_idx"])
def test_refused_index_op_queues_no_check(rng, op):
    """An index op refused at the call for another argument (src's dtype or shape, source's
    shape, padding_idx, too many indices) is refused before its index is range-checked, on both
    devices: on the cuda device that check is queued, and a refused call changes nothing."""
    from gpudl import backend
    x = gd.tensor(rng.standard_normal((3, 5)))
    far = gd.tensor(np.array([[0, 9]]))                           # out of range: 9 >= 5
    wrong_dtype = gd.tensor(rng.standard_normal((1, 2)).astype(np.float32))
    calls = {
        "scatter": (lambda: x.scatter(1, far, wrong_dtype), TypeError, "dtype"),
        "scatter_add": (lambda: x.scatter_add(1, far, wrong_dtype), TypeError, "dtype"),
        "scatter_reduce": (lambda: gd.scatter_reduce(x, 1, far, x[:1, :1], "sum"),
                           ValueError, "smaller than index"),
        "index_add": (lambda: x.index_add(1, far.reshape(-1), x), ValueError, "shape"),
        "embedding": (lambda: gd.nn.functional.embedding(far, x, padding_idx=7), IndexError,
                      "padding_idx"),
        "index_put": (lambda: gd.index_put(x, (far[0], far[0], far[0]), x[0, 0]), IndexError,
                      "too many indices"),
        "index_put values": (lambda: gd.index_put(x, (far[0] % 3, far[0] % 5), x[:, :3]),
                             RuntimeError, "shape mismatch"),    # in range: a check passes
        "embedding_bag weight": (lambda: gd.nn.functional.embedding_bag(
            gd.tensor(np.array([0, 1, 9])), x[0], gd.tensor(np.array([0, 9]))), ValueError,
            "weight must be 2-D"),
        "embedding_bag input": (lambda: gd.nn.functional.embedding_bag(
            gd.tensor(np.array([0.0, 1.0])), x, gd.tensor(np.array([0, 9]))), TypeError,
            "integer tensor"),
        "embedding_bag padding_idx": (lambda: gd.nn.functional.embedding_bag(
            gd.tensor(np.array([0, 1])), x, gd.tensor(np.array([0, 9])), padding_idx=3),
            IndexError, "padding_idx"),
    }
    call, error, message = calls[op]
    with pytest.raises(error, match=message):
        call()
    assert not backend._deferred, "the refused call queued a device-side check"


def test_index_reduce_and_index_copy(rng):
    x, src = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    index = np.array([0, 4, 2, 0])
    for reduce in ("prod", "mean", "amax", "amin"):
        for include_self in (True, False):
            same(lambda t, s: t.index_reduce(0, gd.tensor(index), s, reduce,
                                             include_self=include_self),
                 lambda t, s: t.index_reduce(0, torch.tensor(index), s, reduce,
                                             include_self=include_self), x, src)
    rows = np.array([3, 0, 1, 4])
    same(lambda t, s: gd.index_copy(t, 0, gd.tensor(rows), s),
         lambda t, s: torch.index_copy(t, 0, torch.tensor(rows), s), x, src)
    same(lambda t, s: t.index_copy(1, gd.tensor([2, 0]), s),
         lambda t, s: t.index_copy(1, torch.tensor([2, 0]), s), x, rng.standard_normal((5, 2)))
    with pytest.raises(RuntimeError, match="index_copy: source must have shape"):
        gd.tensor(x).index_copy(0, gd.tensor(rows), gd.tensor(src[:2]))


def test_index_put_put_masked_scatter(rng):
    x = rng.standard_normal((4, 5))
    rows, cols = np.array([0, 2, 2]), np.array([1, 3, 3])
    for accumulate in (False, True):
        same(lambda t, v: gd.index_put(t, (gd.tensor(rows), gd.tensor(cols)), v, accumulate),
             lambda t, v: torch.index_put(t, (torch.tensor(rows), torch.tensor(cols)), v,
                                          accumulate), x, rng.standard_normal(1),
             grad=accumulate)         # repeated positions overwritten: no defined order
        # a repeated position written without accumulate has no defined order (CuPy's differs)
        flat = np.array([3, -1, 7, 3 if accumulate else 12])
        same(lambda t, v: t.put(gd.tensor(flat), v, accumulate),
             lambda t, v: t.put(torch.tensor(flat), v, accumulate), x,
             rng.standard_normal((2, 2)), grad=accumulate)
    mask = rng.random((4, 5)) < 0.4
    same(lambda t, v: gd.index_put(t, (gd.tensor(mask),), v),
         lambda t, v: torch.index_put(t, (torch.tensor(mask),), v), x, rng.standard_normal(()))
    same(lambda t, v: t.masked_scatter(gd.tensor(mask), v),
         lambda t, v: t.masked_scatter(torch.tensor(mask), v), x, rng.standard_normal(25))
    same(lambda t, v: t.masked_scatter(gd.tensor(mask[:1]), v),
         lambda t, v: t.masked_scatter(torch.tensor(mask[:1]), v), x, rng.standard_normal(25))
    with pytest.raises(RuntimeError, match="at least"):
        call_then_read(gd.tensor(x).masked_scatter, gd.tensor(mask), gd.zeros(1, dtype=gd.float64))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        gd.tensor(x).index_put((gd.tensor(rows),), gd.zeros(3, dtype=gd.float64))
    refused_out_of_range(lambda: gd.tensor(x).put(gd.tensor([20]), gd.zeros(1, dtype=gd.float64)),
                         "index 20")


def test_select_slice_diagonal_scatter(rng):
    x = rng.standard_normal((4, 5))
    same(lambda t, s: gd.select_scatter(t, s, 1, -2),
         lambda t, s: torch.select_scatter(t, s, 1, -2), x, rng.standard_normal(4))
    for start, end, step in ((None, None, 1), (1, 4, 2), (-3, None, 1), (2, 2, 1)):
        n = len(range(5)[slice(start, end, step)])
        same(lambda t, s: gd.slice_scatter(t, s, 1, start, end, step),
             lambda t, s: torch.slice_scatter(t, s, 1, start, end, step), x,
             rng.standard_normal((4, n)))
    for offset in (-1, 0, 2):
        n = len(np.diagonal(x, offset))
        same(lambda t, s: gd.diagonal_scatter(t, s, offset),
             lambda t, s: torch.diagonal_scatter(t, s, offset), x, rng.standard_normal(n))
    with pytest.raises(RuntimeError, match="slice size"):
        gd.select_scatter(gd.tensor(x), gd.zeros(3, dtype=gd.float64), 1, 0)


@pytest.mark.parametrize("shape,wrap", [((3, 3), False), ((7, 3), False), ((7, 3), True),
                                        ((3, 5), True), ((3, 3, 3), False)])
def test_fill_diagonal_(rng, shape, wrap):
    x = rng.standard_normal(shape)
    a, ta = gd.tensor(x), torch.tensor(x)
    a.fill_diagonal_(2.5, wrap)
    ta.fill_diagonal_(2.5, wrap)
    np.testing.assert_array_equal(a.numpy(), ta.numpy())
    assert a._version == 1                    # (torch's wrapping fill counts 2 edits)
    with pytest.raises(RuntimeError, match="equal length"):
        gd.zeros(2, 3, 3).fill_diagonal_(1.0)


@pytest.mark.parametrize("op", ["scatter_", "scatter_add_", "index_add_", "index_copy_",
                                "index_put_", "index_reduce_", "scatter_reduce_",
                                "masked_scatter_", "put_"])
def test_in_place_scatters_versions_grads_and_refusals(rng, op):
    x, src = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    index = np.array([[1, 0, 3], [3, 2, 1]])
    rows = np.array([3, 1])
    mask = np.zeros((4, 3), bool)
    mask.flat[rng.choice(12, 5, replace=False)] = True

    def arguments(lib, s):
        t = lib.tensor
        return {"scatter_": (0, t(index), s), "scatter_add_": (0, t(index), s),
                "index_add_": (0, t(rows), s), "index_copy_": (0, t(rows), s),
                "index_put_": ((t(rows),), s), "index_reduce_": (0, t(rows), s, "amax"),
                "scatter_reduce_": (0, t(index), s, "prod"),
                "masked_scatter_": (t(mask), s), "put_": (t(np.array([0, 5, 7, 11, 2, 3])), s)
                }[op]
    a, ta = gd.tensor(x), torch.tensor(x)
    assert getattr(a, op)(*arguments(gd, gd.tensor(src))) is a
    getattr(ta, op)(*arguments(torch, torch.tensor(src)))
    np.testing.assert_allclose(a.numpy(), ta.numpy())
    assert a._version == ta._version == 1
    w = rng.standard_normal(x.shape)
    leaf, tleaf = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    s, ts = gd.tensor(src, requires_grad=True), torch.tensor(src, requires_grad=True)
    y, ty = leaf * 2, tleaf * 2
    getattr(y, op)(*arguments(gd, s))
    getattr(ty, op)(*arguments(torch, ts))
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy())
    np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy())
    with pytest.raises(RuntimeError, match="leaf Variable"):
        getattr(leaf, op)(*arguments(gd, gd.tensor(src)))
    np.testing.assert_array_equal(leaf.detach().numpy(), x)


def test_index_put_promotes_under_cuda_autocast(monkeypatch):
    from gpudl.amp import autocast_mode
    state = autocast_mode.state
    monkeypatch.setattr(state, "enabled", {"cuda": True, "cpu": False})
    monkeypatch.setattr(state, "active", True)
    def on_cuda(array):       # the transfer: under the strict simulator a device array
        return gd.Tensor._make(gd.backend.to_device_array(array, "cuda"), False, None, 0, "cuda")
    x = on_cuda(np.zeros((3, 2), np.float16))
    v = on_cuda(np.ones(2, np.float32))
    rows = on_cuda(np.array([1]))
    assert x.index_put((rows,), v).dtype == gd.float32       # the widest, as torch's promote


# ----------------------------------------------------------------- process-wide state
@pytest.fixture
def default_dtype_restored():
    yield
    gd.set_default_dtype(gd.float32)


def test_default_dtype_reaches_every_float_made(default_dtype_restored):
    assert gd.get_default_dtype() == gd.float32
    gd.set_default_dtype(gd.float64)
    torch_before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        made = {"tensor": (gd.tensor([1.5]), torch.tensor([1.5])),
                "zeros": (gd.zeros(2), torch.zeros(2)), "randn": (gd.randn(2), torch.randn(2)),
                "arange": (gd.arange(0.0, 2.0), torch.arange(0.0, 2.0)),
                "linspace": (gd.linspace(0, 1, 3), torch.linspace(0, 1, 3)),
                "int * float": (gd.tensor([1, 2]) * 1.5, torch.tensor([1, 2]) * 1.5),
                "int / int": (gd.tensor([1]) / gd.tensor([2]), torch.tensor([1]) / torch.tensor(
                    [2])),
                "Linear": (gd.nn.Linear(2, 2).weight, torch.nn.Linear(2, 2).weight)}
        for name, (ours, theirs) in made.items():
            assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), name
    finally:
        torch.set_default_dtype(torch_before)
    gd.set_default_dtype(gd.float32)
    assert gd.tensor([1.5]).dtype == gd.float32
    with pytest.raises(TypeError, match="floating-point"):
        gd.set_default_dtype(gd.int64)
    assert gd.get_default_dtype() == gd.float32


def test_rng_state_round_trips_and_seeds():
    gd.manual_seed(3)
    assert gd.initial_seed() == 3
    state = gd.get_rng_state()
    assert state.dtype == gd.uint8 and state.ndim == 1
    first = gd.randn(6, device="cpu").numpy()
    gd.rand(3, device="cpu")
    gd.set_rng_state(state)
    np.testing.assert_array_equal(gd.randn(6, device="cpu").numpy(), first)
    if gd.cuda.is_available():             # the cuda generator's own state
        state = gd.cuda.get_rng_state()
        first = gd.randn(6, device="cuda").numpy()
        gd.rand(3, device="cuda")
        gd.cuda.set_rng_state(state)
        np.testing.assert_array_equal(gd.randn(6, device="cuda").numpy(), first)
    seeded = gd.seed()
    assert gd.initial_seed() == seeded
    with pytest.raises(TypeError, match="uint8"):
        gd.set_rng_state(gd.zeros(40))
    with pytest.raises(RuntimeError, match="bytes"):
        gd.set_rng_state(gd.zeros(3, dtype=gd.uint8))
    generator = gd.Generator().manual_seed(5)
    assert generator.initial_seed() == 5


def test_threads_and_dtype_queries():
    before = gd.get_num_threads()
    try:
        gd.set_num_threads(1)
        assert gd.get_num_threads() == 1
        with pytest.raises(RuntimeError, match="positive"):
            gd.set_num_threads(0)
        assert gd.get_num_threads() == 1
    finally:
        gd.set_num_threads(before)
    pairs = [(gd.tensor([1, 2]), 1.0, torch.tensor([1, 2]), 1.0),
             (gd.tensor([1], dtype=gd.int32), gd.tensor(2), torch.tensor([1], dtype=torch.int32),
              torch.tensor(2)),
             (gd.tensor([1.0]), gd.tensor([1.0], dtype=gd.float64), torch.tensor([1.0]),
              torch.tensor([1.0], dtype=torch.float64)),
             (gd.tensor([True]), 2, torch.tensor([True]), 2)]
    for a, b, ta, tb in pairs:
        assert str(gd.result_type(a, b)) == str(torch.result_type(ta, tb))[6:]
    names = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
             "float32", "float64"]
    for x in names:
        for y in names:
            ours = gd.promote_types(getattr(gd, x if x != "bool" else "bool_"),
                                    getattr(gd, y if y != "bool" else "bool_"))
            assert str(ours) == str(torch.promote_types(getattr(torch, x),
                                                        getattr(torch, y)))[6:], (x, y)
            assert gd.can_cast(getattr(gd, x if x != "bool" else "bool_"),
                               getattr(gd, y if y != "bool" else "bool_")) == torch.can_cast(
                getattr(torch, x), getattr(torch, y)), (x, y)
    for shapes in (((2, 1), (3,)), ((1,), ()), (4, (2, 1)), ((0, 1), (3,))):
        assert gd.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    with pytest.raises(RuntimeError, match="Shape mismatch"):
        gd.broadcast_shapes((2,), (3,))


@pytest.mark.skipif(not __import__("gpudl").backend.may_read_device(),
                    reason="queued checks exist on the cuda device (a GPU or the simulator)")
def test_gather_queues_one_range_check(rng):
    """gather range-checks its index once (one device reduction), not again in the indexing
    with the 0..n-1 grids along the other dims (each another reduction)."""
    from gpudl import backend
    x = gd.tensor(rng.standard_normal((3, 5)), device="cuda")
    index = gd.tensor(np.array([[0, 4], [2, 1]]), device="cuda")
    gd.cuda.synchronize()
    before = len(backend._deferred)
    x.gather(1, index)
    assert len(backend._deferred) == before + 1
    gd.cuda.synchronize()
