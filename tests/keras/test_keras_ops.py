"""gpudl.keras.ops, random and backend: values against float64 NumPy (Keras's ops are NumPy's
semantics), gradients against the same expression in PyTorch, Keras's dtype rules and
argument names."""

import numpy as np
import pytest

import gpudl as gd
from gpudl.keras import backend, ops
from gpudl.keras import random as krandom
from oracle import torch


def _t64(x, grad=False):
    return gd.tensor(np.asarray(x, np.float64), requires_grad=grad)


UNARY = [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("square", np.square),
         ("abs", np.abs), ("log1p", np.log1p), ("expm1", np.expm1), ("sin", np.sin),
         ("cos", np.cos), ("negative", np.negative), ("reciprocal", np.reciprocal),
         ("sign", np.sign), ("floor", np.floor), ("ceil", np.ceil)]


@pytest.mark.parametrize("name,reference", UNARY, ids=[u[0] for u in UNARY])
def test_unary_ops_match_numpy(rng, name, reference):
    x = rng.uniform(0.2, 3.0, (3, 4)) * rng.choice([-1, 1], (3, 4))
    if name in ("log", "sqrt", "log1p"):
        x = np.abs(x)
    np.testing.assert_allclose(getattr(ops, name)(_t64(x)).numpy(), reference(x), rtol=1e-12)


REDUCTIONS = [("sum", np.sum), ("mean", np.mean), ("max", np.max), ("min", np.min),
              ("prod", np.prod), ("var", np.var), ("std", np.std)]


@pytest.mark.parametrize("name,reference", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@pytest.mark.parametrize("axis", [None, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_match_numpy(rng, name, reference, axis, keepdims):
    x = rng.uniform(0.5, 1.5, (2, 3, 4))
    out = getattr(ops, name)(_t64(x), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), reference(x, axis=axis, keepdims=keepdims),
                               rtol=1e-12)


def test_arg_reductions_flatten_without_axis_and_give_int32(rng):
    x = rng.standard_normal((3, 5))
    assert ops.argmax(x).dtype == np.int32
    assert int(ops.argmax(x)) == np.argmax(x) and int(ops.argmin(x)) == np.argmin(x)
    np.testing.assert_array_equal(ops.argmax(x, axis=0).numpy(), np.argmax(x, 0))
    np.testing.assert_array_equal(ops.argmin(x, axis=1, keepdims=True).numpy(),
                                  np.argmin(x, 1, keepdims=True))


def test_binary_and_comparison_ops_broadcast_as_numpy(rng):
    a, b = rng.standard_normal((3, 1, 4)), rng.standard_normal((2, 4))
    for name, reference in [("add", np.add), ("subtract", np.subtract),
                            ("multiply", np.multiply), ("divide", np.divide),
                            ("maximum", np.maximum), ("minimum", np.minimum),
                            ("greater", np.greater), ("less_equal", np.less_equal),
                            ("equal", np.equal), ("not_equal", np.not_equal)]:
        np.testing.assert_allclose(getattr(ops, name)(_t64(a), _t64(b)).numpy(),
                                   reference(a, b), rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(ops.power(_t64(np.abs(a)), 1.5).numpy(), np.abs(a) ** 1.5)
    assert ops.divide(np.arange(4), 2).dtype == np.float32          # Keras: ints -> float
    np.testing.assert_array_equal(
        ops.logical_and(a > 0, a < 1).numpy(), np.logical_and(a > 0, a < 1))
    np.testing.assert_array_equal(ops.logical_not(a > 0).numpy(), a <= 0)


def test_gradients_flow_through_ops_as_in_torch(rng):
    """One expression over many ops, its gradient against torch's (float64)."""
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    ga, gb = _t64(a, True), _t64(b, True)
    out = ops.sum(ops.logsumexp(ops.matmul(ops.tanh(ga), gb), axis=1) *
                  ops.mean(ops.square(ga), axis=1)) + \
        ops.sum(ops.take(ops.softmax(gb, axis=0), [0, 2], axis=1)) + \
        ops.sum(ops.clip(ops.einsum("ij,jk->ik", ga, gb), -0.5, 0.5)) + \
        ops.norm(ops.concatenate([ga, ops.transpose(gb)], axis=0)) + \
        ops.sum(ops.where(ga > 0, ga, ops.zeros_like(ga)) * ops.expand_dims(ops.max(ga, 1), 1))
    out.backward()
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    expected = (torch.logsumexp(torch.tanh(ta) @ tb, 1) * (ta ** 2).mean(1)).sum() + \
        torch.softmax(tb, 0)[:, [0, 2]].sum() + torch.clip(ta @ tb, -0.5, 0.5).sum() + \
        torch.linalg.norm(torch.cat([ta, tb.T])) + \
        (torch.where(ta > 0, ta, 0 * ta) * ta.max(1).values[:, None]).sum()
    expected.backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ga.grad.numpy(), ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb.grad.numpy(), tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_stop_gradient_cuts_the_graph(rng):
    x = _t64(rng.standard_normal(3), True)
    (ops.stop_gradient(x) * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x.numpy())


def test_shape_ops_match_numpy(rng):
    x = rng.standard_normal((2, 3, 4))
    t = _t64(x)
    checks = [(ops.reshape(t, (4, -1)), x.reshape(4, -1)),
              (ops.transpose(t), x.transpose()), (ops.transpose(t, (1, 0, 2)),
                                                  x.transpose(1, 0, 2)),
              (ops.expand_dims(t, -1), x[..., None]), (ops.expand_dims(t, (0, 2)),
                                                       np.expand_dims(x, (0, 2))),
              (ops.squeeze(t[:, :1], axis=1), x[:, 0]), (ops.stack([t, t], axis=1),
                                                        np.stack([x, x], 1)),
              (ops.tile(t, (1, 2, 1)), np.tile(x, (1, 2, 1))), (ops.repeat(t, 2, axis=1),
                                                                 np.repeat(x, 2, 1)),
              (ops.repeat(t, 2), np.repeat(x, 2)), (ops.take(t, [[0, -1]], axis=2),
                                                     np.take(x, [[0, -1]], 2)),
              (ops.take(t, [5, 1]), np.take(x, [5, 1])), (ops.cumsum(t), np.cumsum(x)),
              (ops.cumsum(t, axis=1), np.cumsum(x, 1)), (ops.sort(t, axis=1), np.sort(x, 1)),
              (ops.argsort(t), np.argsort(x)), (ops.flip(t, 1), np.flip(x, 1)),
              (ops.take_along_axis(t, np.argsort(x, 2), axis=2), np.sort(x, 2)),
              (ops.roll(t, 2), np.roll(x, 2))]
    for out, expected in checks:
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    for got, expected in zip(ops.split(t, [1, 3], axis=1), np.split(x, [1, 3], axis=1)):
        np.testing.assert_allclose(got.numpy(), expected)
    assert [p.shape for p in ops.split(t, 2, axis=2)] == [(2, 3, 2)] * 2
    with pytest.raises(ValueError, match="indices_or_sections"):
        ops.split(t, 2, axis=1)
    with pytest.raises(ValueError, match="axis 1 has size 3"):
        ops.squeeze(t, axis=1)
    assert ops.shape(t) == (2, 3, 4)


def test_top_k_one_hot_dot_and_norms(rng):
    x = rng.standard_normal((3, 6))
    values, indices = ops.top_k(x, 2)
    np.testing.assert_allclose(values.numpy(), -np.sort(-x, 1)[:, :2])
    assert indices.dtype == np.int32
    labels = np.array([[0, 3], [2, 9]])
    np.testing.assert_array_equal(ops.one_hot(labels, 4).numpy(),
                                  np.eye(5)[np.where(labels < 4, labels, 4)][..., :4])
    assert ops.one_hot(labels, 4, axis=0).shape == (4, 2, 2)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4, 2))
    np.testing.assert_allclose(ops.dot(_t64(a), _t64(b)).numpy(), np.dot(a, b), rtol=1e-12)
    np.testing.assert_allclose(ops.dot(_t64(a[0]), _t64(b[0])).numpy(), a[0] @ b[0])
    for order in (None, 1, np.inf):
        np.testing.assert_allclose(ops.norm(_t64(x), ord=order, axis=1).numpy(),
                                   np.linalg.norm(x, ord=order, axis=1), rtol=1e-12)
    np.testing.assert_allclose(ops.norm(_t64(x)).numpy(), np.linalg.norm(x), rtol=1e-12)


def test_creation_follows_keras_dtypes():
    assert ops.arange(5).dtype == np.int32 and ops.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_allclose(ops.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5))
    np.testing.assert_allclose(ops.linspace(0, 1, 4, endpoint=False).numpy(),
                               np.linspace(0, 1, 4, endpoint=False))
    np.testing.assert_array_equal(ops.eye(3, 4, k=1).numpy(), np.eye(3, 4, 1))
    assert ops.ones((2, 3)).dtype == np.float32 and ops.zeros(4, dtype="int32").dtype == np.int32
    assert ops.convert_to_tensor(3).dtype == np.int32
    assert ops.convert_to_tensor([1.0, 2.0]).dtype == np.float32
    assert ops.convert_to_tensor(np.zeros(2)).dtype == np.float64        # arrays keep theirs
    assert ops.cast(np.ones(2), "float16").dtype == np.float16
    assert isinstance(ops.convert_to_numpy(ops.ones(2)), np.ndarray)


def test_nn_ops_match_torch(rng):
    x = rng.standard_normal((3, 5))
    tx = torch.tensor(x)
    F = torch.nn.functional
    pairs = [(ops.relu, F.relu), (ops.sigmoid, torch.sigmoid), (ops.silu, F.silu),
             (ops.softplus, F.softplus), (ops.log_sigmoid, F.logsigmoid),
             (ops.softsign, F.softsign), (lambda v: ops.softmax(v, axis=0),
                                          lambda v: torch.softmax(v, 0)),
             (ops.log_softmax, lambda v: torch.log_softmax(v, -1)),
             (ops.gelu, lambda v: F.gelu(v, approximate="tanh")),
             (lambda v: ops.gelu(v, approximate=False), F.gelu),
             (ops.leaky_relu, lambda v: F.leaky_relu(v, 0.2)), (ops.elu, F.elu)]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours(_t64(x)).numpy(), theirs(tx).numpy(), rtol=1e-12,
                                   atol=1e-15)


def test_control_flow():
    assert ops.cond(ops.convert_to_tensor(True), lambda: 1, lambda: 2) == 1
    assert ops.while_loop(lambda i, s: i < 4, lambda i, s: (i + 1, s + i), (0, 0)) == (4, 6)
    assert ops.while_loop(lambda i: i < 100, lambda i: i + 1, 0, maximum_iterations=5) == 5
    assert ops.fori_loop(0, 4, lambda i, v: v * 2, 1) == 16
    carry, ys = ops.scan(lambda c, x: (c + x, c * x), 0.0, np.arange(4.0))
    assert float(carry) == 6.0 and ys.numpy().tolist() == [0.0, 0.0, 2.0, 9.0]


def test_random_seeds_repeat_and_differ():
    a, b = krandom.normal((3, 4), seed=7), krandom.normal((3, 4), seed=7)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    seeds = krandom.SeedGenerator(1)
    first, second = krandom.uniform((5,), seed=seeds), krandom.uniform((5,), seed=seeds)
    assert not np.array_equal(first.numpy(), second.numpy())
    u = krandom.uniform((20000,), minval=-2, maxval=3, seed=1).numpy()
    assert u.min() >= -2 and u.max() < 3 and abs(u.mean() - 0.5) < 0.05
    n = krandom.normal((20000,), mean=1.0, stddev=2.0, seed=2).numpy()
    assert abs(n.mean() - 1.0) < 0.06 and abs(n.std() - 2.0) < 0.06
    t = krandom.truncated_normal((20000,), stddev=0.5, seed=3).numpy()
    assert np.abs(t).max() <= 1.0
    r = krandom.randint((1000,), 2, 5, seed=4).numpy()
    assert r.dtype == np.int32 and set(r.tolist()) == {2, 3, 4}
    kept = krandom.dropout(np.ones((100, 100), np.float32), 0.25, seed=5).numpy()
    assert set(np.unique(kept).tolist()) <= {0.0, float(np.float32(1) / np.float32(0.75))}
    assert abs((kept == 0).mean() - 0.25) < 0.02
    shuffled = krandom.shuffle(np.arange(50), seed=6).numpy()
    assert sorted(shuffled.tolist()) == list(range(50)) and shuffled.tolist() != list(range(50))
    draws = krandom.categorical(np.log([[0.2, 0.8]]), 4000, seed=8).numpy()
    assert abs(draws.mean() - 0.8) < 0.03
    with pytest.raises(TypeError, match="seed"):
        krandom.normal((2,), seed=1.5)
    with pytest.raises(ValueError, match="rate"):
        krandom.dropout(np.ones(3), 1.0)


def test_backend_settings():
    assert backend.epsilon() == 1e-7 and backend.floatx() == "float32"
    assert backend.image_data_format() == "channels_last"
    assert backend.standardize_dtype(np.float64) == "float64"
    assert backend.standardize_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="set_floatx"):
        backend.set_floatx("float8")
    backend.set_epsilon(1e-3)
    try:
        from gpudl.keras import losses
        p = gd.tensor([[0.0, 1.0]])
        # the clip follows the epsilon: -log(1e-3) for the zero probability
        assert float(losses.binary_crossentropy(gd.tensor([[1.0, 1.0]]), p)) == \
            pytest.approx(-(np.log(1e-3) + np.log(1 - 1e-3)) / 2, rel=1e-5)
    finally:
        backend.set_epsilon(1e-7)
    backend.set_floatx("float64")
    try:
        from gpudl.keras import layers
        assert layers.Dense(2)(gd.ones(1, 3)).dtype == np.float64
        assert ops.ones(2).dtype == np.float64
    finally:
        backend.set_floatx("float32")
