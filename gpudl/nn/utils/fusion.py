"""nn.utils.fusion: fold an eval-mode BatchNorm into the convolution or linear layer before it
(one layer computing both), as torch.nn.utils.fuse_conv_bn_eval / fuse_linear_bn_eval."""

import copy

from ...autograd import no_grad
from ...creation import ones_like, zeros_like
from ..parameter import Parameter


def _check_eval(op, layer, bn):
    if layer.training or bn.training:
        raise ValueError(f"{op}: fusion only for eval! (call .eval() on both modules; got "
                         f"training={layer.training} and {bn.training})")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{op}: the batch norm has no running statistics "
                         "(track_running_stats=False), so there is nothing to fold")


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(weight, bias) Parameters of the convolution that computes ``bn(conv(x))`` in eval mode:
    ``w * gamma / sqrt(var + eps)`` per output channel (dim 1 of a transposed convolution's
    weight, dim 0 otherwise) and ``(b - mean) * gamma / sqrt(var + eps) + beta``. A missing
    conv bias is zeros, a missing bn weight ones and bias zeros."""
    weight_requires_grad = conv_w.requires_grad
    bias_requires_grad = conv_b.requires_grad if conv_b is not None else False
    bias_dtype = conv_b.dtype if conv_b is not None else conv_w.dtype
    with no_grad():
        conv_b = zeros_like(bn_rm) if conv_b is None else conv_b
        bn_w = ones_like(bn_rm) if bn_w is None else bn_w
        bn_b = zeros_like(bn_rm) if bn_b is None else bn_b
        scale = bn_w * (bn_rv + bn_eps).rsqrt()
        shape = ((1, -1) if transpose else (-1, 1)) + (1,) * (conv_w.ndim - 2)
        weight = (conv_w * scale.reshape(shape)).to(conv_w.dtype)
        bias = ((conv_b - bn_rm) * scale + bn_b).to(bias_dtype)
    return Parameter(weight, weight_requires_grad), Parameter(bias, bias_requires_grad)


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A copy of eval-mode ``conv`` that computes ``bn(conv(x))`` (``bn`` in eval mode too);
    ``transpose`` for a transposed convolution."""
    _check_eval("fuse_conv_bn_eval", conv, bn)
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(fused.weight, fused.bias, bn.running_mean,
                                                    bn.running_var, bn.eps, bn.weight, bn.bias,
                                                    transpose)
    return fused


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """(weight, bias) Parameters of the linear layer that computes ``bn(linear(x))`` in eval
    mode: rows scaled by ``gamma / sqrt(var + eps)``, bias ``(b - mean) * that + beta``."""
    weight_requires_grad = linear_w.requires_grad
    bias_requires_grad = linear_b.requires_grad if linear_b is not None else False
    bias_dtype = linear_b.dtype if linear_b is not None else linear_w.dtype
    with no_grad():
        linear_b = zeros_like(bn_rm) if linear_b is None else linear_b
        scale = bn_w * (bn_rv + bn_eps).rsqrt()
        weight = linear_w * scale.unsqueeze(-1).to(linear_w.dtype)
        bias = ((linear_b - bn_rm) * scale + bn_b).to(bias_dtype)
    return Parameter(weight, weight_requires_grad), Parameter(bias, bias_requires_grad)


def fuse_linear_bn_eval(linear, bn):
    """A copy of eval-mode ``linear`` that computes ``bn(linear(x))`` (``bn`` a BatchNorm1d in
    eval mode with ``num_features`` equal to ``out_features``, or 1)."""
    _check_eval("fuse_linear_bn_eval", linear, bn)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise ValueError(f"fuse_linear_bn_eval: to fuse, linear.out_features "
                         f"({linear.out_features}) must equal bn.num_features "
                         f"({bn.num_features}), or bn.num_features must be 1")
    fused = copy.deepcopy(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(fused.weight, fused.bias, bn.running_mean,
                                                      bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused
