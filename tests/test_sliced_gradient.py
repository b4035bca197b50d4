"""Gradients of tensors read in basic-index pieces (chunk, split, unbind, x[:, :k]): the
autograd walk joins the pieces' gradients once (gpudl.sliced_gradient) instead of adding one
zero-filled full-size gradient per piece. Values and gradients against torch 2.13 (float64, the
same random inputs), against NumPy where torch has no such view (negative steps), and what the
join must keep: hooks, retain_grad, create_graph, retain_graph, inputs=, autograd.grad, in-place
edits through views, dtypes, and buffers owned by no one else."""

import tracemalloc

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl.sliced_gradient import covers_once, view_index

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

TIGHT = dict(rtol=1e-12, atol=1e-12)


def _weight(lib, shape, seed):
    return lib.tensor(np.random.default_rng(seed).standard_normal(tuple(shape)))


def _weighted(lib, pieces):
    """A loss that gives each piece a different random gradient."""
    return sum((p * _weight(lib, p.shape, 100 + i)).sum() for i, p in enumerate(pieces))


def _both(rng, build, *shapes):
    """``build(lib, *leaves)`` (returns the loss) on torch and gpudl from the same float64
    leaves; compares the losses and the leaves' gradients; returns gpudl's leaves."""
    arrays = [rng.standard_normal(shape) for shape in shapes]
    results = []
    for lib in (torch, gd):
        leaves = [lib.tensor(a.copy(), requires_grad=True) for a in arrays]
        loss = build(lib, *leaves)
        loss.backward()
        results.append((loss, leaves))
    (t_loss, t_leaves), (g_loss, g_leaves) = results
    np.testing.assert_allclose(g_loss.detach().numpy(), t_loss.detach().numpy(), **TIGHT)
    for i, (t, g) in enumerate(zip(t_leaves, g_leaves)):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), **TIGHT, err_msg=f"leaf {i}")
    return g_leaves


def _flip(lib, x, dim):
    """x reversed along dim: gpudl's negative-step view, torch's flip (it has none)."""
    if lib is torch:
        return x.flip(dim)
    return x[(slice(None),) * dim + (slice(None, None, -1),)]


CASES = {
    "chunk3 of a non-leaf": (lambda lib, x: _weighted(lib, (x * 2).chunk(3, -1)), (4, 9)),
    "chunk3 of a leaf": (lambda lib, x: _weighted(lib, x.chunk(3, -1)), (4, 9)),
    "uneven chunk": (lambda lib, x: _weighted(lib, (x * 1).chunk(3, 0)), (7, 2)),
    "split by sizes": (lambda lib, x: _weighted(lib, (x * 1).split([1, 4, 2], 1)), (3, 7)),
    "unbind loop": (lambda lib, x: _weighted(lib, (x.sin()).unbind(1)), (3, 5)),
    "unbind 1-D (0-d pieces)": (lambda lib, x: _weighted(lib, (x * 3).unbind(0)), (5,)),
    "LSTM gates": (lambda lib, x: (lambda i, f, g, o: (i.sigmoid() * g.tanh() + f.sigmoid()
                                                       * o.sigmoid()).pow(2).sum())(
        *(x * 1).chunk(4, 1)), (3, 8)),
    "x[:, :k] and x[:, k:]": (lambda lib, x: _weighted(lib, ((y := x.exp())[:, :2], y[:, 2:])),
                              (3, 5)),
    "overlapping slices": (lambda lib, x: _weighted(lib, (x[0:3], x[2:5])), (6, 2)),
    "overlapping, non-leaf": (lambda lib, x: _weighted(lib, ((y := x * 1)[0:3], y[2:5], y[1])),
                              (6, 2)),
    "the same slice twice": (lambda lib, x: _weighted(lib, ((y := x * 1)[1:4], y[1:4])), (5,)),
    "strided halves": (lambda lib, x: _weighted(lib, ((y := x * 1)[:, ::2], y[:, 1::2])),
                       (3, 6)),
    "strided, left out": (lambda lib, x: _weighted(lib, ((y := x * 1)[::3], y[1::3])), (7, 2)),
    "views of views": (lambda lib, x: _weighted(lib, ((y := x * 1)[1:][:, 1:3], y.t()[0],
                                                      y[0][2:])), (4, 5)),
    "select and narrow": (lambda lib, x: _weighted(lib, ((y := x * 1).select(1, 2),
                                                         y.narrow(0, 1, 2))), (3, 4)),
    "pieces and the whole": (lambda lib, x: _weighted(lib, (*(y := x * 1).chunk(2, 0), y)),
                             (4, 3)),
    "pieces along two axes": (lambda lib, x: _weighted(lib, ((y := x * 1)[:2, :2], y[:2, 2:],
                                                             y[2:])), (4, 4)),
    "None and Ellipsis": (lambda lib, x: _weighted(lib, ((y := x * 1)[None, ..., 1],
                                                         y[..., 0, None], y[1, ...])),
                          (2, 3, 2)),
    "negative steps": (lambda lib, x: _weighted(lib, (_flip(lib, x * 1, 0)[1:], x[:2])),
                       (4, 3)),
    "empty pieces": (lambda lib, x: _weighted(lib, ((y := x * 1)[0:0], y[0:2], y[2:])),
                     (3, 2)),
    # a stack's pieces go to its inputs as they are (the others get a zero): each input's own
    # piece, pieces of one input added, and the forms it leaves to the joined gradient
    "stack, last": (lambda lib, x: _weighted(lib, (_stacked(lib, x)[-1],)), (3, 4)),
    "stack, two inputs": (lambda lib, x: _weighted(lib, ((y := _stacked(lib, x))[0], y[2])),
                          (3, 4)),
    "stack, one input twice": (lambda lib, x: _weighted(lib, ((y := _stacked(lib, x))[1],
                                                              y[-2])), (2, 5)),
    "stack on axis 1": (lambda lib, x: _weighted(lib, (_stacked(lib, x, 1)[:, 1],)), (3, 4)),
    "stack, part of an input": (lambda lib, x: _weighted(lib, ((y := _stacked(lib, x))[0, 1:],
                                                               y[1])), (3, 4)),
    "stack, piece and whole": (lambda lib, x: _weighted(lib, ((y := _stacked(lib, x))[2], y)),
                               (3, 4)),
    "stack, axis 1 read on 0": (lambda lib, x: _weighted(lib, (_stacked(lib, x, 1)[1],)),
                                (3, 4)),
}


def _stacked(lib, x, dim=0):
    """Three different functions of x stacked (each input's gradient reaches x apart)."""
    return lib.stack([x * 2, x.sin(), x.exp()], dim)


@pytest.mark.parametrize("name", CASES)
def test_pieces_against_torch(rng, name):
    build, shape = CASES[name]
    _both(rng, build, shape)


def test_a_0d_tensor_read_as_views(rng):
    _both(rng, lambda lib, x: _weighted(lib, ((y := x * 1)[None], y[...], y[None, None])), ())


def test_bool_index_is_a_copy_not_a_view(rng):
    """x[True] is a 0-d mask (NumPy copies): not a view to write a gradient into."""
    _both(rng, lambda lib, x: _weighted(lib, ((x * 1)[True], x[0])), (3,))


# ------------------------------------------------------------------ any basic indices, NumPy
def _basic_index(draw, shape):
    """A random basic index into an array of ``shape``: ints, slices (any bounds, steps
    including negative ones), None, and maybe an Ellipsis; the axes after it taken whole."""
    parts = []
    for n in shape:
        if draw(st.booleans()):
            parts.append(draw(st.integers(-n, n - 1)))
        else:
            bound = st.none() | st.integers(-n - 1, n + 1)
            parts.append(slice(draw(bound), draw(bound), draw(st.sampled_from([1, 2, 3, -1, -2]))))
        if draw(st.integers(0, 5)) == 0:
            parts.append(None)
    parts = parts[:draw(st.integers(0, len(parts)))]
    return tuple(parts) + ((Ellipsis,) if draw(st.booleans()) else ())


@st.composite
def _pieces(draw):
    """(shape, basic indices, through a node?, the whole used too?); half the time split-like
    pieces (whole axes but one, cut at random points), else any basic indices."""
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    if shape and draw(st.booleans()):
        axis = draw(st.integers(0, len(shape) - 1))
        cuts = sorted(draw(st.lists(st.integers(0, shape[axis]), max_size=3)))
        edges = [0, *cuts, shape[axis]]
        indices = [(slice(None),) * axis + (slice(a, b),) for a, b in zip(edges, edges[1:])]
    else:
        indices = [_basic_index(draw, shape) for _ in range(draw(st.integers(1, 4)))]
    return shape, indices, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(_pieces())
def test_any_basic_pieces_against_numpy(case):
    """loss = sum_i <w_i, y[index_i]> (+ <w, y> for the whole), y = x * 1 or the leaf x itself:
    x's gradient is the w_i added at each index_i, computed in float64 NumPy."""
    shape, indices, through_node, whole = case
    rng = np.random.default_rng(len(indices) * 7 + len(shape))
    data = rng.standard_normal(shape)
    expected = np.zeros(shape)
    x = gd.tensor(data, requires_grad=True)
    y = x * 1 if through_node else x
    loss = gd.tensor(0.0)
    for index in indices:
        w = rng.standard_normal(data[index].shape)
        expected[view_index(index)] += w
        loss = loss + (y[index] * gd.tensor(w)).sum()
    if whole:
        w = rng.standard_normal(shape)
        expected += w
        loss = loss + (y * gd.tensor(w)).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, **TIGHT)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(_pieces())
def test_covers_once_never_claims_a_gap_or_an_overlap(case):
    """The join skips the zero-fill only where the views take each element exactly once: checked
    against counting the elements each view takes."""
    shape, indices, _, _ = case
    views = [view_index(index) for index in indices]
    counts = np.zeros(shape, np.intp)
    for view in views:
        counts[view] += 1
    if covers_once(shape, views):
        assert (counts == 1).all(), (shape, indices)


@pytest.mark.parametrize("shape, indices", [
    ((6, 4), [(slice(None), slice(0, 1)), (slice(None), slice(1, 4))]),
    ((6,), [(slice(None, None, 2),), (slice(1, None, 2),)]),
    ((6,), [(slice(None, None, -1),)]),
    ((3, 2), [(0,), (1,), (2,)]),
    ((3, 2), [(slice(None), 1), (slice(None), 0)]),
    ((0, 3), [(slice(None), slice(0, 1)), (slice(None), slice(1, 3))]),
])
def test_covers_once_sees_split_like_pieces(shape, indices):
    assert covers_once(shape, [view_index(index) for index in indices])


@pytest.mark.parametrize("shape, indices", [
    ((6,), [(slice(0, 3),), (slice(2, 6),)]),       # overlap
    ((6,), [(slice(0, 3),), (slice(4, 6),)]),       # gap
    ((6,), [(slice(0, 3),), (slice(0, 3),)]),       # twice
    ((6,), [(slice(None, None, 2),), (slice(None, None, 3),)]),
    ((4, 4), [(slice(0, 2),), (slice(2, 4), slice(0, 2)), (slice(2, 4), slice(2, 4))]),
    ((3,), [(slice(None),), (slice(0, 0),)]),
    ((), [(None,), (Ellipsis,)]),
])
def test_covers_once_refuses_what_is_not_a_tiling(shape, indices):
    assert not covers_once(shape, [view_index(index) for index in indices])


# ------------------------------------------------------------------ what the walk must keep
def test_stacked_leaves_left_out_get_zeros(rng):
    """Leaves stacked and read in one piece: the others' .grad are zeros, as torch's, not None;
    a hook on a left-out non-leaf sees zeros."""
    data = [rng.standard_normal((2, 3)) for _ in range(3)]
    seen = {}
    for lib in (torch, gd):
        a, b, c = (lib.tensor(d.copy(), requires_grad=True) for d in data)
        cb = c * 1
        cb.register_hook(lambda g, lib=lib: seen.__setitem__(lib, g.numpy().copy()))
        _weighted(lib, (lib.stack([a, b, cb])[1],)).backward()
        seen[lib, "grads"] = [t.grad.numpy() for t in (a, b, c)]
    for g, t in zip(seen[gd, "grads"], seen[torch, "grads"]):
        np.testing.assert_array_equal(g, t)
    np.testing.assert_array_equal(seen[gd], seen[torch])


def test_hooks_see_the_joined_gradient(rng):
    """A hook on the sliced non-leaf, a hook on the sliced leaf and retain_grad see the whole
    gradient; a hook's replacement is what flows on."""
    data = rng.standard_normal((4, 6))
    seen = {}

    def record(key, scale=None):
        def hook(g):
            seen[key] = g.numpy().copy()
            return None if scale is None else g * scale
        return hook
    for lib in (torch, gd):
        x = lib.tensor(data.copy(), requires_grad=True)
        x.register_hook(record((lib, "x")))
        y = x * 2
        y.retain_grad()
        y.register_hook(record((lib, "y"), 3))
        _weighted(lib, (*y.chunk(3, 1), *x.chunk(2, 0))).backward()
        seen[lib, "x.grad"], seen[lib, "y.grad"] = x.grad.numpy(), y.grad.numpy()
    for key in ("x", "y", "x.grad", "y.grad"):
        np.testing.assert_allclose(seen[gd, key], seen[torch, key], **TIGHT, err_msg=key)


def test_post_accumulate_hook_sees_the_whole_grad(rng):
    data = rng.standard_normal((3, 4))
    seen = {}
    for lib in (torch, gd):
        x = lib.tensor(data.copy(), requires_grad=True)
        x.register_post_accumulate_grad_hook(
            lambda t, lib=lib: seen.update({lib: t.grad.numpy().copy()}))
        _weighted(lib, x.unbind(1)).backward()
    np.testing.assert_allclose(seen[gd], seen[torch], **TIGHT)


def test_retain_graph_and_an_existing_grad(rng):
    """Backward twice (retain_graph), the second into an existing .grad, and a third backward
    from another loss."""
    def build(lib, x):
        pieces = x.chunk(3, 0)
        loss = _weighted(lib, pieces)
        loss.backward(retain_graph=True)
        loss.backward(retain_graph=True)
        return _weighted(lib, (pieces[1], (x * 1)[1:3]))
    _both(rng, build, (6, 2))


def test_create_graph_through_pieces(rng):
    """Second derivatives through chunk and overlapping slices (the graph walk)."""
    data, w = rng.standard_normal(9), rng.standard_normal(9)
    grads = []
    for lib in (torch, gd):
        x = lib.tensor(data.copy(), requires_grad=True)
        a, b, c = (x ** 2).chunk(3)
        f = (a * b * c).sum() + (x[2:7] ** 3).sum() + (x[0:4] * x[3:7]).sum()
        (g,) = lib.autograd.grad(f, x, create_graph=True)
        (g * lib.tensor(w)).sum().backward()
        grads.append((g.detach().numpy(), x.grad.numpy()))
    for got, want in zip(*grads[::-1]):
        np.testing.assert_allclose(got, want, **TIGHT)


def test_autograd_grad_and_backward_inputs(rng):
    """autograd.grad and backward(inputs=) for the sliced non-leaf, the leaf and a piece."""
    data = rng.standard_normal((4, 6))
    out = {}
    for lib in (torch, gd):
        x = lib.tensor(data.copy(), requires_grad=True)
        y = x.exp()
        pieces = y.split(2, 1)
        loss = _weighted(lib, pieces) + _weighted(lib, x.unbind(0))
        out[lib, "grad"] = [g.numpy() for g in lib.autograd.grad(
            loss, (y, x, pieces[1]), retain_graph=True)]
        loss.backward(inputs=[y], retain_graph=True)
        out[lib, "inputs y"] = y.grad.numpy()
        assert x.grad is None
        loss.backward(inputs=[x])
        out[lib, "inputs x"] = x.grad.numpy()
    for got, want in zip(out[gd, "grad"], out[torch, "grad"]):
        np.testing.assert_allclose(got, want, **TIGHT)
    for key in ("inputs y", "inputs x"):
        np.testing.assert_allclose(out[gd, key], out[torch, key], **TIGHT, err_msg=key)


def test_in_place_edits_through_pieces(rng):
    """gpudl keeps chunk's pieces plain views that may be edited in place (torch 2.13 refuses
    that for split/chunk/unbind outputs, so it runs the same edits on slices); the gradients
    match, as do those of an edit of the base after the pieces were taken."""
    def build(lib, x, w):
        y = x * 1
        if lib is gd:
            a, b, c = y.chunk(3, 0)
        else:
            a, b, c = y[0:2], y[2:4], y[4:6]
        a.mul_(w[0:2])
        c[1].add_(w[2:4].sum())
        z = x * 1
        first, rest = z[0:1], z[1:]
        z.mul_(w[0:6].sum(1, keepdim=True))
        return (_weighted(lib, (a, b, y, first, rest)) + (rest ** 2).sum())
    _both(rng, build, (6, 2), (6, 2))


def test_chunk_pieces_may_be_edited_in_place(rng):
    """torch refuses in-place edits of split/chunk/unbind outputs in grad mode; gpudl keeps them
    views of one GetItem each, which may be edited (its lazy join changes nothing there)."""
    x = torch.randn(6, requires_grad=True)
    with pytest.raises(RuntimeError, match="Output 0 of Split(Backward0)? is a view"):
        (x * 1).chunk(3)[0].mul_(2)        # "Split" here, "SplitBackward0" on the GPU machine
    data = rng.standard_normal(6)
    y = gd.tensor(data, requires_grad=True)
    piece = (y * 1).chunk(3)[0].mul_(2)    # accepted
    np.testing.assert_array_equal(piece.detach().numpy(), 2 * data[:2])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_dtype_kept(rng, dtype):
    data = rng.standard_normal((4, 6)).astype(np.float32)
    x = gd.tensor(data, requires_grad=True).to(getattr(gd, dtype)).detach().requires_grad_()
    y = x * 1
    loss = sum((p.float() * (i + 2)).sum() for i, p in enumerate(y.chunk(3, 1))) \
        + (y[1:3].float() * 5).sum()
    loss.backward()
    assert x.grad.dtype == x.dtype
    expected = np.repeat([[2.0, 2, 3, 3, 4, 4]], 4, 0)
    expected[1:3] += 5
    np.testing.assert_array_equal(x.grad.float().numpy(), expected)


def test_the_gradient_owns_its_memory(rng):
    """A leaf's .grad joined from pieces shares memory with no gradient given to backward, nor
    with what a hook saw: editing one afterwards leaves the other as it was."""
    x = gd.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    seed = gd.tensor(rng.standard_normal((2, 3)))
    kept = seed.numpy().copy()
    x[...].backward(seed)                           # one view taking all of x
    x.grad.add_(1)
    np.testing.assert_array_equal(seed.numpy(), kept)
    x.grad = None
    pieces = x.chunk(2, 1)
    seeds = [gd.tensor(rng.standard_normal(p.shape)) for p in pieces]
    gd.autograd.backward(pieces, seeds)
    expected = np.concatenate([s.numpy() for s in seeds], 1)
    for s in seeds:
        s.mul_(0)
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    seen = []
    y = x * 1
    y.register_hook(seen.append)
    x.grad = None
    gd.autograd.backward(y.unbind(0), [gd.ones(3), gd.ones(3) * 2])
    before = seen[0].numpy().copy()
    x.grad.mul_(10)
    np.testing.assert_array_equal(seen[0].numpy(), before)


def test_anomaly_mode_checks_every_piece():
    x = gd.tensor(np.arange(6.0), requires_grad=True)
    a, b = (x * 1).chunk(2)
    with gd.autograd.detect_anomaly(), pytest.raises(RuntimeError, match="GetItemBackward"):
        gd.autograd.backward([a, b], [gd.ones(3), gd.tensor([1.0, float("nan"), 1.0])])


def test_a_leaf_read_in_pieces_allocates_its_gradient_once():
    """Its pieces are held until the walk ends and written into one buffer, which becomes
    .grad: one gradient's worth of memory at the peak (a zero-filled full-size gradient per
    piece, summed into .grad one after the other, took three)."""
    n = 1 << 20
    x = gd.tensor(np.random.default_rng(0).standard_normal(n), requires_grad=True)
    loss = sum(p.sum() for p in x.chunk(4))
    tracemalloc.start()
    try:
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * x.numpy().nbytes
