"""Random number generators, one per device, reseeded together by ``manual_seed``."""

import numpy as np

from . import backend

_generators = {}


def manual_seed(seed):
    """Seed every device's generator: the same seed gives the same numbers on the same device."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
    _generators.clear()
    _generators["seed"] = seed
    return seed


def generator(device):
    """The generator for ``device`` (a numpy.random.Generator or cupy.random.Generator)."""
    if device == "cuda" and backend.capture_guard is not None and backend._cupy is not None:
        backend.capture_guard("random numbers on the GPU (dropout, rand, randn, ...)",
                              "are not known to advance at each replay of a CuPy graph")
    gen = _generators.get(device)
    if gen is None:
        seed = _generators.get("seed")
        xp = backend.xp_for(device)
        gen = _generators[device] = xp.random.default_rng(seed)
    return gen


def normal(shape, dtype, device):
    gen = generator(device)
    if dtype in (np.float32, np.float64):
        return gen.standard_normal(shape, dtype=dtype)
    return gen.standard_normal(shape, dtype=np.float32).astype(dtype)


def uniform(shape, dtype, device, low=0.0, high=1.0):
    gen = generator(device)
    if dtype in (np.float32, np.float64):
        u = gen.random(shape, dtype=dtype)
    else:
        u = gen.random(shape, dtype=np.float32).astype(dtype)
    if low != 0.0 or high != 1.0:
        u = u * (high - low) + low
    return u.astype(dtype, copy=False)


def integers(low, high, shape, device):
    return generator(device).integers(low, high, size=shape, dtype=np.int64)


def permutation(n, device):
    gen = generator(device)
    if hasattr(gen, "permutation"):
        return gen.permutation(n)
    return gen.random(n).argsort()        # CuPy's Generator has no permutation
