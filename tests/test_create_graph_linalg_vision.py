"""create_graph=True for the linear algebra and the vision ops merged beside it (gpudl.linalg's
Functions, conv3d / conv_transpose3d): the first gradient and the gradient of a scalar of it
against torch 2.13, float64, fresh random well-conditioned inputs (see test_create_graph),
gradgradcheck on a few, and the refusals by name."""

import numpy as np
import pytest
import torch

import gpudl as gd
from test_create_graph import check_second_order


def _square(m, a):
    """A well-conditioned square matrix from a random one."""
    return a + 4 * m.eye(a.shape[-1], dtype=a.dtype)


def _spd(m, a):
    """A symmetric positive definite matrix."""
    return a @ a.mT + a.shape[-1] * m.eye(a.shape[-1], dtype=a.dtype)


def _symmetric(a):
    return a + a.mT


def _lower(m, a):
    return a.tril(-1) + m.eye(a.shape[-1], dtype=a.dtype) * (2 + a.diagonal(0, -2, -1).abs()
                                                             .unsqueeze(-1))


_SAMPLES = np.random.default_rng(5).uniform(size=(1, 2, 2))

# name -> (f(module, *inputs), input shapes); f runs on gpudl and on torch. Decompositions enter
# through sign-invariant functions of their factors (U * U, V diag(s) ...).
CASES = {
    "det": (lambda m, a: m.linalg.det(_square(m, a)) ** 2, [(2, 3, 3)]),
    "det_plain_name": (lambda m, a: m.det(_square(m, a)) * a.sum(), [(4, 4)]),
    "det_singular": (lambda m, a: m.linalg.det(a[..., :2] @ a[..., :2, :]) * a.sum(), [(3, 3)]),
    "det_batch_one_singular": (lambda m, a: m.linalg.det(a * m.tensor(
        [[[1.0, 1, 1], [1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1], [0, 0, 0]]],
        dtype=a.dtype)) * a.sum((-1, -2)), [(2, 3, 3)]),
    "slogdet": (lambda m, a: m.linalg.slogdet(_square(m, a))[1] ** 2, [(2, 3, 3)]),
    "logdet_spd": (lambda m, a: m.logdet(_spd(m, a)) ** 2, [(4, 4)]),
    "inv": (lambda m, a: m.linalg.inv(_square(m, a)) ** 2, [(2, 3, 3)]),
    "inv_ex": (lambda m, a: m.linalg.inv_ex(_square(m, a))[0] ** 2, [(3, 3)]),
    "solve": (lambda m, a, b: m.linalg.solve(_square(m, a), b) ** 2, [(2, 3, 3), (2, 3, 2)]),
    "solve_broadcast_vector": (lambda m, a, b: m.linalg.solve(_square(m, a), b) ** 2,
                               [(2, 3, 3), (3,)]),
    "solve_right": (lambda m, a, b: m.linalg.solve(_square(m, a), b, left=False) ** 2,
                    [(3, 3), (2, 3)]),
    "solve_triangular_lower": (
        lambda m, a, b: m.linalg.solve_triangular(_lower(m, a), b, upper=False) ** 2,
        [(3, 3), (3, 2)]),
    "solve_triangular_upper_unit": (
        lambda m, a, b: m.linalg.solve_triangular(_lower(m, a).mT, b, upper=True,
                                                  unitriangular=True) ** 2, [(3, 3), (3, 2)]),
    "cholesky": (lambda m, a: m.linalg.cholesky(_spd(m, a)) ** 3, [(2, 3, 3)]),
    "cholesky_upper": (lambda m, a: m.linalg.cholesky(_spd(m, a), upper=True) ** 3, [(3, 3)]),
    "cholesky_solve": (lambda m, a, b: m.cholesky_solve(b, m.linalg.cholesky(_spd(m, a))) ** 2,
                       [(3, 3), (3, 2)]),
    "gaussian_log_likelihood": (
        lambda m, a, x: (m.linalg.solve_triangular(m.linalg.cholesky(_spd(m, a)), x.unsqueeze(-1),
                                                   upper=False) ** 2).sum()
        + 2 * m.linalg.cholesky(_spd(m, a)).diagonal().log().sum(), [(3, 3), (3,)]),
    "qr_tall": (lambda m, a: (m.linalg.qr(a)[0] ** 2).sum(-1) + (m.linalg.qr(a)[1] ** 4).sum(),
                [(4, 3)]),
    "qr_wide": (lambda m, a: (m.linalg.qr(a)[0] ** 2).sum() * (m.linalg.qr(a)[1] ** 3).sum(),
                [(3, 4)]),
    "svd": (lambda m, a: (m.linalg.svd(a, full_matrices=False)[0] ** 4).sum(-2)
            * m.linalg.svd(a, full_matrices=False)[1] + (m.linalg.svd(
                a, full_matrices=False)[2] ** 4).sum(), [(4, 3)]),
    "svd_full_matrices": (lambda m, a: (m.linalg.svd(a)[0][..., :3] ** 4).sum(-2)
                          * m.linalg.svd(a)[1], [(5, 3)]),
    "svd_values_only": (lambda m, a: m.linalg.svd(a, full_matrices=False)[1] ** 3, [(3, 4)]),
    "svdvals": (lambda m, a: m.linalg.svdvals(a) ** 3, [(2, 4, 3)]),
    "matrix_norm_nuclear": (lambda m, a: m.linalg.matrix_norm(a, "nuc") ** 2, [(3, 4)]),
    "matrix_norm_2": (lambda m, a: m.linalg.matrix_norm(a, 2) ** 2, [(4, 3)]),
    "eigh": (lambda m, a: m.linalg.eigh(_symmetric(a))[0] ** 3
             + (m.linalg.eigh(_symmetric(a))[1] ** 4).sum(-2), [(2, 3, 3)]),
    "eigh_upper": (lambda m, a: (m.linalg.eigh(_symmetric(a), UPLO="U")[1] ** 4).sum(-2)
                   * m.linalg.eigh(_symmetric(a), UPLO="U")[0], [(4, 4)]),
    "eigvalsh": (lambda m, a: m.linalg.eigvalsh(_symmetric(a)) ** 3, [(2, 3, 3)]),
    "pinv_tall": (lambda m, a: m.linalg.pinv(a) ** 2, [(4, 3)]),
    "pinv_wide": (lambda m, a: m.linalg.pinv(a) ** 2, [(2, 3, 4)]),
    "matrix_exp": (lambda m, a: m.linalg.matrix_exp(a * 0.5) ** 2, [(2, 3, 3)]),
    "lu_factor": (lambda m, a: m.linalg.lu_factor(a)[0] ** 3, [(2, 4, 4)]),
    "lu_factor_ex": (lambda m, a: m.linalg.lu_factor_ex(a)[0] ** 3, [(3, 3)]),
    "lu_tall": (lambda m, a: (m.linalg.lu(a)[1] ** 3).sum(-1) + (m.linalg.lu(a)[2] ** 2).sum(),
                [(4, 3)]),
    "lu_wide": (lambda m, a: (m.linalg.lu(a)[1] ** 3).sum() * (m.linalg.lu(a)[2] ** 2).sum(),
                [(3, 5)]),
    "lu_solve": (lambda m, a, b: m.linalg.lu_solve(*m.linalg.lu_factor(_square(m, a)), b) ** 2,
                 [(3, 3), (3, 2)]),
    "lstsq": (lambda m, a, b: m.linalg.lstsq(a, b).solution ** 2, [(5, 3), (5, 2)]),
    "triangular_solve": (lambda m, a, b: m.triangular_solve(b, _lower(m, a), upper=False)[0] ** 2,
                         [(3, 3), (3, 2)]),
    "cholesky_inverse": (lambda m, a: m.cholesky_inverse(m.linalg.cholesky(_spd(m, a))) ** 2,
                         [(3, 3)]),
    "cond": (lambda m, a: m.linalg.cond(_square(m, a)) ** 2, [(2, 3, 3)]),
    "tensorinv_multi_dot": (lambda m, a, b: m.linalg.multi_dot([m.linalg.tensorinv(
        _square(m, a), ind=1), b, b.mT]) ** 2, [(3, 3), (3, 2)]),
    "matrix_power_negative": (lambda m, a: m.linalg.matrix_power(_square(m, a), -2) ** 2,
                              [(3, 3)]),
    # 3-D convolutions (ops/conv_nd.py)
    "conv3d": (lambda m, x, w, b: m.nn.functional.conv3d(x, w, b) ** 2,
               [(2, 2, 4, 3, 4), (3, 2, 2, 2, 2), (3,)]),
    "conv3d_stride_padding_dilation_groups": (
        lambda m, x, w: m.nn.functional.conv3d(x, w, stride=(2, 1, 2), padding=(1, 0, 1),
                                               dilation=(1, 2, 1), groups=2) ** 2,
        [(1, 4, 5, 5, 4), (2, 2, 2, 2, 3)]),
    "conv3d_unbatched_same": (lambda m, x, w: m.nn.functional.conv3d(x, w, padding="same") ** 2,
                              [(2, 3, 4, 3), (2, 2, 3, 3, 1)]),
    "conv_transpose3d": (lambda m, x, w, b: m.nn.functional.conv_transpose3d(x, w, b) ** 2,
                         [(2, 2, 3, 2, 3), (2, 3, 2, 2, 2), (3,)]),
    "conv_transpose3d_strided": (
        lambda m, x, w: m.nn.functional.conv_transpose3d(
            x, w, stride=2, padding=1, output_padding=(1, 0, 1), groups=2, dilation=(1, 1, 2))
        ** 2, [(1, 4, 3, 2, 3), (4, 1, 3, 2, 2)]),
    # vision ops composed of recorded ops (pool_nd, grid_sample, local_response_norm, resample)
    "max_pool3d": (lambda m, x: m.nn.functional.max_pool3d(x * x, 2, stride=1, padding=1) ** 2,
                   [(1, 2, 3, 4, 3)]),
    "avg_pool3d": (lambda m, x: m.nn.functional.avg_pool3d(
        x * x, (2, 3, 2), stride=2, padding=1, count_include_pad=False) ** 2, [(2, 1, 4, 5, 3)]),
    "adaptive_pools3d": (lambda m, x: m.nn.functional.adaptive_avg_pool3d(x * x, (2, 3, 2)) ** 2
                         + m.nn.functional.adaptive_max_pool3d(x ** 3, (2, 3, 2)) ** 2,
                         [(1, 2, 4, 5, 3)]),
    "max_unpool2d": (lambda m, x: m.nn.functional.max_unpool2d(
        *m.nn.functional.max_pool2d(x * x, 2, return_indices=True), 2) ** 2, [(1, 2, 4, 4)]),
    "max_unpool3d": (lambda m, x: m.nn.functional.max_unpool3d(
        *m.nn.functional.max_pool3d(x * x, 2, return_indices=True), 2) ** 2, [(1, 1, 4, 2, 4)]),
    "lp_pool2d": (lambda m, x: m.nn.functional.lp_pool2d(x * x + 0.5, 3, 2) ** 2, [(1, 2, 4, 5)]),
    "lp_pool3d": (lambda m, x: m.nn.functional.lp_pool3d(x * x + 0.5, 2, 2) ** 2,
                  [(1, 1, 4, 4, 2)]),
    "affine_grid": (lambda m, t: m.nn.functional.affine_grid(t * t, (2, 1, 3, 4),
                                                             align_corners=False) ** 3, [(2, 2, 3)]),
    "affine_grid_3d": (lambda m, t: m.nn.functional.affine_grid(t * t, (1, 1, 2, 3, 2),
                                                                align_corners=True) ** 3,
                       [(1, 3, 4)]),
    "fractional_max_pool2d": (lambda m, x: m.nn.functional.fractional_max_pool2d(
        x * x, 2, output_size=(3, 4), _random_samples=m.tensor(_SAMPLES)) ** 2, [(1, 2, 6, 7)]),
    "local_response_norm": (lambda m, x: m.nn.functional.local_response_norm(x, 3, 0.5, 0.75, 1.5),
                            [(2, 5, 3, 2)]),
    "fold_unfold": (lambda m, x: m.nn.functional.fold(
        m.nn.functional.unfold(x, (2, 3), padding=1, stride=(1, 2)) ** 2, (4, 5), (2, 3),
        padding=1, stride=(1, 2)) ** 2, [(1, 2, 4, 5)]),
    "interpolate_bilinear": (lambda m, x: m.nn.functional.interpolate(
        x, scale_factor=(2, 1.5), mode="bilinear", align_corners=False) ** 3, [(1, 2, 3, 2)]),
    "grid_sample_bilinear": (lambda m, x, g: m.nn.functional.grid_sample(
        x * x, m.tanh(g), align_corners=False) ** 2, [(1, 2, 4, 5), (1, 3, 2, 2)]),
    "grid_sample_border_aligned": (lambda m, x, g: m.nn.functional.grid_sample(
        x * x, g * 1.2, padding_mode="border", align_corners=True) ** 2,
        [(2, 1, 3, 4), (2, 2, 3, 2)]),
    "grid_sample_reflection": (lambda m, x, g: m.nn.functional.grid_sample(
        x * x, g * 1.5, padding_mode="reflection", align_corners=False) ** 2,
        [(1, 2, 4, 3), (1, 3, 2, 2)]),
    "grid_sample_bicubic": (lambda m, x, g: m.nn.functional.grid_sample(
        x * x, m.tanh(g), mode="bicubic", align_corners=False) ** 2, [(1, 1, 4, 5), (1, 2, 2, 2)]),
    "grid_sample_3d": (lambda m, x, g: m.nn.functional.grid_sample(
        x * x, m.tanh(g), align_corners=False) ** 2, [(1, 2, 3, 4, 3), (1, 2, 2, 1, 3)]),
    "affine_grid_sample": (lambda m, x, t: m.nn.functional.grid_sample(
        x * x, m.nn.functional.affine_grid(t * 0.5, (1, 2, 3, 3), align_corners=False),
        align_corners=False) ** 2, [(1, 2, 4, 4), (1, 2, 3)]),
    "conv_transpose1d": (lambda m, x, w: m.nn.functional.conv_transpose1d(x, w, stride=2) ** 2,
                         [(2, 2, 5), (2, 3, 3)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_order_matches_torch(name):
    f, shapes = CASES[name]
    check_second_order(lambda *xs: f(gd, *xs), lambda *xs: f(torch, *xs), *shapes,
                       seed=sum(map(ord, name)))


@pytest.mark.parametrize("f, shapes", [
    (lambda a: gd.linalg.slogdet(_square(gd, a))[1] + gd.linalg.inv(_square(gd, a)).sum(),
     [(3, 3)]),
    (lambda a, b: gd.linalg.solve(gd.linalg.cholesky(_spd(gd, a)), b), [(3, 3), (3, 2)]),
    (lambda a: gd.linalg.eigh(_symmetric(a))[0] * gd.linalg.svdvals(a), [(3, 3)]),
    (lambda x, w: gd.nn.functional.conv3d(x, w, padding=1).sigmoid(),
     [(1, 1, 3, 2, 3), (2, 1, 2, 2, 2)]),
    (lambda a, x, w: gd.linalg.lu_factor(_square(gd, a))[0].sum()
     * gd.nn.functional.conv_transpose3d(x, w, stride=2).tanh(),
     [(2, 2), (1, 1, 2, 1, 2), (1, 1, 2, 2, 1)]),
])
def test_gradgradcheck(f, shapes):
    rng = np.random.default_rng(len(shapes) + shapes[0][0])
    xs = [gd.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    assert gd.autograd.gradgradcheck(f, tuple(xs))


@pytest.mark.parametrize("build, name", [
    (lambda x: gd.linalg.qr(gd.cat([x, x * x]), mode="complete")[0], "mode='complete'"),
    (lambda x: gd.linalg.qr(x, mode="r")[1], "mode='r'"),
])
def test_refused_by_name_with_nothing_changed(build, name):
    x = gd.tensor(np.random.default_rng(3).standard_normal((2, 2)) + 0.1, requires_grad=True)
    out = build(x).sum()
    with pytest.raises(NotImplementedError, match=name):
        gd.autograd.grad(out, [x], create_graph=True)
    assert x.grad is None
