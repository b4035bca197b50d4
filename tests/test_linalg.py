"""gd.linalg and torch's linear algebra names against torch 2.13 (CPU): values and gradients of
(out * random weights).sum() on fresh, well-conditioned random inputs (batched, float32 and
float64, empty and 1x1 matrices), gradcheck (finite differences) in float64, torch's errors
for singular / non positive-definite input, clear errors for wrong shapes and dtypes, and the
autocast policies of the linalg names."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-8, atol=1e-10)}


def _rng():
    return np.random.default_rng()


def general(*shape, rng=None):
    """Random square-ish matrices kept well away from singular (diagonal shift)."""
    rng = rng or _rng()
    a = rng.standard_normal(shape)
    n = min(shape[-2:])
    return a + 3 * np.eye(shape[-2], shape[-1]) * (n > 0)


def spd(*shape, rng=None):
    rng = rng or _rng()
    a = rng.standard_normal(shape)
    return a @ a.swapaxes(-1, -2) + shape[-1] * np.eye(shape[-1])


def symmetric(*shape, rng=None):
    """Symmetric, with eigenvalues spread apart (distinct: eigh's gradient needs them)."""
    rng = rng or _rng()
    q, _ = np.linalg.qr(rng.standard_normal(shape))
    w = np.arange(shape[-1]) * 1.5 - shape[-1] / 2 + rng.uniform(0, 0.5, shape[:-2] + (1,))
    return (q * w[..., None, :]) @ q.swapaxes(-1, -2)


def distinct_singular(*shape, rng=None):
    rng = rng or _rng()
    m, n = shape[-2:]
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal(shape[:-2] + (m, k)))
    v, _ = np.linalg.qr(rng.standard_normal(shape[:-2] + (n, k)))
    s = np.arange(k, 0, -1) * 1.3 + 0.5
    return (u * s) @ v.swapaxes(-1, -2)


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def compare(gd_fn, torch_fn, arrays, dtype=np.float64, grad=True, grad_outputs=None):
    """gd_fn and torch_fn on the same inputs: outputs equal; gradients of (out * w).sum()
    (over the floating outputs, or those in ``grad_outputs``) equal."""
    arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
    g_in = [gd.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    t_in = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    ys, tys = _outputs(gd_fn(*g_in)), _outputs(torch_fn(*t_in))
    assert len(ys) == len(tys)
    tol = TOL[dtype]
    for y, ty in zip(ys, tys):
        assert tuple(y.shape) == tuple(ty.shape)
        assert str(y.dtype) == str(ty.dtype).replace("torch.", "")
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    if not grad:
        return ys
    picked = range(len(ys)) if grad_outputs is None else grad_outputs
    pairs = [(ys[i], tys[i], _rng().standard_normal(ys[i].shape)) for i in picked
             if tys[i].dtype.is_floating_point and tys[i].requires_grad]
    loss = sum((y * gd.tensor(w.astype(dtype))).sum() for y, _, w in pairs)
    tloss = sum((ty * torch.tensor(w.astype(dtype))).sum() for _, ty, w in pairs)
    leaves = [(g, t) for g, t in zip(g_in, t_in) if t.requires_grad]
    expected = torch.autograd.grad(tloss, [t for _, t in leaves], allow_unused=True)
    loss.backward()
    for (g, _), e in zip(leaves, expected):
        e = np.zeros(g.shape) if e is None else e.numpy()
        got = np.zeros(g.shape) if g.grad is None else g.grad.numpy()
        np.testing.assert_allclose(got, e, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    return ys


DTYPES = [np.float32, np.float64]
BATCHES = [(), (3,), (2, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_square_matrix_functions(batch, dtype):
    a = general(*batch, 4, 4)
    for name in ("inv", "det", "matrix_exp"):
        compare(getattr(gd.linalg, name), getattr(torch.linalg, name), [a], dtype)
    compare(gd.linalg.slogdet, torch.linalg.slogdet, [a], dtype)
    compare(lambda x: gd.linalg.inv_ex(x), lambda x: torch.linalg.inv_ex(x), [a], dtype)
    compare(lambda x: gd.linalg.matrix_power(x, 3), lambda x: torch.linalg.matrix_power(x, 3),
            [a], dtype)
    # torch's own backward of matrix_power(x, -2) fails (it edits inv_ex's output in place)
    compare(lambda x: gd.linalg.matrix_power(x, -2),
            lambda x: torch.linalg.matrix_power(torch.linalg.inv(x), 2), [a], dtype)
    compare(lambda x: gd.linalg.matrix_power(x, 0), lambda x: torch.linalg.matrix_power(x, 0),
            [a], dtype, grad=False)


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_1x1_matrices(n):
    a = general(2, n, n)
    for name in ("inv", "det", "matrix_exp", "svdvals", "eigvalsh", "cholesky", "pinv"):
        source = spd(2, n, n) if name in ("cholesky", "eigvalsh") and n else a
        compare(getattr(gd.linalg, name), getattr(torch.linalg, name), [source], grad=n > 0)
    compare(gd.linalg.slogdet, torch.linalg.slogdet, [a], grad=n > 0)
    compare(lambda x: gd.linalg.qr(x), lambda x: torch.linalg.qr(x), [a], grad=n > 0)
    compare(lambda x: gd.linalg.solve(x, x), lambda x: torch.linalg.solve(x, x), [a],
            grad=n > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("left", [True, False])
def test_solve_forms_and_broadcasting(dtype, left):
    a, b, v = general(2, 1, 4, 4), _rng().standard_normal((3, 4, 2)), _rng().standard_normal(4)
    if not left:
        b = b.swapaxes(-1, -2).copy()
    compare(lambda x, y: gd.linalg.solve(x, y, left=left),
            lambda x, y: torch.linalg.solve(x, y, left=left), [a, b], dtype)
    compare(gd.linalg.solve, torch.linalg.solve, [a, v], dtype)              # 1-D B: vector
    va = _rng().standard_normal((2, 1, 4))                 # B of shape A.shape[:-1]: vectors
    compare(gd.linalg.solve, torch.linalg.solve, [general(2, 1, 4, 4), va], dtype)
    compare(lambda x, y: gd.linalg.solve_ex(x, y, left=left),
            lambda x, y: torch.linalg.solve_ex(x, y, left=left), [a, b], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper,left,unit", [(True, True, False), (False, True, True),
                                              (True, False, False), (False, False, False)])
def test_solve_triangular(dtype, upper, left, unit):
    a = general(3, 4, 4)
    b = _rng().standard_normal((3, 4, 2) if left else (3, 2, 4))
    compare(lambda x, y: gd.linalg.solve_triangular(x, y, upper=upper, left=left,
                                                    unitriangular=unit),
            lambda x, y: torch.linalg.solve_triangular(x, y, upper=upper, left=left,
                                                       unitriangular=unit), [a, b], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky(dtype, upper):
    a = spd(2, 5, 5)
    compare(lambda x: gd.linalg.cholesky(x, upper=upper),
            lambda x: torch.linalg.cholesky(x, upper=upper), [a], dtype)
    compare(lambda x: gd.linalg.cholesky_ex(x, upper=upper),
            lambda x: torch.linalg.cholesky_ex(x, upper=upper), [a], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,mode", [((2, 6, 4), "reduced"), ((2, 4, 6), "reduced"),
                                        ((5, 5), "complete"), ((3, 4, 6), "complete"),
                                        ((2, 6, 4), "r"), ((6, 4), "complete")])
def test_qr(dtype, shape, mode):
    differentiable = mode != "r" and not (mode == "complete" and shape[-2] > shape[-1])
    compare(lambda x: gd.linalg.qr(x, mode), lambda x: torch.linalg.qr(x, mode),
            [general(*shape)], dtype, grad=differentiable)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 6, 4), (4, 6), (3, 5, 5)])
def test_svd_svdvals(dtype, shape):
    a = distinct_singular(*shape)
    # singular vectors are defined up to sign: compare U diag(S) Vh's pieces through
    # sign-invariant functions (|U|, U_i Vh_i), as torch's own tests do
    compare(lambda x: _sign_free(gd.linalg.svd(x, full_matrices=False)),
            lambda x: _sign_free(torch.linalg.svd(x, full_matrices=False)), [a], dtype)
    compare(gd.linalg.svdvals, torch.linalg.svdvals, [a], dtype)
    u, s, vh = gd.linalg.svd(gd.tensor(a.astype(dtype)), full_matrices=True)
    assert u.shape[-1] == shape[-2] and vh.shape[-2] == shape[-1]
    np.testing.assert_allclose((u[..., :s.shape[-1]] * s.unsqueeze(-2) @ vh[..., :s.shape[-1], :]
                                ).numpy(), a, **TOL[dtype])


def _sign_free(usv):
    """Singular vectors with the sign that makes U's first row positive (no gradient)."""
    u, s, vh = usv
    sign = u[..., :1, :].sign().detach()
    return u * sign, s, vh * sign.mT


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_eigvalsh(dtype, uplo):
    a = symmetric(3, 5, 5)
    a = a + np.triu(_rng().standard_normal(a.shape), 1) * (uplo == "L")   # triangle not read
    compare(lambda x: _eigh_sign_free(gd.linalg.eigh(x, uplo)),
            lambda x: _eigh_sign_free(torch.linalg.eigh(x, uplo)), [a], dtype)
    compare(lambda x: gd.linalg.eigvalsh(x, uplo), lambda x: torch.linalg.eigvalsh(x, uplo),
            [a], dtype)


def _eigh_sign_free(wv):
    w, v = wv
    return w, v * v[..., :1, :].sign().detach()


def test_eig_is_refused_naming_the_op():
    a = gd.tensor(general(3, 3))
    for name in ("eig", "eigvals"):
        with pytest.raises(NotImplementedError, match=f"linalg.{name}"):
            getattr(gd.linalg, name)(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 6, 4), (4, 6), (5, 5)])
def test_pinv_lstsq_rank_cond(dtype, shape):
    a = distinct_singular(*shape)
    compare(gd.linalg.pinv, torch.linalg.pinv, [a], dtype)
    compare(lambda x: gd.linalg.pinv(x, atol=0.9), lambda x: torch.linalg.pinv(x, atol=0.9),
            [a], dtype)
    compare(gd.linalg.matrix_rank, torch.linalg.matrix_rank, [a], dtype, grad=False)
    compare(lambda x: gd.linalg.matrix_rank(x, atol=1.0, rtol=0.0),
            lambda x: torch.linalg.matrix_rank(x, atol=1.0, rtol=0.0), [a], dtype, grad=False)
    compare(gd.linalg.cond, torch.linalg.cond, [a], dtype)
    if shape[-2] >= shape[-1]:
        b = _rng().standard_normal(shape[:-1] + (3,))
        compare(gd.linalg.lstsq, torch.linalg.lstsq, [a, b], dtype, grad_outputs=[0])
        compare(lambda x, y: gd.linalg.lstsq(x, y, driver="gelsd"),
                lambda x, y: torch.linalg.lstsq(x, y, driver="gelsd"), [a, b], dtype,
                grad_outputs=[0])


def test_pinv_hermitian_and_singular_rank():
    a = symmetric(2, 5, 5)
    compare(lambda x: gd.linalg.pinv(x, hermitian=True),
            lambda x: torch.linalg.pinv(x, hermitian=True), [a])
    low_rank = distinct_singular(4, 2) @ distinct_singular(2, 5)
    compare(gd.linalg.matrix_rank, torch.linalg.matrix_rank, [low_rank], grad=False)
    compare(lambda x: gd.linalg.matrix_rank(x, hermitian=True),
            lambda x: torch.linalg.matrix_rank(x, hermitian=True), [a], grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ord", ["fro", "nuc", np.inf, -np.inf, 1, -1, 2, -2])
def test_matrix_norm_and_norm(dtype, ord):
    a = distinct_singular(2, 4, 5)
    compare(lambda x: gd.linalg.matrix_norm(x, ord), lambda x: torch.linalg.matrix_norm(x, ord),
            [a], dtype)
    compare(lambda x: gd.linalg.matrix_norm(x, ord, dim=(2, 0), keepdim=True),
            lambda x: torch.linalg.matrix_norm(x, ord, dim=(2, 0), keepdim=True), [a], dtype)
    compare(lambda x: gd.linalg.norm(x[0], ord), lambda x: torch.linalg.norm(x[0], ord),
            [a], dtype)
    if ord not in ("fro", "nuc"):
        # torch's own backward of cond(x, p) fails (it edits inv_ex's output in place): its
        # definition, norm(A) norm(A^-1), is the reference
        compare(lambda x: gd.linalg.cond(x, ord), lambda x: torch.linalg.matrix_norm(x, ord)
                * torch.linalg.matrix_norm(torch.linalg.inv(x), ord), [general(3, 4, 4)], dtype)


def test_norm_vector_forms():
    a = _rng().standard_normal((3, 4, 5))
    compare(gd.linalg.norm, torch.linalg.norm, [a])
    compare(lambda x: gd.linalg.norm(x, 3, dim=1), lambda x: torch.linalg.norm(x, 3, dim=1),
            [a])
    compare(lambda x: gd.linalg.norm(x, dim=(0, 2)), lambda x: torch.linalg.norm(x, dim=(0, 2)),
            [a])


@pytest.mark.parametrize("dtype", DTYPES)
def test_products_and_tensor_functions(dtype):
    r = _rng()
    mats = [r.standard_normal(s) for s in ((7,), (7, 3), (3, 9), (9, 2), (2,))]
    compare(lambda *m: gd.linalg.multi_dot(m), lambda *m: torch.linalg.multi_dot(m), mats,
            dtype)
    x, y = r.standard_normal((1, 4, 3)), r.standard_normal((2, 1, 3))
    compare(gd.linalg.vecdot, torch.linalg.vecdot, [x, y], dtype)
    compare(gd.linalg.cross, torch.linalg.cross, [x, y], dtype)
    a = r.standard_normal((2, 4, 5))
    for kw in ({}, {"offset": 1}, {"offset": -2, "dim1": 0, "dim2": 2}):
        compare(lambda t: gd.linalg.diagonal(t, **kw), lambda t: torch.linalg.diagonal(t, **kw),
                [a], dtype)
    compare(lambda t: gd.linalg.tensorinv(t, ind=1),
            lambda t: torch.linalg.tensorinv(t, ind=1), [general(6, 6).reshape(6, 2, 3)], dtype,
            grad=False)               # torch's backward fails as cond's (inv_ex edited in place)
    compare(lambda t: gd.linalg.tensorinv(t, ind=1),
            lambda t: torch.linalg.inv(t.reshape(6, 6)).reshape(2, 3, 6),
            [general(6, 6).reshape(6, 2, 3)], dtype)
    compare(gd.linalg.tensorsolve, torch.linalg.tensorsolve,
            [general(6, 6).reshape(2, 3, 6), r.standard_normal((2, 3))], dtype)
    compare(lambda t: gd.linalg.vander(t), lambda t: torch.linalg.vander(t),
            [np.array([0.0, 0.5, -1.2, 2.0])], dtype)
    compare(lambda t: gd.linalg.vander(t, N=3), lambda t: torch.linalg.vander(t, N=3),
            [r.standard_normal((2, 4))], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 4, 4), (5, 3), (3, 5)])
def test_lu_family(dtype, shape):
    a = general(*shape)
    square = shape[-1] == shape[-2]
    compare(gd.linalg.lu_factor, torch.linalg.lu_factor, [a], dtype, grad=square)
    compare(gd.linalg.lu_factor_ex, torch.linalg.lu_factor_ex, [a], dtype, grad=square)
    compare(gd.linalg.lu, torch.linalg.lu, [a], dtype, grad=square)
    if square:
        b = _rng().standard_normal(shape[:-1] + (3,))
        for left, adjoint in ((True, False), (True, True), (False, False), (False, True)):
            rhs = b if left else b.swapaxes(-1, -2).copy()
            compare(lambda x, y: gd.linalg.lu_solve(*gd.linalg.lu_factor(x), y, left=left,
                                                    adjoint=adjoint),
                    lambda x, y: torch.linalg.lu_solve(*torch.linalg.lu_factor(x), y, left=left,
                                                       adjoint=adjoint), [a, rhs], dtype)
        compare(lambda x, y: gd.lu_solve(y, *gd.lu(x)),
                lambda x, y: torch.lu_solve(y, *torch.lu(x)), [a, b], dtype)
        compare(lambda x: gd.lu_unpack(*gd.lu(x)), lambda x: torch.lu_unpack(*torch.lu(x)), [a],
                dtype)


def test_householder_product_matches_torch():
    a = _rng().standard_normal((2, 6, 4))
    geqrf, tau = torch.geqrf(torch.tensor(a))
    compare(gd.linalg.householder_product, torch.linalg.householder_product,
            [geqrf.numpy(), tau.numpy()])
    compare(gd.linalg.householder_product, torch.linalg.householder_product,
            [geqrf.numpy(), tau[..., :2].numpy()])


def test_gradcheck_in_float64():
    r = _rng()
    cases = [
        (gd.linalg.inv, [general(2, 3, 3)]),
        (gd.linalg.det, [general(3, 3)]),
        (lambda x: gd.linalg.slogdet(x)[1], [general(3, 3)]),
        (gd.linalg.solve, [general(3, 3), r.standard_normal((3, 2))]),
        (lambda x, y: gd.linalg.solve_triangular(x, y, upper=False), [general(3, 3),
                                                                      r.standard_normal((3, 2))]),
        (lambda x: gd.linalg.cholesky(x @ x.mT + gd.eye(3, dtype=gd.float64)), [general(3, 3)]),
        (lambda x: gd.linalg.qr(x), [general(4, 3)]),
        (lambda x: gd.linalg.qr(x), [general(3, 5)]),
        (lambda x: _sign_free(gd.linalg.svd(x, full_matrices=False)),
         [distinct_singular(4, 3)]),
        (lambda x: _eigh_sign_free(gd.linalg.eigh(x + x.mT)), [symmetric(4, 4)]),
        (gd.linalg.pinv, [distinct_singular(3, 4)]),
        (gd.linalg.matrix_exp, [r.standard_normal((3, 3))]),
        (lambda x: gd.linalg.lu_factor(x)[0], [general(3, 3)]),
        (lambda x: gd.linalg.lu_factor(x)[0], [general(4, 2)]),           # tall
        (lambda x: gd.linalg.lu_factor(x)[0], [general(2, 4)]),           # wide
        (lambda x: gd.linalg.lu_solve(*gd.linalg.lu_factor(x), x[..., :2] + 1),
         [general(3, 3)]),
        (lambda x: gd.cholesky_solve(x[..., :2], x.tril()), [spd(3, 3)]),
        (gd.linalg.householder_product, [general(4, 3), r.standard_normal(2)]),
        (lambda x: gd.linalg.matrix_norm(x, "nuc"), [distinct_singular(3, 4)]),
        (lambda x: gd.linalg.lstsq(x, x[..., :2] * 2 + 1)[0], [distinct_singular(5, 3)]),
    ]
    for fn, arrays in cases:
        inputs = [gd.tensor(a, requires_grad=True) for a in arrays]
        assert gd.autograd.gradcheck(lambda *t: fn(*t), inputs, atol=1e-6, rtol=1e-4)


def test_det_gradient_of_a_singular_matrix():
    a = np.outer([1.0, 2.0, -1.0], [0.5, 1.0, 3.0]) + np.outer([0.0, 1.0, 1.0], [1.0, 0, 2])
    compare(gd.linalg.det, torch.linalg.det, [a])          # rank 2: the cofactor path


# errors

def test_singular_input_raises_linalg_error_as_torch():
    a = general(3, 4, 4)
    a[1, :, 2] = 0                          # batch element 1 is singular (a zero pivot)
    for name in ("inv", "solve", "cholesky"):
        source = a if name != "cholesky" else spd(3, 4, 4) - 6 * np.eye(4) * np.array(
            [0, 10, 0])[:, None, None]
        args = (source, source) if name == "solve" else (source,)
        with pytest.raises(torch.linalg.LinAlgError) as expected:
            getattr(torch.linalg, name)(*(torch.tensor(x) for x in args))
        with pytest.raises(gd.linalg.LinAlgError) as got:
            getattr(gd.linalg, name)(*(gd.tensor(x) for x in args))
        assert isinstance(got.value, RuntimeError)
        assert "Batch element 1" in str(got.value) and "Batch element 1" in str(expected.value)
    ex = gd.linalg.inv_ex(gd.tensor(a))
    assert ex.info.tolist() == torch.linalg.inv_ex(torch.tensor(a)).info.tolist()
    assert np.isfinite(ex.inverse[0].numpy()).all() and np.isnan(ex.inverse[1].numpy()).all()
    not_pd = symmetric(2, 5, 5)
    assert gd.linalg.cholesky_ex(gd.tensor(not_pd)).info.tolist() == \
        torch.linalg.cholesky_ex(torch.tensor(not_pd)).info.tolist()
    with pytest.raises(gd.linalg.LinAlgError):
        gd.linalg.inv_ex(gd.tensor(a), check_errors=True)


@pytest.mark.parametrize("call,match", [
    (lambda: gd.linalg.inv(gd.tensor(general(3, 4))), "A must be batches of square matrices"),
    (lambda: gd.linalg.det(gd.tensor(np.ones(3))), "A must have at least 2 dimensions"),
    (lambda: gd.linalg.cholesky(gd.tensor(general(3, 4))), "square"),
    (lambda: gd.linalg.solve(gd.tensor(general(3, 3)), gd.tensor(np.ones((4, 2)))),
     "incompatible shapes"),
    (lambda: gd.linalg.solve(gd.tensor(general(2, 3, 3)), gd.tensor(np.ones((4, 3, 2)))),
     "do not broadcast"),
    (lambda: gd.linalg.qr(gd.tensor(general(3, 3)), "full"), "mode"),
    (lambda: gd.linalg.eigh(gd.tensor(general(3, 3)), "X"), "UPLO"),
    (lambda: gd.linalg.matrix_norm(gd.tensor(general(3, 3)), 3), "ord"),
    (lambda: gd.linalg.multi_dot([gd.tensor(general(3, 4)), gd.tensor(general(3, 4))]),
     "cannot be multiplied"),
    (lambda: gd.linalg.vander(gd.tensor(np.ones(3)), N=1), "N"),
])
def test_wrong_shapes_and_values_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_dtypes_are_refused():
    with pytest.raises(TypeError, match="float32 or float64"):
        gd.linalg.inv(gd.tensor(np.eye(3, dtype=np.int64)))
    with pytest.raises(TypeError, match="float32 or float64"):
        gd.linalg.svd(gd.tensor(np.eye(3)).half())
    with pytest.raises(TypeError, match="same dtype"):
        gd.linalg.solve(gd.tensor(np.eye(3)), gd.tensor(np.eye(3)).float())


def test_backward_refusals_as_torch():
    x = gd.tensor(general(6, 4), requires_grad=True)
    with pytest.raises(RuntimeError, match="mode='r'"):
        gd.linalg.qr(x, "r")[1].sum().backward()
    with pytest.raises(RuntimeError, match="nrows > ncols"):
        gd.linalg.qr(x, "complete")[0].sum().backward()


# torch's top-level names and Tensor methods

@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_names(dtype):
    r = _rng()
    a, s, m = general(2, 4, 4), spd(2, 4, 4), distinct_singular(2, 5, 3)
    b = r.standard_normal((2, 4, 3))
    for name in ("det", "logdet", "inverse", "pinverse", "matrix_exp"):
        src = s if name == "logdet" else (m if name == "pinverse" else a)
        compare(getattr(gd, name), getattr(torch, name), [src], dtype)
        compare(lambda x: getattr(x, name)(), lambda x: getattr(x, name)(), [src], dtype)
    compare(gd.slogdet, torch.slogdet, [a], dtype)
    compare(lambda x: gd.logdet(-x[..., :3, :3]), lambda x: torch.logdet(-x[..., :3, :3]), [s],
            dtype, grad=False)                                     # negative det: NaN
    compare(lambda x: gd.matrix_power(x, 2), lambda x: torch.matrix_power(x, 2), [a], dtype)
    for upper in (False, True):
        compare(lambda x: gd.cholesky(x, upper), lambda x: torch.cholesky(x, upper), [s], dtype)
        factor = np.linalg.cholesky(s)
        factor = factor.swapaxes(-1, -2).copy() if upper else factor
        compare(lambda y, f: gd.cholesky_solve(y, f, upper),
                lambda y, f: torch.cholesky_solve(y, f, upper), [b, factor], dtype)
        compare(lambda f: gd.cholesky_inverse(f[0], upper),
                lambda f: torch.cholesky_inverse(f[0], upper), [factor], dtype)
        compare(lambda y, x: gd.triangular_solve(y, x, upper),
                lambda y, x: torch.triangular_solve(y, x, upper), [b, a], dtype)
        compare(lambda y, x: gd.triangular_solve(y, x, upper, transpose=True, unitriangular=True),
                lambda y, x: torch.triangular_solve(y, x, upper, transpose=True,
                                                    unitriangular=True), [b, a], dtype)
    for some in (True, False):
        compare(lambda x: gd.qr(x, some), lambda x: torch.qr(x, some), [m], dtype, grad=some)
    compare(lambda x: _sign_free(_vh(gd.svd(x))), lambda x: _sign_free(_vh(torch.svd(x))), [m],
            dtype)
    compare(lambda x: gd.svd(x, compute_uv=False), lambda x: torch.svd(x, compute_uv=False),
            [m], dtype, grad_outputs=[1])
    compare(lambda *t: gd.chain_matmul(*t), lambda *t: torch.chain_matmul(*t),
            [r.standard_normal((3, 4)), r.standard_normal((4, 2)), r.standard_normal((2, 5))],
            dtype)


def _vh(usv):
    return usv[0], usv[1], usv[2].mT


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_vector_names(dtype):
    r = _rng()
    v, w, m, x = (r.standard_normal(s) for s in ((4,), (5,), (4, 5), (2, 3, 5)))
    compare(gd.inner, torch.inner, [x, m], dtype)
    compare(gd.vdot, torch.vdot, [v, v[::-1].copy()], dtype)
    compare(gd.ger, torch.ger, [v, w], dtype)
    compare(lambda i, a, b: gd.addmv(i, a, b, beta=0.5, alpha=2),
            lambda i, a, b: torch.addmv(i, a, b, beta=0.5, alpha=2), [v, m, w], dtype)
    compare(lambda i, a, b: gd.addr(i, a, b, alpha=-1), lambda i, a, b: torch.addr(i, a, b,
                                                                                   alpha=-1),
            [m, v, w], dtype)
    nan_input = np.full(4, np.nan)                     # beta=0: input ignored, NaN included
    compare(lambda i, a, b: gd.addmv(i, a, b, beta=0), lambda i, a, b: torch.addmv(i, a, b,
                                                                                   beta=0),
            [nan_input, m, w], dtype, grad=False)
    compare(lambda a, b: gd.dist(a, b, 3), lambda a, b: torch.dist(a, b, 3), [m, m[::-1].copy()],
            dtype)
    compare(lambda a: gd.renorm(a, 2, 0, 1.5), lambda a: torch.renorm(a, 2, 0, 1.5), [m * 2],
            dtype)
    compare(lambda a: gd.frobenius_norm(a, (0, 2)), lambda a: torch.frobenius_norm(a, (0, 2)),
            [x], dtype)
    compare(gd.nuclear_norm, torch.nuclear_norm, [m], dtype)


def test_in_place_addmv_addr_renorm():
    r = _rng()
    v, w, m = r.standard_normal(4), r.standard_normal(5), r.standard_normal((4, 5))
    for op, args in (("addmv_", (m, w)), ("addr_", (v, w)), ("renorm_", (2, 0, 0.5))):
        base = v if op == "addmv_" else m
        ours, theirs = gd.tensor(base.copy()), torch.tensor(base.copy())
        result = getattr(ours, op)(*(gd.tensor(a) if isinstance(a, np.ndarray) else a
                                     for a in args))
        getattr(theirs, op)(*(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args))
        assert result is ours
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)


# autocast: the CPU list runs factorizations in float32; CUDA has no policy for them

def test_cuda_autocast_leaves_factorizations_alone(monkeypatch):
    from gpudl.amp import autocast_mode
    state = autocast_mode.state
    monkeypatch.setattr(state, "enabled", {"cuda": True, "cpu": False})
    monkeypatch.setattr(state, "active", True)
    x = gd.Tensor._make(gd.backend.to_device_array(general(4, 4).astype(np.float32), "cuda"),
                        False, None, 0, "cuda")
    assert gd.linalg.inv(x).dtype == gd.float32
    with pytest.raises(TypeError, match="dtype"):
        gd.linalg.inv(x.half())
    assert gd.linalg.matrix_norm(x.half()).dtype == gd.float32
    assert gd.linalg.vecdot(x, x).dtype == gd.float16
    assert gd.addr(x, x[0], x[1]).dtype == gd.float16
    assert gd.vdot(x[0], x[1].half()).dtype == gd.float32


# without SciPy (not a gpudl dependency): the CPU triangular solve and LU are gpudl's own

@pytest.fixture
def no_scipy(monkeypatch):
    """``import scipy`` and ``import scipy.linalg`` fail, as on a plain install."""
    for name in ("scipy", "scipy.linalg"):
        monkeypatch.setitem(__import__("sys").modules, name, None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triangular_solves_and_lu_without_scipy(no_scipy, dtype):
    r = _rng()
    a, b = general(2, 1, 5, 5), r.standard_normal((3, 5, 2))     # batch dims broadcast
    for upper, unit in ((True, False), (False, True)):
        compare(lambda x, y: gd.linalg.solve_triangular(x, y, upper=upper, unitriangular=unit),
                lambda x, y: torch.linalg.solve_triangular(x, y, upper=upper,
                                                           unitriangular=unit), [a, b], dtype)
        compare(lambda y, x: gd.triangular_solve(y, x, upper),
                lambda y, x: torch.triangular_solve(y, x, upper), [b, a], dtype)
    for shape in ((4, 6, 6), (3, 7, 4), (3, 4, 7), (2, 40, 40)):     # 40: past one LU block
        compare(gd.linalg.lu_factor, torch.linalg.lu_factor, [r.standard_normal(shape)], dtype,
                grad=shape[-1] == shape[-2])
        compare(gd.linalg.lu, torch.linalg.lu, [r.standard_normal(shape)], dtype, grad=False)
    b = r.standard_normal((4, 6, 3))
    compare(lambda x, y: gd.linalg.lu_solve(*gd.linalg.lu_factor(x), y),
            lambda x, y: torch.linalg.lu_solve(*torch.linalg.lu_factor(x), y), [general(4, 6, 6),
                                                                                 b], dtype)
    factor = np.linalg.cholesky(spd(4, 6, 6))
    compare(gd.cholesky_solve, torch.cholesky_solve, [b, factor], dtype)


def _exact_getrf_pivots(a):
    """getrf's 0-based pivots in exact rational arithmetic, and whether every nonzero pivot is
    a power of two (then every step is exact in floating point, in any order)."""
    from fractions import Fraction
    rows = [[Fraction(int(x)) for x in row] for row in a]
    pivots, dyadic = [], True
    for j in range(len(rows)):
        column = [abs(row[j]) for row in rows[j:]]
        p = j + column.index(max(column))                  # the first of the largest
        pivots.append(p)
        rows[j], rows[p] = rows[p], rows[j]
        pivot = rows[j][j]
        if pivot == 0:
            continue
        size = abs(pivot.numerator)
        dyadic &= pivot.denominator == 1 and size & (size - 1) == 0
        for row in rows[j + 1:]:
            row[j] /= pivot
            row[j + 1:] = [x - row[j] * y for x, y in zip(row[j + 1:], rows[j][j + 1:])]
    return pivots, dyadic


def test_lu_pivots_on_ties_and_singular_matrices_match_torch(no_scipy):
    """Small-integer matrices: many ties for the pivot and many singular ones. Kept: those
    whose pivots are powers of two, so that no rounding can break a tie either way."""
    a = _rng().integers(-1, 2, (400, 5, 5)).astype(np.float64)
    reference = [_exact_getrf_pivots(m) for m in a]
    a = a[[dyadic for _, dyadic in reference]]
    expected = np.array([p for p, dyadic in reference if dyadic], np.int32)
    lu, pivots, info = gd.linalg.lu_factor_ex(gd.tensor(a))
    t_lu, t_pivots, t_info = torch.linalg.lu_factor_ex(torch.tensor(a))
    assert (t_info.numpy() > 0).sum() > 10 and len(a) > 50           # singular ones are there
    np.testing.assert_array_equal(pivots.numpy(), expected + 1)
    np.testing.assert_array_equal(pivots.numpy(), t_pivots.numpy())
    np.testing.assert_array_equal(info.numpy(), t_info.numpy())
    np.testing.assert_array_equal(lu.numpy(), t_lu.numpy())


@pytest.mark.parametrize("p, dim", [("nuc", None), ("nuc", (0, 2)), ("fro", (0, 1, 2)),
                                    ("fro", 1), (None, None), (3, (1, 2))])
def test_torch_norm_dispatch_matches_torch(p, dim):
    """torch.norm: 'nuc' (and 'fro' over three dims) is a matrix norm; a number, None or 'fro'
    over at most two dims a vector norm. A 3-D input without dim refuses 'nuc', as torch."""
    x = _rng().standard_normal((3, 4, 5))
    args = (gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True))
    try:
        expected = torch.norm(args[1], p, dim)
    except RuntimeError:
        with pytest.raises(ValueError):
            gd.norm(args[0], p, dim)
        return
    got = gd.norm(args[0], p, dim)
    np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-12)
    got.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(args[0].grad.numpy(), args[1].grad.numpy(), rtol=1e-10)


def test_vector_norm_refuses_a_narrowing_dtype_as_torch():
    x = gd.tensor(_rng().standard_normal(5))
    with pytest.raises(ValueError, match="dtype must hold the input's float64"):
        gd.linalg.vector_norm(x, dtype=gd.float32)
    with pytest.raises(ValueError, match="narrowing"):
        gd.linalg.vector_norm(x.half(), dtype=gd.bfloat16)
    widened = gd.linalg.vector_norm(x.float(), dtype=gd.float64)
    assert widened.dtype == gd.float64
    np.testing.assert_allclose(widened.item(), np.linalg.norm(x.float().numpy().astype(np.float64)))
