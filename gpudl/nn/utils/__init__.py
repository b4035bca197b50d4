"""nn.utils: gradient clipping, and parameters to and from one flat vector; ``nn.utils.rnn``:
padded and packed variable-length sequences."""

import math

from ... import backend
from ...autograd import no_grad, recorded
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


@recorded("grads")      # a CPU graph capture replays the call (it edits .grad arrays directly)
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale the gradients of ``parameters`` in place so their joint ``norm_type`` norm is at
    most ``max_norm``; returns the norm before clipping as a 0-d Tensor. As torch, the joint norm
    is the norm of the per-gradient norms (which for ``norm_type=0`` counts the gradients with
    a non-zero entry); ``foreach`` is accepted and changes nothing.

    As torch's foreach path, every gradient is multiplied by ``min(max_norm / (norm + 1e-6), 1)``
    computed on the device: nothing is read back (no sync), unless ``error_if_nonfinite`` asks to
    check the norm, which reads it (counted by gd.cuda.sync_count).
    """
    params = _with_grads(parameters)
    norm_type, max_norm = float(norm_type), float(max_norm)     # a 0-d Tensor max_norm too
    if not params:
        from ...creation import tensor
        return tensor(0.0)
    grads = [p.grad._data for p in params]
    xp = backend.get_array_module(grads[0])
    total = _vector_norm(xp.stack([_vector_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not backend.host_value(
            xp.isfinite(total), "clip_grad_norm_(error_if_nonfinite=True)"):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           "gradients is non-finite, so it cannot be clipped; pass "
                           "error_if_nonfinite=False to clip anyway")
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    with no_grad():
        for g in grads:
            g *= scale.astype(g.dtype)
    return Tensor._make(xp.asarray(total), False, None, 0, params[0].grad.device)


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
