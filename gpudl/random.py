"""Random number generators, one per device, reseeded together by ``manual_seed``.

The cuda device has two: CuPy's (rand, randn, ... and dropout of bfloat16), whose state
advances on the host, so a CUDA graph capture refuses it, and the dropout kernels' per-thread
states, which live on the device and are advanced by the kernels themselves (``dropout_states``),
so a captured dropout draws new numbers at each replay. ``gd.Generator`` objects passed as
``generator=`` are CuPy's kind."""

import contextlib

import numpy as np

from . import backend

_generators = {}
_dropout_states = None      # the cuda device's dropout generator states (kernels/dropout_cuda.py)


def manual_seed(seed):
    """Seed every device's generator: the same seed gives the same numbers on the same device."""
    seed = manual_seed_value(seed, "manual_seed")
    _reseed_dropout(seed, "manual_seed")
    _generators.clear()
    _generators["seed"] = seed
    return seed


def manual_seed_cuda(seed):
    """Seed the cuda device's generators only (``gd.cuda.manual_seed``): the cpu's go on as
    they were. Without the cuda device nothing happens, as in torch."""
    seed = manual_seed_value(seed, "cuda.manual_seed")
    if not backend.cuda_available():
        return
    _reseed_dropout(seed, "cuda.manual_seed")
    _generators["cuda"] = backend.xp_for("cuda").random.default_rng(seed)
    _generators["cuda dropout seed"] = seed          # for dropout states made later


def _reseed_dropout(seed, what):
    if _dropout_states is not None:
        if backend.capture_guard is not None:
            backend.capture_guard(what, "writes the cuda dropout generator's device states "
                                  "from the host")
        from .kernels import dropout_cuda
        dropout_cuda.reseed(_dropout_states, seed)     # in place: captured graphs see it too


def forget_device_states():
    """In a forked DataLoader worker: the parent's device arrays are not this process's to touch
    (its ``manual_seed`` must not reseed them)."""
    global _dropout_states
    _dropout_states = None


def dropout_states():
    """The cuda generator's device states that kernels/dropout_cuda.py draws from and
    advances: made from ``current_seed()`` (or ``manual_seed_cuda``'s seed) at first use, which must come before any CUDA graph
    capture (the states must exist outside the graph, which replays a launch reading them)."""
    global _dropout_states
    if _dropout_states is None:
        if backend.capture_guard is not None:
            raise RuntimeError(
                "dropout on cuda inside a CUDA graph capture: the cuda generator's device "
                "states for dropout do not exist yet; run one eager training step with dropout "
                "before capturing (the warm-up of torch's recipe), outside the `with "
                "gd.cuda.graph(g):` block")
        from .kernels import dropout_cuda
        seed = _generators.get("cuda dropout seed")
        _dropout_states = dropout_cuda.new_states(current_seed() if seed is None else seed)
    return _dropout_states


def generator(device, source=None):
    """The generator for ``device`` (a numpy.random.Generator or cupy.random.Generator): that of
    ``source`` (a ``gd.Generator``, passed as ``generator=``) when given, else the global one."""
    if device == "cuda" and backend.capture_guard is not None and backend._cupy is not None:
        backend.capture_guard("random numbers on the GPU (dropout, rand, randn, ...)",
                              "are not known to advance at each replay of a CuPy graph")
    if source is not None:
        return _own_generator(source, device)
    gen = _generators.get(device)
    if gen is None:
        seed = current_seed()
        xp = backend.xp_for(device)
        gen = _generators[device] = xp.random.default_rng(seed)
    return gen


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True, device_type=None):
    """torch.random.fork_rng: the global generators' states (the cpu's, and the cuda device's
    unless ``devices`` is an empty list) are restored when the block ends, so the draws made
    inside it leave the streams outside as they were. ``enabled=False`` does nothing."""
    if not enabled:
        yield
        return
    if device_type not in (None, "cuda"):
        raise ValueError(f"fork_rng: device_type must be None or 'cuda', got {device_type!r}")
    from . import global_state
    cpu = global_state.get_rng_state()
    with_cuda = backend.cuda_available() and (devices is None or len(list(devices)) > 0)
    cuda = global_state.cuda_get_rng_state() if with_cuda else None
    try:
        yield
    finally:
        global_state.set_rng_state(cpu)
        if cuda is not None:
            global_state.cuda_set_rng_state(cuda)


def current_seed():
    """The seed of the global generators: manual_seed's, else one drawn from fresh entropy
    once (torch.initial_seed)."""
    seed = _generators.get("seed")
    if seed is None:
        seed = _generators["seed"] = int(np.random.SeedSequence().entropy) & 0xFFFF_FFFF_FFFF_FFFF
    return seed


def normal(shape, dtype, device, source=None):
    gen = generator(device, source)
    if dtype in (np.float32, np.float64):
        return gen.standard_normal(shape, dtype=dtype)
    return gen.standard_normal(shape, dtype=np.float32).astype(dtype)


def uniform(shape, dtype, device, low=0.0, high=1.0, source=None):
    gen = generator(device, source)
    if dtype in (np.float32, np.float64):
        u = gen.random(shape, dtype=dtype)
    else:
        u = gen.random(shape, dtype=np.float32).astype(dtype)
    if low != 0.0 or high != 1.0:
        u = u * (high - low) + low
    return u.astype(dtype, copy=False)


def integers(low, high, shape, device, source=None):
    return generator(device, source).integers(low, high, size=shape, dtype=np.int64)


def permutation(n, device, source=None):
    gen = generator(device, source)
    if hasattr(gen, "permutation"):
        return gen.permutation(n)
    return gen.random(n).argsort()        # CuPy's Generator has no permutation


class Generator:
    """torch.Generator: a random stream of its own for one device, passed as ``generator=`` to
    randn, rand, randint, randperm, multinomial, bernoulli, normal and DataLoader; seeded by
    ``manual_seed`` (the global ``gd.manual_seed`` leaves it alone)."""

    def __init__(self, device="cpu"):
        self.device = backend.DEVICE_OBJECTS[backend.check_device(device, "Generator")]
        self._initial_seed = int(np.random.SeedSequence().entropy) & 0xFFFF_FFFF_FFFF_FFFF
        self._rng = None

    def manual_seed(self, seed):
        """Restart this generator's stream from ``seed`` (an int); returns the generator."""
        self._initial_seed = manual_seed_value(seed, "Generator.manual_seed")
        self._rng = None
        return self

    def seed(self):
        """Reseed from fresh entropy; returns the new seed."""
        self._initial_seed = int(np.random.SeedSequence().entropy) & 0xFFFF_FFFF_FFFF_FFFF
        self._rng = None
        return self._initial_seed

    def initial_seed(self):
        """The seed this generator's stream started from."""
        return self._initial_seed

    def rng(self):
        """The NumPy (cpu) or CuPy (cuda) generator behind this one."""
        if self._rng is None:
            self._rng = backend.xp_for(self.device.type).random.default_rng(self._initial_seed)
        return self._rng

    def get_state(self):
        """This generator's state as a uint8 cpu tensor (torch.Generator.get_state): passed to
        ``set_state``, the same numbers follow."""
        from .global_state import _state_of
        from .tensor import Tensor
        return Tensor(_state_of(self.rng()), dtype=np.uint8)

    def set_state(self, new_state):
        """Restore a state from ``get_state`` (of a generator of the same device); returns the
        generator."""
        from .global_state import _set_state_of, _state_bytes
        _set_state_of(self.rng(), _state_bytes(new_state, "Generator.set_state"),
                      "Generator.set_state")
        return self

    def __repr__(self):
        return f"<gpudl.Generator device={self.device.type} initial_seed={self._initial_seed}>"


def manual_seed_value(seed, where):
    """``seed`` as a 64-bit unsigned int, refused unless an int."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"{where}: seed must be an int, got {type(seed).__name__}")
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF


def _own_generator(source, device):
    if not isinstance(source, Generator):
        raise TypeError(f"generator must be a gpudl.Generator, got {type(source).__name__}")
    if source.device.type != device:
        raise RuntimeError(f"generator: a {source.device.type} Generator cannot draw numbers "
                           f"for a tensor on {device}")
    return source.rng()
