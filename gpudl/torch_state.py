"""torch's remaining process-wide switches and queries: deterministic algorithms, the default
device of new tensors, warn-always, flush-denormal, interop threads, and ``typename``."""

import numpy as np

from . import backend, cpu_threads

_state = {"deterministic": False, "warn_only": False, "warn_always": False,
          "interop_threads": None}


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Record whether ops must be deterministic (torch.use_deterministic_algorithms). gpudl
    keeps the setting and changes no op: its own Numba kernels use no atomics (their backward
    passes gather; each output has one writer), so they repeat bit for bit; on the cuda device
    the ops built on CuPy's scatter_add (gpudl.backend.scatter_add: index_add, scatter_add,
    index_put with accumulate, histc, histogram, embedding_bag's backward, for example) add
    with atomics, so their float sums may differ in the last bits between runs."""
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"use_deterministic_algorithms: mode must be a bool, got "
                        f"{type(mode).__name__}")
    _state["deterministic"], _state["warn_only"] = bool(mode), bool(warn_only)


def are_deterministic_algorithms_enabled():
    """Whether use_deterministic_algorithms(True) is set."""
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled():
    """Whether use_deterministic_algorithms was set with ``warn_only=True``."""
    return _state["deterministic"] and _state["warn_only"]


_DEBUG_MODES = {"default": 0, "warn": 1, "error": 2}


def set_deterministic_debug_mode(debug_mode):
    """torch's other spelling of use_deterministic_algorithms: 0/'default' off, 1/'warn' on
    with warnings only, 2/'error' on."""
    if isinstance(debug_mode, str):
        if debug_mode not in _DEBUG_MODES:
            raise RuntimeError(f"invalid value of debug_mode, expected one of `default`, `warn`, "
                               f"`error`, but got {debug_mode}")
        debug_mode = _DEBUG_MODES[debug_mode]
    if debug_mode not in (0, 1, 2) or isinstance(debug_mode, bool):
        raise RuntimeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got "
                           f"{debug_mode!r}")
    use_deterministic_algorithms(debug_mode > 0, warn_only=debug_mode == 1)


def get_deterministic_debug_mode():
    """0 (off), 1 (warn only) or 2 (on), as set_deterministic_debug_mode takes."""
    if not _state["deterministic"]:
        return 0
    return 1 if _state["warn_only"] else 2


def set_default_device(device):
    """Put new tensors (factories, ``gd.tensor`` of host data) on ``device`` ('cpu', or 'cuda'
    where this process runs on the cuda device); None restores the process's device
    (gd.device())."""
    backend.FACTORY_DEVICE = None if device is None else backend.check_device(
        device, "set_default_device")


def get_default_device():
    """The device new tensors go to, as a gd.device."""
    return backend.DEVICE_OBJECTS[backend.check_device(None)]


def set_warn_always(b):
    """Record torch's warn-always flag (gpudl's warnings follow Python's warning filters)."""
    _state["warn_always"] = bool(b)


def is_warn_always_enabled():
    """The flag set_warn_always set."""
    return _state["warn_always"]


def set_flush_denormal(mode):
    """False: gpudl does not switch the CPU's denormal flushing (torch returns False where it
    cannot either)."""
    return False


def get_num_interop_threads():
    """The threads torch would run independent ops on: gpudl runs ops one after another, so
    this only reports the value set (the CPU thread ceiling by default)."""
    return _state["interop_threads"] or cpu_threads.ceiling()


def set_num_interop_threads(int):  # noqa: A002  (torch's argument name)
    """Record the interop thread count (see get_num_interop_threads); torch allows one call."""
    if not isinstance(int, (np.integer, type(1))) or isinstance(int, bool) or int < 1:
        raise RuntimeError(f"set_num_interop_threads: number of threads must be a positive int, "
                           f"got {int!r}")
    _state["interop_threads"] = type(1)(int)


def typename(obj):
    """torch.typename: 'gpudl.FloatTensor' (and the like) for a tensor, else the object's type's
    qualified name ('int', 'numpy.ndarray', 'gpudl.nn.modules...Linear')."""
    from .tensor import Tensor
    if isinstance(obj, Tensor):
        return obj.type()
    module = getattr(type(obj), "__module__", "") or ""
    name = type(obj).__qualname__
    return name if module in ("", "builtins") else f"{module}.{name}"
