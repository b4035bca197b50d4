"""gd.distributions' families against torch.distributions (torch 2.13 CPU) with the same
parameters, fresh random ones each test: log_prob, entropy, mean/mode/variance/stddev, cdf and
icdf, with the gradients of their weighted sum for every parameter (float64); draws' means and
variances within a few standard errors (a fixed seed; the generators differ from torch's);
rsample gradients (Gamma's against torch's _standard_gamma_grad at the same draws, the others'
means against the gradient of the mean); kl_divergence; validation errors; expand;
TransformedDistribution and the transforms."""

import math

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read

torch = pytest.importorskip("torch")
TD = torch.distributions
GD = gd.distributions


def _pos(rng, shape=(2, 3), low=0.5, high=3.0):
    return rng.uniform(low, high, shape)


def _simplex(rng, shape=(2, 4)):
    p = rng.uniform(0.1, 1, shape)
    return p / p.sum(-1, keepdims=True)


# name -> (params(rng), value(rng, params), methods): parameters are keyword arguments of both
# libraries' constructors; value lies in the support
CASES = {
    "Normal": (lambda r: dict(loc=r.standard_normal((2, 3)), scale=_pos(r)),
               lambda r, p: r.standard_normal((4, 2, 3)),
               "log_prob entropy mean mode variance stddev cdf icdf"),
    "Exponential": (lambda r: dict(rate=_pos(r)), lambda r, p: _pos(r, (4, 2, 3), 0.01, 4),
                    "log_prob entropy mean mode variance cdf icdf"),
    "Uniform": (lambda r: dict(low=-_pos(r), high=_pos(r)),
                lambda r, p: r.uniform(-0.4, 0.4, (4, 2, 3)),
                "log_prob entropy mean variance cdf icdf"),
    "Laplace": (lambda r: dict(loc=r.standard_normal((2, 3)), scale=_pos(r)),
                lambda r, p: r.standard_normal((4, 2, 3)) * 3,
                "log_prob entropy mean mode variance stddev cdf icdf"),
    "Gumbel": (lambda r: dict(loc=r.standard_normal((2, 3)), scale=_pos(r)),
               lambda r, p: r.standard_normal((4, 2, 3)),
               "log_prob entropy mean mode variance cdf icdf"),
    "Cauchy": (lambda r: dict(loc=r.standard_normal((2, 3)), scale=_pos(r)),
               lambda r, p: r.standard_normal((4, 2, 3)) * 3,
               "log_prob entropy mean mode variance"),
    "HalfNormal": (lambda r: dict(scale=_pos(r)), lambda r, p: _pos(r, (4, 2, 3), 0.01, 4),
                   "log_prob entropy mean variance cdf icdf"),
    "HalfCauchy": (lambda r: dict(scale=_pos(r)), lambda r, p: _pos(r, (4, 2, 3), 0.01, 4),
                   "log_prob entropy mean variance"),
    "LogNormal": (lambda r: dict(loc=r.standard_normal((2, 3)) * 0.5, scale=_pos(r, low=0.3,
                                                                                 high=1)),
                  lambda r, p: _pos(r, (4, 2, 3), 0.05, 5),
                  "log_prob entropy mean mode variance cdf icdf"),
    "Pareto": (lambda r: dict(scale=_pos(r), alpha=_pos(r, low=0.5, high=4)),
               lambda r, p: p["scale"] + _pos(r, (4, 2, 3), 0.01, 5),
               "log_prob entropy mean mode variance cdf icdf"),
    "Weibull": (lambda r: dict(scale=_pos(r), concentration=_pos(r, low=1.2, high=4)),
                lambda r, p: _pos(r, (4, 2, 3), 0.05, 5),
                "log_prob entropy mean mode variance cdf icdf"),
    "StudentT": (lambda r: dict(df=_pos(r, low=0.5, high=6), loc=r.standard_normal((2, 3)),
                                scale=_pos(r)),
                 lambda r, p: r.standard_normal((4, 2, 3)) * 3,
                 "log_prob entropy mean mode variance"),
    "Gamma": (lambda r: dict(concentration=_pos(r, low=0.3, high=5), rate=_pos(r)),
              lambda r, p: _pos(r, (4, 2, 3), 0.01, 6), "log_prob entropy mean mode variance"),
    "Chi2": (lambda r: dict(df=_pos(r, low=0.5, high=8)), lambda r, p: _pos(r, (4, 2, 3), 0.01, 9),
             "log_prob entropy mean mode variance"),
    "Beta": (lambda r: dict(concentration1=_pos(r, low=1.1), concentration0=_pos(r, low=1.1)),
             lambda r, p: r.uniform(0.01, 0.99, (4, 2, 3)), "log_prob entropy mean mode variance"),
    "Dirichlet": (lambda r: dict(concentration=_pos(r, (2, 4), low=1.1)),
                  lambda r, p: _simplex(r, (5, 2, 4)), "log_prob entropy mean mode variance"),
    "Bernoulli": (lambda r: dict(probs=r.uniform(0.05, 0.95, (2, 3))),
                  lambda r, p: r.integers(0, 2, (4, 2, 3)).astype(float),
                  "log_prob entropy mean mode variance"),
    "Bernoulli logits": (lambda r: dict(logits=r.standard_normal((2, 3)) * 2),
                         lambda r, p: r.integers(0, 2, (4, 2, 3)).astype(float),
                         "log_prob entropy mean variance"),
    "Geometric": (lambda r: dict(probs=r.uniform(0.05, 0.95, (2, 3))),
                  lambda r, p: r.integers(0, 10, (4, 2, 3)).astype(float),
                  "log_prob entropy mean mode variance"),
    "Poisson": (lambda r: dict(rate=_pos(r, low=0.5, high=10)),
                lambda r, p: r.integers(0, 15, (4, 2, 3)).astype(float),
                "log_prob mean mode variance"),
    "Binomial": (lambda r: dict(total_count=r.integers(1, 20, (2, 3)).astype(float),
                                probs=r.uniform(0.05, 0.95, (2, 3))),
                 lambda r, p: np.floor(r.uniform(0, 1, (4, 2, 3)) * (p["total_count"] + 1)),
                 "log_prob mean mode variance"),
    "Binomial n": (lambda r: dict(total_count=np.full((2, 3), 7.0),
                                  probs=r.uniform(0.05, 0.95, (2, 3))),
                   lambda r, p: r.integers(0, 8, (4, 2, 3)).astype(float), "entropy"),
    "Dirichlet small": (lambda r: dict(concentration=np.concatenate(   # row 0: all below 1
        [_pos(r, (1, 4), low=0.1, high=0.9), _pos(r, (2, 4), low=0.1, high=3)])),
                        lambda r, p: _simplex(r, (5, 3, 4)), "log_prob"),
    "Categorical": (lambda r: dict(probs=_simplex(r)),
                    lambda r, p: r.integers(0, 4, (5, 2)), "log_prob entropy"),
    "OneHotCategorical": (lambda r: dict(logits=r.standard_normal((2, 4))),
                          lambda r, p: np.eye(4)[r.integers(0, 4, (5, 2))],
                          "log_prob entropy mean mode variance"),
    "Multinomial": (lambda r: dict(total_count=6, probs=_simplex(r)),
                    lambda r, p: np.stack([r.multinomial(6, q, 5) for q in p["probs"]], 1)
                    .astype(float), "log_prob mean variance"),
    "NegativeBinomial": (lambda r: dict(total_count=_pos(r, low=0.5, high=9),
                                        probs=r.uniform(0.05, 0.9, (2, 3))),
                         lambda r, p: r.integers(0, 15, (4, 2, 3)).astype(float),
                         "log_prob mean mode variance"),
    "VonMises": (lambda r: dict(loc=r.uniform(-3, 3, (2, 3)), concentration=_pos(r, high=20)),
                 lambda r, p: r.uniform(-math.pi, math.pi, (4, 2, 3)),
                 "log_prob mean mode variance"),
    "RelaxedBernoulli": (lambda r: dict(temperature=_pos(r, (3,)),
                                        probs=r.uniform(0.05, 0.95, (2, 3))),
                         lambda r, p: r.uniform(0.02, 0.98, (4, 2, 3)), "log_prob"),
    "RelaxedOneHotCategorical": (lambda r: dict(temperature=np.asarray(r.uniform(0.3, 2)),
                                                logits=r.standard_normal((2, 4))),
                                 lambda r, p: _simplex(r, (5, 2, 4)), "log_prob"),
    "LogisticNormal": (lambda r: dict(loc=r.standard_normal((2, 3)), scale=_pos(r)),
                       lambda r, p: _simplex(r, (5, 2, 4)), "log_prob"),
}
DISCRETE = {"total_count"}        # not differentiated
# torch's VonMises takes log I0 and I1 from polynomial approximations (1e-5 where the variance
# is small: test_von_mises_against_scipy checks ours to 1e-12)
RTOL = {"VonMises": 3e-5}


def _family(name):
    return name.split()[0]


def _build(lib, name, params):
    tensors = {k: (lib.tensor(v, requires_grad=k not in DISCRETE) if isinstance(v, np.ndarray)
                   else v) for k, v in params.items()}
    family = getattr(lib.distributions, _family(name))
    return family(**tensors), tensors


def _outputs(lib, name, params, value, methods, rng_u):
    dist, tensors = _build(lib, name, params)
    out = {}
    for method in methods.split():
        if method in ("log_prob", "cdf"):
            out[method] = getattr(dist, method)(lib.tensor(value))
        elif method == "icdf":
            out[method] = dist.icdf(lib.tensor(rng_u))
        elif method == "entropy":
            out[method] = dist.entropy()
        else:
            out[method] = getattr(dist, method)
    return out, tensors


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch(name, rng):
    make_params, make_value, methods = CASES[name]
    params = make_params(rng)
    value = make_value(rng, params)
    u = rng.uniform(0.02, 0.98, (4, 2, 3))
    ours, g_params = _outputs(gd, name, params, value, methods, u)
    theirs, t_params = _outputs(torch, name, params, value, methods, u)
    weights = {}
    for method in ours:
        a, b = ours[method].detach().numpy(), theirs[method].detach().numpy()
        assert a.shape == b.shape, (method, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=RTOL.get(name, 1e-10), atol=1e-12,
                                   equal_nan=True, err_msg=f"{name}.{method}")
        if ours[method].requires_grad and np.isfinite(b).all():
            weights[method] = rng.standard_normal(b.shape)
    if not weights:
        return
    sum((ours[m] * gd.tensor(w)).sum() for m, w in weights.items()).backward()
    sum((theirs[m] * torch.tensor(w)).sum() for m, w in weights.items()).backward()
    for key, g in g_params.items():
        if isinstance(g, gd.Tensor) and g.requires_grad:
            # 1e-8: torch's trigamma (digamma's derivative) is accurate to about 5e-10
            np.testing.assert_allclose(g.grad.numpy(), t_params[key].grad.numpy(),
                                       rtol=max(RTOL.get(name, 0), 1e-8),
                                       atol=1e-12, err_msg=f"{name}: d/d{key}")


def test_dirichlet_mode_where_every_concentration_is_below_one(rng):
    """torch takes the argmax of a row of NaNs there (always the first vertex); gpudl takes
    the vertex of the largest concentration, the limit of the mode as they fall below 1."""
    c = np.stack([rng.uniform(0.1, 0.9, 4), rng.uniform(1.5, 3, 4)])
    mode = GD.Dirichlet(gd.tensor(c)).mode.numpy()
    np.testing.assert_array_equal(mode[0], np.eye(4)[c[0].argmax()])
    np.testing.assert_allclose(mode[1], TD.Dirichlet(torch.tensor(c)).mode.numpy()[1],
                               rtol=1e-14)


def test_von_mises_against_scipy(rng):
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    loc, k = rng.uniform(-3, 3, 20), rng.uniform(0.01, 50, 20)
    x = rng.uniform(-math.pi, math.pi, 20)
    dist = GD.VonMises(gd.tensor(loc), gd.tensor(k))
    np.testing.assert_allclose(dist.log_prob(gd.tensor(x)).numpy(),
                               stats.vonmises.logpdf(x, k, loc), rtol=1e-12)
    np.testing.assert_allclose(dist.variance.numpy(), 1 - special.i1e(k) / special.i0e(k),
                               rtol=1e-12)


def test_mixture_same_family_matches_torch(rng):
    logits, loc, scale = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), _pos(rng)
    value = rng.standard_normal((4, 2))
    results = []
    for lib in (gd, torch):
        D = lib.distributions
        params = [lib.tensor(a, requires_grad=True) for a in (logits, loc, scale)]
        mix = D.MixtureSameFamily(D.Categorical(logits=params[0]), D.Normal(*params[1:]))
        outs = [mix.log_prob(lib.tensor(value)), mix.mean, mix.variance,
                mix.cdf(lib.tensor(value))]
        sum(o.sum() for o in outs).backward()
        results.append([o.detach().numpy() for o in outs] + [p.grad.numpy() for p in params])
        assert tuple(mix.sample((5,)).shape) == (5, 2) and mix.batch_shape == (2,)
        vector = D.MixtureSameFamily(D.Categorical(logits=params[0]),
                                     D.Independent(D.Normal(lib.tensor(rng.standard_normal(
                                         (2, 3, 4))), 1.0), 1))
        assert tuple(vector.sample((5,)).shape) == (5, 2, 4)
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="Categorical"):
        GD.MixtureSameFamily(GD.Normal(0.0, 1.0), GD.Normal(gd.zeros(3), 1.0))


def test_relaxed_draws_are_differentiable_and_in_their_support(rng):
    gd.manual_seed(3)
    logits = gd.tensor(rng.standard_normal((2, 4)), requires_grad=True)
    draws = GD.RelaxedOneHotCategorical(gd.tensor(0.5, dtype=gd.float64),
                                        logits=logits).rsample((6,))
    assert tuple(draws.shape) == (6, 2, 4)
    np.testing.assert_allclose(draws.sum(-1).detach().numpy(), 1.0, rtol=1e-12)
    (draws[..., 0] * 3).sum().backward()
    assert np.isfinite(logits.grad.numpy()).all() and np.abs(logits.grad.numpy()).sum() > 0
    probs = gd.tensor(rng.uniform(0.1, 0.9, 3), requires_grad=True)
    soft = GD.RelaxedBernoulli(gd.tensor(0.3, dtype=gd.float64), probs=probs).rsample((4,))
    assert ((soft.detach().numpy() > 0) & (soft.detach().numpy() < 1)).all()
    soft.sum().backward()
    assert np.isfinite(probs.grad.numpy()).all()
    simplex = GD.LogisticNormal(gd.zeros(2, 3, dtype=gd.float64), 1.0).rsample((5,))
    assert tuple(simplex.shape) == (5, 2, 4)
    np.testing.assert_allclose(simplex.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_gamma_cdf_matches_torch_and_refuses_the_concentration_gradient(rng):
    c, r, x = _pos(rng, low=0.3, high=5), _pos(rng), _pos(rng, (4, 2, 3), 0.01, 6)
    ours = GD.Gamma(gd.tensor(c), gd.tensor(r)).cdf(gd.tensor(x))
    np.testing.assert_allclose(ours.numpy(), TD.Gamma(torch.tensor(c), torch.tensor(r)).cdf(
        torch.tensor(x)).numpy(), rtol=1e-8)
    concentration = gd.tensor(c, requires_grad=True)
    with pytest.raises(RuntimeError, match="derivative for 'input' is not implemented"):
        GD.Gamma(concentration, gd.tensor(r)).cdf(gd.tensor(x)).sum().backward()


# name -> (distribution, its mean, its variance), for the draws' statistics
def _moments_cases():
    return {
        "Normal": GD.Normal(gd.tensor([0.5, -2.0]), gd.tensor([1.5, 0.3])),
        "Exponential": GD.Exponential(gd.tensor([0.5, 3.0])),
        "Uniform": GD.Uniform(gd.tensor([-1.0, 2.0]), gd.tensor([1.0, 5.0])),
        "Laplace": GD.Laplace(gd.tensor([0.5, -2.0]), gd.tensor([1.5, 0.3])),
        "Gumbel": GD.Gumbel(gd.tensor([0.5, -2.0]), gd.tensor([1.5, 0.3])),
        "HalfNormal": GD.HalfNormal(gd.tensor([1.5, 0.3])),
        "LogNormal": GD.LogNormal(gd.tensor([0.1, -0.5]), gd.tensor([0.4, 0.2])),
        "Pareto": GD.Pareto(gd.tensor([1.0, 2.0]), gd.tensor([5.0, 6.0])),
        "Weibull": GD.Weibull(gd.tensor([1.0, 2.0]), gd.tensor([1.5, 3.0])),
        "StudentT": GD.StudentT(gd.tensor([5.0, 9.0]), gd.tensor([0.5, 1.0]),
                                gd.tensor([1.0, 2.0])),
        "Gamma": GD.Gamma(gd.tensor([0.4, 3.0]), gd.tensor([1.0, 2.0])),
        "Chi2": GD.Chi2(gd.tensor([1.5, 6.0])),
        "Beta": GD.Beta(gd.tensor([0.7, 3.0]), gd.tensor([2.0, 0.5])),
        "Dirichlet": GD.Dirichlet(gd.tensor([0.7, 3.0, 1.5])),
        "Bernoulli": GD.Bernoulli(gd.tensor([0.2, 0.7])),
        "Geometric": GD.Geometric(gd.tensor([0.2, 0.7])),
        "Poisson": GD.Poisson(gd.tensor([0.5, 7.0])),
        "Binomial": GD.Binomial(gd.tensor([5.0, 12.0]), gd.tensor([0.2, 0.7])),
        "OneHotCategorical": GD.OneHotCategorical(gd.tensor([0.2, 0.5, 0.3])),
        "Multinomial": GD.Multinomial(7, gd.tensor([0.2, 0.5, 0.3])),
        "NegativeBinomial": GD.NegativeBinomial(gd.tensor([2.5, 7.0]), gd.tensor([0.3, 0.6])),
        "MixtureSameFamily": GD.MixtureSameFamily(GD.Categorical(gd.tensor([0.3, 0.7])),
                                                  GD.Normal(gd.tensor([-1.0, 2.0]),
                                                            gd.tensor([0.5, 1.0]))),
    }


@pytest.mark.parametrize("name", list(_moments_cases()))
def test_draws_have_the_distributions_mean_and_variance(name):
    gd.manual_seed(1234)
    dist = _moments_cases()[name]
    n = 20000
    draws = dist.sample((n,))
    assert tuple(draws.shape) == (n,) + dist.batch_shape + dist.event_shape
    x = draws.numpy().astype(np.float64)
    mean, var = dist.mean.numpy(), dist.variance.numpy()
    assert np.isfinite(x).all() and bool(dist.support.check(draws).all())
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * np.sqrt(var / n) + 1e-12)
    # the sample variance's standard error, from the fourth central moment
    fourth = ((x - x.mean(0)) ** 4).mean(0)
    np.testing.assert_array_less(np.abs(x.var(0) - var),
                                 5 * np.sqrt(np.maximum(fourth - var ** 2, 0) / n) + 1e-12)


def test_von_mises_draws_have_its_circular_moments():
    gd.manual_seed(11)
    dist = GD.VonMises(gd.tensor([0.5, -2.0]), gd.tensor([0.7, 8.0]))
    x = dist.sample((20000,)).numpy().astype(np.float64)
    loc = np.array([0.5, -2.0])
    resultant = np.cos(x - loc).mean(0)            # E cos(x - loc) = 1 - variance
    np.testing.assert_allclose(resultant, 1 - dist.variance.numpy(), atol=0.02)
    np.testing.assert_allclose(np.sin(x - loc).mean(0), 0.0, atol=0.02)


class _GeneratorWithoutVonMises:
    """A NumPy generator that, as CuPy's, has no vonmises: VonMises draws by rejection."""

    def __init__(self, gen):
        self.random = gen.random


@pytest.mark.parametrize("loc, kappa", [(2.5, 1e-7), (-0.4, 0.3), (3.0, 2.0), (-3.1, 40.0),
                                        (1.0, 1e4)])
def test_von_mises_rejection_draws_follow_its_cdf(monkeypatch, loc, kappa):
    """The cuda device's sampler (CuPy's generator has no vonmises), run on NumPy: the
    Kolmogorov-Smirnov distance of 20,000 draws to the CDF integrated from the density (loc
    near pi: the draws wrap into [-pi, pi))."""
    real = gd.random.generator
    monkeypatch.setattr(gd.random, "generator", lambda device, source=None:
                        _GeneratorWithoutVonMises(real(device, source)))
    dist = GD.VonMises(gd.tensor([loc], dtype=gd.float32), gd.tensor([kappa], dtype=gd.float32))
    drawn = dist.sample((20000,))
    assert drawn.shape == (20000, 1) and drawn.dtype == gd.float32
    x = np.sort(drawn.numpy()[:, 0].astype(np.float64))
    assert -np.float32(math.pi) <= x[0] and x[-1] <= np.float32(math.pi)   # float32 rounding
    grid = np.linspace(-math.pi, math.pi, 400001)
    density = np.exp(kappa * (np.cos(grid - loc) - 1))
    cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2)])
    cdf /= cdf[-1]
    expected = np.interp(x, grid, cdf)
    n = len(x)
    distance = max(np.max(np.arange(1, n + 1) / n - expected), np.max(expected - np.arange(n) / n))
    assert distance < 1.8 / math.sqrt(n), distance


def test_the_same_seed_gives_the_same_draws():
    dist = GD.Gamma(gd.tensor([0.4, 3.0]), gd.tensor([1.0, 2.0]))
    gd.manual_seed(7)
    first = dist.sample((5,)).numpy()
    gd.manual_seed(7)
    np.testing.assert_array_equal(dist.sample((5,)).numpy(), first)


def test_gamma_rsample_gradient_is_the_implicit_reparameterisation_gradient(rng):
    """-(dF/dalpha) / (dF/dx) at the drawn x: against mpmath's (30 digits) to 1e-8, and torch's
    _standard_gamma_grad (an approximation, off by up to about 1e-4) to 1e-3."""
    mpmath = pytest.importorskip("mpmath")
    alpha = rng.uniform(0.1, 20, 12)
    concentration = gd.tensor(alpha, requires_grad=True)
    x = GD.Gamma(concentration, 1.0).rsample()
    x.sum().backward()
    drawn = x.detach().numpy()
    ours = concentration.grad.numpy()
    with mpmath.workdps(30):
        exact = [float(-mpmath.diff(lambda a: mpmath.gammainc(a, 0, v, regularized=True), a)
                       / (mpmath.mpf(v) ** (a - 1) * mpmath.exp(-v) / mpmath.gamma(a)))
                 for a, v in zip(alpha, drawn)]
    np.testing.assert_allclose(ours, exact, rtol=1e-8)
    theirs = torch._standard_gamma_grad(torch.tensor(alpha), torch.tensor(drawn))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-3)


# name -> (build(params), the mean as a function of params), for rsample's unbiased gradients
RSAMPLE_MEANS = {
    "Beta": (lambda a, b: GD.Beta(a, b), lambda a, b: a / (a + b)),
    "Dirichlet": (lambda a, b: GD.Dirichlet(gd.stack([a, b], -1)),
                  lambda a, b: gd.stack([a, b], -1) / (a + b).unsqueeze(-1)),
    "Chi2": (lambda a, b: GD.Chi2(a * b), lambda a, b: a * b),
    "StudentT": (lambda a, b: GD.StudentT(a + 3, b, a), lambda a, b: b + 0 * a),
    "Weibull": (lambda a, b: GD.Weibull(a, b), lambda a, b: a * (1 + 1 / b).lgamma().exp()),
    "Laplace": (lambda a, b: GD.Laplace(a, b), lambda a, b: a + 0 * b),
    "Gumbel": (lambda a, b: GD.Gumbel(a, b), lambda a, b: a + b * 0.5772156649015329),
    "LogNormal": (lambda a, b: GD.LogNormal(a * 0.2, b * 0.2),
                  lambda a, b: (a * 0.2 + (b * 0.2) ** 2 / 2).exp()),
}


@pytest.mark.parametrize("name", list(RSAMPLE_MEANS))
def test_rsample_gradients_average_to_the_gradient_of_the_mean(name):
    build, mean = RSAMPLE_MEANS[name]
    gd.manual_seed(5)
    a = gd.tensor([1.3, 2.5], dtype=gd.float64, requires_grad=True)
    b = gd.tensor([0.8, 1.7], dtype=gd.float64, requires_grad=True)
    draws = build(a, b).rsample((40000,))
    draws.mean(0).sum().backward()
    got = (a.grad.numpy(), b.grad.numpy())
    a2 = gd.tensor([1.3, 2.5], dtype=gd.float64, requires_grad=True)
    b2 = gd.tensor([0.8, 1.7], dtype=gd.float64, requires_grad=True)
    mean(a2, b2).sum().backward()
    for ours, exact in zip(got, (a2.grad.numpy(), b2.grad.numpy())):
        np.testing.assert_allclose(ours, exact, rtol=0.05, atol=0.02)


# pairs of (family, params(rng)) for kl_divergence, the same family on both sides
KL_PAIRS = ["Normal", "Cauchy", "Exponential", "Laplace", "Gumbel", "HalfNormal", "LogNormal", "Pareto",
            "Gamma", "Beta", "Dirichlet", "Bernoulli", "Geometric", "Poisson", "Categorical",
            "OneHotCategorical"]


@pytest.mark.parametrize("name", KL_PAIRS)
def test_kl_divergence_matches_torch(name, rng):
    make_params = CASES[name][0]
    p_params, q_params = make_params(rng), make_params(rng)
    if name == "Pareto":                       # q's support must hold p's
        q_params["scale"] = p_params["scale"] * 0.8

    def kl(lib):
        p, p_tensors = _build(lib, name, p_params)
        q, q_tensors = _build(lib, name, q_params)
        out = lib.distributions.kl_divergence(p, q)
        out.sum().backward()
        return out.detach().numpy(), [t.grad.numpy() for t in
                                      list(p_tensors.values()) + list(q_tensors.values())]
    (ours, ours_grads), (theirs, theirs_grads) = kl(gd), kl(torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours_grads, theirs_grads):                 # torch's trigamma: 5e-10
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_kl_of_uniforms_binomials_independents_and_registration(rng):
    low, high = -_pos(rng), _pos(rng)
    for lib in (gd, torch):
        p = lib.distributions.Uniform(lib.tensor(low * 0.5), lib.tensor(high * 0.5))
        q = lib.distributions.Uniform(lib.tensor(low), lib.tensor(high))
        value = lib.distributions.kl_divergence(p, q).numpy()
        assert np.isinf(lib.distributions.kl_divergence(q, p).numpy()).all()
        if lib is gd:
            ours = value
    np.testing.assert_allclose(ours, value, rtol=1e-12)
    loc, scale = rng.standard_normal((2, 3)), _pos(rng)
    results = []
    for lib in (gd, torch):
        D = lib.distributions
        p = D.Independent(D.Normal(lib.tensor(loc), lib.tensor(scale)), 1)
        q = D.Independent(D.Normal(lib.tensor(loc * 0.5), lib.tensor(scale * 2)), 1)
        results.append(D.kl_divergence(p, q).numpy())
    np.testing.assert_allclose(*results, rtol=1e-12)

    class Mine(GD.Normal):
        pass

    @GD.register_kl(Mine, GD.Normal)
    def _(p, q):
        return p.loc * 0 + 42.0
    mine = Mine(gd.tensor([0.0]), gd.tensor([1.0]))
    assert GD.kl_divergence(mine, GD.Normal(0.0, 1.0)).numpy()[0] == 42.0
    assert GD.kl_divergence(GD.Normal(gd.tensor([0.0]), 1.0), mine).numpy()[0] == 0.0
    with pytest.raises(NotImplementedError, match="no KL"):
        GD.kl_divergence(GD.Poisson(1.0), GD.Normal(0.0, 1.0))
    results = []                          # the same transforms on both sides: the bases' KL
    for lib in (gd, torch):
        D, T = lib.distributions, lib.distributions.transforms
        p = D.TransformedDistribution(D.Normal(lib.tensor(loc), lib.tensor(scale)),
                                      [T.AffineTransform(0.5, 2.0), T.ExpTransform()])
        q = D.TransformedDistribution(D.Normal(lib.tensor(loc * 0.3), lib.tensor(scale + 1)),
                                      [T.AffineTransform(0.5, 2.0), T.ExpTransform()])
        results.append(D.kl_divergence(p, q).numpy())
    np.testing.assert_allclose(*results, rtol=1e-12)
    T = GD.transforms
    with pytest.raises(NotImplementedError, match="same transforms"):
        GD.kl_divergence(GD.TransformedDistribution(GD.Normal(0.0, 1.0), T.ExpTransform()),
                         GD.TransformedDistribution(GD.Normal(0.0, 1.0), T.SigmoidTransform()))


def test_validation_errors_as_torch():
    with pytest.raises(ValueError, match=r"Expected parameter scale \(Tensor of shape \(2,\)\) "
                                         r"of distribution Normal.* GreaterThan"):
        call_then_read(GD.Normal, gd.tensor([0.0, 1.0]), gd.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="Expected parameter probs .* Interval"):
        call_then_read(GD.Bernoulli, probs=gd.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="either `probs` or `logits`"):
        GD.Bernoulli()
    with pytest.raises(ValueError, match="Expected value argument .* within the support "
                                         r"\(GreaterThanEq\(lower_bound=0.0\)\)"):
        call_then_read(GD.Exponential(gd.tensor([1.0])).log_prob, gd.tensor([-1.0]))
    with pytest.raises(ValueError, match="within the support"):
        call_then_read(GD.Poisson(gd.tensor([1.0])).log_prob, gd.tensor([1.5]))
    with pytest.raises(ValueError, match="within the support"):
        call_then_read(GD.Dirichlet(gd.tensor([1.0, 2.0])).log_prob, gd.tensor([0.3, 0.3]))
    with pytest.raises(ValueError, match="must match event_shape"):
        GD.Dirichlet(gd.tensor([1.0, 2.0])).log_prob(gd.tensor([0.3, 0.3, 0.4]))
    with pytest.raises(ValueError, match="low < high"):
        call_then_read(GD.Uniform, gd.tensor([1.0]), gd.tensor([0.0]))
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        GD.Independent(GD.Normal(gd.zeros(3), 1.0), 2)
    with pytest.raises(NotImplementedError, match="Bernoulli has no rsample"):
        GD.Bernoulli(gd.tensor([0.3])).rsample()
    # validate_args=False lets both through, as torch
    lp = GD.Exponential(gd.tensor([1.0]), validate_args=False).log_prob(gd.tensor([-1.0]))
    np.testing.assert_allclose(lp.numpy(), [1.0])
    GD.Normal(0.0, -1.0, validate_args=False)


def test_shapes_expand_and_repr(rng):
    dist = GD.Gamma(gd.tensor(_pos(rng, (3,))), 2.0)
    assert dist.batch_shape == (3,) and dist.event_shape == ()
    wide = dist.expand((4, 3))
    assert wide.batch_shape == (4, 3) and tuple(wide.sample((2,)).shape) == (2, 4, 3)
    np.testing.assert_allclose(wide.mean.numpy(), np.broadcast_to(dist.mean.numpy(), (4, 3)))
    dirichlet = GD.Dirichlet(gd.tensor(_pos(rng, (2, 4)))).expand((5, 2))
    assert dirichlet.batch_shape == (5, 2) and dirichlet.event_shape == (4,)
    assert tuple(dirichlet.rsample((3,)).shape) == (3, 5, 2, 4)
    independent = GD.Independent(GD.Normal(gd.zeros(2, 3), 1.0), 1)
    assert independent.batch_shape == (2,) and independent.event_shape == (3,)
    assert tuple(independent.expand((4, 2)).sample().shape) == (4, 2, 3)
    assert GD.Categorical(logits=gd.zeros(2, 3)).expand((4, 2)).batch_shape == (4, 2)
    for made in (GD.HalfNormal(gd.ones(3)), GD.LogNormal(gd.zeros(3), 1.0), GD.Chi2(gd.ones(3)),
                 GD.TransformedDistribution(GD.Normal(gd.zeros(3), 1.0),
                                            GD.transforms.ExpTransform()),
                 GD.RelaxedBernoulli(gd.tensor(0.5), gd.tensor([0.2, 0.5, 0.7]))):
        wide = made.expand((4, 3))
        assert wide.batch_shape == (4, 3) and tuple(wide.rsample((2,)).shape) == (2, 4, 3)
        assert tuple(wide.log_prob(wide.sample()).shape) == (4, 3)
    assert repr(GD.Normal(gd.zeros(2), 1.0)) == "Normal(loc: (2,), scale: (2,))"
    assert GD.Normal(0.0, 1.0).has_rsample and not GD.Poisson(1.0).has_rsample


# transform name -> (gpudl transform, torch transform, x sampler)
TRANSFORMS = {
    "Exp": (lambda m: m.distributions.transforms.ExpTransform(), lambda r: r.standard_normal(6)),
    "Affine": (lambda m: m.distributions.transforms.AffineTransform(0.5, -2.0),
               lambda r: r.standard_normal(6)),
    "Sigmoid": (lambda m: m.distributions.transforms.SigmoidTransform(),
                lambda r: r.standard_normal(6)),
    "Tanh": (lambda m: m.distributions.transforms.TanhTransform(),
             lambda r: r.standard_normal(6)),
    "Power": (lambda m: m.distributions.transforms.PowerTransform(0.5),
              lambda r: _pos(r, (6,))),
    "StickBreaking": (lambda m: m.distributions.transforms.StickBreakingTransform(),
                      lambda r: r.standard_normal((2, 3))),
    "Compose": (lambda m: m.distributions.transforms.ComposeTransform(
        [m.distributions.transforms.AffineTransform(0.3, 1.5),
         m.distributions.transforms.ExpTransform()]), lambda r: r.standard_normal(6)),
    "Independent": (lambda m: m.distributions.transforms.IndependentTransform(
        m.distributions.transforms.SigmoidTransform(), 1), lambda r: r.standard_normal((2, 3))),
    "Reshape": (lambda m: m.distributions.transforms.ReshapeTransform((2, 3), (3, 2)),
                lambda r: r.standard_normal((4, 2, 3))),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transforms_match_torch(name, rng):
    make, sample = TRANSFORMS[name]
    x = sample(rng)
    results = []
    for lib in (gd, torch):
        t = make(lib)
        xt = lib.tensor(x, requires_grad=True)
        y = t(xt)
        back = t.inv(y)
        jac = t.log_abs_det_jacobian(xt, y)
        (y.sum() + jac.sum()).backward()
        results.append([y.detach().numpy(), back.detach().numpy(), jac.detach().numpy(),
                        xt.grad.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_transformed_distribution_matches_torch(rng):
    loc, scale = rng.standard_normal(3), _pos(rng, (3,))
    value = rng.uniform(0.05, 0.95, (4, 3))
    outputs = []
    for lib in (gd, torch):
        D = lib.distributions
        T = D.transforms
        m, s = lib.tensor(loc, requires_grad=True), lib.tensor(scale, requires_grad=True)
        dist = D.TransformedDistribution(D.Normal(m, s), [T.AffineTransform(0.2, 1.3),
                                                          T.SigmoidTransform()])
        lp = dist.log_prob(lib.tensor(value))
        lp.sum().backward()
        outputs.append([lp.detach().numpy(), m.grad.numpy(), s.grad.numpy(),
                        dist.cdf(lib.tensor(value)).detach().numpy()])
        assert dist.has_rsample and tuple(dist.rsample((5,)).shape) == (5, 3)
    for ours, theirs in zip(*outputs):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    x = rng.standard_normal((4, 2, 3))
    lps = []
    for lib in (gd, torch):                   # a simplex-valued one: Normal through stick breaking
        D = lib.distributions
        base = D.Independent(D.Normal(lib.tensor(rng.standard_normal(3) * 0 + loc),
                                      lib.tensor(scale)), 1)
        dist = D.TransformedDistribution(base, D.transforms.StickBreakingTransform())
        y = D.transforms.StickBreakingTransform()(lib.tensor(x))
        lps.append(dist.log_prob(y).numpy())
        assert tuple(dist.event_shape) == (4,) and tuple(dist.batch_shape) == ()
    np.testing.assert_allclose(*lps, rtol=1e-9)


def test_constraints_check_like_torch(rng):
    values = rng.standard_normal((4, 3))
    for name in ("real", "positive", "nonnegative", "unit_interval", "boolean",
                 "nonnegative_integer", "simplex"):
        ours = getattr(GD.constraints, name).check(gd.tensor(values)).numpy()
        theirs = getattr(TD.constraints, name).check(torch.tensor(values)).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    ours = GD.constraints.interval(-0.5, 0.5).check(gd.tensor(values)).numpy()
    np.testing.assert_array_equal(ours, TD.constraints.interval(-0.5, 0.5).check(
        torch.tensor(values)).numpy())
    assert math.isclose(GD.constraints.greater_than(1.5).lower_bound, 1.5)


def _covariance(rng, batch=(2,), n=3):
    a = rng.standard_normal(batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + np.eye(n)


@pytest.mark.parametrize("kind", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_multivariate_normal_matches_torch(kind, rng):
    cov, loc = _covariance(rng), rng.standard_normal((2, 3))
    matrix = np.linalg.cholesky(cov) if kind == "scale_tril" else cov
    value = rng.standard_normal((4, 2, 3))
    results = []
    for lib in (gd, torch):
        m, l = lib.tensor(matrix, requires_grad=True), lib.tensor(loc, requires_grad=True)
        dist = lib.distributions.MultivariateNormal(l, **{kind: m})
        outs = [dist.log_prob(lib.tensor(value)), dist.entropy(), dist.variance,
                dist.covariance_matrix, dist.precision_matrix, dist.scale_tril]
        sum((o * lib.tensor(np.cos(np.arange(o.numel())).reshape(tuple(o.shape)))).sum()
            for o in outs).backward()
        grad = m.grad.numpy()
        if kind == "scale_tril":      # its upper triangle is structurally 0: what reaches it
            grad = np.tril(grad)      # depends on which kernels read it (torch's matmul does)
        results.append([o.detach().numpy() for o in outs] + [grad, l.grad.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_multivariate_normal_draws_kl_and_errors(rng):
    cov, loc = _covariance(rng, ()), rng.standard_normal(3)
    gd.manual_seed(21)
    dist = GD.MultivariateNormal(gd.tensor(loc), covariance_matrix=gd.tensor(cov))
    draws = dist.sample((20000,)).numpy()
    assert draws.shape == (20000, 3)
    np.testing.assert_allclose(draws.mean(0), loc, atol=5 * np.sqrt(np.diag(cov).max() / 20000))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.1 * np.abs(cov).max())
    assert dist.expand((4,)).batch_shape == (4,)
    assert tuple(dist.expand((4,)).rsample((2,)).shape) == (2, 4, 3)
    cov_q, loc_q = _covariance(rng, ()), rng.standard_normal(3)
    kls = []
    for lib in (gd, torch):
        D = lib.distributions
        p = D.MultivariateNormal(lib.tensor(loc), covariance_matrix=lib.tensor(cov))
        q = D.MultivariateNormal(lib.tensor(loc_q), scale_tril=lib.tensor(
            np.linalg.cholesky(cov_q)))
        kls.append(D.kl_divergence(p, q).numpy())
    np.testing.assert_allclose(*kls, rtol=1e-10)
    with pytest.raises(ValueError, match="Exactly one of covariance_matrix"):
        GD.MultivariateNormal(gd.zeros(3), gd.tensor(cov), scale_tril=gd.tensor(cov))
    with pytest.raises(ValueError, match="covariance_matrix .* PositiveDefinite"):
        call_then_read(GD.MultivariateNormal, gd.zeros(3), covariance_matrix=gd.tensor(-cov))
    with pytest.raises(ValueError, match="scale_tril .* LowerCholesky"):
        call_then_read(GD.MultivariateNormal, gd.zeros(3), scale_tril=gd.tensor(cov))


def test_enumerate_support_as_torch(rng):
    probs = rng.uniform(0.1, 0.9, (2, 3))
    for name, make in (("Bernoulli", lambda D, t: D.Bernoulli(t(probs))),
                       ("Binomial", lambda D, t: D.Binomial(4, t(probs))),
                       ("Categorical", lambda D, t: D.Categorical(t(probs))),
                       ("OneHotCategorical", lambda D, t: D.OneHotCategorical(t(probs)))):
        for expand in (True, False):
            ours = make(GD, gd.tensor).enumerate_support(expand)
            theirs = make(TD, torch.tensor).enumerate_support(expand)
            assert tuple(ours.shape) == tuple(theirs.shape), (name, expand)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(NotImplementedError, match="Inhomogeneous total count"):
        GD.Binomial(gd.tensor([2.0, 3.0]), gd.tensor([0.5, 0.5])).enumerate_support()


def _cross_pairs():
    """The registered (p, q) pairs of different families, as torch's."""
    return sorted((p.__name__, q.__name__) for p, q in gd.distributions.kl._KL
                  if p is not q and p.__name__ in CASES and q.__name__ in CASES)


@pytest.mark.parametrize("pair", _cross_pairs(), ids="-".join)
def test_kl_between_families_matches_torch(pair, rng):
    p_name, q_name = pair
    p_params, q_params = CASES[p_name][0](rng), CASES[q_name][0](rng)
    if p_name == "Uniform":                 # inside (0, 1) half the time: finite against Beta
        p_params = dict(low=rng.uniform(-0.2, 0.4, (2, 3)), high=rng.uniform(0.6, 1.2, (2, 3)))
    if p_name == "Uniform" and q_name == "Pareto":
        q_params["scale"] = rng.uniform(0.05, 0.5, (2, 3))
    if p_name == "Pareto":
        p_params["alpha"] = rng.uniform(0.5, 4, (2, 3))

    def kl(lib):
        p, p_tensors = _build(lib, p_name, p_params)
        q, q_tensors = _build(lib, q_name, q_params)
        out = lib.distributions.kl_divergence(p, q)
        finite = torch.isfinite(out) if lib is torch else gd.isfinite(out)
        weights = lib.tensor(np.cos(np.arange(6.0)).reshape(2, 3))
        loss = (out.masked_fill(~finite, 0.0) * weights).sum()
        leaves = [t for t in list(p_tensors.values()) + list(q_tensors.values())
                  if getattr(t, "requires_grad", False)]
        if loss.requires_grad:
            loss.backward()
        return out.detach().numpy(), [np.zeros(t.shape) if t.grad is None else t.grad.numpy()
                                      for t in leaves]
    (ours, ours_grads), (theirs, theirs_grads) = kl(gd), kl(torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours_grads, theirs_grads):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_low_rank_multivariate_normal_matches_torch(rng):
    loc, factor = rng.standard_normal((2, 4)), rng.standard_normal((2, 4, 2))
    diag, value = _pos(rng, (2, 4)), rng.standard_normal((3, 2, 4))
    other = (rng.standard_normal(4), rng.standard_normal((4, 1)), _pos(rng, (4,)))
    results = []
    for lib in (gd, torch):
        D = lib.distributions
        params = [lib.tensor(a, requires_grad=True) for a in (loc, factor, diag)]
        dist = D.LowRankMultivariateNormal(*params)
        q = D.LowRankMultivariateNormal(*(lib.tensor(a) for a in other))
        dense = D.MultivariateNormal(lib.tensor(other[0]), covariance_matrix=q.covariance_matrix)
        outs = [dist.log_prob(lib.tensor(value)), dist.entropy(), dist.variance,
                dist.covariance_matrix, dist.precision_matrix, dist.scale_tril,
                D.kl_divergence(dist, q), D.kl_divergence(dist, dense),
                D.kl_divergence(dense, dist)]
        sum((o * lib.tensor(np.cos(np.arange(o.numel())).reshape(tuple(o.shape)))).sum()
            for o in outs).backward()
        results.append([o.detach().numpy() for o in outs] + [p.grad.numpy() for p in params])
        assert tuple(dist.rsample((5,)).shape) == (5, 2, 4)
        assert tuple(dist.expand((3, 2)).sample().shape) == (3, 2, 4)
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)
    gd.manual_seed(8)
    draws = GD.LowRankMultivariateNormal(gd.tensor(loc[0]), gd.tensor(factor[0]),
                                         gd.tensor(diag[0])).sample((20000,)).numpy()
    cov = factor[0] @ factor[0].T + np.diag(diag[0])
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.1 * np.abs(cov).max())
