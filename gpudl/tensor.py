"""Tensor: an array (NumPy or CuPy), its gradient, and the Function that made it.

Operators are thin calls into ``gpudl.ops``; the maths lives there, on raw arrays. The maths and
shape methods sit in two mixins (tensor_math.py, tensor_shape.py) to keep each file readable.
"""

import copy
import numbers
import warnings

import numpy as np

from . import autograd, backend, dtypes, inplace, tensor_repr
from .ops import elementwise as E
from .ops import shape as S
from .ops._util import normalize_axis
from .tensor_index import IndexMixin
from .tensor_math import MathMixin, matmul, scaled, where, wrapped  # noqa: F401 (re-exported)
from .tensor_order import OrderMixin
from .tensor_shape import ShapeMixin, _index_arrays, ints_first


_SIM_DEVICE_ARRAYS = backend.SIM_DEVICE_ARRAYS     # the strict simulator: see Tensor._make


# integer and bool tensors edit in place through the out-of-place op, which wraps numbers and
# casts operands as torch (NumPy refuses uint8 += int8 and uint8 += -1)
_WRAPPING_KINDS = frozenset("biu")


def _device_of(array):
    if backend.is_device_array(array):
        return "cuda"
    if backend.SIM_DEVICE_ARRAYS:      # the simulator's device arrays say where they are
        return "cuda" if isinstance(array, backend.SimDeviceArray) else "cpu"
    return backend.DEFAULT_DEVICE if backend.SIMULATOR else "cpu"


def _unary_in_place(name):
    """The Tensor method ``<name>_``: the method ``name`` in place (gpudl.inplace.apply)."""
    def edit(self):
        return inplace.apply(self, name + "_", lambda t: getattr(t, name)())
    edit.__name__, edit.__qualname__ = name + "_", f"Tensor.{name}_"
    edit.__doc__ = f"{name} in place."
    return autograd.recorded("inplace")(edit)


def _is_number(value):
    return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))


def _leading_mask(index, tensor):
    """A bool tensor index over the leading dims of ``tensor`` and on its device (the only
    index part, or the first before an Ellipsis), shaped to broadcast against it; else None
    (a cpu mask of a cuda tensor takes the indexing path, which copies it over)."""
    if isinstance(index, tuple) and len(index) == 2 and index[1] is Ellipsis:
        index = index[0]
    if not isinstance(index, Tensor) or index.dtype != dtypes.bool_ or index.ndim == 0 \
            or tuple(index.shape) != tuple(tensor.shape[:index.ndim]) \
            or index._device != tensor._device:
        return None
    return index.reshape(tuple(index.shape) + (1,) * (tensor.ndim - index.ndim))


class Tensor(MathMixin, ShapeMixin, IndexMixin, OrderMixin):
    """An n-dimensional array with reverse-mode autograd (PyTorch's Tensor API)."""

    __slots__ = ("_data", "_requires_grad", "_grad", "grad_fn", "_out_index", "_device",
                 "_version_counter", "_view", "__weakref__")
    __array_ufunc__ = None          # NumPy defers to our reflected operators: np.float32(2) * t

    def __init__(self, *data, requires_grad=False, dtype=None, device=None):
        """torch.Tensor's constructor, for ported code (``gd.tensor(data)`` keeps data's
        dtype): ``Tensor(data)`` is data in the default float dtype (``dtype=`` for another),
        ``Tensor(t)`` of a Tensor shares its array as it is; ``Tensor(2, 3)`` is an uninitialised
        (2, 3) tensor, ``Tensor()`` an empty one."""
        from .creation import as_array, empty
        device = backend.check_device(device, "Tensor") if device is not None else None
        counter = [0]
        if all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in data):
            made = empty(*(data or (0,)), dtype=dtype, device=device)
            array, device = made._data, made._device
        elif len(data) > 1:
            raise TypeError(f"Tensor: expected data, or sizes as ints, got "
                            f"{', '.join(type(d).__name__ for d in data)}")
        elif isinstance(data[0], Tensor) and dtype is None and device in (None, data[0]._device):
            array, device, counter = data[0]._data, data[0]._device, data[0]._version_counter
        else:
            array, device = as_array(data[0], dtype or dtypes.DEFAULT_FLOAT, device, "Tensor")
        if autograd._capture is not None and autograd._capture.active():
            autograd._capture.made(array, "Tensor")
        self._data = array
        self._device = device
        self._version_counter = counter
        self._view = None
        self._grad = None
        self.grad_fn = None
        self._out_index = 0
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data, requires_grad, grad_fn, out_index, device):
        if autograd._capture is not None and autograd._capture.active():   # replayable data?
            autograd._capture.made(data)
        t = object.__new__(cls)
        if isinstance(data, np.generic):     # NumPy reductions return scalars; keep arrays
            data = np.asarray(data)
        t._data = data
        t._requires_grad = requires_grad
        t._grad = None
        t.grad_fn = grad_fn
        t._out_index = out_index
        if device is None:
            device = _device_of(data)
        elif device.__class__ is not str:      # a gd.device object
            device = device.type
        if _SIM_DEVICE_ARRAYS and device == "cuda" and not _ToDevice.to_host:
            t._data = backend.device_data(data)
        t._device = device
        t._version_counter = [0]     # shared with views; see autograd's docstring
        t._view = None               # what t views, if a view: see inplace.view_origin
        return t

    # ----------------------------------------------------------------- attributes
    shape = property(lambda self: tuple(self._data.shape))
    dtype = property(lambda self: self._data.dtype)
    device = property(lambda self: backend.DEVICE_OBJECTS[self._device])
    ndim = property(lambda self: self._data.ndim)
    is_leaf = property(lambda self: self._current().grad_fn is None)
    _version = property(lambda self: self._version_counter[0], doc="in-place edits so far")
    is_cuda = property(lambda self: self._device == "cuda")
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))
    mT = property(lambda self: self.transpose(-2, -1))
    mH = mT                        # conjugate transposes: gpudl's dtypes are real

    @property
    def H(self):
        if self.ndim != 2:
            raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors), got a "
                               f"{self.ndim}-D tensor; use .mH for batches of matrices")
        return self.transpose(0, 1)

    @property
    def grad(self):
        """The gradient accumulated by backward (None until then). A non-leaf tensor's stays
        None unless retain_grad() was called: reading it then warns, as torch does."""
        if self._grad is None and self.grad_fn is not None and not self.retains_grad:
            warnings.warn("The .grad attribute of a Tensor that is not a leaf Tensor is being "
                          "accessed. backward() does not fill it; call .retain_grad() on the "
                          "tensor before backward() if you want it, or read the .grad of a "
                          "leaf tensor", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, grad):
        """``t.grad = g``: None, or a tensor of t's shape and dtype on t's device, as torch
        checks (a float64 gradient assigned to a float32 tensor made every later update
        float64)."""
        if grad is not None and (not isinstance(grad, Tensor) or grad.shape != self.shape
                                 or grad.dtype != self.dtype or grad._device != self._device):
            got = (f"a {grad.dtype} tensor of shape {grad.shape} on {grad._device}"
                   if isinstance(grad, Tensor) else type(grad).__name__)
            raise RuntimeError(f"grad: expected None or a {self.dtype} tensor of shape "
                               f"{self.shape} on {self._device}, got {got}")
        self._grad = grad

    @property
    def requires_grad(self):
        if self._view is not None and self._view[2] != self._version_counter[0]:
            inplace.refresh_view(self)      # (_current, inline: a hot property)
        return self._requires_grad

    def _current(self):
        """self, its history re-derived first if it is a view whose base was edited in place
        since (ops and backward do the same with the tensors they are given)."""
        if self._view is not None and self._view[2] != self._version_counter[0]:
            inplace.refresh_view(self)
        return self

    @requires_grad.setter
    def requires_grad(self, requires_grad):
        """``t.requires_grad = flag``, checked as torch checks it (the flag alone was set on an
        int tensor, whose gradients were then truncated, or on a computed tensor, cutting it
        from the graph)."""
        if self.grad_fn is not None:
            raise RuntimeError("requires_grad: you can only change requires_grad flags of leaf "
                               "tensors; use detach() to take a computed tensor out of the graph")
        self.requires_grad_(requires_grad)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[normalize_axis(dim, self.ndim, "size")]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self._data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __hash__(self):
        return id(self)

    def __repr__(self):
        self._guard_host_read("Tensor.__repr__")
        values = backend.to_numpy(self._data, "Tensor.__repr__")
        if values.dtype == dtypes.bfloat16:        # ml_dtypes prints 1.0 as "1"; exact widening
            values = values.astype(np.float32)
        extra = []
        if self._device == "cuda":
            extra.append(f"device='{self.device}'")         # 'cuda:0', as torch prints it
        if values.size == 0 and values.ndim != 1:
            extra.append(f"size={self.shape}")
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_):
            extra.append(f"dtype=gpudl.{self.dtype.name}")
        if self.grad_fn is not None:
            extra.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return tensor_repr.tensor_str(values, extra)

    def __format__(self, format_spec):
        """A 0-d tensor formats as its value, as torch: f"{loss:.4f}", and f"{loss}" gives
        "0.25", not "tensor(0.25)"; other tensors (and Parameters) only with an empty spec."""
        if self.ndim == 0 and type(self) is Tensor:
            return format(self.item(), format_spec)
        return object.__format__(self, format_spec)

    # ----------------------------------------------------------------- conversion
    def numpy(self):
        """A NumPy array: copied from the GPU, sharing memory on the CPU (even with grad)."""
        self._guard_host_read("Tensor.numpy")
        return backend.to_numpy(self._data, "Tensor.numpy")

    def _guard_host_read(self, what):
        """A CPU graph capture refuses reads of host values (a device read is refused by
        backend.count_read)."""
        if backend.capture_guard is not None and not backend.on_device(self._data):
            backend.capture_guard(what, "reads the tensor's values")

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        if self._data.size != 1:
            raise ValueError(
                f"item: only one-element tensors can be converted to a Python number, got shape "
                f"{self.shape}")
        self._guard_host_read("Tensor.item")
        return backend.host_value(self._data, "Tensor.item")

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"bool: a tensor with {self._data.size} elements is ambiguous; use any() or all()")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors can be used as an index, got {self.dtype}")
        return int(self.item())

    def __dlpack__(self, *args, **kwargs):
        if self.requires_grad:
            raise RuntimeError("__dlpack__: cannot export a tensor that requires grad; "
                               "use tensor.detach()")
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    @property
    def __cuda_array_interface__(self):
        if not backend.is_device_array(self._data):
            raise AttributeError("__cuda_array_interface__: only tensors in GPU memory have one "
                                 f"(this tensor is on {self._device} in host memory)")
        return self._data.__cuda_array_interface__

    @property
    def data(self):
        """This tensor's storage as a new tensor without history, as torch's ``.data``: edits
        through it (``w.data -= lr * w.grad``) change this tensor and are not recorded.
        Assigning ``t.data = other`` (a Tensor, or an array) replaces the storage."""
        return Tensor._make(self._data, False, None, 0, self._device)

    @data.setter
    def data(self, value):
        if isinstance(value, Tensor):
            self._data, self._device = value._data, value._device
            return
        if not (isinstance(value, np.ndarray) or backend.is_device_array(value)):
            raise TypeError(f"data: expected a Tensor (or an array), got {type(value).__name__}")
        self._data = backend.to_device_array(value, self._device)

    def detach(self):
        out = Tensor._make(self._data, False, None, 0, self._device)
        out._version_counter = self._version_counter      # same memory: same version, as torch
        return out

    def __reduce_ex__(self, protocol):
        """A tensor in a graph pickles (and deep-copies) as torch pickles it: its values, as a
        leaf that requires grad; its history stays behind (it holds the ops' modules).
        ``.grad`` is never pickled, as torch's ``_rebuild_tensor_v2`` carries none."""
        if self.grad_fn is None:
            return _without_grad(super().__reduce_ex__(protocol))
        return _leaf_from, (Tensor._make(self._data, False, None, 0, self._device),
                            self._requires_grad)

    # torch: a deep-copied Tensor keeps a deep copy of its .grad; a Parameter's __deepcopy__
    # makes a fresh leaf without one (so a copied model does not add new gradients to stale ones)
    _deepcopy_keeps_grad = True

    def __deepcopy__(self, memo):
        new = copy._reconstruct(self, memo, *self.__reduce_ex__(4))
        if self._deepcopy_keeps_grad and self.grad_fn is None and self._grad is not None:
            new._grad = copy.deepcopy(self._grad, memo)
        return new

    def detach_(self):
        """Leave the graph in place: no grad_fn, requires_grad False (old truncated-BPTT code
        calls ``hidden.detach_()``). A view is refused, as torch refuses it."""
        if self._view is not None:
            raise RuntimeError("detach_: can't detach views in-place; use detach() instead")
        self.grad_fn, self._requires_grad, self._out_index = None, False, 0
        return self

    def clone(self):
        return E.Clone.apply(self)

    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """to(device), to(dtype), to(device, dtype) or to(other_tensor), as in torch.

        Returns ``self`` when nothing changes (unless ``copy=True``). ``non_blocking`` is
        accepted for torch's signature; copies between host and GPU complete before returning.
        """
        flags = [a for a in args if isinstance(a, bool)]     # torch's positional
        if len(flags) > 2:                                    # non_blocking, copy
            raise TypeError(f"to: at most two bools (non_blocking, copy), got {args!r}")
        copy = flags[1] if len(flags) == 2 else copy
        for a in (a for a in args if not isinstance(a, bool)):
            if isinstance(a, Tensor):
                device, dtype = a._device, a.dtype
            elif backend.is_device_like(a):
                device = a
            else:
                dtype = dtypes.as_dtype(a, "to")   # neither a device nor a dtype: TypeError
        out = self
        if dtype is not None:
            out = out.astype(dtype)
        if device is not None:
            device = backend.check_device(device, "to")
            if device != out._device:
                out = _ToDevice.to(out, device)
        return out.clone() if copy and out is self else out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None else device)

    _TYPE_NAMES = {"FloatTensor": dtypes.float32, "DoubleTensor": dtypes.float64,
                   "HalfTensor": dtypes.float16, "BFloat16Tensor": dtypes.bfloat16,
                   "LongTensor": dtypes.int64,
                   "IntTensor": dtypes.int32, "ShortTensor": dtypes.int16,
                   "CharTensor": dtypes.int8, "ByteTensor": dtypes.uint8,
                   "BoolTensor": dtypes.bool_}

    def type(self, dtype=None):
        """With no argument the type name (``'gpudl.FloatTensor'``, ``'gpudl.cuda.LongTensor'``);
        with a dtype or a name such as ``'torch.cuda.FloatTensor'``, the converted tensor."""
        if dtype is None:
            name = next(k for k, v in Tensor._TYPE_NAMES.items() if v == self.dtype)
            return f"gpudl.{'cuda.' if self._device == 'cuda' else ''}{name}"
        if isinstance(dtype, str) and dtype.rpartition(".")[2] in Tensor._TYPE_NAMES:
            prefix, _, name = dtype.rpartition(".")
            out = self.astype(Tensor._TYPE_NAMES[name])
            return out.to("cuda" if prefix.endswith("cuda") else "cpu")
        return self.astype(dtype)

    def astype(self, dtype):
        dtype = dtypes.as_dtype(dtype, "astype")
        if dtype == self.dtype:
            return self
        backend.check_dtype_on_device(dtype, self._device, "astype")
        return E.Cast.apply(self, dtype)

    def float(self):
        return self.astype(dtypes.float32)

    def double(self):
        return self.astype(dtypes.float64)

    def half(self):
        return self.astype(dtypes.float16)

    def bfloat16(self):
        return self.astype(dtypes.bfloat16)

    def long(self):
        return self.astype(dtypes.int64)

    def int(self):
        return self.astype(dtypes.int32)

    def bool(self):
        return self.astype(dtypes.bool_)

    def type_as(self, other):
        """This tensor cast to ``other``'s dtype."""
        if not isinstance(other, Tensor):
            raise TypeError(f"type_as: other must be a Tensor, got {type(other).__name__}")
        return self.astype(other.dtype)

    # ----------------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """torch's signature: accumulate this tensor's gradient (``gradient``, default 1 for a
        one-element tensor) into the ``.grad`` of every leaf it depends on, or with ``inputs=``
        (a tensor or a sequence) into theirs only. ``create_graph=True``: the gradients carry
        a graph of their own, to differentiate again (gpudl.higher_order); ``retain_graph``
        defaults to it."""
        if create_graph:
            return self._backward_with_graph(gradient, retain_graph, inputs)
        if inputs is None:
            autograd.backward(self, gradient, retain_graph=bool(retain_graph))
            return
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        if not inputs:
            raise RuntimeError("backward: inputs= was given but is empty")
        grads = autograd.grad(self, inputs, (gradient,), retain_graph=retain_graph,
                              allow_unused=True)
        for t, g in zip(inputs, grads):
            if g is not None:
                autograd._accumulate(t, g._data)

    def _backward_with_graph(self, gradient, retain_graph, inputs):
        from . import higher_order
        retain_graph = True if retain_graph is None else bool(retain_graph)
        if inputs is None:
            higher_order.backward(self, gradient, retain_graph)
            return
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        if not inputs:
            raise RuntimeError("backward: inputs= was given but is empty")
        grads = autograd.grad(self, inputs, (gradient,), retain_graph=retain_graph,
                              create_graph=True, allow_unused=True)
        for t, g in zip(inputs, grads):
            if g is not None:
                higher_order.accumulate(t, g)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not dtypes.is_floating(self.dtype):
            raise RuntimeError(
                f"requires_grad: only floating point tensors can require gradients, got {self.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False): only leaf tensors can stop requiring grad; "
                               "use detach()")
        self._requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on a non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: can't retain_grad on Tensor that has "
                               "requires_grad=False")
        if self._current().grad_fn is None:
            return self
        node = self.grad_fn
        node.retained = node.retained or {}
        node.retained[self._out_index] = self
        return self

    @property
    def retains_grad(self):
        """True for a non-leaf tensor whose ``.grad`` backward fills (see retain_grad)."""
        node = self.grad_fn
        return node is not None and bool(node.retained) and \
            node.retained.get(self._out_index) is self

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient in each backward (or autograd.grad);
        a returned tensor replaces the gradient. Returns a handle: ``handle.remove()``."""
        return autograd.register_hook(self, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Run ``hook(self)`` after each backward that accumulates into this leaf's ``.grad``."""
        return autograd.register_post_accumulate_grad_hook(self, hook)

    # ----------------------------------------------------------------- in place
    # Every method here writes its tensor's memory and bumps its version counter (as do the
    # optimizers' fused updates). When the tensor takes part in a graph, the edit goes through
    # gpudl.inplace, which records it as torch does; otherwise it writes the memory directly.
    def _augmented(self, other, method, symbol):
        """``self op= other``: in place through the method (so its checks and bookkeeping
        apply), as torch's augmented assignment."""
        if inplace.needs_graph(self, (other,)):
            inplace._refuse(self, symbol)           # with its own message, not the one below
        try:
            return method(other)
        except (TypeError, ValueError, RuntimeError) as exc:     # casting and broadcasting
            other_shape = other.shape if isinstance(other, Tensor) else np.shape(other)
            raise RuntimeError(f"{symbol}: cannot update a {self.dtype} tensor of shape "
                               f"{self.shape} in place with {other_shape} "
                               f"{getattr(other, 'dtype', type(other).__name__)} ({exc})") from None

    def __iadd__(self, other):
        return self._augmented(other, self.add_, "+=")

    def __isub__(self, other):
        return self._augmented(other, self.sub_, "-=")

    def __imul__(self, other):
        return self._augmented(other, self.mul_, "*=")

    def __itruediv__(self, other):
        return self._augmented(other, self.div_, "/=")

    def _bump_version(self):
        """Record one in-place edit: backward then refuses nodes that saved the old values."""
        self._version_counter[0] += 1

    @autograd.recorded("inplace")
    def __setitem__(self, index, value):
        """Assignment through an index, as torch's. ``x[mask] = number`` (or a 0-d tensor), a
        bool mask over the leading dims, is a masked fill, as in torch: no device read (an
        array index through a mask needs the mask's count, which reads it)."""
        mask = _leading_mask(index, self)
        if mask is not None and (_is_number(value) or (isinstance(value, Tensor)
                                                       and value.ndim == 0)):
            inplace.apply(self, "__setitem__", lambda t: t.masked_fill(mask, value), (value,))
            return
        value = _without_leading_ones(_on_device_of(self, value))
        recording = inplace.needs_graph(self, (value,))
        if recording:
            inplace._refuse(self, "__setitem__")
        index = _index_arrays(index, self)
        first, steps = Ellipsis, ints_first(index)
        if steps is not None:           # a view through the ints, as torch: see ints_first
            first, index = steps
        S.check_advanced(self._data[first].shape, index, "__setitem__")  # device-side checks
        try:
            if not recording:
                self._data[first][index] = wrapped(_raw(value, self), self.dtype)
                self._bump_version()
            elif self._view is not None:    # through the base's history: see gpudl.inplace
                inplace.record(self, "__setitem__",
                               lambda t: S.SetItem.apply(t.clone(), first, index, value),
                               (value,))
            else:       # as torch: self becomes the output of the assignment, in its graph
                inplace._rebase(self, S.SetItem.apply(self, first, index, value))
                self._bump_version()
        except ValueError as error:     # raised before anything is written
            if "broadcast" not in str(error):
                raise
            raise RuntimeError(f"__setitem__: a value of shape {tuple(np.shape(value))} does "
                               f"not broadcast to the indexed elements ({error})") from None

    @autograd.recorded("inplace")
    def copy_(self, src):
        src = _on_device_of(self, src)
        raw = _raw(src, self)
        self._check_broadcasts_here("copy_", raw)
        if inplace.needs_graph(self, (src,)):
            # copy_ converts the dtype, in the graph
            src = src.astype(self.dtype) if isinstance(src, Tensor) else raw
            return inplace.record(self, "copy_", lambda t: inplace.Overwrite.apply(t, src),
                                  (src,))
        self._data[...] = wrapped(raw, self.dtype)
        self._bump_version()
        return self

    @autograd.recorded("inplace")
    def fill_(self, value):
        if isinstance(value, Tensor) and value.ndim:
            raise ValueError(f"fill_: value must be a number or a 0-d tensor, got a tensor of "
                             f"shape {value.shape}")
        value = _on_device_of(self, value)
        if inplace.needs_graph(self, (value,)):
            if isinstance(value, Tensor):
                value = value.astype(self.dtype)
            return inplace.record(self, "fill_", lambda t: inplace.Overwrite.apply(t, value),
                                  (value,))
        self._data[...] = wrapped(_raw(value, self), self.dtype)
        self._bump_version()
        return self

    def zero_(self):
        return self.fill_(0)

    def _operand(self, op, value, result_category=-1):
        """The raw operand of in-place arithmetic ``op``, refused as torch refuses it when the
        result (of at least ``result_category``) is of a higher kind, bool < integer <
        floating, than this tensor's dtype (an int tensor cannot take 0.5 in place)."""
        raw = _raw(value, self)
        kind = max(dtypes.value_category(raw), result_category)
        if kind > dtypes.category(self.dtype):
            raise RuntimeError(f"{op}: a {('bool', 'integer', 'floating point')[kind]} result "
                               f"cannot be stored in place in a {self.dtype} tensor")
        self._check_broadcasts_here(op, raw)
        return raw

    def _check_broadcasts_here(self, op, raw):
        """RuntimeError, as torch's, unless ``raw`` broadcasts to this tensor's shape (an
        in-place result keeps the shape; NumPy's own error names no op)."""
        shape = np.shape(raw)
        if shape == self.shape or not shape:            # the common cases, checked cheaply
            return
        try:
            fits = np.broadcast_shapes(shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise RuntimeError(f"{op}: an operand of shape {shape} does not broadcast to the "
                               f"shape {self.shape} of the tensor edited in place")

    @autograd.recorded("inplace")
    def add_(self, other, alpha=1):
        # an int alpha is cast to the result's dtype (a bool result takes it as a truth value)
        raw = self._operand("add_", other, 2 if dtypes.value_category(alpha) == 2 else -1)
        if self.dtype.kind in _WRAPPING_KINDS or (alpha != 1 and dtypes.value_category(raw) < 2) \
                or inplace.needs_graph(self, (other,)):      # (-1 * a uint8 other would wrap)
            return inplace.apply(self, "add_", lambda t: t + scaled("add_", other, alpha, t),
                                 (other,))
        self._data += raw if alpha == 1 else alpha * raw
        self._bump_version()
        return self

    def sub_(self, other, alpha=1):
        if self.dtype == dtypes.bool_ or dtypes.value_category(other) == 0:
            raise RuntimeError("sub_: subtraction with a bool tensor or a bool is not supported; "
                               "to invert a mask use ~ (or logical_not)")
        self._check_broadcasts_here("sub_", _raw(other, self))
        return self.add_(other, alpha=-alpha)

    @autograd.recorded("inplace")
    def mul_(self, other):
        raw = self._operand("mul_", other)
        if self.dtype.kind in _WRAPPING_KINDS or inplace.needs_graph(self, (other,)):
            return inplace.apply(self, "mul_", lambda t: t * other, (other,))
        if self._data.dtype in dtypes.LOW_PRECISION:
            _scaled_in_place(self._data, raw, "multiply")
        else:
            self._data *= raw
        self._bump_version()
        return self

    @autograd.recorded("inplace")
    def div_(self, other):
        raw = self._operand("div_", other, result_category=2)   # true division
        if inplace.needs_graph(self, (other,)):
            return inplace.record(self, "div_", lambda t: t / other, (other,))
        if self._data.dtype in dtypes.LOW_PRECISION:
            _scaled_in_place(self._data, raw, "true_divide")
        else:
            self._data /= raw
        self._bump_version()
        return self

    @autograd.recorded("inplace")
    def clamp_(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp_: at least one of 'min' or 'max' must not be None")
        low, high = self._operand("clamp_", min), self._operand("clamp_", max)
        if self.dtype.kind in _WRAPPING_KINDS or inplace.needs_graph(self, (min, max)):
            return inplace.apply(self, "clamp_", lambda t: t.clamp(min, max), (min, max))
        xp = backend.get_array_module(self._data)
        xp.clip(self._data, low, high, out=self._data)
        self._bump_version()
        return self

    @autograd.recorded("inplace")
    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        from . import random
        if a > b:
            raise ValueError(f"uniform_: expected a <= b (the range [a, b)), got a={a}, b={b}")
        return self._fill_random("uniform_", random.uniform(self.shape, self.dtype, self._device,
                                                            a, b, generator))

    @autograd.recorded("inplace")
    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        from . import random
        if std < 0:                           # refused before the tensor changes
            raise ValueError(f"normal_: std must be non-negative, got {std}")
        return self._fill_random("normal_", random.normal(self.shape, self.dtype, self._device,
                                                          generator) * std + mean)

    @autograd.recorded("inplace")
    def bernoulli_(self, p=0.5, *, generator=None):
        """Fill with 1 at probability ``p`` (a number, or a tensor of probabilities broadcast to
        this shape), else 0."""
        from . import random
        probability = _raw(p, self)
        if isinstance(p, (int, float)) and not 0 <= p <= 1:
            raise ValueError(f"bernoulli_: p must lie in [0, 1], got {p}")
        drawn = random.uniform(self.shape, np.float64, self._device, source=generator)
        return self._fill_random("bernoulli_", (drawn < probability).astype(self.dtype))

    @autograd.recorded("inplace")
    def exponential_(self, lambd=1.0, *, generator=None):
        """Fill with samples of the exponential distribution of rate ``lambd``."""
        from . import random
        if not lambd > 0:
            raise ValueError(f"exponential_: lambd must be positive, got {lambd}")
        drawn = random.uniform(self.shape, np.float64, self._device, source=generator)
        xp = backend.get_array_module(self._data)
        return self._fill_random("exponential_", (-xp.log1p(-drawn) / lambd).astype(self.dtype))

    @autograd.recorded("inplace")
    def random_(self, from_=0, to=None, *, generator=None):
        """Fill with integers drawn uniformly from [from_, to) (``random_(to)``: [0, to));
        ``random_()``: [0, 2**mantissa bits] for floats, [0, the largest value] for ints."""
        from . import random
        if to is None and from_ != 0:
            from_, to = 0, from_
        if to is None:
            to = (2 ** (np.finfo(self.dtype).nmant + 1) + 1 if dtypes.is_floating(self.dtype)
                  else int(np.iinfo(self.dtype).max) + 1 if self.dtype != dtypes.bool_ else 2)
        if not from_ < to:
            raise ValueError(f"random_: expected from_ < to, got from_={from_}, to={to}")
        drawn = random.integers(from_, to, self.shape, self._device, source=generator)
        return self._fill_random("random_", drawn.astype(self.dtype))

    def _fill_random(self, op, values):
        if inplace.needs_graph(self):
            return inplace.record(self, op, lambda t: inplace.Overwrite.apply(t, values))
        self._data[...] = values
        self._bump_version()
        return self

    # in place through the out-of-place op (gpudl.inplace.apply): one line each
    @autograd.recorded("inplace")
    def masked_fill_(self, mask, value):
        """masked_fill in place."""
        return inplace.apply(self, "masked_fill_", lambda t: t.masked_fill(mask, value),
                             (value,))

    @autograd.recorded("inplace")
    def index_fill_(self, dim, index, value):
        """index_fill in place."""
        return inplace.apply(self, "index_fill_", lambda t: t.index_fill(dim, index, value),
                             (value,))

    @autograd.recorded("inplace")
    def nan_to_num_(self, nan=0.0, posinf=None, neginf=None):
        """nan_to_num in place."""
        return inplace.apply(self, "nan_to_num_", lambda t: t.nan_to_num(nan, posinf, neginf))

    @autograd.recorded("inplace")
    def lerp_(self, end, weight):
        """lerp in place."""
        return inplace.apply(self, "lerp_", lambda t: t.lerp(end, weight), (end, weight))

    relu_, sigmoid_, tanh_, exp_, neg_ = (
        _unary_in_place(name) for name in ("relu", "sigmoid", "tanh", "exp", "neg"))


class _ToDevice(autograd.ArrayFunction):
    to_host = False         # moving to the cpu: what Tensor._make's strict check lets through

    @classmethod
    def to(cls, a, device):
        """Tensor ``a`` moved to ``device``, in the graph (apply labels outputs with the input's
        device; the moved one is relabelled)."""
        if _SIM_DEVICE_ARRAYS and device == "cpu":
            cls.to_host = True
            try:
                out = cls.apply(a, device)
            finally:
                cls.to_host = False
        else:
            out = cls.apply(a, device)
        out._device = device
        return out

    @staticmethod
    def forward(ctx, a, device):
        ctx.device = _device_of(a)
        return backend.to_device_array(a, device)

    @staticmethod
    def backward(ctx, g):
        return backend.to_device_array(g, ctx.device), None


def _without_grad(reduced):
    """``object.__reduce_ex__``'s tuple for a Tensor with ``_grad`` left out of its slot state."""
    state = reduced[2] if len(reduced) > 2 else None
    if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict)
            and state[1].get("_grad") is not None):
        return reduced
    return reduced[:2] + ((state[0], {**state[1], "_grad": None}),) + reduced[3:]


def _leaf_from(values, requires_grad):
    """Unpickling a tensor that was in a graph (see Tensor.__reduce_ex__)."""
    return values.requires_grad_(requires_grad)


def _scaled_in_place(data, raw, ufunc):
    """``data *= raw`` (``ufunc`` "multiply") or ``/=`` ("true_divide") of a float16/bfloat16
    ``data``; by a scalar in float32 with the scalar unrounded, one rounding: ``x * s``'s result
    (tensor_math._low_precision_by_scalar) and torch's, where NumPy rounds the scalar first."""
    xp = backend.get_array_module(data)
    if np.ndim(raw) == 0 and getattr(raw, "dtype", None) != data.dtype:
        wide = raw.astype(dtypes.float32) if hasattr(raw, "astype") else raw
        data[...] = getattr(xp, ufunc)(data.astype(dtypes.float32), wide)
    else:
        getattr(xp, ufunc)(data, raw, out=data)


def _raw(value, like):
    """The array (or Python scalar) to combine with tensor ``like``, on its device: host data
    (arrays, lists) is copied there, as is a 0-d cpu tensor (torch takes one as a number); a
    Tensor on another device is refused, as torch refuses it (CuPy takes no NumPy array)."""
    if isinstance(value, Tensor):
        if value._device == like._device:
            return value._data
        if value._device == "cpu" and value.ndim == 0:
            return backend.to_device_array(value._data, like._device)
        raise RuntimeError(f"expected all tensors on the same device, got {like._device} and "
                           f"{value._device} (a tensor of shape {value.shape}); move it with "
                           f".to('{like._device}')")
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return backend.to_device_array(np.asarray(value) if not backend.is_device_array(value)
                                   else value, like._device)


def _on_device_of(target, value):
    """``value`` for an assignment into ``target``: a Tensor on another device moved to
    ``target``'s (in the graph), as torch's copy_ and item assignment copy across devices."""
    if isinstance(value, Tensor) and value._device != target._device:
        return value.to(target._device)
    return value


def _without_leading_ones(value):
    """An assigned value without its leading size-1 dims, which broadcast to nothing: torch
    takes x[mask] = v of shape (1, n) for the n selected elements (NumPy refuses it)."""
    shape = getattr(value, "shape", ())
    if not shape or shape[0] != 1:
        return value
    lead = next((i for i, n in enumerate(shape) if n != 1), len(shape))
    return value.reshape(tuple(shape[lead:]))


autograd._Tensor = Tensor
