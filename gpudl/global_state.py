"""torch's process-wide settings and dtype queries: the default float dtype, the random
generators' state (get_rng_state/set_rng_state, seed, initial_seed), the CPU thread count, and
result_type, promote_types, can_cast, broadcast_shapes.

A generator's state travels as a uint8 tensor, as torch's ByteTensor does: on the cpu the
PCG64 state of NumPy's generator (state, increment, the buffered 32 bits), on cuda the bytes of
CuPy's generator state. Setting it back repeats the same numbers.
"""

import numpy as np

from . import backend, cpu_threads, dtypes, random
from . import tensor_math
from .tensor import Tensor


# ----------------------------------------------------------------- the default dtype
def get_default_dtype():
    """The dtype of new floating point tensors (float32 unless set_default_dtype changed it)."""
    return dtypes.DEFAULT_FLOAT


def set_default_dtype(d):
    """Make ``d`` (a floating point dtype) the dtype of new floating point tensors: from Python
    floats (gd.tensor, creation functions, randn, ...), integer division, and an integer
    tensor combined with a Python float."""
    dtype = dtypes.as_dtype(d, "set_default_dtype")
    if not dtypes.is_floating(dtype):
        raise TypeError(f"set_default_dtype: only floating-point types are supported as the "
                        f"default type, got {dtype}")
    dtypes.DEFAULT_FLOAT = dtype
    tensor_math._NUMBER_DTYPES = (dtypes.bool_, dtypes.int64, dtype)   # read per call there


# ----------------------------------------------------------------- random state
_PCG64_BYTES = 16 + 16 + 4 + 4      # state, increment, has_uint32, uinteger


def _state_of(generator):
    """The uint8 NumPy array holding ``generator``'s state (NumPy's PCG64 or CuPy's)."""
    bits = generator.bit_generator
    if isinstance(bits, np.random.BitGenerator):     # NumPy's (CuPy's is not one)
        state = bits.state
        if state["bit_generator"] != "PCG64":
            raise RuntimeError(f"get_rng_state: unsupported bit generator "
                               f"{state['bit_generator']}")
        words = state["state"]
        return np.frombuffer(b"".join([
            words["state"].to_bytes(16, "little"), words["inc"].to_bytes(16, "little"),
            int(state["has_uint32"]).to_bytes(4, "little"),
            int(state["uinteger"]).to_bytes(4, "little")]), np.uint8).copy()
    return backend.to_numpy(bits._state, "get_rng_state").view(np.uint8).copy()


def _state_bytes(new_state, where):
    """The bytes of a state tensor from get_rng_state, refused unless a 1-D uint8 tensor."""
    if not isinstance(new_state, Tensor) or new_state.dtype != dtypes.uint8 or new_state.ndim != 1:
        raise TypeError(f"{where}: new_state must be a 1-D uint8 (ByteTensor) tensor, got "
                        f"{getattr(new_state, 'dtype', type(new_state).__name__)}")
    return backend.to_numpy(new_state._data, where)


def _set_state_of(generator, raw, where):
    bits = generator.bit_generator
    if isinstance(bits, np.random.BitGenerator):     # NumPy's (CuPy's is not one)
        if raw.size != _PCG64_BYTES:
            raise RuntimeError(f"{where}: expected a state of {_PCG64_BYTES} bytes (from "
                               f"get_rng_state), got {raw.size}")
        data = raw.tobytes()
        bits.state = {"bit_generator": "PCG64",
                      "state": {"state": int.from_bytes(data[:16], "little"),
                                "inc": int.from_bytes(data[16:32], "little")},
                      "has_uint32": int.from_bytes(data[32:36], "little"),
                      "uinteger": int.from_bytes(data[36:40], "little")}
        return
    target = bits._state
    if raw.size != target.nbytes:
        raise RuntimeError(f"{where}: expected a state of {target.nbytes} bytes (from "
                           f"get_rng_state), got {raw.size}")
    target.view(np.uint8)[...] = backend.to_device_array(raw, "cuda")


def get_rng_state():
    """The cpu generator's state as a uint8 tensor (for set_rng_state)."""
    return Tensor(_state_of(random.generator("cpu")), dtype=np.uint8)


def set_rng_state(new_state):
    """Restore the cpu generator's state from get_rng_state: the same numbers follow."""
    _set_state_of(random.generator("cpu"), _state_bytes(new_state, "set_rng_state"),
                  "set_rng_state")


def cuda_get_rng_state(device="cuda"):
    """The cuda generators' state as a uint8 cpu tensor (gd.cuda.get_rng_state): CuPy's
    generator's bytes, then the dropout kernels' device states (random.dropout_states)."""
    _check_cuda_device(device, "cuda.get_rng_state")
    dropout = backend.to_numpy(random.dropout_states(), "cuda.get_rng_state")
    return Tensor(np.concatenate([_state_of(random.generator("cuda")),
                                  dropout.view(np.uint8).reshape(-1)]), dtype=np.uint8)


def cuda_set_rng_state(new_state, device="cuda"):
    """Restore the cuda generators' state (gd.cuda.set_rng_state): the same numbers and
    dropout masks follow."""
    where = "cuda.set_rng_state"
    _check_cuda_device(device, where)
    raw = _state_bytes(new_state, where)
    dropout = random.dropout_states()
    generator = random.generator("cuda")
    split = raw.size - dropout.nbytes
    expected = _state_of(generator).size + dropout.nbytes
    if raw.size != expected:        # checked whole first: a refused call changes nothing
        raise RuntimeError(f"{where}: expected a state of {expected} bytes (from "
                           f"get_rng_state), got {raw.size}")
    _set_state_of(generator, raw[:split], where)
    dropout[...] = backend.to_device_array(
        np.ascontiguousarray(raw[split:]).view(dropout.dtype).reshape(dropout.shape), "cuda")


def _check_cuda_device(device, where):
    if not backend.cuda_available():
        raise RuntimeError(f"{where}: no cuda device is available")
    name = device if isinstance(device, str) else getattr(device, "type", device)
    if isinstance(name, int):
        name = f"cuda:{name}"
    if name not in ("cuda", "cuda:0"):
        raise RuntimeError(f"{where}: gpudl uses one cuda device (cuda or cuda:0), got {device!r}")


def seed():
    """Seed every device's generator from fresh entropy; returns the seed."""
    return random.manual_seed(int(np.random.SeedSequence().entropy) & 0xFFFF_FFFF_FFFF_FFFF)


def initial_seed():
    """The seed the generators started from (set by manual_seed or seed, else drawn once)."""
    return random.current_seed()


# ----------------------------------------------------------------- threads
def get_num_threads():
    """The most threads gpudl's CPU work uses (fewer while other processes load the cores)."""
    return cpu_threads.ceiling()


def set_num_threads(int):  # noqa: A002  (torch's argument name)
    """Cap the threads gpudl's CPU work (and its BLAS) uses at ``int``."""
    if not isinstance(int, (np.integer, type(1))) or isinstance(int, bool) or int < 1:
        raise RuntimeError(f"set_num_threads: number of threads must be a positive int, got "
                           f"{int!r}")
    cpu_threads.set_ceiling(type(1)(int))


# ----------------------------------------------------------------- dtype queries
def result_type(tensor1, tensor2):
    """The dtype torch's arithmetic gives two operands (tensors or numbers)."""
    for name, value in (("tensor1", tensor1), ("tensor2", tensor2)):
        if not isinstance(value, (Tensor, bool, int, float)):
            raise TypeError(f"result_type: {name} must be a Tensor or a number, got "
                            f"{type(value).__name__}")
    return tensor_math._result_dtype(tensor1, tensor2)


def _dtype_argument(op, name, dtype):
    """A dtype (not None, not a tensor, whose dtype NumPy would read) or a TypeError."""
    if dtype is None or isinstance(dtype, Tensor):
        raise TypeError(f"{op}: {name} must be a dtype, got {type(dtype).__name__}")
    return dtypes.as_dtype(dtype, op)


def promote_types(type1, type2):
    """The smallest dtype both ``type1`` and ``type2`` convert to without losing kind."""
    return dtypes.promote_types(_dtype_argument("promote_types", "type1", type1),
                                _dtype_argument("promote_types", "type2", type2))


def can_cast(from_, to):
    """Whether torch's casting rules allow ``from_`` into ``to``: never to a lower kind
    (floating -> integer, integer -> bool)."""
    from_, to = _dtype_argument("can_cast", "from_", from_), _dtype_argument("can_cast", "to", to)
    return dtypes.category(from_) <= dtypes.category(to)


def broadcast_shapes(*shapes):
    """The shape that tensors of ``shapes`` (ints or sequences of ints) broadcast to."""
    sizes = []
    for shape in shapes:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if any(not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0
               for n in shape):
            raise RuntimeError(f"broadcast_shapes: expected non-negative int sizes, got "
                               f"{shape!r}")
        sizes.append(shape)
    try:
        return tuple(np.broadcast_shapes(*sizes))
    except ValueError:
        raise RuntimeError(f"broadcast_shapes: Shape mismatch: objects cannot be broadcast to "
                           f"a single shape, got {sizes}") from None
