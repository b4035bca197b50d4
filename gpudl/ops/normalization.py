"""batch_norm and layer_norm: each one Function with an analytic backward.

Both save the normalised input ``xhat`` and the inverse standard deviation, so backward is
gx = invstd * w * (g - mean(g) - xhat * mean(g * xhat)) over the normalised axes (training
batch norm and layer norm), or gx = invstd * w * g (batch norm with running statistics).
"""

import math

import ml_dtypes
import numpy as np

from .. import backend
from ..amp.autocast_mode import autocast, cast_inputs, state as _autocast
from ..autograd import ArrayFunction
from ..dtypes import LOW_PRECISION, is_floating
from ..kernels import rows as row_kernels
from ..tensor import Tensor
from ._util import array_mean, is_int, widened, xp_of


class BatchNorm(ArrayFunction):
    """Normalise over (N, *spatial) per channel (dim 1); updates running stats in place."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        xp = xp_of(x)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)       # per-channel, broadcastable
        if training and x.size == 0:                         # an empty batch: as torch,
            xc, var = x, xp.ones(x.shape[1], x.dtype)        # empty output, stats unchanged
        elif training:
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(shape)
            var = (xc * xc).mean(axis=axes)                  # biased: used to normalise
            if running_mean is not None:
                n = x.size // x.shape[1]
                running_mean *= 1 - momentum
                running_mean += (momentum * mean).astype(running_mean.dtype, copy=False)
                running_var *= 1 - momentum
                running_var += (momentum * n / (n - 1) * var).astype(running_var.dtype,
                                                                     copy=False)
        else:
            xc = x - running_mean.reshape(shape).astype(x.dtype, copy=False)
            var = running_var.astype(x.dtype, copy=False)
        invstd = 1 / xp.sqrt(var + eps)
        xhat = xc * invstd.reshape(shape)
        y = xhat * weight.reshape(shape) if weight is not None else xhat
        if bias is not None:
            y += bias.reshape(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.conf = (training, axes, shape)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved_tensors
        training, axes, shape = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g_xhat = (g * xhat).sum(axis=axes) if (need_w or (need_x and training)) else None
        g_sum = g.sum(axis=axes) if (need_b or (need_x and training)) else None
        gx = None
        if need_x:
            scale = invstd if weight is None else invstd * weight
            if training:
                n = max(g.size // g.shape[1], 1)
                gx = (g - (g_sum / n).reshape(shape)
                      - xhat * (g_xhat / n).reshape(shape)) * scale.reshape(shape)
            else:
                gx = g * scale.reshape(shape)
        return (gx, g_xhat if need_w else None, g_sum if need_b else None,
                None, None, None, None, None)


def _fused_rows(x, weight, bias, ndim):
    """Whether kernels/layer_norm_cuda.py takes this layer norm (cuda; weight and bias, if any,
    in x's dtype)."""
    if backend.kernel_device(x) != "cuda":
        return False
    from ..kernels import layer_norm_cuda
    return layer_norm_cuda.supports(x, ndim) and all(
        a is None or a.dtype == x.dtype for a in (weight, bias))


class LayerNorm(ArrayFunction):
    """Normalise over the last ``ndim`` axes; weight and bias have those axes' shape (on cuda:
    one kernel forward, two backward, kernels/layer_norm_cuda.py)."""

    new_gradients = True        # every path's gx, gw, gb are arrays of its own

    @staticmethod
    def forward(ctx, x, weight, bias, ndim, eps):
        ctx.rows = None
        axes = tuple(range(x.ndim - ndim, x.ndim))
        ctx.axes, ctx.eps = axes, eps
        if _fused_rows(x, weight, bias, ndim):
            from ..kernels import layer_norm_cuda
            y, ctx.rows = layer_norm_cuda.forward(x, weight, bias, ndim, eps)
            ctx.shapes = (x.shape, None if weight is None else weight.shape,
                          None if bias is None else bias.shape)
            ctx.weight = weight         # for create_graph (graph_backward_nn._layer_norm)
            return y
        if row_kernels.applies(row_kernels.LAYER_NORM_MAX_SIZE, x, weight, bias):
            y, xhat, invstd = row_kernels.layer_norm(x, weight, bias, ndim, eps)
            # invstd shaped as the NumPy path's (keepdims), for graph_backward_nn._layer_norm
            ctx.save_for_backward(xhat, invstd.reshape(x.shape[:x.ndim - ndim] + (1,) * ndim),
                                  weight)
            return y
        xp = xp_of(x)
        xhat = x - array_mean(x, axes)
        invstd = 1 / xp.sqrt(array_mean(xp.square(xhat), axes) + eps)
        xhat *= invstd
        y = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            y += bias
        ctx.save_for_backward(xhat, invstd, weight)
        return y

    @staticmethod
    def backward(ctx, g):
        if ctx.rows is not None:
            from ..kernels import layer_norm_cuda
            gx, gw, gb = layer_norm_cuda.backward(g, ctx.rows, ctx.needs_input_grad[:3])
            x_shape, w_shape, b_shape = ctx.shapes
            return (None if gx is None else gx.reshape(x_shape),
                    None if gw is None or w_shape is None else gw.reshape(w_shape),
                    None if gb is None or b_shape is None else gb.reshape(b_shape), None, None)
        xhat, invstd, weight = ctx.saved_tensors
        axes = ctx.axes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if row_kernels.applies(row_kernels.LAYER_NORM_MAX_SIZE, xhat, g, weight):
            size = math.prod(xhat.shape[xhat.ndim - len(axes):])
            gx, gw, gb = row_kernels.layer_norm_backward(g, xhat, invstd.reshape(-1), weight, size,
                                                         need_x, need_w, need_b)
            shape = xhat.shape[xhat.ndim - len(axes):]
            return (gx, None if gw is None else gw.reshape(shape),
                    None if gb is None else gb.reshape(shape), None, None)
        lead = tuple(range(g.ndim - len(axes)))
        xp = xp_of(g)
        gx = gw = gb = None
        if need_w:
            gw = (g * xhat).sum(axis=lead)
        if need_b:
            gb = g.sum(axis=lead)
        if need_x:
            gx = g * weight if weight is not None else g.copy()      # d loss / d xhat
            product = gx * xhat
            m2 = array_mean(product, axes)
            gx -= array_mean(gx, axes)
            gx -= xp.multiply(xhat, m2, out=product)                 # reuses the buffer
            gx *= invstd
        return gx, gw, gb, None, None


def _check_vector(op, name, t, size, input):
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
    if t.shape != (size,):
        raise ValueError(f"{op}: {name} has shape {t.shape} but input of shape {input.shape} "
                         f"has {size} channels (expected ({size},))")


def _low_precision(input):
    """Norms of float16/bfloat16 input run in float32 (NumPy would take means in bfloat16) and
    return the input's dtype, as torch's, whose mixed-type norms also take float32 parameters
    with such input (a float32 model under autocast). Running statistics are updated in place
    in their own dtype; gradients come back in each parameter's dtype."""
    return getattr(input, "dtype", None) in LOW_PRECISION



def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over dim 1 of (N, C), (N, C, L) or (N, C, H, W) input.

    Training: normalise with the batch mean and biased variance, and (when running stats are
    given) update ``running_mean``/``running_var`` in place with ``momentum`` (the variance
    update uses the unbiased estimate). Otherwise normalise with the running statistics.
    """
    if _low_precision(input):
        return batch_norm(input.float(), running_mean, running_var, widened(weight),
                          widened(bias), training, momentum, eps).to(input.dtype)
    if not isinstance(input, Tensor):
        raise TypeError(f"batch_norm: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected input with at least 2 dims (N, C, ...), got "
                         f"shape {input.shape}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_vector("batch_norm", name, t, channels, input)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given or both "
                         "be None")
    if training and input._data.size // max(channels, 1) == 1:      # (an empty batch is fine)
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got input of shape {input.shape}")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var are needed when not training")
    if eps < 0 or (training and eps == 0):    # eps = 0 divides by a zero batch variance
        need = "positive during training" if training else "non-negative"
        raise ValueError(f"batch_norm: eps must be {need}, got {eps}")
    # a 0-d tensor momentum (BatchNorm's cumulative average: 1 / the batch count) is used
    # where it lives, not read
    momentum = momentum if isinstance(momentum, Tensor) else float(momentum)
    return BatchNorm.apply(input, weight, bias, running_mean, running_var, bool(training),
                           momentum, float(eps))


class ResidualLayerNorm(ArrayFunction):
    """layer_norm(r + (a + c)) over the last axis: a post-norm transformer layer's residual r,
    its block's GEMM product a and that GEMM's bias c (or None), in one node. On cuda one
    kernel forward (layer_norm_cuda.add_forward: the two adds folded into the norm), the norm's
    two backward; elsewhere the adds, then LayerNorm's own forward. The sum's gradient goes to
    r and a as it is; c's is its column sum."""

    # r and a share one array (the sum's gradient); c's, weight's and bias's are new
    new_gradients = (False, False, True, True, True, False)

    @staticmethod
    def forward(ctx, r, a, c, weight, bias, eps):
        ctx.rows = None
        if _fused_rows(a, weight, bias, 1) and r.dtype == a.dtype and r.shape == a.shape \
                and (c is None or c.dtype == a.dtype):
            from ..kernels import layer_norm_cuda
            y, ctx.rows = layer_norm_cuda.add_forward(r, a, c, weight, bias, eps)
            ctx.shapes = (a.shape, None if weight is None else weight.shape,
                          None if bias is None else bias.shape)
            ctx.axes, ctx.eps, ctx.weight = (a.ndim - 1,), eps, weight    # for create_graph
            return y
        x = r + (a if c is None else a + c)
        return LayerNorm.forward(ctx, x, weight, bias, 1, eps)

    @staticmethod
    def backward(ctx, g):
        needs = ctx.needs_input_grad
        need_r, need_a, need_c, need_w, need_b = needs[:5]
        ctx.needs_input_grad = (need_r or need_a or need_c, need_w, need_b)   # LayerNorm's
        try:
            gx, gw, gb = LayerNorm.backward(ctx, g)[:3]
        finally:
            ctx.needs_input_grad = needs          # as it was: a retained graph's next backward
        gc = None
        if need_c:
            gc = gx.reshape(-1, gx.shape[-1]).sum(axis=0)
        return gx if need_r else None, gx if need_a else None, gc, gw, gb, None


def residual_layer_norm(residual, product, product_bias, weight, bias, eps=1e-5):
    """``layer_norm(residual + (product + product_bias), (D,), weight, bias, eps)`` as one node
    (ResidualLayerNorm); the caller checks shapes and dtypes (D: the last dim)."""
    return ResidualLayerNorm.apply(residual, product, product_bias, weight, bias, float(eps))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims ``normalized_shape`` (mean 0, biased variance 1), then
    scale by ``weight`` and shift by ``bias`` (both of shape ``normalized_shape``)."""
    if _autocast.active:
        input, weight, bias = cast_inputs("layer_norm", input, weight, bias)
    if _low_precision(input):
        return layer_norm(input.float(), normalized_shape, widened(weight), widened(bias),
                          eps).to(input.dtype)
    if not isinstance(input, Tensor):
        raise TypeError(f"layer_norm: input must be a Tensor, got {type(input).__name__}")
    shape = _normalized_shape("layer_norm", input, normalized_shape, weight=weight, bias=bias)
    return LayerNorm.apply(input, weight, bias, len(shape), float(eps))


def _normalized_shape(op, input, normalized_shape, **affine):
    """``normalized_shape`` as a tuple, checked against the input's trailing dims and the
    shapes of the ``affine`` tensors (weight, bias; None where absent)."""
    shape = (normalized_shape,) if is_int(normalized_shape) else tuple(normalized_shape)
    if not shape or input.shape[input.ndim - len(shape):] != shape or len(shape) > input.ndim:
        raise ValueError(f"{op}: normalized_shape {shape} does not match the trailing "
                         f"dims of input of shape {input.shape}")
    for name, t in affine.items():
        if t is not None and t.shape != shape:
            raise ValueError(f"{op}: {name} has shape {t.shape}, expected {shape}")
    return shape


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, ...) input over each group of C / num_groups channels and all spatial
    positions (mean 0, biased variance 1), then scale and shift per channel."""
    if _autocast.active:
        input, weight, bias = cast_inputs("group_norm", input, weight, bias)
    if _low_precision(input):
        return group_norm(input.float(), num_groups, widened(weight), widened(bias),
                          eps).to(input.dtype)
    if not isinstance(input, Tensor) or input.ndim < 2:
        raise ValueError(f"group_norm: expected a (N, C, ...) tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    channels = input.shape[1]
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(f"group_norm: {channels} channels are not divisible into {num_groups} "
                         "groups")
    for name, t in (("weight", weight), ("bias", bias)):
        _check_vector("group_norm", name, t, channels, input)
    if input.numel() // num_groups == 1:     # torch's rule: N * C/G * spatial values must be > 1
        raise ValueError(f"group_norm: expected more than 1 value per group and batch, got input "
                         f"of shape {input.shape} in {num_groups} groups")
    per_group = input.numel() // max(input.shape[0] * num_groups, 1)
    grouped = input.reshape(input.shape[0], num_groups, per_group)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, unbiased=False, keepdim=True)
    out = ((grouped - mean) / (var + eps).sqrt()).reshape(input.shape)
    return _affine(out, weight, bias)


def _affine(out, weight, bias):
    shape = (1, out.shape[1]) + (1,) * (out.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalise each (sample, channel) of (N, C, ...) input over its spatial positions; with
    ``use_input_stats=False``, by the running statistics instead (as batch_norm in eval). Given
    running statistics are updated in place with the batch average of the instance statistics
    (the variance unbiased), as torch does."""
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"instance_norm: expected a (N, C, L, ...) tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_vector("instance_norm", name, t, channels, input)
    if (running_mean is None) != (running_var is None):     # before either is updated
        raise ValueError("instance_norm: running_mean and running_var must both be given or "
                         "both be None")
    if math.prod(input.shape[2:]) == 1:     # the variance of one value: torch refuses too
        raise ValueError(f"instance_norm: expected more than 1 spatial element when using the "
                         f"input's statistics, got input of shape {input.shape}")
    if running_mean is not None:
        from ..autograd import no_grad
        with no_grad():
            flat = input.detach().reshape(input.shape[0], channels, -1)
            running_mean.mul_(1 - momentum).add_(flat.mean(-1).mean(0) * momentum)
            running_var.mul_(1 - momentum).add_(flat.var(-1).mean(0) * momentum)
    if _autocast.active:        # torch's instance_norm is in no autocast list (group_norm is)
        with autocast(input._device, enabled=False):
            return group_norm(input, channels, weight, bias, eps)
    return group_norm(input, channels, weight, bias, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input / max(||input||_p over ``dim``, eps)."""
    if _autocast.active:
        (input,) = cast_inputs("normalize", input)
    from ..linalg import vector_norm
    return input / vector_norm(input, p, dim, keepdim=True).clamp_min(eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """Cosine of the angle between x1 and x2 along ``dim`` (broadcast), each norm clamped to at
    least ``eps``."""
    if _autocast.active:
        x1, x2 = cast_inputs("cosine_similarity", x1, x2)
    from ..linalg import vector_norm
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise TypeError("cosine_similarity: x1 and x2 must be Tensors")
    try:
        shape = tuple(np.broadcast_shapes(x1.shape, x2.shape))
    except ValueError:
        raise ValueError(f"cosine_similarity: shapes {x1.shape} and {x2.shape} are not "
                         "broadcastable") from None
    x1, x2 = x1.expand(*shape), x2.expand(*shape)
    unit1 = x1 / vector_norm(x1, 2, dim, keepdim=True).clamp_min(eps)
    unit2 = x2 / vector_norm(x2, 2, dim, keepdim=True).clamp_min(eps)
    return (unit1 * unit2).sum(dim)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """input / sqrt(mean(input**2 over the trailing dims ``normalized_shape``) + eps), scaled
    by ``weight`` (of shape ``normalized_shape``); ``eps=None`` is the machine epsilon of the
    input's dtype (float32's for float16/bfloat16), as torch. float16/bfloat16 are computed in float32 and rounded back."""
    if _autocast.active:
        input, weight = cast_inputs("rms_norm", input, weight)
    if not isinstance(input, Tensor):
        raise TypeError(f"rms_norm: input must be a Tensor, got {type(input).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"rms_norm: input must be a floating point tensor, got {input.dtype}")
    shape = _normalized_shape("rms_norm", input, normalized_shape, weight=weight)
    if eps is None:
        # torch's default is the epsilon of the type it computes in: float32's for
        # float16/bfloat16 input (their own epsilons, 1e-3 / 8e-3, swamp small activations)
        eps = float(np.finfo(np.float32).eps if _low_precision(input)
                    else ml_dtypes.finfo(input.dtype).eps)
    if _low_precision(input):
        return rms_norm(input.float(), shape, widened(weight), eps).to(input.dtype)
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    out = input * (input.square().mean(dims, keepdim=True) + eps).rsqrt()
    return out if weight is None else out * weight
