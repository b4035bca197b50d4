"""Draws from distributions given as tensors: multinomial, bernoulli and normal (torch's
functions), from the device's generator (``gd.manual_seed``) or a ``gd.Generator``.

The samples carry no gradient (torch's gradient of these is zero). Bad probabilities are refused
at once on the cpu and, on the cuda device, by a device-side check reported at the next read.
"""

import numpy as np

from . import backend, dtypes, random
from .ops._util import is_int, quiet
from .tensor import Tensor
from .tensor_order import search_rows


def _check(op, bad, message):
    """Raise ValueError(``op: message``) when the 0-d bool array ``bad`` holds: now for host
    data, at the next device read for device data (no read here)."""
    if backend.on_device(bad):
        backend.defer_check(bad, lambda value: not value,
                            lambda value: ValueError(f"{op}: {message} (found by a device-side "
                                                     "check at the next device read)"))
    elif bad:
        raise ValueError(f"{op}: {message}")


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """``num_samples`` category indices per row of ``input`` (1-D or 2-D non-negative weights,
    not necessarily normalised): int64 of shape (num_samples,) or (rows, num_samples). Without
    ``replacement`` each category is drawn at most once per row."""
    if not isinstance(input, Tensor) or input.ndim not in (1, 2) \
            or not dtypes.is_floating(input.dtype):
        raise ValueError(f"multinomial: input must be a 1-D or 2-D floating point tensor, got "
                         f"{getattr(input, 'dtype', type(input).__name__)} "
                         f"{getattr(input, 'shape', '')}")
    n = input.shape[-1]
    if not is_int(num_samples) or num_samples <= 0:
        raise ValueError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
    if not replacement and num_samples > n:
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement "
                         f"from {n} categories")
    weights = input._data.reshape(-1, n).astype(np.float64)
    xp = backend.get_array_module(weights)
    _check("multinomial", ~xp.isfinite(weights).all() | (weights < 0).any(),
           "probabilities must be finite and non-negative")
    positive = (weights > 0).sum(axis=1)
    _check("multinomial", (positive == 0).any(), "every row must have a positive probability")
    if not replacement:
        _check("multinomial", (positive < num_samples).any(),
               f"a row has fewer than {num_samples} categories of positive probability to draw "
               "without replacement")
    rows = weights.shape[0]
    u = random.uniform((rows, num_samples), np.float64, input._device, source=generator)
    if replacement:              # the inverse of each row's cumulative distribution
        cdf = xp.cumsum(weights, axis=1)
        cdf = cdf / cdf[:, -1:]
        drawn = xp.minimum(search_rows(cdf, u, True, xp), n - 1)
    else:                        # an exponential race: the first num_samples arrivals win
        with quiet(xp):
            arrivals = -xp.log1p(-random.uniform((rows, n), np.float64, input._device,
                                                 source=generator)) / weights
        drawn = xp.argsort(arrivals, axis=1, kind="stable")[:, :num_samples]
    drawn = drawn.astype(np.int64, copy=False)
    return Tensor._make(drawn if input.ndim == 2 else drawn[0], False, None, 0, input._device)


def bernoulli(input, p=None, *, generator=None):
    """1 with probability ``input`` (or the number ``p`` for every element of input's shape),
    else 0, in input's dtype."""
    if not isinstance(input, Tensor) or not dtypes.is_floating(input.dtype):
        raise TypeError(f"bernoulli: input must be a floating point tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    if p is not None:
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"bernoulli: p must be a number in [0, 1], got {p!r}")
        probability = p
    else:
        probability = input._data
        _check("bernoulli", ((probability < 0) | (probability > 1)
                             | backend.get_array_module(probability).isnan(probability)).any(),
               "input must hold probabilities in [0, 1]")
    u = random.uniform(input.shape, np.float64, input._device, source=generator)
    return Tensor._make((u < probability).astype(input.dtype), False, None, 0, input._device)


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None):
    """Normal samples of the given ``mean`` and ``std``, each a tensor (broadcast together) or
    a number; with two numbers, ``size`` gives the shape."""
    tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
    for name, value in (("mean", mean), ("std", std)):
        if not isinstance(value, (Tensor, int, float)) or isinstance(value, bool):
            raise TypeError(f"normal: {name} must be a Tensor or a number, got "
                            f"{type(value).__name__}")
        if isinstance(value, Tensor) and not dtypes.is_floating(value.dtype):
            raise TypeError(f"normal: {name} must be a floating point tensor, got {value.dtype}")
    if tensors:
        if size is not None:
            raise TypeError("normal: size is only taken with a number mean and std")
        shape = np.broadcast_shapes(*(t.shape for t in tensors))
        dtype = tensors[0].dtype if len(tensors) == 1 else dtypes.promote_types(
            mean.dtype, std.dtype)
        device = tensors[0]._device
    else:
        if size is None:
            raise TypeError("normal: with a number mean and std, pass size")
        from .tensor_shape import shape_arg
        shape = shape_arg("normal", (size,))
        dtype = dtypes.as_dtype(dtype, "normal") or dtypes.DEFAULT_FLOAT
        device = backend.check_device(device, "normal")
    xp = backend.xp_for(device)
    if isinstance(std, Tensor):
        spread = std._data
        _check("normal", (spread < 0).any(), "std must be non-negative")
    elif std < 0:
        raise ValueError(f"normal: std must be non-negative, got {std}")
    else:
        spread = std
    centre = mean._data if isinstance(mean, Tensor) else mean
    out = random.normal(shape, dtype, device, generator) * spread + centre
    return Tensor._make(xp.asarray(out).astype(dtype, copy=False), False, None, 0, device)


def poisson(input, generator=None):
    """Poisson samples whose rates are ``input``'s (non-negative floats), in input's dtype."""
    if not isinstance(input, Tensor) or not dtypes.is_floating(input.dtype):
        raise TypeError(f"poisson: input must be a floating point tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    rates = input._data.astype(np.float64)
    _check("poisson", (rates < 0).any() | backend.get_array_module(rates).isnan(rates).any(),
           "invalid Poisson rate, expected rate to be non-negative")
    # on the cuda device the check reports at the next read: the draw must not fail first
    rates = backend.get_array_module(rates).where(rates >= 0, rates, 0)
    drawn = random.generator(input._device, generator).poisson(rates)
    return Tensor._make(drawn.astype(input.dtype), False, None, 0, input._device)


def binomial(count, prob, generator=None):
    """The number of successes in ``count`` trials of probability ``prob`` (floating tensors
    broadcast together), in count's dtype (torch.binomial)."""
    for name, value in (("count", count), ("prob", prob)):
        if not isinstance(value, Tensor) or not dtypes.is_floating(value.dtype):
            raise TypeError(f"binomial: {name} must be a floating point tensor, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
    trials, p = count._data.astype(np.float64), prob._data.astype(np.float64)
    xp = backend.get_array_module(trials)
    _check("binomial", ((p < 0) | (p > 1) | xp.isnan(p)).any(), "prob must lie in [0, 1]")
    _check("binomial", ((trials < 0) | (trials != xp.floor(trials))).any(),
           "count must hold non-negative whole numbers")
    # on the cuda device the checks report at the next read: the draw must not fail first
    p = xp.where((p >= 0) & (p <= 1), p, 0)
    trials = xp.where(trials >= 0, xp.floor(trials), 0)
    trials, p = xp.broadcast_arrays(trials, p)
    drawn = random.generator(count._device, generator).binomial(trials.astype(np.int64), p)
    return Tensor._make(drawn.astype(count.dtype), False, None, 0, count._device)


Tensor.multinomial, Tensor.bernoulli = multinomial, bernoulli     # torch's Tensor methods too
