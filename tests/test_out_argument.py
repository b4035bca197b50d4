"""torch's out= keyword (gpudl.out_arg) against torch 2.13 CPU.

A sweep calls every function with out= that has an OpInfo (its first float32 samples) in torch
and in gpudl with out= tensors of the result's dtype, then with a float64 out (torch casts for
some functions and refuses for others) and an int64 out (refused); dedicated tests check the
semantics: the returned object, resizing and its warning, dtype casts, tuple outs, autograd
refusal, overlap, version counters and views.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
sweep = pytest.importorskip("out_sweep")

# torch refuses a float64 out for some samples only (a 1-d inner is dot's exact path, a 0-d
# one mul's casting one; matrix_power(A, 0 or 1) casts, higher powers do not): gpudl refuses
# for all of matmul's family, and casts for inner
DTYPE_BY_SAMPLE = {"inner", "matrix_power", "linalg.matrix_power"}
WITH_OPINFO = [name for name in sweep.QUALIFIED if name in sweep.BY_NAME]


def _empty_outs(results, dtype_of, lib):
    outs = [lib.empty(0, dtype=dtype_of(r)) for r in results]
    return outs


def _pack(outs, like):
    return tuple(outs) if isinstance(like, tuple) else outs[0]


def _refused(call):
    try:
        call()
    except (RuntimeError, TypeError, ValueError):
        return True
    return False


@pytest.mark.parametrize("qualified", WITH_OPINFO)
def test_opinfo_samples_with_out(qualified):
    fn, torch_fn = sweep.gd_fn(qualified), sweep.torch_fn(qualified)
    random = qualified.rpartition(".")[2] in sweep.RANDOM
    checked = 0
    for op, sample in sweep.cases(qualified):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = sweep.call(torch_fn, sample)
                t_outs = _empty_outs(sweep.outputs(expected), lambda r: r.dtype, torch)
                sweep.call(torch_fn, sample, out=_pack(t_outs, expected))
            except (RuntimeError, TypeError, ValueError, IndexError):
                continue                    # torch takes no out= for this sample
        if any(t.dtype not in sweep.DTYPES for t in t_outs):
            continue                        # complex results: outside gpudl
        try:
            plain = sweep.outputs(sweep.call(fn, sample, sweep.to_gd))
        except (NotImplementedError, TypeError, ValueError, RuntimeError):
            continue                        # gpudl's plain call refuses it (not out='s part)
        if [tuple(p.shape) for p in plain] != [tuple(t.shape) for t in t_outs]:
            continue    # the plain call's shape departs (linalg.pinv of an empty matrix with
            #             an empty rtol): the OpInfo sweeps' part, not out='s
        g_outs = [gd.empty(0, dtype=sweep.DTYPES[t.dtype]) for t in t_outs]
        got = sweep.call(fn, sample, sweep.to_gd, out=_pack(g_outs, expected))
        for g, o in zip(sweep.outputs(got), g_outs):
            assert g is o
        for g, t in zip(g_outs, t_outs):
            assert tuple(g.shape) == tuple(t.shape) and g.dtype == sweep.DTYPES[t.dtype]
            if not random:
                np.testing.assert_allclose(g.numpy().astype(np.float64),
                                           t.numpy().astype(np.float64), rtol=1e-3, atol=1e-4,
                                           equal_nan=True, err_msg=qualified)
        for target in (torch.float64, torch.int64):     # a wider kind, a lower kind
            if t_outs[0].dtype != torch.float32 or qualified in DTYPE_BY_SAMPLE:
                break
            dtypes = [target if t.dtype == torch.float32 else t.dtype for t in t_outs]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_refused = _refused(lambda: sweep.call(torch_fn, sample, out=_pack(
                    [torch.empty(0, dtype=d) for d in dtypes], expected)))
            g_wide = [gd.empty(0, dtype=sweep.DTYPES[d]) for d in dtypes]
            g_refused = _refused(lambda: sweep.call(fn, sample, sweep.to_gd,
                                                    out=_pack(g_wide, expected)))
            assert g_refused == t_refused, (qualified, target, t_refused)
        checked += 1
    if not checked:
        pytest.skip("no sample both torch and gpudl take (out=, complex, ...)")


def test_the_sweep_covers_most_functions():
    assert len(WITH_OPINFO) >= 200, len(WITH_OPINFO)


# ----------------------------------------------------------------- the semantics, one by one
def _pair(*shape, dtype=np.float32):
    data = np.random.default_rng().standard_normal(shape).astype(dtype)
    return gd.tensor(data), torch.tensor(data)


def test_out_none_is_the_plain_call():
    (a, ta), (b, tb) = _pair(4, 4), _pair(4, 4)
    np.testing.assert_allclose(gd.add(a, b, out=None).numpy(), torch.add(ta, tb, out=None))
    values, indices = gd.max(a, 1, out=None)
    assert np.array_equal(indices.numpy(), torch.max(ta, 1, out=None).indices.numpy())


def test_returns_out_itself_with_torch_values():
    (a, ta), (b, tb) = _pair(3, 5), _pair(3, 5)
    out, t_out = gd.empty(3, 5), torch.empty(3, 5)
    assert gd.mul(a, b, out=out) is out
    torch.mul(ta, tb, out=t_out)
    np.testing.assert_allclose(out.numpy(), t_out.numpy(), rtol=1e-6)


def test_tuple_outs():
    a, ta = _pair(4, 6)
    values, indices = gd.empty(0), gd.empty(0, dtype=gd.int64)
    got = gd.max(a, 1, out=(values, indices))
    expected = torch.max(ta, 1)
    assert got[0] is values and got[1] is indices and got.values is values
    assert np.array_equal(indices.numpy(), expected.indices.numpy())
    np.testing.assert_allclose(values.numpy(), expected.values.numpy())
    outs = (gd.empty(0), gd.empty(0, dtype=gd.int64))
    assert gd.sort(a, 1, out=outs)[1] is outs[1]
    assert np.array_equal(outs[1].numpy(), torch.sort(ta, 1).indices.numpy())
    mantissa, exponent = gd.empty(0), gd.empty(0, dtype=gd.int32)
    gd.frexp(a, out=(mantissa, exponent))
    t_mantissa, t_exponent = torch.frexp(ta)
    assert np.array_equal(exponent.numpy(), t_exponent.numpy())
    np.testing.assert_allclose(mantissa.numpy(), t_mantissa.numpy())
    sym = a[:, :4] @ a[:, :4].mT
    w, v = gd.empty(0), gd.empty(0)
    assert gd.linalg.eigh(sym, out=(w, v)).eigenvalues is w
    np.testing.assert_allclose(w.numpy(), torch.linalg.eigh(torch.tensor(sym.numpy()))[0],
                               rtol=1e-4, atol=1e-4)


def test_a_tuple_out_of_the_wrong_length_or_kind_is_refused():
    a, _ = _pair(4, 6)
    with pytest.raises(TypeError, match="out"):
        gd.max(a, 1, out=(gd.empty(0),))
    with pytest.raises(TypeError, match="out"):
        gd.add(a, a, out=(gd.empty(0),))
    with pytest.raises(TypeError, match="argument 'out' must be Tensor"):
        gd.add(a, a, out=[1.0])


def test_resize_warns_as_torch_only_when_out_had_elements():
    (a, ta), (b, tb) = _pair(2, 3), _pair(2, 3)
    for lib, x, y in ((gd, a, b), (torch, ta, tb)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = lib.zeros(4)
            lib.add(x, y, out=out)
            empty = lib.empty(0)
            lib.add(x, y, out=empty)
            right = lib.empty(2, 3)
            lib.add(x, y, out=right)
        messages = [str(w.message) for w in caught if w.category is UserWarning]
        assert len(messages) == 1 and "An output with one or more elements was resized" in \
            messages[0], (lib, messages)
        assert tuple(out.shape) == (2, 3) and tuple(empty.shape) == (2, 3)
    np.testing.assert_allclose(out.numpy(), torch.add(ta, tb).numpy(), rtol=1e-6)


def test_dtype_cast_into_out_and_refusal():
    ints = np.random.default_rng().integers(-9, 9, (3, 3))
    a, ta = gd.tensor(ints), torch.tensor(ints)
    out, t_out = gd.empty(0, dtype=gd.float32), torch.empty(0, dtype=torch.float32)
    gd.add(a, a, out=out)
    torch.add(ta, ta, out=t_out)
    assert out.dtype == gd.float32
    np.testing.assert_array_equal(out.numpy(), t_out.numpy())
    f, tf = _pair(3, 3)
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired "
                                           "output type Long"):
        gd.add(f, f, out=gd.empty(0, dtype=gd.int64))
    with pytest.raises(RuntimeError, match="result type Float can't be cast"):
        torch.add(tf, tf, out=torch.empty(0, dtype=torch.long))
    with pytest.raises(RuntimeError, match="dtype"):        # torch: mm casts nothing
        gd.mm(f, f, out=gd.empty(0, dtype=gd.float64))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.mm(tf, tf, out=torch.empty(0, dtype=torch.float64))


def test_autograd_refusal_matches_torch():
    (a, ta), (b, tb) = _pair(3), _pair(3)
    a.requires_grad_(), ta.requires_grad_()
    message = "add\\(\\): functions with out=... arguments don't support automatic differentiation"
    with pytest.raises(RuntimeError, match=message):
        gd.add(a, b, out=gd.empty(3))
    with pytest.raises(RuntimeError, match=message):
        torch.add(ta, tb, out=torch.empty(3))
    with pytest.raises(RuntimeError, match=message):        # an out that requires grad
        gd.add(b, b, out=gd.empty(3, requires_grad=True))
    with pytest.raises(RuntimeError, match=message):
        torch.add(tb, tb, out=torch.empty(3, requires_grad=True))
    with gd.no_grad():                  # no autograd needed: allowed, as torch
        out = gd.add(a, b, out=gd.empty(3))
    assert not out.requires_grad
    index, t_index = gd.empty(0, dtype=gd.int64), torch.empty(0, dtype=torch.long)
    gd.argmax(a, out=index), torch.argmax(ta, out=t_index)     # not differentiable: allowed
    assert index.item() == t_index.item()


def test_out_exactly_an_input_is_fine_partial_overlap_is_refused():
    (a, ta), (b, tb) = _pair(6), _pair(6)
    expected = (ta + tb).numpy()
    assert gd.add(a, b, out=a) is a
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6)
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        gd.add(a[:3], 1, out=a[1:4])
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        torch.add(ta[:3], 1, out=ta[1:4])


def test_the_write_bumps_the_version_once_and_views_see_it():
    (a, ta), (b, tb) = _pair(2, 3), _pair(2, 3)
    for lib, x, y in ((gd, a, b), (torch, ta, tb)):
        out = lib.zeros(2, 3)
        view = out[1]
        before = out._version
        lib.add(x, y, out=out)
        assert out._version == before + 1 and view._version == out._version
        np.testing.assert_allclose(view.numpy(), (x + y)[1].numpy(), rtol=1e-6)
    base = gd.zeros(4, 3)
    gd.add(a, b, out=base[1:3])             # out is a view: the base sees the values
    np.testing.assert_allclose(base[1:3].numpy(), (a + b).numpy(), rtol=1e-6)
    assert base[0].abs().sum().item() == 0


def test_an_edit_through_out_fails_the_backward_that_saved_it():
    x = gd.randn(3, requires_grad=True)
    y = gd.empty(3)
    with gd.no_grad():
        gd.add(x, 1, out=y)
    z = x * y                               # saves y
    with gd.no_grad():
        gd.mul(x, 2, out=y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation|version"):
        z.sum().backward()


def test_creation_functions_take_outs_dtype():
    for lib in (gd, torch):
        out = lib.empty(0, dtype=lib.int64)
        assert lib.zeros(2, 3, out=out) is out and out.dtype == lib.int64
        assert tuple(out.shape) == (2, 3)
        ranged = lib.empty(0)
        lib.arange(5, out=ranged)
        assert ranged.dtype == lib.float32 and ranged.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        perm = lib.empty(0, dtype=lib.int64)
        lib.randperm(6, out=perm)
        assert sorted(perm.tolist()) == list(range(6))


def test_linalg_special_and_functional():
    import gpudl.nn.functional as F
    a, ta = _pair(3, 3)
    out = gd.empty(0)
    assert gd.linalg.vector_norm(a, out=out) is out
    np.testing.assert_allclose(out.item(), torch.linalg.vector_norm(ta).item(), rtol=1e-5)
    out = gd.empty(0)
    assert gd.special.expit(a, out=out) is out
    np.testing.assert_allclose(out.numpy(), torch.special.expit(ta).numpy(), rtol=1e-6)
    out = gd.empty(0)
    assert F.normalize(a, out=out) is out
    np.testing.assert_allclose(out.numpy(), torch.nn.functional.normalize(ta).numpy(),
                               rtol=1e-5)


def test_import_stays_light():
    code = "import sys, gpudl; print('numba' in sys.modules, 'gpudl.nn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not gd.cuda.is_available(), reason="needs a CUDA device")
def test_out_on_another_device_is_refused():
    a = gd.randn(3, device="cuda")
    with pytest.raises(RuntimeError, match="Expected out tensor to have device"):
        gd.add(a, a, out=gd.empty(3, device="cpu"))
    out = gd.empty(0, device="cuda")
    assert gd.add(a, a, out=out) is out
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        gd.add(a[:2], 1, out=a[1:])
