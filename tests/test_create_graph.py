"""create_graph=True (higher-order gradients) against torch, float64, fresh random inputs:
the first gradient and the gradient of a scalar of it (a weighted sum plus the squared norm) for
each supported op, gradgradcheck by finite differences, and the workloads that need it (a
WGAN-GP penalty step, a Hessian-vector product, a MAML inner step)."""

import numpy as np
import pytest
import torch

import gpudl as gd
import gpudl.nn.functional as F
import torch.nn.functional as TF
from torch_gaps import skip_where_torch_lacks_the_derivative


def _pair(arrays):
    ours = [gd.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return ours, theirs


def _second_order(module, fn, xs, seed, weights, with_grad_output):
    """(first gradients, gradients of sum(w * g) + sum(g * g)) as NumPy arrays."""
    tensor = gd.tensor if module is gd else torch.tensor
    y = fn(*xs)
    v = tensor(seed) if with_grad_output else None
    grads = module.autograd.grad(y, xs, v, create_graph=True, allow_unused=True,
                                 materialize_grads=True)
    scalar = sum((g * tensor(w)).sum() + (g * g).sum() for g, w in zip(grads, weights))
    seconds = module.autograd.grad(scalar, xs, allow_unused=True, materialize_grads=True)
    value = lambda t: t.detach().numpy()      # noqa: E731
    return [value(g) for g in grads], [value(h) for h in seconds]


def check_second_order(ours, theirs, *shapes, positive=False, scalar_output=False, seed=0):
    """``ours`` (gpudl) and ``theirs`` (torch) of float64 inputs of ``shapes``: first and second
    derivatives agree."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    if positive:
        arrays = [np.abs(a) + 0.5 for a in arrays]
    weights = [rng.standard_normal(s) for s in shapes]
    xs, txs = _pair(arrays)
    out_shape = tuple(theirs(*txs).shape)
    v = rng.standard_normal(out_shape)
    with skip_where_torch_lacks_the_derivative():
        expected = _second_order(torch, theirs, txs, v, weights, not scalar_output)
    got = _second_order(gd, ours, xs, v, weights, not scalar_output)
    for kind, g_list, e_list in zip(("first", "second"), got, expected):
        for i, (g, e) in enumerate(zip(g_list, e_list)):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-10,
                                       err_msg=f"{kind} derivative, input {i}")


# (gpudl function, torch function, input shapes, positive inputs)
ELEMENTWISE = {
    "add_broadcast": (lambda a, b: a + b * b, lambda a, b: a + b * b, [(3, 4), (4,)], False),
    "sub_broadcast": (lambda a, b: (a - b) ** 2, lambda a, b: (a - b) ** 2, [(3, 1), (4,)], False),
    "mul_broadcast": (lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 1)], False),
    "mul_scalar": (lambda a: a * 3.0 * a, lambda a: a * 3.0 * a, [(5,)], False),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (4,)], True),
    "rdiv": (lambda a: 2.0 / a, lambda a: 2.0 / a, [(6,)], True),
    "pow_scalar": (lambda a: a ** 3, lambda a: a ** 3, [(6,)], False),
    "pow_tensor": (lambda a, b: a ** b, lambda a, b: a ** b, [(3, 4), (4,)], True),
    "rpow": (lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(6,)], False),
    "exp_log": (lambda a: a.exp() * a.log(), lambda a: a.exp() * a.log(), [(6,)], True),
    "sqrt": (lambda a: a.sqrt() * a, lambda a: a.sqrt() * a, [(6,)], True),
    "tanh": (lambda a: a.tanh() * a, lambda a: a.tanh() * a, [(6,)], False),
    "sigmoid": (lambda a: a.sigmoid() * a, lambda a: a.sigmoid() * a, [(6,)], False),
    "relu": (lambda a: a.relu() * a, lambda a: a.relu() * a, [(8,)], False),
    "abs_neg": (lambda a: -a.abs() * a, lambda a: -a.abs() * a, [(8,)], False),
    "clamp": (lambda a: a.clamp(-0.5, 0.5) * a, lambda a: a.clamp(-0.5, 0.5) * a, [(8,)], False),
    "where": (lambda a, b: gd.where(a > 0, a * b, b * b),
              lambda a, b: torch.where(a > 0, a * b, b * b), [(3, 4), (4,)], False),
    "maximum": (lambda a, b: gd.maximum(a, b) * a, lambda a, b: torch.maximum(a, b) * a,
                [(3, 4), (3, 4)], False),
    "sin_cos": (lambda a: a.sin() * a.cos() * a, lambda a: a.sin() * a.cos() * a, [(6,)], False),
    "log1p_expm1": (lambda a: a.log1p() * a.expm1(), lambda a: a.log1p() * a.expm1(), [(6,)], True),
    "rsqrt_reciprocal": (lambda a: a.rsqrt() + a.reciprocal() * a,
                         lambda a: a.rsqrt() + a.reciprocal() * a, [(6,)], True),
    "erf": (lambda a: a.erf() * a, lambda a: torch.erf(a) * a, [(6,)], False),
}

def _assigned(t, v):
    t[1] = v
    t[[0, 2], 1:3] = v[:2] * v[2:]
    return t


def _edited_view(t, v):
    t.t()[1:3].mul_(v.t())          # in place through a transposed slice (CopySlices)
    return t


def _distances(a, b, p):
    """torch's cdist as a composition of differentiable ops."""
    return ((a[:, None] - b[None]).abs() ** p).sum(-1) ** (1 / p)


REDUCTIONS_AND_SHAPES = {
    "sum_dim": (lambda a: (a * a).sum(1), lambda a: (a * a).sum(1), [(3, 4)], False),
    "sum_all": (lambda a: (a ** 3).sum(), lambda a: (a ** 3).sum(), [(3, 4)], False),
    "mean_keepdim": (lambda a: (a * a).mean(0, keepdim=True) * a,
                     lambda a: (a * a).mean(0, keepdim=True) * a, [(3, 4)], False),
    "max_all": (lambda a: a.max() * a, lambda a: a.max() * a, [(3, 4)], False),
    "max_dim": (lambda a: a.max(1)[0] ** 3, lambda a: a.max(1)[0] ** 3, [(3, 4)], False),
    "min_dim_keepdim": (lambda a: a.min(0, keepdim=True)[0] * a,
                        lambda a: a.min(0, keepdim=True)[0] * a, [(3, 4)], False),
    "var_dim": (lambda a: a.var(1) * a.sum(), lambda a: a.var(1) * a.sum(), [(3, 4)], False),
    "std_all": (lambda a: a.std() * a, lambda a: a.std() * a, [(3, 4)], False),
    "std_keepdim": (lambda a: a.std(0, keepdim=True) ** 3, lambda a: a.std(0, keepdim=True) ** 3,
                    [(3, 4)], False),
    "softmax": (lambda a: a.softmax(1) * a, lambda a: a.softmax(1) * a, [(3, 5)], False),
    "log_softmax": (lambda a: F.log_softmax(a, 1) * a, lambda a: TF.log_softmax(a, 1) * a,
                    [(3, 5)], False),
    "reshape_transpose": (lambda a: (a.reshape(4, 3).transpose(0, 1) * a) ** 2,
                          lambda a: (a.reshape(4, 3).transpose(0, 1) * a) ** 2, [(3, 4)], False),
    "permute_expand": (lambda a: a.permute(2, 0, 1).expand(2, 4, 2, 3) ** 2,
                       lambda a: a.permute(2, 0, 1).expand(2, 4, 2, 3) ** 2, [(2, 3, 4)], False),
    "index_basic": (lambda a: a[1:, ::2] ** 3, lambda a: a[1:, ::2] ** 3, [(3, 4)], False),
    "index_repeated": (lambda a: a[[0, 2, 0]] ** 3, lambda a: a[[0, 2, 0]] ** 3, [(3, 4)], False),
    "flip_roll": (lambda a: a.flip(1).roll(1, 0) * a, lambda a: a.flip(1).roll(1, 0) * a,
                  [(3, 4)], False),
    "tril_triu": (lambda a: a.tril(-1) ** 2 + a.triu(1) * a,
                  lambda a: a.tril(-1) ** 2 + a.triu(1) * a, [(4, 3)], False),
    "diag": (lambda a: gd.diag(gd.diag(a * a, 1), -1) * gd.diag(a.sum(0)) ** 2,
             lambda a: torch.diag(torch.diag(a * a, 1), -1) * torch.diag(a.sum(0)) ** 2,
             [(3, 3)], False),
    "prod": (lambda a: a.prod(1) * a.sum() + a.prod(), lambda a: a.prod(1) * a.sum() + a.prod(),
             [(3, 4)], False),
    "prod_keepdim": (lambda a: a.prod(0, keepdim=True) * a, lambda a: a.prod(0, keepdim=True) * a,
                     [(3, 4)], False),
    "cumprod": (lambda a: a.cumprod(1) ** 2, lambda a: a.cumprod(1) ** 2, [(3, 4)], False),
    "cumsum": (lambda a: a.cumsum(1) ** 3, lambda a: a.cumsum(1) ** 3, [(3, 4)], False),
    "amax": (lambda a: a.amax(1) ** 3, lambda a: a.amax(1) ** 3, [(3, 4)], False),
    "remainder": (lambda a, b: (a % b) * a * b, lambda a, b: (a % b) * a * b, [(3, 4), (4,)],
                  True),
    "index_put_scatter_add": (
        lambda a, v: a.index_add(0, gd.tensor([2, 0, 2]), v * v) ** 2,
        lambda a, v: a.index_add(0, torch.tensor([2, 0, 2]), v * v) ** 2, [(3, 4), (3, 4)], False),
    "setitem": (lambda a, v: _assigned(a * 1, v * v) * a, lambda a, v: _assigned(a * 1, v * v) * a,
                [(3, 4), (4,)], False),
    "inplace_through_view": (lambda a, v: _edited_view(a * 1, v) * a,
                             lambda a, v: _edited_view(a * 1, v) * a, [(3, 4), (3, 2)], False),
    "cat_stack": (lambda a, b: gd.stack([gd.cat([a, b], 0) ** 2, gd.cat([b, a], 0)], 1),
                  lambda a, b: torch.stack([torch.cat([a, b], 0) ** 2, torch.cat([b, a], 0)], 1),
                  [(2, 3), (2, 3)], False),
}

PRODUCTS = {
    "matmul": (lambda a, b: (a @ b).tanh(), lambda a, b: (a @ b).tanh(), [(3, 4), (4, 5)], False),
    "matmul_batched": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2,
                       [(2, 3, 4), (4, 5)], False),
    "matmul_vector": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2, [(3, 4), (4,)], False),
    "vector_matmul": (lambda a, b: (a @ b) ** 2, lambda a, b: (a @ b) ** 2, [(4,), (4, 3)], False),
    "einsum": (lambda a, b, c: gd.einsum("bij,jk,bk->bi", a, b, c) ** 2,
               lambda a, b, c: torch.einsum("bij,jk,bk->bi", a, b, c) ** 2,
               [(2, 3, 4), (4, 5), (2, 5)], False),
    "einsum_summed_away": (lambda a, b: gd.einsum("ij,kl->ik", a * a, b).tanh(),
                           lambda a, b: torch.einsum("ij,kl->ik", a * a, b).tanh(),
                           [(3, 4), (2, 5)], False),
    "linear": (lambda x, w, b: F.linear(x, w, b).tanh(), lambda x, w, b: TF.linear(x, w, b).tanh(),
               [(5, 4), (3, 4), (3,)], False),
    "linear_3d": (lambda x, w: F.linear(x, w) ** 2, lambda x, w: TF.linear(x, w) ** 2,
                  [(2, 5, 4), (3, 4)], False),
}

NN = {
    "leaky_relu": (lambda a: F.leaky_relu(a, 0.2) * a, lambda a: TF.leaky_relu(a, 0.2) * a,
                   [(8,)], False),
    "elu": (lambda a: F.elu(a) * a, lambda a: TF.elu(a) * a, [(8,)], False),
    "silu": (lambda a: F.silu(a) * a, lambda a: TF.silu(a) * a, [(8,)], False),
    "gelu": (lambda a: F.gelu(a) * a, lambda a: TF.gelu(a) * a, [(8,)], False),
    "softplus": (lambda a: F.softplus(a) * a, lambda a: TF.softplus(a) * a, [(8,)], False),
    "softplus_beta": (lambda a: F.softplus(a, beta=2.0) * a,
                      lambda a: TF.softplus(a, beta=2.0) * a, [(8,)], False),
    "hardtanh": (lambda a: F.hardtanh(a * 2) * a, lambda a: TF.hardtanh(a * 2) * a, [(8,)], False),
    "logsigmoid": (lambda a: F.logsigmoid(a) * a, lambda a: TF.logsigmoid(a) * a, [(8,)], False),
    "norm_2": (lambda a: a.norm() * a, lambda a: a.norm() * a, [(3, 4)], False),
    "norm_dim": (lambda a: a.norm(dim=1) ** 2, lambda a: a.norm(dim=1) ** 2, [(3, 4)], False),
    "norm_3": (lambda a: a.norm(3, dim=1) * a.sum(), lambda a: a.norm(3, dim=1) * a.sum(),
               [(3, 4)], False),
    "norm_1_inf": (lambda a: a.norm(1) * a + a.norm(float("inf")) * a,
                   lambda a: a.norm(1) * a + a.norm(float("inf")) * a, [(3, 4)], False),
    "max_pool2d": (lambda a: F.max_pool2d(a * a, 2) ** 3, lambda a: TF.max_pool2d(a * a, 2) ** 3,
                   [(2, 2, 4, 6)], False),
    "max_pool2d_overlapping": (lambda a: F.max_pool2d(a, 3, 1, 1) * a,
                               lambda a: TF.max_pool2d(a, 3, 1, 1) * a, [(1, 2, 4, 4)], False),
    "avg_pool2d": (lambda a: F.avg_pool2d(a, 3, 2, 1) ** 3,
                   lambda a: TF.avg_pool2d(a, 3, 2, 1) ** 3,
                   [(2, 2, 5, 6)], False),
    "adaptive_avg_pool2d": (lambda a: F.adaptive_avg_pool2d(a, (2, 3)) ** 3,
                            lambda a: TF.adaptive_avg_pool2d(a, (2, 3)) ** 3,
                            [(2, 2, 5, 7)], False),
    "embedding": (lambda w: F.embedding(gd.tensor([[0, 2], [2, 3]]), w, padding_idx=3) ** 3,
                  lambda w: TF.embedding(torch.tensor([[0, 2], [2, 3]]), w, padding_idx=3) ** 3,
                  [(4, 3)], False),
    # torch has no double backward for its own cdist kernel: the references are compositions
    "cdist_2": (lambda a, b: gd.cdist(a * a, b, compute_mode="use_mm_for_euclid_dist") ** 3,
                lambda a, b: torch.cdist(a * a, b, compute_mode="use_mm_for_euclid_dist") ** 3,
                [(2, 3, 4), (5, 4)], False),
    "cdist_2_differences": (
        lambda a, b: gd.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").tanh(),
        lambda a, b: _distances(a, b, 2).tanh(), [(3, 4), (5, 4)], False),
    "cdist_p": (lambda a, b: gd.cdist(a, b, p=3) ** 2 + gd.cdist(a, b, p=1.5) * 2,
                lambda a, b: _distances(a, b, 3) ** 2 + _distances(a, b, 1.5) * 2,
                [(3, 4), (5, 4)], False),
    "cdist_1_inf": (lambda a, b: gd.cdist(a, b, p=1) * a.sum()
                    + gd.cdist(a, b, p=float("inf")) ** 2,
                    lambda a, b: _distances(a, b, 1) * a.sum()
                    + (a[:, None] - b[None]).abs().amax(-1) ** 2, [(3, 4), (5, 4)], False),
    "pad": (lambda a: F.pad(a, (1, 2, 0, 1)) ** 2, lambda a: TF.pad(a, (1, 2, 0, 1)) ** 2,
            [(2, 3, 4)], False),
}

NORMALIZATION = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b).tanh(),
                   lambda x, w, b: TF.layer_norm(x, (4,), w, b).tanh(), [(3, 4), (4,), (4,)]),
    "layer_norm_2d_plain": (lambda x: F.layer_norm(x * x, (3, 4)) ** 3,
                            lambda x: TF.layer_norm(x * x, (3, 4)) ** 3, [(2, 3, 4)]),
    "batch_norm_train": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True).tanh(),
        lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True).tanh(),
        [(4, 3, 2, 2), (3,), (3,)]),
    "batch_norm_1d_plain": (lambda x: F.batch_norm(x * x, None, None, training=True) ** 3,
                            lambda x: TF.batch_norm(x * x, None, None, training=True) ** 3,
                            [(5, 3)]),
}


@pytest.mark.parametrize("name", sorted(NORMALIZATION))
def test_normalization_second_derivatives(name):
    ours, theirs, shapes = NORMALIZATION[name]
    check_second_order(ours, theirs, *shapes, seed=len(name))


def test_batch_norm_eval_second_derivatives():
    rng = np.random.default_rng(8)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    check_second_order(
        lambda x, w, b: F.batch_norm(x, gd.tensor(mean), gd.tensor(var), w, b).tanh(),
        lambda x, w, b: TF.batch_norm(x, torch.tensor(mean), torch.tensor(var), w, b).tanh(),
        (4, 3, 2), (3,), (3,))


LOSSES = {
    "mse_loss": (lambda x, t: F.mse_loss(x.tanh(), t), lambda x, t: TF.mse_loss(x.tanh(), t),
                 [(4, 3), (4, 3)], False),
    "mse_loss_sum": (lambda x, t: F.mse_loss(x * x, t, reduction="sum"),
                     lambda x, t: TF.mse_loss(x * x, t, reduction="sum"), [(4, 3), (4, 3)], False),
    "l1_loss": (lambda x, t: F.l1_loss(x * x, t * t), lambda x, t: TF.l1_loss(x * x, t * t),
                [(4, 3), (4, 3)], False),
    "huber_loss": (lambda x, t: F.huber_loss(x * x, t, delta=0.7),
                   lambda x, t: TF.huber_loss(x * x, t, delta=0.7), [(4, 3), (4, 3)], False),
    "smooth_l1_loss": (lambda x, t: F.smooth_l1_loss(x * x, t, beta=0.8),
                       lambda x, t: TF.smooth_l1_loss(x * x, t, beta=0.8),
                       [(4, 3), (4, 3)], False),
    "binary_cross_entropy": (
        lambda x, t: F.binary_cross_entropy(x.sigmoid(), t.sigmoid()),
        lambda x, t: TF.binary_cross_entropy(x.sigmoid(), t.sigmoid()), [(4, 3), (4, 3)], False),
    "bce_with_logits": (
        lambda x, t: F.binary_cross_entropy_with_logits(x * x, t.sigmoid()),
        lambda x, t: TF.binary_cross_entropy_with_logits(x * x, t.sigmoid()),
        [(4, 3), (4, 3)], False),
    "bce_with_logits_pos_weight": (
        lambda x, t: F.binary_cross_entropy_with_logits(
            x * 2, t.sigmoid(), pos_weight=gd.tensor([0.5, 2.0, 3.0])),
        lambda x, t: TF.binary_cross_entropy_with_logits(
            x * 2, t.sigmoid(), pos_weight=torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)),
        [(4, 3), (4, 3)], False),
}

_CAUSAL = np.tril(np.ones((3, 4), bool), 1)
ATTENTION = {
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v) ** 2,
                  lambda q, k, v: TF.scaled_dot_product_attention(q, k, v) ** 2,
                  [(2, 3, 4), (2, 5, 4), (2, 5, 3)], False),
    "attention_causal_broadcast": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7) ** 2,
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7) ** 2,
        [(2, 2, 4, 3), (1, 2, 4, 3), (2, 1, 4, 2)], False),
    "attention_bool_mask": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, gd.tensor(_CAUSAL)).tanh(),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, torch.tensor(_CAUSAL)).tanh(),
        [(2, 3, 4), (2, 4, 4), (2, 4, 3)], False),
}

CASES = {**ELEMENTWISE, **REDUCTIONS_AND_SHAPES, **PRODUCTS, **NN, **ATTENTION}


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivatives_match_torch(name):
    ours, theirs, shapes, positive = CASES[name]
    check_second_order(ours, theirs, *shapes, positive=positive, seed=len(name))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_second_derivatives_match_torch(name):
    ours, theirs, shapes, positive = LOSSES[name]
    check_second_order(ours, theirs, *shapes, positive=positive, scalar_output=True)


@pytest.mark.parametrize("options", [{}, {"weight": True}, {"label_smoothing": 0.2},
                                     {"ignore_index": 1, "reduction": "sum"},
                                     {"reduction": "none"}])
def test_cross_entropy_and_nll_second_derivatives(options):
    rng = np.random.default_rng(7)
    target = rng.integers(0, 4, size=6)
    target[0] = 1
    options = dict(options)
    weight = rng.random(4) + 0.5 if options.pop("weight", False) else None
    ours_w = None if weight is None else gd.tensor(weight)
    theirs_w = None if weight is None else torch.tensor(weight)
    ours_t, theirs_t = gd.tensor(target), torch.tensor(target)
    check_second_order(lambda x: F.cross_entropy(x * x, ours_t, ours_w, **options),
                       lambda x: TF.cross_entropy(x * x, theirs_t, theirs_w, **options),
                       (6, 4), scalar_output=options.get("reduction") != "none")
    options.pop("label_smoothing", None)
    check_second_order(lambda x: F.nll_loss(F.log_softmax(x * x, 1), ours_t, ours_w, **options),
                       lambda x: TF.nll_loss(TF.log_softmax(x * x, 1), theirs_t, theirs_w,
                                             **options),
                       (6, 4), scalar_output=options.get("reduction") != "none")


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.3, "reduction": "sum"},
                                     {"weight": True, "reduction": "none"}])
def test_cross_entropy_with_probabilities_second_derivatives(options):
    options = dict(options)
    weight = np.random.default_rng(9).random(4) + 0.5 if options.pop("weight", False) else None
    ours_w = None if weight is None else gd.tensor(weight)
    theirs_w = None if weight is None else torch.tensor(weight)
    check_second_order(lambda x, t: F.cross_entropy(x * x, t.softmax(1), ours_w, **options),
                       lambda x, t: TF.cross_entropy(x * x, t.softmax(1), theirs_w, **options),
                       (5, 4), (5, 4), scalar_output=options.get("reduction") != "none")


@pytest.mark.parametrize("conf", [dict(stride=1, padding=0), dict(stride=2, padding=1),
                                  dict(stride=1, padding=1, dilation=2),
                                  dict(stride=2, padding=1, groups=2)])
def test_conv2d_second_derivatives(conf):
    groups = conf.get("groups", 1)
    check_second_order(lambda x, w, b: F.leaky_relu(F.conv2d(x, w, b, **conf), 0.2) * 1.5,
                       lambda x, w, b: TF.leaky_relu(TF.conv2d(x, w, b, **conf), 0.2) * 1.5,
                       (2, 4, 7, 6), (6, 4 // groups, 3, 3), (6,))
    check_second_order(lambda x, w: F.conv2d(x, w, **conf).tanh(),
                       lambda x, w: TF.conv2d(x, w, **conf).tanh(),
                       (2, 4, 7, 6), (6, 4 // groups, 3, 3))


@pytest.mark.parametrize("conf", [dict(stride=1, padding=0), dict(stride=2, padding=1),
                                  dict(stride=2, padding=1, output_padding=1, groups=2)])
def test_conv_transpose2d_second_derivatives(conf):
    groups = conf.get("groups", 1)
    check_second_order(lambda x, w, b: F.conv_transpose2d(x, w, b, **conf).tanh(),
                       lambda x, w, b: TF.conv_transpose2d(x, w, b, **conf).tanh(),
                       (2, 4, 4, 5), (4, 6 // groups, 3, 3), (6,))


def test_gradgradcheck_finite_differences():
    rng = np.random.default_rng(3)
    x = gd.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = gd.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    assert gd.autograd.gradgradcheck(lambda x, w: F.softplus(F.linear(x, w)).tanh(), (x, w))
    img = gd.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    k = gd.tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    assert gd.autograd.gradgradcheck(lambda x, k: F.conv2d(x, k, padding=1).sigmoid(), (img, k))


def test_gradgradcheck_catches_a_wrong_second_derivative(monkeypatch):
    """A graph backward of tanh that is right at first order (its value) but whose second
    derivative is wrong (y taken as a constant) is caught."""
    from gpudl import higher_order
    from gpudl.ops import elementwise as E
    from gpudl.ops.graph_backward import constant

    def detached(saved, g):
        y = constant(saved.ctx.saved_tensors[0])
        return g * (1 - y * y)
    higher_order._load_graph_backwards()
    monkeypatch.setitem(higher_order._graph_backwards, E.Tanh, detached)
    x = gd.tensor(np.random.default_rng(4).standard_normal(3), requires_grad=True)
    assert not gd.autograd.gradgradcheck(lambda x: x.tanh(), (x,), raise_exception=False)


# ----------------------------------------------------------------- workloads
def _critic(module, F_, params, x):
    w1, b1, w2, b2, w3, b3 = params
    h = F_.leaky_relu(F_.conv2d(x, w1, b1, stride=2, padding=1), 0.2)
    h = F_.leaky_relu(F_.conv2d(h, w2, b2, stride=2, padding=1), 0.2)
    return F_.linear(h.reshape(h.shape[0], -1), w3, b3)


def _wgan_gp_loss(module, F_, params, real, fake, alpha):
    mixed = alpha * real + (1 - alpha) * fake
    mixed.requires_grad_(True)
    score = _critic(module, F_, params, mixed)
    grad, = module.autograd.grad(score.sum(), mixed, create_graph=True)
    penalty = ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
    return _critic(module, F_, params, fake).mean() - _critic(module, F_, params, real).mean() \
        + 10 * penalty


def test_wgan_gp_penalty_step_matches_torch():
    rng = np.random.default_rng(11)
    shapes = [(4, 3, 3, 3), (4,), (8, 4, 3, 3), (8,), (1, 8 * 2 * 2), (1,)]
    params = [rng.standard_normal(s) * 0.3 for s in shapes]
    real, fake = rng.standard_normal((5, 3, 8, 8)), rng.standard_normal((5, 3, 8, 8))
    alpha = rng.random((5, 1, 1, 1))
    ours, theirs = _pair(params)
    _wgan_gp_loss(gd, F, ours, *(gd.tensor(a) for a in (real, fake, alpha))).backward()
    _wgan_gp_loss(torch, TF, theirs, *(torch.tensor(a) for a in (real, fake, alpha))).backward()
    for i, (p, tp) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=f"parameter {i}")


def test_hessian_vector_product_on_an_mlp():
    rng = np.random.default_rng(5)
    shapes = [(6, 3), (6,), (2, 6), (2,)]
    params = [rng.standard_normal(s) for s in shapes]
    vectors = [rng.standard_normal(s) for s in shapes]
    x, t = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    results = []
    for module, F_, act in ((gd, F, lambda h: h.tanh()), (torch, TF, torch.tanh)):
        ps = [module.tensor(p, requires_grad=True) for p in params]
        w1, b1, w2, b2 = ps
        x_, t_ = module.tensor(x), module.tensor(t)
        loss = F_.mse_loss(F_.linear(act(F_.linear(x_, w1, b1)), w2, b2), t_)
        grads = module.autograd.grad(loss, ps, create_graph=True)
        dot = sum((g * module.tensor(v)).sum() for g, v in zip(grads, vectors))
        results.append([h.detach().numpy() for h in module.autograd.grad(dot, ps)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)


def test_maml_inner_step_matches_torch():
    """One inner SGD step on the support set, the query loss of the adapted weights
    differentiated back to the initial weights (through the inner gradient)."""
    rng = np.random.default_rng(9)
    shapes = [(8, 4), (8,), (3, 8), (3,)]
    params = [rng.standard_normal(s) * 0.5 for s in shapes]
    xs, ys = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    xq, yq = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    results = []
    for module, F_ in ((gd, F), (torch, TF)):
        ps = [module.tensor(p, requires_grad=True) for p in params]

        def net(weights, x):
            w1, b1, w2, b2 = weights
            return F_.linear(F_.relu(F_.linear(x, w1, b1)), w2, b2)
        support = F_.cross_entropy(net(ps, module.tensor(xs)), module.tensor(ys))
        grads = module.autograd.grad(support, ps, create_graph=True)
        adapted = [p - 0.4 * g for p, g in zip(ps, grads)]
        query = F_.cross_entropy(net(adapted, module.tensor(xq)), module.tensor(yq))
        query.backward()
        results.append([p.grad.numpy() for p in ps])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------- engine semantics
def test_grad_returns_tensors_with_a_graph_and_retains_the_graph():
    x = gd.tensor(np.random.default_rng(1).standard_normal(4), requires_grad=True)
    y = (x.exp() * x).sum()
    g, = gd.autograd.grad(y, x, create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    again, = gd.autograd.grad(y, x)                # create_graph retained the graph
    np.testing.assert_allclose(again.numpy(), g.detach().numpy())
    plain, = gd.autograd.grad((x * 2).sum(), x)
    assert plain.grad_fn is None and not plain.requires_grad


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")   # torch's
def test_backward_create_graph_keeps_the_graph_in_grad_and_accumulates():
    rng = np.random.default_rng(2)
    data = rng.standard_normal(5)
    x, tx = gd.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    for t, module in ((x, gd), (tx, torch)):
        (t ** 3).sum().backward(create_graph=True)
        (t.sin()).sum().backward(create_graph=True)     # accumulates, out of place
        assert t.grad.requires_grad and t.grad.grad_fn is not None
        first = t.grad
        t.grad = None
        first.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_backward_create_graph_with_inputs_and_hooks():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2, 3))
    results = []
    for module in (gd, torch):
        a = module.tensor(data, requires_grad=True)
        b = module.tensor(data[0], requires_grad=True)
        h = a * b
        h.register_hook(lambda g: g * h)       # a hook whose result depends on the graph
        h.retain_grad()
        (h ** 2).sum().backward(create_graph=True, inputs=[a])
        assert b.grad is None
        (a.grad.sum() + h.grad.sum()).backward()
        results.append((a.grad.detach().numpy(), b.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")   # torch's
def test_leaf_hooks_and_post_accumulate_hooks_under_create_graph():
    data = np.random.default_rng(4).standard_normal(3)
    results = []
    for module in (gd, torch):
        x = module.tensor(data, requires_grad=True)
        seen = []
        x.register_hook(lambda g: g * x)                # once, on the summed gradient
        x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.grad_fn is not None))
        y = x.sin() * x + x.exp()
        y.sum().backward(create_graph=True)
        assert seen == [True]
        first = x.grad
        x.grad = None
        g, = module.autograd.grad((first ** 2).sum(), x)
        results.append((first.detach().numpy(), g.detach().numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_grad_with_respect_to_a_computed_tensor_and_a_leaf():
    data = np.random.default_rng(10).standard_normal(3)
    results = []
    for module in (gd, torch):
        x = module.tensor(data, requires_grad=True)
        h = x.sin() * x
        gh, gx = module.autograd.grad((h ** 3).sum() + x.sum(), [h, x], create_graph=True)
        second, = module.autograd.grad((gh * gx).sum(), x)
        results.append([t.detach().numpy() for t in (gh, gx, second)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_module_full_backward_hooks_under_create_graph():
    rng = np.random.default_rng(11)
    w, data = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    results = []
    for module in (gd, torch):
        layer = module.nn.Linear(4, 3, bias=False).double()
        layer.weight.data = module.tensor(w)
        seen = []
        layer.register_full_backward_pre_hook(lambda m, g_out: (g_out[0] * 2,))
        layer.register_full_backward_hook(lambda m, g_in, g_out: seen.append(g_out[0].shape))
        x = module.tensor(data, requires_grad=True)
        gx, = module.autograd.grad(layer(x).tanh().sum(), x, create_graph=True)
        (gx ** 2).sum().backward()      # through the hooks' nodes again: they run again
        results.append((gx.detach().numpy(), x.grad.numpy(), layer.weight.grad.numpy(),
                        np.array(seen)))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_allow_unused_and_grad_outputs_that_require_grad():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    unused = gd.tensor([3.0], requires_grad=True)
    v = gd.tensor([0.5, -1.0], requires_grad=True)
    y = x * x
    with pytest.raises(RuntimeError, match="not have been used"):
        gd.autograd.grad(y, [x, unused], v, create_graph=True)
    g, none = gd.autograd.grad(y, [x, unused], v, create_graph=True, allow_unused=True)
    assert none is None
    dv, = gd.autograd.grad(g.sum(), v)              # g = 2 x v depends on v
    np.testing.assert_allclose(dv.numpy(), [2.0, 4.0])


def test_create_graph_without_retain_graph_frees_the_first_graph():
    x = gd.tensor([0.5, 1.5], requires_grad=True)
    y = x.exp().sum()
    gd.autograd.grad(y, x, create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        gd.autograd.grad(y, x)


def test_unsupported_op_is_refused_by_name_before_anything_runs():
    data = np.random.default_rng(6).standard_normal((2, 3))
    x, tx = gd.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)

    def loss(module, F_, x):
        return F_.ctc_loss(x.reshape(2, 1, 3).log_softmax(2), module.tensor([[1]]),
                           module.tensor([2]), module.tensor([1])) + (x * x).sum()
    y = loss(gd, F, x)
    with pytest.raises(NotImplementedError, match="create_graph=True: CTCLossNode has no "):
        gd.autograd.grad(y, x, create_graph=True)
    with pytest.raises(NotImplementedError, match="CTCLossNode"):
        y.backward(create_graph=True)
    assert x.grad is None
    y.backward()                                    # nothing was freed by the refusals
    loss(torch, TF, tx).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


_HALVES = gd.tensor([0.5, 0.5, 0.5])


def _bce_weighted_by(x):
    """binary_cross_entropy with a weight that requires grad (no graph backward for it)."""
    return F.binary_cross_entropy(x.sigmoid(), _HALVES, weight=x.exp(), reduction="sum")


@pytest.mark.parametrize("make", [
    lambda x: F.gelu(x, approximate="tanh").sum(),
    _bce_weighted_by,
    lambda x: F.l1_loss(x.exp(), _HALVES) + _bce_weighted_by(x),
    lambda x: gd.zeros(2).scatter_reduce(0, gd.tensor([0, 1, 0]), x * (x > 0), "prod").sum()])
def test_unsupported_cases_of_supported_ops_are_refused_up_front(make):
    """The refusal comes before any node runs: nothing accumulated, nothing freed."""
    x = gd.tensor([0.2, -0.4, 0.9], requires_grad=True)
    y = make(x * 1)
    with pytest.raises(NotImplementedError,
                       match="create_graph=True: (gelu|a loss weight|scatter_reduce)"):
        y.backward(create_graph=True)
    assert x.grad is None
    y.backward()


# ----------------------------------------------------------------- autograd.functional
def _mlp_loss(module, F_, x, t):
    def loss(w1, w2):
        return F_.mse_loss(F_.linear(F_.softplus(F_.linear(x, w1)), w2), t)
    return loss


@pytest.mark.parametrize("name", ["vjp", "vhp", "hvp", "jacobian", "hessian"])
def test_autograd_functional_matches_torch(name):
    rng = np.random.default_rng(12)
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    weights = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    vectors = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    u = rng.standard_normal((5, 4))
    results = []
    for module, F_ in ((gd, F), (torch, TF)):
        fn = _mlp_loss(module, F_, module.tensor(x), module.tensor(t))
        ws = tuple(module.tensor(w) for w in weights)
        vs = tuple(module.tensor(v) for v in vectors)
        functional = module.autograd.functional
        if name == "vjp":
            out = functional.vjp(lambda w: F_.linear(module.tensor(x), w).tanh(), ws[0],
                                 module.tensor(u))
        elif name in ("vhp", "hvp"):
            out = getattr(functional, name)(fn, ws, vs)
        elif name == "jacobian":
            out = functional.jacobian(lambda w1: F_.linear(F_.linear(module.tensor(x), w1)
                                                           .tanh(), ws[1]), ws[0])
        else:
            out = functional.hessian(fn, ws)
        results.append(out)
    flat = lambda o: [o] if not isinstance(o, tuple) else [u for p in o for u in flat(p)]  # noqa
    ours, theirs = flat(results[0]), flat(results[1])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_autograd_functional_create_graph_and_strict():
    x = gd.tensor([0.3, -0.7], requires_grad=True)
    unused = gd.tensor([1.0], requires_grad=True)
    hess = gd.autograd.functional.hessian(lambda x: (x ** 4).sum(), x, create_graph=True)
    assert hess.grad_fn is not None
    d, = gd.autograd.grad(hess.sum(), x)          # d/dx of 12 x^2 on the diagonal
    np.testing.assert_allclose(d.numpy(), 24 * x.detach().numpy())
    _, (gx, gu) = gd.autograd.functional.vjp(lambda a, b: (a * a).sum(), (x, unused))
    np.testing.assert_allclose(gu.numpy(), [0.0])
    with pytest.raises(RuntimeError, match="strict"):
        gd.autograd.functional.vjp(lambda a, b: (a * a).sum(), (x, unused), strict=True)


def test_gradient_penalty_on_the_dcgan_discriminator_matches_torch():
    """gpudl.models' DCGAN critic (conv, LeakyReLU, batch norm, linear) and its torch twin."""
    from gpudl.models.gan import DCGANDiscriminator
    ours = DCGANDiscriminator(image_size=8, channels=1, base_channels=4).double()
    nn = torch.nn
    theirs = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2),
                           nn.Conv2d(4, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8),
                           nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(32, 1)).double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in
                            zip(theirs.state_dict(), ours.state_dict().values())})
    rng = np.random.default_rng(13)
    real, fake = rng.standard_normal((3, 1, 8, 8)), rng.standard_normal((3, 1, 8, 8))
    mixed = rng.random((3, 1, 1, 1)) * (real - fake) + fake
    for module, critic in ((gd, ours), (torch, theirs)):
        x = module.tensor(mixed, requires_grad=True)
        grad, = module.autograd.grad(critic(x).sum(), x, create_graph=True)
        ((grad.reshape(3, -1).norm(2, dim=1) - 1) ** 2).mean().backward()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        # torch gives the batch norm's bias a zero gradient where gpudl leaves None; the
        # penalty does not depend on the last bias (None in both)
        got = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        expected = np.zeros(p.shape) if tp.grad is None else tp.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)
    assert ours.features[0].weight.grad is not None


@pytest.mark.parametrize("name", ["tanh", "pow_tensor", "sigmoid", "log_softmax"])
def test_third_derivatives_match_torch(name):
    ours, theirs, shapes, positive = CASES[name]
    rng = np.random.default_rng(14)
    arrays = [rng.standard_normal(s) for s in shapes]
    arrays = [np.abs(a) + 0.5 for a in arrays] if positive else arrays
    results = []
    for module, fn, xs in ((gd, ours, _pair(arrays)[0]), (torch, theirs, _pair(arrays)[1])):
        y = fn(*xs).sum()
        g = module.autograd.grad(y, xs, create_graph=True)
        h = module.autograd.grad(sum((u * u).sum() for u in g), xs, create_graph=True)
        third = module.autograd.grad(sum((u ** 3).sum() for u in h), xs)
        results.append([t.detach().numpy() for t in third])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_maml_inner_step_on_a_conv_net_matches_torch():
    """MAML's Omniglot block (conv, batch norm in training mode, relu, max pool) and a linear
    head: one inner step, the query loss differentiated back to the initial weights."""
    rng = np.random.default_rng(15)
    shapes = [(4, 1, 3, 3), (4,), (4,), (4,), (3, 4 * 3 * 3), (3,)]
    params = [rng.standard_normal(s) * 0.5 for s in shapes]
    xs, ys = rng.standard_normal((6, 1, 6, 6)), rng.integers(0, 3, 6)
    xq, yq = rng.standard_normal((5, 1, 6, 6)), rng.integers(0, 3, 5)
    results = []
    for module, F_ in ((gd, F), (torch, TF)):
        ps = [module.tensor(p, requires_grad=True) for p in params]

        def net(weights, x):
            w, b, gamma, beta, head_w, head_b = weights
            h = F_.conv2d(x, w, b, padding=1)
            h = F_.max_pool2d(F_.relu(F_.batch_norm(h, None, None, gamma, beta, True)), 2)
            return F_.linear(h.reshape(h.shape[0], -1), head_w, head_b)
        support = F_.cross_entropy(net(ps, module.tensor(xs)), module.tensor(ys))
        grads = module.autograd.grad(support, ps, create_graph=True)
        adapted = [p - 0.3 * g for p, g in zip(ps, grads)]
        F_.cross_entropy(net(adapted, module.tensor(xq)), module.tensor(yq)).backward()
        results.append([p.grad.numpy() for p in ps])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)
