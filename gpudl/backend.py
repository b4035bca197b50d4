"""Which device tensors live on and which array module backs them.

The one place that imports CuPy and decides between the CUDA and CPU paths. The choice is made
once, at import, from ``GPUDL_DEVICE=auto|cuda|cpu`` (README, Devices):

- ``cpu``: NumPy arrays, CPU twins of every kernel.
- ``cuda``: CuPy arrays and the Numba-CUDA kernels. Under Numba's CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1``) the cuda device keeps NumPy arrays and runs the real kernels in the
  simulator, so kernels are tested on machines without a GPU.
- ``auto`` (default): cuda when CuPy imports and a GPU answers, else cpu (with one warning when
  CuPy is installed but unusable).

Neither CuPy nor ``numba.cuda`` is imported on a machine that takes the cpu path.
"""

import importlib.util
import os
import warnings

import numpy as np

from . import dtypes

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
DEVICES = ("cpu", "cuda")

_cupy = None          # the cupy module once the cuda path is chosen (never under the simulator)
_streams = {}         # CuPy stream pointer -> numba external stream, built once per stream
_elementwise = {}     # (in_params, out_params, operation, name) -> cupy.ElementwiseKernel
_raw = {}             # (code, name) -> cupy.RawKernel


def _probe_cupy():
    """Return (cupy module or None, why it is unusable or None), importing nothing if absent."""
    if importlib.util.find_spec("cupy") is None:
        return None, "CuPy is not installed"
    try:
        import cupy
        if not cupy.cuda.is_available():
            return None, "CuPy found no usable GPU (no driver or no device)"
        return cupy, None
    except Exception as exc:  # a broken CUDA install surfaces as many exception types
        return None, f"CuPy failed to start ({type(exc).__name__}: {exc})"


def _split_index(device, where):
    """'cuda:0' -> 'cuda'. gpudl drives one GPU, CUDA's current device, so any other index is
    refused with the way to pick another GPU (rather than silently using device 0)."""
    name, colon, index = device.strip().lower().partition(":")
    if not colon or (index.isdigit() and int(index) == 0):
        return name
    if not index.isdigit():
        raise ValueError(f"{where}: malformed device {device!r}; expected 'cpu', 'cuda' or "
                         "'cuda:0'")
    if name == "cpu":
        raise ValueError(f"{where}: device {device!r} does not exist; the cpu device is 'cpu'")
    raise ValueError(
        f"{where}: device {device!r} is not available; gpudl uses one GPU per process (index 0: "
        "'cuda:0' or 'cuda'). To run on another GPU, start the process with CUDA_VISIBLE_DEVICES "
        "set to its index (e.g. CUDA_VISIBLE_DEVICES=1) and GPUDL_DEVICE=cuda")


def _choose_device():
    global _cupy
    text = os.environ.get("GPUDL_DEVICE", "auto").strip().lower() or "auto"
    requested = text.partition(":")[0]
    if requested not in ("auto", "cuda", "cpu") or (requested == "auto" and text != "auto"):
        raise ValueError(
            f"GPUDL_DEVICE must be 'auto', 'cuda' or 'cpu', got {text!r} ('cuda:0' and 'cpu:0' "
            "are accepted too)")
    _split_index(text, "GPUDL_DEVICE")
    if requested == "cpu":
        return "cpu"
    if SIMULATOR:
        return "cuda" if requested == "cuda" else "cpu"
    cupy, why = _probe_cupy()
    if cupy is not None:
        _cupy = cupy
        return "cuda"
    if requested == "cuda":
        raise RuntimeError(
            f"GPUDL_DEVICE=cuda but {why}; install the 'cuda12' or 'cuda13' extra on a machine "
            "with an NVIDIA GPU, set GPUDL_DEVICE=cpu, or set NUMBA_ENABLE_CUDASIM=1 to run the "
            "CUDA kernels in Numba's simulator")
    if why != "CuPy is not installed":
        warnings.warn(f"gpudl: {why}; using the cpu device", RuntimeWarning, stacklevel=3)
    return "cpu"


DEFAULT_DEVICE = _choose_device()
# the array types a tensor may hold: isinstance(x, ARRAY_TYPES) without a call per check
ARRAY_TYPES = (np.ndarray,) if _cupy is None else (np.ndarray, _cupy.ndarray)
# Under the simulator with the cuda device chosen, the cuda device's arrays are SimDeviceArrays
# (gpudl/sim_device.py), which refuse host data as CuPy does; GPUDL_SIM_STRICT=0 keeps plain
# NumPy arrays there (the simulator before session 13).
SIM_DEVICE_ARRAYS = (SIMULATOR and DEFAULT_DEVICE == "cuda"
                     and os.environ.get("GPUDL_SIM_STRICT", "1") != "0")
if SIM_DEVICE_ARRAYS:
    from . import sim_device
    from .sim_device import SimDeviceArray, sim_cuda_module as _sim_cuda


# Where factories put new tensors when set_default_device chose (None: DEFAULT_DEVICE)
FACTORY_DEVICE = None


def default_device():
    """``"cuda"`` or ``"cpu"``: where new tensors go unless told otherwise."""
    return DEFAULT_DEVICE


def cuda_available():
    return DEFAULT_DEVICE == "cuda"


class device:
    """Where a tensor lives, as ``torch.device`` names it: ``device('cuda')``, ``device('cuda:0')``,
    ``device('cuda', 0)``, ``device('cpu')``.

    Called with no argument it keeps its older meaning and returns the default device's name
    (``"cuda"`` or ``"cpu"``). A device compares equal to another device or to a string of the
    same type; an index only matters when both sides give one (``device('cuda') == 'cuda:0'``).
    Building a cuda device needs no GPU; using it does (``check_device``).
    """

    __slots__ = ("type", "index")

    def __new__(cls, type=None, index=None):
        if type is None and index is None:
            return default_device()
        if isinstance(type, device):
            if index is not None:
                raise TypeError(f"device: index given twice ({type!r} and index={index!r})")
            return type
        if not isinstance(type, str):
            raise TypeError(f"device: expected a string such as 'cuda:0' or a device, got "
                            f"{type.__class__.__name__}")
        name, _, suffix = type.strip().lower().partition(":")
        if name not in DEVICES:
            raise RuntimeError(f"device: expected one of {', '.join(DEVICES)} at the start of "
                               f"the device string, got {type!r}")
        if suffix:
            if index is not None:
                raise TypeError(f"device: index given twice ({type!r} and index={index!r})")
            if not suffix.isdigit():
                raise RuntimeError(f"device: invalid device string {type!r}")
            index = int(suffix)
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise RuntimeError(f"device: index must be a non-negative int, got {index!r}")
        self = object.__new__(cls)
        self.type, self.index = name, index
        return self

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except (RuntimeError, TypeError):
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (
            self.index is None or other.index is None or self.index == other.index)

    def __hash__(self):
        return hash(self.type)

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type={self.type!r}{index})"

    def __reduce__(self):
        return device, (str(self),)


# What tensor.device returns: one object per device (torch reports cuda tensors as cuda:0).
DEVICE_OBJECTS = {"cpu": device("cpu"), "cuda": device("cuda", 0)}


def is_device_like(value):
    """True for "cpu", "cuda:0", a device or a torch.device; False for dtypes such as "float64"."""
    name = value if isinstance(value, str) else getattr(value, "type", None)
    return isinstance(name, str) and name.split(":")[0].strip().lower() in DEVICES


def check_device(device_arg, where="device"):
    """The device name ("cpu" or "cuda") for a device argument (None, "cpu", "cuda", "cuda:0", a
    device or a torch.device), refusing what this process cannot use."""
    if device_arg is None:
        return FACTORY_DEVICE or DEFAULT_DEVICE
    if not isinstance(device_arg, (str, device)):
        device_arg = str(device_arg) if hasattr(device_arg, "type") else device_arg
    try:
        parsed = device(device_arg)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where}: expected 'cpu' or 'cuda' (or 'cuda:0', or a device), got "
                         f"{device_arg!r}") from None
    _split_index(str(parsed), where)
    if parsed.type == "cuda" and not cuda_available():
        raise RuntimeError(
            f"{where}: 'cuda' requested but this process runs on the cpu device "
            "(no usable GPU; see GPUDL_DEVICE in the README)")
    return parsed.type


def xp_for(device):
    """The array module holding arrays of ``device``: cupy on a real GPU, the simulator's device
    module under a strict simulator (``SIM_DEVICE_ARRAYS``), else numpy."""
    if device == "cuda":
        if _cupy is not None:
            return _cupy
        if SIM_DEVICE_ARRAYS:
            return _sim_cuda
    return np


def get_array_module(array):
    """numpy or cupy (or the strict simulator's device module), from an array's type (no import
    of cupy when it was never loaded)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    if SIM_DEVICE_ARRAYS and isinstance(array, SimDeviceArray):
        return _sim_cuda
    return np


def is_cupy(xp):
    """Whether array module ``xp`` is CuPy's (not NumPy), so that its CuPy-only branches
    (cupyx, CuPy kernels) may be taken; the strict simulator's device module computes with
    NumPy."""
    return xp is not np and not (SIM_DEVICE_ARRAYS and xp is _sim_cuda)


def cast(array, dtype):
    """``array`` in ``dtype`` (itself when it already is); float32 -> bfloat16 through its bits,
    a cast CuPy cannot do."""
    if array.dtype == dtype:
        return array
    if dtype == dtypes.bfloat16 and array.dtype == dtypes.float32:
        return dtypes.float32_to_bfloat16(get_array_module(array), array)
    return array.astype(dtype)


def is_device_array(array):
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def kernel_device(array, bfloat16=False):
    """Which implementation a kernel entry point should run for ``array``: "cuda" or "cpu".

    CuPy arrays take the Numba-CUDA kernels. Under the simulator with the cuda device chosen,
    NumPy arrays take them too (the simulator runs them on the CPU). bfloat16 arrays are
    refused there unless the caller has kernels for them (``bfloat16=True``: kernels that
    take their bits as integer words).
    """
    if is_device_array(array) or (SIMULATOR and DEFAULT_DEVICE == "cuda"):
        if array.dtype == dtypes.bfloat16 and not bfloat16:
            raise TypeError(
                "bfloat16 tensors have no Numba-CUDA kernels (Numba has no bfloat16 type); on "
                "the cuda device use float16 (gd.autocast('cuda') does), or run this op in "
                "float32")
        return "cuda"
    return "cpu"


_cupy_bfloat16 = None     # whether CuPy holds bfloat16 arrays (CuPy 14+); asked once


def check_dtype_on_device(dtype, device, where):
    """Refuse ``dtype`` on ``device`` when its arrays cannot hold it: bfloat16 on the cuda
    device needs CuPy 14 or later (bfloat16 through ml_dtypes, as gpudl on NumPy)."""
    global _cupy_bfloat16
    if dtype != dtypes.bfloat16 or device != "cuda" or _cupy is None:
        return
    if _cupy_bfloat16 is None:
        try:
            _cupy.empty(0, dtype=dtypes.bfloat16)
            _cupy_bfloat16 = True
        except Exception:      # CuPy < 14 raises ValueError or TypeError, by version
            _cupy_bfloat16 = False
    if not _cupy_bfloat16:
        raise TypeError(
            f"{where}: bfloat16 tensors on the cuda device need CuPy 14 or later (bfloat16 "
            f"through ml_dtypes); this CuPy {_cupy.__version__} has none. Use float16 on the "
            "cuda device, or keep bfloat16 tensors on the cpu")


def to_numpy(array, what="to_numpy"):
    """A NumPy array for ``array`` (copied from the GPU; shared on the CPU). A read of the cuda
    device is counted as ``what`` (``count_read``) and first reports any failed deferred check
    (``defer_check``)."""
    if _READS_DEVICE and count_read(array, what) and _cupy is not None:
        return array.get()
    return np.asarray(array)


def to_device_array(array, device, what="a copy of host data to the device"):
    """Move ``array`` to ``device``'s array module (no copy when already there). A copy from the
    host inside a CUDA graph capture is refused naming ``what`` (CUDA refuses a capture a copy
    from pageable memory: a table cached at first use must be made by an eager warm-up step)."""
    if device == "cuda":
        if capture_guard is not None and isinstance(array, np.ndarray) and \
                not (SIM_DEVICE_ARRAYS and isinstance(array, SimDeviceArray)):
            capture_guard(what, "copies host data to the device (run one eager step first, "
                          "so that what it uploads once is cached before the capture)")
        if _cupy is None:
            if SIM_DEVICE_ARRAYS:
                return _sim_cuda.asarray(array)
            return np.asarray(array)
        check_dtype_on_device(array.dtype, device, "to('cuda')")
        return _cupy.asarray(array)
    return to_numpy(array) if is_device_array(array) else np.asarray(array)


def device_data(array):
    """The strict simulator's check of a cuda tensor's array (``Tensor._make``): a device array
    as it is, a host scalar or 0-d array (a number) moved; a host array with data refused, as
    on a GPU it would be a NumPy array inside a cuda tensor."""
    if isinstance(array, SimDeviceArray):
        return array
    if isinstance(array, np.ndarray) and array.ndim:
        raise sim_device.host_data_error(array, "a cuda tensor's array")
    return np.asarray(array).view(SimDeviceArray)


def pinned_copy(array):
    """A copy of host ``array`` in page-locked memory, which the GPU copies from faster; the
    array itself when CuPy is not in use (pinning only matters for copies to a GPU)."""
    if _cupy is None:
        return array
    import cupyx
    pinned = cupyx.empty_pinned(array.shape, array.dtype)
    pinned[...] = array
    return pinned


def numba_cuda_config():
    """numba-cuda's own config module (numba-cuda >= 0.2x; Numba's before)."""
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba.core import config
    return config


def launch_stream():
    """The stream Numba kernels launch on: CuPy's current stream (0 under the simulator).

    Every kernel launch asks for it, so it is also where the simulator's argument handling is
    adjusted, once (``_simulator_accepts_read_only``)."""
    if _cupy is None:
        if SIMULATOR and not _simulator_patched:
            _simulator_accepts_read_only()
        return 0
    ptr = _cupy.cuda.get_current_stream().ptr
    stream = _streams.get(ptr)
    if stream is None:
        from numba import cuda
        stream = _streams[ptr] = cuda.external_stream(ptr)
    return stream


_simulator_patched = False


def _simulator_accepts_read_only():
    """Let Numba's simulator take read-only arrays (``broadcast_to`` views, their reshapes).

    The simulator copies every array argument back to the host after a launch, which raises
    "assignment destination is read-only" for such views, though kernels only read them (on a
    GPU, CuPy arrays have no read-only flag and nothing is copied). Read-only arguments are
    passed in without the copy back instead, and checked unchanged after the launch: a kernel
    writing into one would, on a GPU, write memory that broadcast elements share. Writable
    arguments, and the real GPU path, are untouched.
    """
    global _simulator_patched
    from numba.cuda.simulator import kernel as simulated
    from numba.cuda.simulator.args import In, InOut

    class ReadOnlyAware(InOut):
        def to_device(self, retr, stream=0):
            if SIM_DEVICE_ARRAYS and isinstance(self.value, SimDeviceArray):
                # kernels index elements one by one: a plain view (writes land in the array)
                self.value = self.value.view(np.ndarray)
            value = self.value
            if not isinstance(value, np.ndarray) or value.flags.writeable:
                return super().to_device(retr, stream)
            copy = In(value).to_device(retr, stream)
            retr.append(lambda: _check_unwritten(copy, value))
            return copy

    simulated.InOut = ReadOnlyAware
    _simulator_patched = True


def _check_unwritten(copy, original):
    if not np.array_equal(copy.copy_to_host(), original, equal_nan=original.dtype.kind in "fc"):
        raise RuntimeError(
            f"a simulated kernel wrote into a read-only argument of shape {original.shape} "
            f"(strides {original.strides}); on a GPU that write would land in memory shared by "
            "several elements (a broadcast view). Pass a writable, contiguous array")


def synchronize():
    host_sync("synchronize")
    if _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()
    raise_deferred()


def device_count():
    if _cupy is not None:
        return _cupy.cuda.runtime.getDeviceCount()
    return 1 if (SIMULATOR and DEFAULT_DEVICE == "cuda") else 0


# The dtypes CuPy's scatter_add (cupyx.scatter_add, cupy.add.at) takes: its atomicAdd
# overloads (CuPy 14, _routines_indexing._scatter_op_single); it raises TypeError for the rest
_CUPY_SCATTER_ADD = frozenset(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64,
                                                     np.float16, np.float32, np.float64))


def scatter_add(target, index, values):
    """target[index] += values with repeated indices accumulating (NumPy's add.at). On CuPy, a
    dtype its scatter_add refuses (bfloat16, 8- and 16-bit integers, bool, complex) accumulates
    in one it takes (float32, int64; complex as its real and imaginary parts), written back."""
    if not is_device_array(target):
        np.add.at(target, index, values)
        return
    import cupyx
    if target.dtype in _CUPY_SCATTER_ADD:
        cupyx.scatter_add(target, index, values)
    elif target.dtype.kind == "c":
        for part in ("real", "imag"):
            work = getattr(target, part).copy()
            cupyx.scatter_add(work, index, getattr(values, part))
            setattr(target, part, work)
    else:
        # values in the target's dtype first, as CuPy's scatter_add casts them
        wide = np.float32 if target.dtype == dtypes.bfloat16 else np.int64
        work = target.astype(wide)
        cupyx.scatter_add(work, index, cast(values, target.dtype).astype(wide))
        target[...] = cast(work, target.dtype)


def sortable(array):
    """``array`` as the sorts take it: bfloat16 widened to float32, exactly (same order, same
    ties), since CuPy 14's sort, argsort and unique (thrust) refuse bfloat16 with
    NotImplementedError, and NumPy's leave a row holding a NaN of ml_dtypes' bfloat16 unsorted;
    anything else as it is."""
    return array.astype(np.float32) if array.dtype == dtypes.bfloat16 else array


def address(array):
    """The address of ``array``'s first element: on the device for a CuPy array (or anything with
    ``__cuda_array_interface__``), on the host for a NumPy one (the simulator, tests)."""
    pointer = getattr(getattr(array, "data", None), "ptr", None)      # CuPy's MemoryPointer
    if pointer is None:
        interface = getattr(array, "__cuda_array_interface__", None) or \
            array.__array_interface__
        pointer = interface["data"][0]
    return pointer


def raw_kernel(code, name):
    """A ``cupy.RawKernel`` for the CUDA C ``code`` and its ``extern "C"`` kernel ``name``, built
    once per (code, name); CuPy compiles it with NVRTC at the first launch. Its arguments are
    passed as given: device arrays as pointers, NumPy scalars as their own type, a one-element
    NumPy array (a structured dtype: a C struct) by value."""
    key = (code, name)
    kernel = _raw.get(key)
    if kernel is None:
        if _cupy is None:
            raise RuntimeError(f"raw_kernel {name!r}: CuPy kernels need the cuda device with "
                               "CuPy (this process runs without CuPy)")
        kernel = _raw[key] = _cupy.RawKernel(code, name)
    return kernel


def elementwise_kernel(in_params, out_params, operation, name):
    """A ``cupy.ElementwiseKernel`` built once per (in_params, out_params, operation, name).

    Call it with CuPy arrays (out_params arrays are updated in place) and Python scalars, which
    CuPy casts to the type the arrays give a placeholder such as ``T``. CuPy compiles and caches
    the binary per dtype on the first call.
    """
    key = (in_params, out_params, operation, name)
    kernel = _elementwise.get(key)
    if kernel is None:
        if _cupy is None:
            raise RuntimeError(f"elementwise_kernel {name!r}: CuPy kernels need the cuda device "
                               "with CuPy (this process runs without CuPy)")
        kernel = _elementwise[key] = _cupy.ElementwiseKernel(in_params, out_params, operation,
                                                             name)
    return kernel


# ---------------------------------------------------------------- host syncs
# Every place gpudl waits for the device or copies from it calls host_sync(what): one read stalls
# the whole launch queue, so a training step should make none (gd.cuda.sync_count() tells), and
# a CUDA graph capture cannot contain one (the capture sets capture_guard, which raises).
_host_syncs = 0
capture_guard = None  # None, or a callable(what) that raises: set while a CUDA graph is captured


def host_sync(what):
    """Count one device-to-host transfer or wait for the device, made by ``what``."""
    global _host_syncs
    if capture_guard is not None:
        capture_guard(what)
    _host_syncs += 1


# Whether any array of this process can be on the cuda device: CuPy is in use, or the simulator
# with the cuda device chosen, where NumPy arrays stand for device arrays (so the counter counts
# the same call sites as on a GPU). False on the cpu path: count_read costs one global test there.
_READS_DEVICE = _cupy is not None or (SIMULATOR and DEFAULT_DEVICE == "cuda")


def may_read_device():
    """False on the cpu path, where no array is on the cuda device (one global test)."""
    return _READS_DEVICE


def on_device(array):
    """True when ``array`` lives on the cuda device: a CuPy array, or under the simulator with the
    cuda device chosen a SimDeviceArray (any array when ``GPUDL_SIM_STRICT=0``), in one global
    test on the cpu path."""
    return _READS_DEVICE and (isinstance(array, SimDeviceArray) if SIM_DEVICE_ARRAYS
                              else _cupy is None or isinstance(array, _cupy.ndarray))


def count_read(array, what):
    """The one gate of every device-to-host read: when ``array`` is on the cuda device (see
    ``kernel_device``), count the read as ``what`` (``host_sync``) and report any failed deferred
    check; return whether it was on the device. Call it where a value is read back (``.item()``,
    ``.get()``, a device value in an ``if``) and where CuPy reads internally (a boolean mask, a
    data-dependent shape)."""
    if not on_device(array):
        return False
    host_sync(what)
    raise_deferred()
    return True


def host_value(array, what):
    """The Python scalar in 0-d (or one-element) ``array``, counted as a read made by ``what``
    (``count_read``): for a device value that decides host control flow, by design."""
    if not (_READS_DEVICE and count_read(array, what)) and _deferred:
        raise_deferred()        # host data: nothing to count, but a read reports failed checks
    return array.item()


def sync_count():
    """How many device-to-host transfers and waits for the device gpudl has made so far."""
    return _host_syncs


# ---------------------------------------------------------------- deferred device-side checks
# A check of device data (are these class indices in range?) must not read a flag back per call:
# that read waits for the GPU and stalls the launch queue. Instead the check reduces the data on
# the device to one value and queues it here; the queue is read, all at once, the next time gpudl
# reads the device anyway (synchronize, to_numpy, Tensor.item), and the first failed check raises
# there. A queue that grows to MAX_DEFERRED entries without such a read is read then.
MAX_DEFERRED = 256
_deferred = []        # (device 0-d value, passed(value) -> bool, make_error(value) -> Exception)


def defer_check(value, passed, make_error):
    """Queue a device-side check: ``value`` (a 0-d device array, or anything NumPy reads) is
    judged by ``passed`` when the device is next read, and ``make_error(value)`` is raised if it
    fails."""
    _deferred.append((value, passed, make_error))
    if len(_deferred) >= MAX_DEFERRED:
        if _READS_DEVICE:
            host_sync("defer_check (a full queue of device-side checks)")
        raise_deferred()


def raise_deferred():
    """Read every queued check (one transfer) and raise the first that failed; the queue empties
    either way."""
    if not _deferred:
        return
    pending = _deferred[:]
    _deferred.clear()
    values = [v for v, _, _ in pending]
    if _cupy is not None and any(isinstance(v, _cupy.ndarray) for v in values):
        values = _cupy.stack([_cupy.asarray(v) for v in values]).get()
    for value, (_, passed, make_error) in zip(values, pending):
        value = np.asarray(value).item()
        if not passed(value):
            raise make_error(value)


_reductions = {}      # (in_params, out_params, map, reduce, post_map, identity, name) -> kernel


def reduction_kernel(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                     name):
    """A ``cupy.ReductionKernel`` built once per definition (see ``elementwise_kernel``)."""
    key = (in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name)
    kernel = _reductions.get(key)
    if kernel is None:
        if _cupy is None:
            raise RuntimeError(f"reduction_kernel {name!r}: CuPy kernels need the cuda device "
                               "with CuPy (this process runs without CuPy)")
        kernel = _reductions[key] = _cupy.ReductionKernel(*key)
    return kernel
