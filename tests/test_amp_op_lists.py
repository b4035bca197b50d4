"""gd.autocast's op lists against torch 2.13's own, op by op and on both devices: the dtype every
op returns under autocast, from float32 inputs and from inputs already in the lower precision.

- cpu: torch.autocast('cpu', bfloat16) on real tensors (values compared too).
- cuda without a GPU: torch runs its CUDA autocast kernels on fake cuda tensors
  (FakeTensorMode: shapes and dtypes, no data); gpudl runs its ops on tensors labelled as cuda
  (NumPy arrays), so the code that casts (each op's call into the policy table) is tested, not
  only the table.

A second test holds the table of torch ops with an autocast kernel (the dispatcher's
registrations) against the ops checked here plus the ones gpudl does not have: an autocast op
torch adds, or one gpudl adds without a case here, fails it."""

import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.amp import autocast_mode

torch = pytest.importorskip("torch")
fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
tf = torch.nn.functional

R = np.random.default_rng(0)


def _f32(*shape, scale=1.0):
    return (R.standard_normal(shape) * scale).astype(np.float32)


IMG, KER, MAT, SEQ = _f32(2, 3, 8, 8), _f32(4, 3, 3, 3, scale=0.3), _f32(6, 8), _f32(2, 3, 8)
W, B = _f32(5, 8, scale=0.3), _f32(5)
PROBS = R.uniform(0.1, 0.9, (6, 5)).astype(np.float32)
LABELS = R.integers(0, 5, 6)


def _cell(name):
    def run(m, f, x):
        if isinstance(x, torch.Tensor):
            cell = getattr(m.nn, name)(8, 4, device=x.device)
        else:
            cell = getattr(m.nn, name)(8, 4)
            for p in cell.parameters():           # gpudl: the parameters labelled as x's device
                p._device = x._device
        out = cell(x)
        return out[0] if isinstance(out, tuple) else out
    return run


# name -> (fn(lib, functional, *tensors), arrays); the same code runs on gpudl and torch
CASES = {
    "linear": (lambda m, f, x, w, b: f.linear(x, w, b), (MAT, W, B)),
    "matmul": (lambda m, f, x, w: x @ w.T, (MAT, W)),
    "mm": (lambda m, f, x, w: x.mm(w.T), (MAT, W)),
    "bmm": (lambda m, f, x, w: x.reshape(1, 6, 8).bmm(w.T.reshape(1, 8, 5)), (MAT, W)),
    "addmm": (lambda m, f, b, x, w: b.addmm(x, w.T), (B, MAT, W)),
    "einsum": (lambda m, f, x, w: m.einsum("ij,kj->ik", x, w), (MAT, W)),
    "conv1d": (lambda m, f, x, k: f.conv1d(x, k[..., 0]), (SEQ[:, :, :], KER[:, :3])),
    "conv2d": (lambda m, f, x, k: f.conv2d(x, k, padding=1), (IMG, KER)),
    "conv_transpose2d": (lambda m, f, x, k: f.conv_transpose2d(x, k.transpose(0, 1)),
                         (IMG, KER)),
    "sdpa": (lambda m, f, x: f.scaled_dot_product_attention(x, x, x), (IMG,)),
    "cross_entropy": (lambda m, f, x, t: f.cross_entropy(x, t), (PROBS, LABELS)),
    "nll_loss": (lambda m, f, x, t: f.nll_loss(x, t), (PROBS, LABELS)),
    "mse_loss": (lambda m, f, x, y: f.mse_loss(x, y), (PROBS, MAT[:, :5])),
    "l1_loss": (lambda m, f, x, y: f.l1_loss(x, y), (PROBS, MAT[:, :5])),
    "smooth_l1_loss": (lambda m, f, x, y: f.smooth_l1_loss(x, y), (PROBS, MAT[:, :5])),
    "huber_loss": (lambda m, f, x, y: f.huber_loss(x, y), (PROBS, MAT[:, :5])),
    "bce_with_logits": (lambda m, f, x, y: f.binary_cross_entropy_with_logits(x, y),
                        (MAT[:, :5], PROBS)),
    "kl_div": (lambda m, f, x, y: f.kl_div(x, y, reduction="batchmean"), (MAT[:, :5], PROBS)),
    "softmax": (lambda m, f, x: f.softmax(x, -1), (MAT,)),
    "log_softmax": (lambda m, f, x: f.log_softmax(x, -1), (MAT,)),
    "Tensor.softmax": (lambda m, f, x: x.softmax(-1), (MAT,)),
    "layer_norm": (lambda m, f, x: f.layer_norm(x, (8,)), (MAT,)),
    "group_norm": (lambda m, f, x: f.group_norm(x, 3), (IMG,)),
    "batch_norm": (lambda m, f, x: f.batch_norm(x, None, None, training=True), (IMG,)),
    "instance_norm": (lambda m, f, x: f.instance_norm(x), (IMG,)),
    "normalize": (lambda m, f, x: f.normalize(x), (MAT,)),
    "cosine_similarity": (lambda m, f, x, y: f.cosine_similarity(x, y), (MAT, MAT)),
    "exp": (lambda m, f, x: x.exp(), (MAT,)),
    "expm1": (lambda m, f, x: x.expm1(), (MAT,)),
    "log": (lambda m, f, x: x.abs().log(), (MAT,)),
    "log1p": (lambda m, f, x: x.abs().log1p(), (MAT,)),
    "reciprocal": (lambda m, f, x: x.reciprocal(), (MAT,)),
    "rsqrt": (lambda m, f, x: x.abs().rsqrt(), (MAT,)),
    "pow": (lambda m, f, x: x.pow(2), (MAT,)),
    "**": (lambda m, f, x: x ** 2, (MAT,)),
    "pow(tensor, tensor)": (lambda m, f, x: x.abs().pow(x), (MAT,)),
    "softplus": (lambda m, f, x: f.softplus(x), (MAT,)),
    "sum": (lambda m, f, x: x.sum(), (MAT,)),
    "sum(dim)": (lambda m, f, x: x.sum(0), (MAT,)),
    "prod": (lambda m, f, x: x.prod(), (PROBS,)),
    "prod(dim)": (lambda m, f, x: x.prod(1), (PROBS,)),
    "cumsum": (lambda m, f, x: x.cumsum(0), (MAT,)),
    "cumprod": (lambda m, f, x: x.cumprod(0), (MAT,)),
    "logsumexp": (lambda m, f, x: x.logsumexp(0), (MAT,)),
    "norm": (lambda m, f, x: x.norm(), (MAT,)),
    "norm(dim)": (lambda m, f, x: x.norm(dim=1), (MAT,)),
    "vector_norm": (lambda m, f, x: m.linalg.vector_norm(x), (MAT,)),
    "interpolate nearest": (lambda m, f, x: f.interpolate(x, scale_factor=2), (IMG,)),
    "interpolate linear": (lambda m, f, x: f.interpolate(x, size=12, mode="linear"), (SEQ,)),
    "interpolate bilinear": (lambda m, f, x: f.interpolate(x, scale_factor=2, mode="bilinear"),
                             (IMG,)),
    "pad reflect 1d": (lambda m, f, x: f.pad(x, (1, 1), mode="reflect"), (SEQ,)),
    "pad reflect 2d": (lambda m, f, x: f.pad(x, (1, 1, 2, 2), mode="reflect"), (IMG,)),
    "pad replicate 1d": (lambda m, f, x: f.pad(x, (1, 1), mode="replicate"), (SEQ,)),
    "pad replicate 2d": (lambda m, f, x: f.pad(x, (1, 1, 2, 2), mode="replicate"), (IMG,)),
    "pad circular": (lambda m, f, x: f.pad(x, (1, 1), mode="circular"), (SEQ,)),
    "pad constant": (lambda m, f, x: f.pad(x, (1, 1)), (SEQ,)),
    "cat": (lambda m, f, x, y: m.cat([x, y.float()]), (MAT, MAT)),
    "scatter_add": (lambda m, f, x, t: x.scatter_add(0, t.reshape(6, 1).expand(6, 8),
                                                     x.float()), (MAT, LABELS)),
    # in no list: the input's dtype
    "mean": (lambda m, f, x: x.mean(), (MAT,)),
    "relu": (lambda m, f, x: f.relu(x), (MAT,)),
    "gelu": (lambda m, f, x: f.gelu(x), (MAT,)),
    "sigmoid": (lambda m, f, x: x.sigmoid(), (MAT,)),
    "tanh": (lambda m, f, x: x.tanh(), (MAT,)),
    "sqrt": (lambda m, f, x: x.abs().sqrt(), (MAT,)),
    "mul": (lambda m, f, x, y: x * y, (MAT, MAT)),
    "max_pool2d": (lambda m, f, x: f.max_pool2d(x, 2), (IMG,)),
    "avg_pool2d": (lambda m, f, x: f.avg_pool2d(x, 2), (IMG,)),
    "adaptive_avg_pool2d": (lambda m, f, x: f.adaptive_avg_pool2d(x, 1), (IMG,)),
    "embedding": (lambda m, f, t, w: f.embedding(t, w), (LABELS, W)),
    "LSTMCell": (_cell("LSTMCell"), (MAT,)),
    "GRUCell": (_cell("GRUCell"), (MAT,)),
    "RNNCell": (_cell("RNNCell"), (MAT,)),
    # session 10, tensor-ops
    "baddbmm": (lambda m, f, b, x, w: b.baddbmm(x.reshape(1, 6, 8), w.T.reshape(1, 8, 5)),
                (PROBS, MAT, W)),
    "addbmm": (lambda m, f, b, x, w: b.addbmm(x.reshape(1, 6, 8), w.T.reshape(1, 8, 5)),
               (PROBS, MAT, W)),
    "cdist": (lambda m, f, x, y: m.cdist(x, y), (MAT, MAT)),
    "cross": (lambda m, f, x, y: m.cross(x[:, :3], y[:, :3], dim=1), (MAT, MAT)),
    "tensordot": (lambda m, f, x, w: m.tensordot(x, w, ([1], [1])), (MAT, W)),
}

# session 10, nn breadth: the losses, norms and layers added then
SIGNS = np.where(R.random(6) > 0.5, 1.0, -1.0).astype(np.float32)
ADDED_CASES = {
    "prelu": (lambda m, f, x, w: f.prelu(x, w[:1, 0]), (MAT, W)),
    "margin_ranking_loss": (lambda m, f, x, y, t: f.margin_ranking_loss(x[:, 0], y[:, 0], t),
                            (MAT, PROBS, SIGNS)),
    "hinge_embedding_loss": (lambda m, f, x, t: f.hinge_embedding_loss(x[:, 0], t),
                             (MAT, SIGNS)),
    "cosine_embedding_loss": (lambda m, f, x, y, t: f.cosine_embedding_loss(x[:, :5], y, t),
                              (MAT, PROBS, SIGNS)),
    "triplet_margin_loss": (lambda m, f, a, p, n: f.triplet_margin_loss(a, p, n),
                            (MAT, MAT[::-1].copy(), MAT * 2)),
    "soft_margin_loss": (lambda m, f, x, t: f.soft_margin_loss(x[:, 0], t), (MAT, SIGNS)),
    "multi_margin_loss": (lambda m, f, x, t: f.multi_margin_loss(x, t), (PROBS, LABELS)),
    "poisson_nll_loss": (lambda m, f, x, t: f.poisson_nll_loss(x, t), (MAT[:, :5], PROBS)),
    "rms_norm": (lambda m, f, x: f.rms_norm(x, (8,)), (MAT,)),
    "bilinear": (lambda m, f, x, y, w: f.bilinear(x, y, w.reshape(5, 2, 4)),
                 (MAT[:, :2].copy(), MAT[:, 4:].copy(), W)),
}
CASES.update(ADDED_CASES)
# ... and torch's names added for ported scripts (torch_names, addcmul/addcdiv); dot and mv on
# the cpu keep the input's dtype where matmul lowers it
VECTOR, SQUARE = _f32(8), _f32(6, 6)
NAMES_CASES = {
    "trace": (lambda m, f, x: x.trace(), (SQUARE,)),
    "dot": (lambda m, f, x, y: m.dot(x, y), (VECTOR, VECTOR[::-1].copy())),
    "mv": (lambda m, f, x, y: m.mv(x, y), (MAT, VECTOR)),
    "addcmul": (lambda m, f, x, y, z: m.addcmul(x, y, z, value=0.5),
                (MAT, MAT, MAT[::-1].copy())),
    "addcdiv": (lambda m, f, x, y, z: m.addcdiv(x, y, z.abs() + 1, value=0.5),
                (MAT, MAT, MAT[::-1].copy())),
}
CASES.update(NAMES_CASES)
# session 11, math-ops: torch's elementwise maths on its lists (cuda: fp32, atan2 promotes)
MATH_CASES = {
    "tan": (lambda m, f, x: x.tan(), (PROBS,)),
    "asin": (lambda m, f, x: m.asin(x), (PROBS,)),
    "acos": (lambda m, f, x: x.acos(), (PROBS,)),
    "sinh": (lambda m, f, x: m.sinh(x), (MAT,)),
    "cosh": (lambda m, f, x: x.cosh(), (MAT,)),
    "log10": (lambda m, f, x: x.abs().log10(), (MAT,)),
    "log2": (lambda m, f, x: m.log2(x.abs()), (MAT,)),
    "atan2": (lambda m, f, x, y: m.atan2(x, y), (MAT, MAT[::-1].copy())),
}
CASES.update(MATH_CASES)
NAMES_CASES.update(MATH_CASES)        # sorted as checked below, with the names' cases

# session 11, tensor-misc: quantile/nanquantile (float32 on the cpu), index_copy (promote on
# the cpu), index_put (promote on cuda)
ROWS = np.array([0, 2])
MISC_CASES = {
    "quantile": (lambda m, f, x: m.quantile(x, 0.3, dim=1), (MAT,)),
    "nanquantile": (lambda m, f, x: m.nanquantile(x, 0.7), (MAT,)),
    "index_copy": (lambda m, f, x, r, y: x.index_copy(0, r, y[:2]), (MAT, ROWS, MAT[::-1].copy())),
    "index_put": (lambda m, f, x, r, y: x.index_put((r,), y[:2].float()),
                  (MAT, ROWS, MAT[::-1].copy())),
}
CASES.update(MISC_CASES)
# session 11, distributions: gd.special's erfinv (float32 on cuda, in the input's dtype on the cpu)
SPECIAL_CASES = {"erfinv": (lambda m, f, x: x.erfinv(), (PROBS,))}
CASES.update(SPECIAL_CASES)
# session 11, nn-utils: the losses added then (float32 on both devices, as torch)
CTC_TARGETS = R.integers(1, 8, (3, 2))
LABEL_LISTS = np.array([[1, 3, -1, 0, 2]] * 6)
NN_UTILS_CASES = {
    "ctc_loss": (lambda m, f, x, t: f.ctc_loss(x, t, [2, 2, 2], [2, 1, 0]), (SEQ, CTC_TARGETS)),
    "multilabel_margin_loss": (lambda m, f, x, t: f.multilabel_margin_loss(x, t),
                               (PROBS, LABEL_LISTS)),
}
CASES.update(NN_UTILS_CASES)
# branch linalg: torch's linalg names with an autocast kernel (float32 on the cpu for the
# factorizations and solves; on cuda only the norms (float32) and products (lower) have one:
# fake tensors run factorizations of float16 there that real CUDA refuses, so those are checked
# on the cpu here and in test_linalg.py on cuda)
SPD = (SQUARE @ SQUARE.T + 6 * np.eye(6)).astype(np.float32)
WELL = (SQUARE + 6 * np.eye(6)).astype(np.float32)
CHOL = np.linalg.cholesky(SPD).astype(np.float32)
_LU, _PIV = (lambda lu: (lu[0].numpy(), lu[1].numpy()))(torch.linalg.lu_factor(
    torch.from_numpy(WELL)))
_HH, _TAU = (lambda qr: (qr[0].numpy(), qr[1].numpy()))(torch.geqrf(torch.from_numpy(MAT.T.copy())))
LINALG_CASES = {
    "linalg_inv": (lambda m, f, x: m.linalg.inv(x), (WELL,)),
    "linalg_inv_ex": (lambda m, f, x: m.linalg.inv_ex(x)[0], (WELL,)),
    "inverse": (lambda m, f, x: m.inverse(x), (WELL,)),
    "linalg_cholesky": (lambda m, f, x: m.linalg.cholesky(x), (SPD,)),
    "linalg_cholesky_ex": (lambda m, f, x: m.linalg.cholesky_ex(x)[0], (SPD,)),
    "cholesky": (lambda m, f, x: m.cholesky(x), (SPD,)),
    "cholesky_inverse": (lambda m, f, x: m.cholesky_inverse(x), (CHOL,)),
    "cholesky_solve": (lambda m, f, b, x: m.cholesky_solve(b, x), (MAT[:, :3].copy(), CHOL)),
    "linalg_cond": (lambda m, f, x: m.linalg.cond(x), (WELL,)),
    "linalg_eigh": (lambda m, f, x: m.linalg.eigh(x)[0], (SPD,)),
    "linalg_eigvalsh": (lambda m, f, x: m.linalg.eigvalsh(x), (SPD,)),
    "linalg_householder_product": (lambda m, f, x, t: m.linalg.householder_product(x, t),
                                   (_HH, _TAU)),
    "linalg_lstsq": (lambda m, f, x, y: m.linalg.lstsq(x, y)[0], (MAT.T.copy(),
                                                                    MAT[:2].T.copy())),
    "linalg_matrix_norm": (lambda m, f, x: m.linalg.matrix_norm(x), (MAT,)),
    "linalg_matrix_rank": (lambda m, f, x: m.linalg.matrix_rank(x), (MAT,)),
    "linalg_multi_dot": (lambda m, f, x, y: m.linalg.multi_dot([x, y, x]),
                         (MAT[:, :6].copy(), MAT[:, :6].T.copy())),
    "linalg_qr": (lambda m, f, x: m.linalg.qr(x)[1], (MAT,)),
    "qr": (lambda m, f, x: m.qr(x)[1], (MAT,)),
    "linalg_solve": (lambda m, f, x, y: m.linalg.solve(x, y), (WELL, VECTOR[:6].copy())),
    "linalg_svd": (lambda m, f, x: m.linalg.svd(x)[1], (MAT,)),
    "svd": (lambda m, f, x: m.svd(x)[1], (MAT,)),
    "linalg_svdvals": (lambda m, f, x: m.linalg.svdvals(x), (MAT,)),
    "linalg_tensorinv": (lambda m, f, x: m.linalg.tensorinv(x.reshape(6, 2, 3), ind=1),
                         (WELL,)),
    "linalg_tensorsolve": (lambda m, f, x, y: m.linalg.tensorsolve(x, y),
                           (WELL, VECTOR[:6].copy())),
    "linalg_vecdot": (lambda m, f, x, y: m.linalg.vecdot(x, y), (MAT, MAT[::-1].copy())),
    "lu_solve": (lambda m, f, b, x, p: m.lu_solve(b, x, p), (MAT[:, :3].copy(), _LU, _PIV)),
    "pinverse": (lambda m, f, x: m.pinverse(x), (MAT,)),
    "triangular_solve": (lambda m, f, b, x: m.triangular_solve(b, x)[0],
                         (MAT[:, :3].copy(), WELL)),
    "addmv": (lambda m, f, x, y, z: m.addmv(x, y, z), (VECTOR[:6].copy(), MAT, VECTOR)),
    "addr": (lambda m, f, x, y, z: m.addr(x, y, z), (MAT, VECTOR[:6].copy(), VECTOR)),
    "chain_matmul": (lambda m, f, x, y: m.chain_matmul(x, y, x),
                     (MAT[:, :6].copy(), MAT[:, :6].T.copy())),
    "dist": (lambda m, f, x, y: m.dist(x, y), (MAT, MAT[::-1].copy())),
    "frobenius_norm": (lambda m, f, x: m.frobenius_norm(x, (0, 1)), (MAT,)),
    "nuclear_norm": (lambda m, f, x: m.nuclear_norm(x), (MAT,)),
    "renorm": (lambda m, f, x: m.renorm(x, 2, 0, 1.0), (MAT,)),
    "vdot": (lambda m, f, x, y: m.vdot(x, y), (VECTOR, VECTOR[::-1].copy())),
}
CASES.update(LINALG_CASES)
LINALG_CPU_ONLY = {"linalg_inv", "linalg_inv_ex", "inverse", "linalg_cholesky",
                   "linalg_cholesky_ex", "cholesky", "cholesky_inverse", "cholesky_solve",
                   "linalg_cond", "linalg_eigh", "linalg_eigvalsh", "linalg_householder_product",
                   "linalg_lstsq", "linalg_matrix_rank", "linalg_qr", "qr", "linalg_solve",
                   "linalg_svd", "svd", "linalg_svdvals", "linalg_tensorinv",
                   "linalg_tensorsolve", "lu_solve", "pinverse", "triangular_solve"}


# ops whose CUDA autocast kernels torch's fake tensors cannot run in a CPU-only build ("not
# linked with support for cuda devices"): their cuda policy is checked through the table below
NO_FAKE_CUDA = {"bmm", "conv1d", "LSTMCell", "GRUCell", "RNNCell", "baddbmm", "addbmm", "cross"}
# ... and of the ones added in session 10 (their cuda policy, from torch's autocast_mode.cpp
# lists: prelu lower, the losses float32, bilinear the widest input dtype)
ADDED_CUDA_DTYPES = {"prelu": gd.float16, "margin_ranking_loss": gd.float32,
                     "hinge_embedding_loss": gd.float32, "cosine_embedding_loss": gd.float32,
                     "soft_margin_loss": gd.float32, "bilinear": gd.float32}
ADDED_CUDA_DTYPES.update(dot=gd.float32, mv=gd.float16)    # dot promotes, mv lowers
ADDED_CUDA_DTYPES.update(ctc_loss=gd.float32)               # session 11, nn-utils
NO_FAKE_CUDA |= set(ADDED_CUDA_DTYPES)
# session 11, tensor-misc: torch's fake cuda tensors cannot run these either (index_put's
# promotion of a float16 input is checked in test_tensor_misc.py)
ADDED_CUDA_DTYPES.update(index_copy=gd.float32, index_put=gd.float32)
NO_FAKE_CUDA |= {"index_copy", "index_put"}

# session 11, nn-vision: the 3-D convolutions and pools, unpooling, pdist and grid sampling
VOLUME = _f32(2, 3, 4, 4, 6)
GRID = R.uniform(-1, 1, (2, 3, 3, 2)).astype(np.float32)
VISION_CASES = {
    "conv3d": (lambda m, f, x, k: f.conv3d(x, k[:, :, :2, :2].reshape(4, 3, 2, 2, 1)),
               (VOLUME, KER)),
    "conv_transpose1d": (lambda m, f, x, k: f.conv_transpose1d(x, k[:3, :, 0]), (SEQ, KER)),
    "conv_transpose3d": (lambda m, f, x, k: f.conv_transpose3d(
        x, k[:3, :, :2, :2].reshape(3, 3, 2, 2, 1)), (VOLUME, KER)),
    "avg_pool3d": (lambda m, f, x: f.avg_pool3d(x, 2), (VOLUME,)),
    "max_pool3d": (lambda m, f, x: f.max_pool3d(x, 2), (VOLUME,)),
    "adaptive_avg_pool3d": (lambda m, f, x: f.adaptive_avg_pool3d(x, 2), (VOLUME,)),
    "adaptive_max_pool3d": (lambda m, f, x: f.adaptive_max_pool3d(x, 2), (VOLUME,)),
    "max_unpool2d": (lambda m, f, x: f.max_unpool2d(*f.max_pool2d(x, 2, return_indices=True),
                                                    2), (IMG,)),
    "max_unpool3d": (lambda m, f, x: f.max_unpool3d(*f.max_pool3d(x, 2, return_indices=True),
                                                    2), (VOLUME,)),
    # torch's CPU pdist has no bfloat16 kernel (and no CPU policy): bfloat16 widened first
    "pdist": (lambda m, f, x: m.pdist(x.float() if x.dtype == m.bfloat16 else x), (MAT,)),
    "grid_sampler": (lambda m, f, x, g: f.grid_sample(x, g, align_corners=False), (IMG, GRID)),
    "fractional_max_pool2d": (lambda m, f, x, u: f.fractional_max_pool2d(
        x, 2, output_size=3, _random_samples=u), (IMG, GRID[:, 0, :, :].copy())),
}
# session 26, breadth2: the 3-D fractional pool and stft (float32 under cpu autocast)
VISION_CASES.update({
    "fractional_max_pool3d": (lambda m, f, x, u: f.fractional_max_pool3d(
        x, 2, output_size=2, _random_samples=u), (VOLUME, (GRID[..., 0] + 1) / 2)),
    "stft": (lambda m, f, x: m.stft(x, 4, return_complex=False), (MAT,))})
CASES.update(VISION_CASES)
# their cuda policies (fake cuda tensors cannot run these): lower, promote, none
VISION_CUDA_DTYPES = {"conv3d": gd.float16, "conv_transpose1d": gd.float16,
                      "conv_transpose3d": gd.float16, "grid_sampler": gd.float32,
                      "max_unpool2d": gd.float32, "max_unpool3d": gd.float32}
ADDED_CUDA_DTYPES.update(VISION_CUDA_DTYPES)
NO_FAKE_CUDA |= set(VISION_CUDA_DTYPES)

# parity: interpolate's bicubic, trilinear and nearest-exact modes
INTERPOLATE_CASES = {
    "upsample_bicubic2d": (lambda m, f, x: f.interpolate(x, scale_factor=2, mode="bicubic"),
                           (IMG,)),
    "upsample_trilinear3d": (lambda m, f, x: f.interpolate(x, size=(3, 5, 7), mode="trilinear"),
                             (VOLUME,)),
    "_upsample_nearest_exact1d": (lambda m, f, x: f.interpolate(x, size=12,
                                                                mode="nearest-exact"), (SEQ,)),
    "_upsample_nearest_exact2d": (lambda m, f, x: f.interpolate(x, scale_factor=1.5,
                                                                mode="nearest-exact"), (IMG,)),
    "_upsample_nearest_exact3d": (lambda m, f, x: f.interpolate(x, size=(3, 5, 7),
                                                                mode="nearest-exact"), (VOLUME,)),
}
CASES.update(INTERPOLATE_CASES)


def _torch_dtype(name, device, low_inputs):
    fn, arrays = CASES[name]
    low = torch.bfloat16 if device == "cpu" else torch.float16

    def inputs():
        ts = [torch.from_numpy(a) for a in arrays]
        ts = [t.to(low) if low_inputs and t.is_floating_point() else t for t in ts]
        return ts if device == "cpu" else [torch.empty(t.shape, dtype=t.dtype, device="cuda")
                                           for t in ts]
    if device == "cpu":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(torch, tf, *inputs())
        return out
    with fake_tensor.FakeTensorMode():
        ts = inputs()
        torch.set_autocast_enabled("cuda", True)   # torch.autocast('cuda') refuses: no GPU
        try:
            return fn(torch, tf, *ts)
        finally:
            torch.set_autocast_enabled("cuda", False)
            torch.clear_autocast_cache()


def _gd_dtype(name, device, low_inputs, monkeypatch):
    fn, arrays = CASES[name]
    low = gd.bfloat16 if device == "cpu" else gd.float16
    arrays = [a.astype(low) if low_inputs and a.dtype.kind == "f" else a for a in arrays]
    if device == "cpu":
        # on a GPU machine the default device is cuda: the case's inputs and modules go to the
        # cpu, where cpu autocast applies
        monkeypatch.setattr(backend, "DEFAULT_DEVICE", "cpu")
        with gd.autocast("cpu"):
            return fn(gd, F, *(gd.tensor(a, device="cpu") for a in arrays))
    if backend.cuda_available() and not backend.SIMULATOR:      # a real GPU
        with gd.autocast("cuda"):
            return fn(gd, F, *(gd.tensor(a, device="cuda") for a in arrays))
    # cuda autocast switched on by hand (gd.autocast('cuda') refuses without the device), on
    # tensors labelled as cuda: every op of this table runs on NumPy arrays so labelled (under
    # the strict simulator, device arrays)
    state = autocast_mode.state
    monkeypatch.setattr(state, "enabled", {"cuda": True, "cpu": False})
    monkeypatch.setattr(state, "active", True)
    monkeypatch.setattr(state, "nesting", 1)
    return fn(gd, F, *(gd.Tensor._make(backend.to_device_array(a, "cuda"), False, None, 0,
                                        "cuda") for a in arrays))


def _name(dtype):
    return str(dtype).replace("torch.", "")


def _torch_autocasts(op, device):
    """Whether the installed torch has an autocast kernel for ``aten::op`` on ``device``."""
    key = "AutocastCPU" if device == "cpu" else "AutocastCUDA"
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", key)


# ops torch autocasts only from some version on (rms_norm: float32 from torch 2.12, pytorch
# PR 174824; torch 2.11's float16 rms_norm stays float16); gpudl follows the torch that lists them
NOT_IN_EVERY_TORCH = {"rms_norm"}


@pytest.mark.parametrize("low_inputs", [False, True], ids=["float32-in", "low-in"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", list(CASES))
def test_output_dtype_matches_torch_autocast(name, device, low_inputs, monkeypatch):
    if device == "cuda" and name in NO_FAKE_CUDA:
        pytest.skip("torch's fake cuda tensors cannot run it; policy table test covers it")
    if name in NOT_IN_EVERY_TORCH and not _torch_autocasts(name, device) and \
            name in autocast_mode.POLICIES[device]:
        pytest.skip(f"torch {torch.__version__} does not autocast {name} on {device}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = _torch_dtype(name, device, low_inputs)
        except RuntimeError as exc:              # mixed dtypes (scatter_add on the cpu)
            assert "dtype" in str(exc)
            with pytest.raises((TypeError, RuntimeError), match="dtype"):
                _gd_dtype(name, device, low_inputs, monkeypatch)
            return
        ours = _gd_dtype(name, device, low_inputs, monkeypatch)
    assert _name(ours.dtype) == _name(theirs.dtype), (name, device)
    if device == "cpu" and name not in ("LSTMCell", "GRUCell", "RNNCell"):   # random weights
        np.testing.assert_allclose(ours.float().numpy(), theirs.float().detach().numpy(),
                                   rtol=3e-2, atol=3e-2)


def test_cuda_policy_of_the_ops_fake_tensors_cannot_run(monkeypatch):
    state = autocast_mode.state
    monkeypatch.setattr(state, "enabled", {"cuda": True, "cpu": False})
    monkeypatch.setattr(state, "active", True)
    for name in ("bmm", "conv1d", "baddbmm", "addbmm"):
        assert _gd_dtype(name, "cuda", False, monkeypatch).dtype == gd.float16, name
    for low in (False, True):                 # cross: promote, as its case above on the cpu
        assert _gd_dtype("cross", "cuda", low, monkeypatch).dtype == (
            gd.float16 if low else gd.float32)
    mixed, wide = (gd.Tensor._make(backend.to_device_array(a, "cuda"), False, None, 0, "cuda")
                   for a in (MAT[:, :3].astype(np.float16), MAT[:, 3:6]))
    assert gd.cross(mixed, wide, dim=1).dtype == gd.float32        # the widest of the two
    # the cells make their state with gd.zeros(device='cuda'), which needs the device: their
    # policy (torch's lstm_cell, gru_cell, rnn_tanh_cell, rnn_relu_cell: lower) by name
    x = gd.Tensor._make(backend.to_device_array(MAT, "cuda"), False, None, 0, "cuda")
    for op in ("lstm_cell", "gru_cell", "rnn_cell"):
        assert autocast_mode.cast_inputs(op, x)[0].dtype == gd.float16, op


# torch ops with an autocast kernel, by gpudl's coverage: the torch names this file's cases
# check (overload names dropped), and those gpudl has no counterpart for
CHECKED = {
    "linear", "matmul", "mm", "bmm", "addmm", "einsum", "conv1d", "conv2d", "conv_transpose2d",
    "scaled_dot_product_attention", "cross_entropy_loss", "nll_loss", "mse_loss", "l1_loss",
    "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits", "kl_div", "softmax",
    "log_softmax", "layer_norm", "native_layer_norm", "group_norm", "cosine_similarity", "exp",
    "expm1", "log", "log1p", "reciprocal", "rsqrt", "pow", "softplus", "sum", "prod", "cumsum",
    "cumprod", "logsumexp", "norm", "linalg_vector_norm", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_linear1d", "upsample_bilinear2d", "reflection_pad1d",
    "reflection_pad2d", "replication_pad1d", "replication_pad2d", "cat", "lstm_cell",
    "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell", "mkldnn_rnn_layer", "convolution", "_convolution",
    "binary_cross_entropy", "scatter_add", "stack",
    "baddbmm", "addbmm", "cdist", "cross", "tensordot",     # session 10, tensor-ops
}
NOT_IN_GPUDL = {
    "_addmm_activation", "_grid_sampler_2d_cpu_fallback", "_lu_with_info",
    "_native_multi_head_attention", "_scaled_dot_product_flash_attention",
    "_upsample_bicubic2d_aa", "_upsample_bilinear2d_aa", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "acos", "adaptive_avg_pool3d",
    "adaptive_max_pool3d", "addcdiv", "addcmul", "addmv", "addr", "asin", "atan2",
    "avg_pool3d", "bilinear", "chain_matmul", "cholesky",
    "cholesky_inverse", "cholesky_solve", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose3d", "cosh", "cosine_embedding_loss", "ctc_loss",
    "cudnn_convolution", "cudnn_convolution_transpose", "dist", "dot", "erfinv",
    "fake_quantize_per_tensor_affine", "fft_fft", "fft_fft2", "fft_fftn", "fft_hfft",
    "fft_ifft", "fft_ifft2", "fft_ifftn", "fft_ihfft", "fft_irfft", "fft_irfft2", "fft_irfftn",
    "fft_rfft", "fft_rfft2", "fft_rfftn", "fractional_max_pool2d", "fractional_max_pool3d",
    "frobenius_norm", "geqrf", "grid_sampler", "grid_sampler_2d", "grid_sampler_3d",
    "hinge_embedding_loss", "index_copy", "index_put", "inverse", "linalg_cholesky",
    "linalg_cholesky_ex", "linalg_cond", "linalg_eig", "linalg_eigh", "linalg_eigvals",
    "linalg_eigvalsh", "linalg_householder_product", "linalg_inv", "linalg_inv_ex",
    "linalg_lstsq", "linalg_matrix_norm", "linalg_matrix_rank", "linalg_multi_dot", "linalg_qr",
    "linalg_solve", "linalg_svd", "linalg_svdvals", "linalg_tensorinv", "linalg_tensorsolve",
    "linalg_vecdot", "log10", "log2", "lu_solve", "margin_ranking_loss", "max_pool3d",
    "max_unpool2d", "max_unpool3d", "multi_margin_loss", "multilabel_margin_loss",
    "multilabel_margin_loss_forward", "mv", "nanquantile", "nll_loss2d", "nuclear_norm",
    "orgqr", "ormqr", "pdist", "pinverse", "poisson_nll_loss", "polar", "prelu", "qr",
    "quantile", "renorm", "replication_pad3d", "rms_norm", "sinh", "soft_margin_loss", "stft",
    "svd", "tan", "trace", "triangular_solve", "triplet_margin_loss",
    "upsample_bicubic2d", "upsample_nearest3d", "upsample_trilinear3d", "vdot",
    "view_as_complex",
}


ADDED = (set(ADDED_CASES) | set(NAMES_CASES) | set(MISC_CASES) | set(NN_UTILS_CASES)
         | set(VISION_CASES) | set(INTERPOLATE_CASES))
CHECKED |= ADDED
NOT_IN_GPUDL -= ADDED
# branch linalg: the linalg cases above; eig and eigvals exist in gd.linalg only to refuse
# (no complex dtypes: NotImplementedError, tested in test_linalg.py)
CHECKED |= set(LINALG_CASES)
NO_FAKE_CUDA |= LINALG_CPU_ONLY
NOT_IN_GPUDL -= set(LINALG_CASES)
REFUSED = {"linalg_eig", "linalg_eigvals"}
# registered only where torch is built with cuDNN (a CUDA build): cuDNN's RNN, which gpudl's
# LSTM, GRU and RNN on cuda stand for (their policy: test_amp.py's cuda policy table test)
CUDNN_BUILD_ONLY = {"_cudnn_rnn"}


def test_cuda_policy_of_the_added_ops_fake_tensors_cannot_run(monkeypatch):
    for name, dtype in ADDED_CUDA_DTYPES.items():
        assert _gd_dtype(name, "cuda", False, monkeypatch).dtype == dtype, name
    # bilinear promotes: a float16 weight with float32 inputs gives float32, all float16 stays
    assert _gd_dtype("bilinear", "cuda", True, monkeypatch).dtype == gd.float16


def test_every_torch_autocast_op_is_checked_or_absent_from_gpudl():
    """binary_cross_entropy (banned on cuda) and stack (promotes, as cat) have tests of their
    own (test_amp.py, test_amp.py::test_promote_ops_take_the_widest)."""
    names = torch._C._dispatch_get_all_op_names()
    registered = {n.split("::")[1].split(".")[0] for n in names
                  for key in ("AutocastCPU", "AutocastCUDA")
                  if torch._C._dispatch_has_kernel_for_dispatch_key(n, key)}
    assert not CHECKED & NOT_IN_GPUDL
    assert registered - CHECKED - NOT_IN_GPUDL - REFUSED - CUDNN_BUILD_ONLY == set(), \
        "torch autocasts ops not sorted here"
    assert (CHECKED | NOT_IN_GPUDL) - registered - NOT_IN_EVERY_TORCH == set(), \
        "names here torch does not autocast"
    gd_names = [n for n in NOT_IN_GPUDL - REFUSED if not n.startswith("_")]
    present = [n for n in gd_names if hasattr(F, n) or hasattr(gd.Tensor, n)
               or hasattr(gd, n) or hasattr(gd.linalg, n.replace("linalg_", ""))]
    assert present == [], "gpudl has these: add a case above"


# session 11, distributions: erfinv is checked above
CHECKED |= set(SPECIAL_CASES)
NOT_IN_GPUDL -= set(SPECIAL_CASES)
