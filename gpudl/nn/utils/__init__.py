"""nn.utils: gradient clipping, and parameters to and from one flat vector; ``nn.utils.rnn``:
padded and packed variable-length sequences; ``parametrize``/``parametrizations`` and the
old-style weight_norm/spectral_norm; unstructured pruning (``prune``); layer fusion (``fusion``),
``skip_init`` and ``stateless.functional_call``."""

import functools
import math
import warnings

import numpy as np

from ... import backend
from ...autograd import no_grad, recorded
from ... import multi_tensor
from ...ops._util import quiet
from ...tensor import Tensor


def _with_grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def _vector_norm(x, order):
    """torch.linalg.vector_norm(x, order) of an array: max/min of |x| for +-inf, the number of
    non-zero entries for 0, (sum |x|**order)**(1/order) otherwise."""
    xp = backend.get_array_module(x)
    magnitude = xp.abs(x)
    if order == math.inf:
        return magnitude.max()
    if order == -math.inf:
        return magnitude.min()
    if order == 0:
        return (magnitude != 0).sum().astype(magnitude.dtype)
    with quiet(xp):
        return (magnitude ** order).sum() ** (1.0 / order)   # order < 0: a zero entry gives 0


# On the GPU the 2-norm of many gradients takes one launch per dtype: each thread's sum of squares
# of its elements into its own slot of a buffer (no atomics: the same sum every run), then one
# reduction of the buffer; the per-tensor path takes four kernels per gradient
_SUM_OF_SQUARES = multi_tensor.Update(
    "gpudl_mt_sum_of_squares", ("x",), (), "", ("total = total + x * x;",),
    pointers=(("T", "partials"),), prologue=("T total = 0;",),
    epilogue=(f"partials[block_in_tensor * {multi_tensor.THREADS} + threadIdx.x] = total;",))


def _batched_two_norm(arrays):
    """The 2-norm of ``arrays`` taken together, in one multi-tensor launch per dtype and one
    reduction, as a 0-d array of their result dtype; None unless every array can be batched."""
    if not arrays or not all(multi_tensor.batchable(a) for a in arrays):
        return None
    xp = backend.get_array_module(arrays[0])
    squares = []
    for dtype in {a.dtype for a in arrays}:
        same = [a for a in arrays if a.dtype == dtype]
        slots = [multi_tensor.blocks_of(a.size) * multi_tensor.THREADS for a in same]
        partials = xp.empty(sum(slots), dtype)
        starts = np.cumsum([0] + slots[:-1])
        multi_tensor.launch(_SUM_OF_SQUARES, [(a, partials[s:s + n])
                                              for a, s, n in zip(same, starts, slots)], ())
        squares.append(partials.sum())
    result = np.result_type(*{a.dtype for a in arrays})      # dtypes: CuPy arrays refuse NumPy
    total = squares[0].astype(result) if len(squares) == 1 else \
        sum(q.astype(result) for q in squares)
    return xp.sqrt(total)


@functools.cache
def _scale_by(scale_dtype):
    """Every element times the 0-d ``scale`` (of ``scale_dtype``) cast to the tensor's dtype, as
    the per-gradient ``grad *= scale.astype(grad.dtype)``."""
    ctype = "float32" if scale_dtype == np.float32 else "float64"
    return multi_tensor.Update(f"gpudl_mt_scale_by_{ctype}", (), ("x",), "", ("x = x * scale;",),
                               pointers=((ctype, "scale_of"),),
                               prologue=("const T scale = (T)*scale_of;",))


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The ``norm_type`` norm of ``tensors`` (a Tensor or an iterable of them) taken together:
    as torch, the norm of their per-tensor norms (which for ``norm_type=0`` counts the tensors
    with a non-zero entry). A 0-d Tensor; ``tensor(0.)`` for none. Nothing is read back to the
    host unless ``error_if_nonfinite`` asks to check the norm (counted by gd.cuda.sync_count).
    ``foreach`` is accepted and changes nothing."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        from ...creation import tensor
        return tensor(0.0)
    arrays = [t._data for t in tensors]
    xp = backend.get_array_module(arrays[0])
    total = _batched_two_norm(arrays) if norm_type == 2.0 else None
    if total is None:
        total = _vector_norm(xp.stack([_vector_norm(a, norm_type) for a in arrays]), norm_type)
    if error_if_nonfinite and not backend.host_value(
            xp.isfinite(total), "clip_grad_norm_(error_if_nonfinite=True)"):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped. To disable "
                           "this error and scale the gradients by the non-finite norm anyway, "
                           "set `error_if_nonfinite=False`")
    return Tensor._make(xp.asarray(total), False, None, 0, tensors[0].device)


@recorded("grads")      # a CPU graph capture replays the call (it edits .grad arrays directly)
def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Multiply every gradient of ``parameters`` by ``min(max_norm / (total_norm + 1e-6), 1)``,
    in place and on the device (no sync), ``total_norm`` being a 0-d Tensor (get_total_norm's)
    or a number; on the GPU in one multi-tensor launch per dtype. ``foreach`` is accepted and
    changes nothing."""
    params = _with_grads(parameters)
    max_norm = float(max_norm)
    if not params:
        return
    xp = backend.get_array_module(params[0].grad._data)
    total = total_norm._data if isinstance(total_norm, Tensor) else xp.asarray(total_norm)
    scale = xp.minimum(max_norm / (backend.to_device_array(total, params[0].grad.device)
                                   + 1e-6), 1.0)
    grads = [p.grad._data for p in params]
    if all(multi_tensor.batchable(g) for g in grads) and scale.dtype in (np.float32, np.float64):
        scale = xp.asarray(scale)         # an array: the launch takes its address
        for dtype in {g.dtype for g in grads}:
            multi_tensor.launch(_scale_by(scale.dtype), [(g, scale) for g in grads
                                                         if g.dtype == dtype], ())
        return
    with no_grad():
        for p in params:
            p.grad._data *= scale.astype(p.grad._data.dtype)


@recorded("grads")
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale the gradients of ``parameters`` in place so their joint ``norm_type`` norm is at
    most ``max_norm``; returns the norm before clipping as a 0-d Tensor: get_total_norm of the
    gradients, then clip_grads_with_norm_ (as torch's foreach path, nothing is read back unless
    ``error_if_nonfinite`` asks to check the norm)."""
    params = _with_grads(parameters)
    total = get_total_norm([p.grad for p in params], norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                   foreach=None):
    """Deprecated alias of clip_grad_norm_ (a FutureWarning, as torch)."""
    warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of "
                  "`torch.nn.utils.clip_grad_norm_`.", FutureWarning, stacklevel=2)
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


@recorded("grads")
def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element of ``parameters`` to [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for p in _with_grads(parameters):
        xp = backend.get_array_module(p.grad._data)
        xp.clip(p.grad._data, -clip_value, clip_value, out=p.grad._data)


def parameters_to_vector(parameters):
    """One 1-D Tensor holding every parameter, flattened and concatenated (differentiable)."""
    from ...functions import cat
    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of 1-D ``vec`` into ``parameters`` (in place)."""
    if not isinstance(vec, Tensor) or vec.ndim != 1:
        raise TypeError(f"vector_to_parameters: expected a 1-D Tensor, got {vec!r:.60}")
    params = list(parameters)
    total = sum(p._data.size for p in params)
    if vec.shape[0] != total:
        raise ValueError(f"vector_to_parameters: vector has {vec.shape[0]} elements but the "
                         f"parameters hold {total}")
    start = 0
    for p in params:
        n = p._data.size
        with no_grad():
            p.copy_(vec._data[start:start + n].reshape(p.shape))
        start += n


from . import rnn  # noqa: E402  (nn.utils.rnn, as torch)
# ------------------------------------------------------------------ nn-utils: parametrizations
from . import parametrize, parametrizations  # noqa: E402,F401
from .weight_norm import remove_weight_norm, weight_norm  # noqa: E402,F401
from .spectral_norm import remove_spectral_norm, spectral_norm  # noqa: E402,F401
from . import fusion, prune, stateless  # noqa: E402,F401
from .fusion import (fuse_conv_bn_eval, fuse_conv_bn_weights,  # noqa: E402,F401
                     fuse_linear_bn_eval, fuse_linear_bn_weights)
from .init import skip_init  # noqa: E402,F401
from . import clip_grad, convert_parameters  # noqa: E402,F401  (torch's submodule paths)
