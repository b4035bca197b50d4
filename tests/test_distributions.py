"""gpudl.distributions against torch.distributions (torch 2.13 CPU): Categorical from probs and
from logits, Normal, kl_divergence; values and gradients in float64 on fresh random parameters;
draws checked by their shapes and frequencies (the generators differ)."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read

torch = pytest.importorskip("torch")


def _values_and_grads(lib, build, *arrays):
    params = [lib.tensor(a, requires_grad=True) for a in arrays]
    outputs = build(lib, *params)
    sum(o.sum() for o in outputs).backward()
    return [o.detach().numpy() for o in outputs] + [p.grad.numpy() for p in params]


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_categorical_log_prob_entropy_probs(kind, rng):
    weights = rng.uniform(0.05, 1, (3, 5)) if kind == "probs" else rng.standard_normal((3, 5))
    value = rng.integers(0, 5, (4, 3))

    def build(lib, w):
        dist = lib.distributions.Categorical(**{kind: w})
        return dist.log_prob(lib.tensor(value)), dist.entropy(), dist.probs, dist.logits

    for ours, theirs in zip(_values_and_grads(gd, build, weights),
                            _values_and_grads(torch, build, weights)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_categorical_sample_shapes_and_frequencies():
    probs = gd.tensor([[0.1, 0.6, 0.3], [0.5, 0.0, 0.5]], dtype=gd.float64)
    dist = gd.distributions.Categorical(probs)
    assert tuple(dist.sample().shape) == (2,)
    draws = dist.sample((3000,)).numpy()
    assert draws.shape == (3000, 2) and draws.dtype == np.int64
    np.testing.assert_allclose([np.mean(draws[:, 0] == k) for k in range(3)], [0.1, 0.6, 0.3],
                               atol=0.04)
    assert not (draws[:, 1] == 1).any()


def test_normal_and_kl_divergence(rng):
    loc, scale = rng.standard_normal((2, 3)), rng.uniform(0.3, 2, (2, 3))
    value, other = rng.standard_normal((4, 2, 3)), rng.uniform(0.5, 1.5, 3)

    def build(lib, m, s):
        dist = lib.distributions.Normal(m, s)
        prior = lib.distributions.Normal(0.5, lib.tensor(other))
        kl = lib.distributions.kl_divergence(dist, prior)
        return dist.log_prob(lib.tensor(value)), dist.entropy(), kl, dist.variance

    for ours, theirs in zip(_values_and_grads(gd, build, loc, scale),
                            _values_and_grads(torch, build, loc, scale)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    m, s = gd.tensor(loc, requires_grad=True), gd.tensor(scale, requires_grad=True)
    draws = gd.distributions.Normal(m, s).rsample((5,))
    assert tuple(draws.shape) == (5, 2, 3)
    draws.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), np.full((2, 3), 5.0))
    np.testing.assert_allclose(s.grad.numpy(), ((draws.detach() - m.detach()) / s.detach())
                               .sum(0).numpy(), rtol=1e-12)
    assert not gd.distributions.Normal(m, s).sample().requires_grad


def test_bad_parameters_are_refused():
    D = gd.distributions
    with pytest.raises(ValueError, match="either `probs` or `logits` must be specified"):
        D.Categorical(probs=gd.ones(3), logits=gd.ones(3))
    with pytest.raises(ValueError, match="probs must be non-negative"):
        call_then_read(D.Categorical, probs=gd.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match=r"within the support \(IntegerInterval\(lower_bound=0, "
                                         r"upper_bound=1\)\)"):
        call_then_read(D.Categorical(probs=gd.tensor([0.5, 0.5])).log_prob, gd.tensor([2]))
    with pytest.raises(ValueError, match=r"Expected parameter scale .* to satisfy the "
                                         r"constraint GreaterThan\(lower_bound=0.0\)"):
        call_then_read(D.Normal, 0.0, gd.tensor([1.0, 0.0]))
    with pytest.raises(NotImplementedError, match="no KL.* for p Categorical and q Normal"):
        D.kl_divergence(D.Categorical(logits=gd.ones(2)), D.Normal(0.0, 1.0))
