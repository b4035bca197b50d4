"""F.linear: y = x @ w.T + b as one autograd node (ops.linalg.Linear), with torch's checks."""

from ..amp.autocast_mode import autocast, cast_inputs, state as _autocast
from ..tensor import Tensor
from .linalg import Linear


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias.

    Shape: input (*, in_features), weight (out_features, in_features), bias (out_features,)
    -> (*, out_features).
    """
    if _autocast.active:
        input, weight, bias = cast_inputs("linear", input, weight, bias)
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"linear: input and weight must be Tensors, got "
                        f"{type(input).__name__} and {type(weight).__name__}")
    x, w = input._data, weight._data    # read once: Tensor.shape and .dtype are properties
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} has {input.shape[-1:]} features "
                         f"but weight of shape {weight.shape} expects (out_features, "
                         "in_features) with matching in_features")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"linear: bias must be a Tensor or None, got {type(bias).__name__}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"linear: bias of shape {bias.shape} does not match "
                         f"out_features {w.shape[0]}")
    if x.dtype != w.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} "
                        "differ")
    return Linear.apply(input, weight, bias)


def bilinear(input1, input2, weight, bias=None):
    """y[..., o] = sum_ij input1[..., i] weight[o, i, j] input2[..., j] + bias[o].

    Shape: input1 (*, in1), input2 (*, in2) (the same leading dims), weight (out, in1, in2),
    bias (out,) -> (*, out). One GEMM against weight laid out as (in1, out * in2), then a
    product with input2 summed over in2.
    """
    for name, t in (("input1", input1), ("input2", input2), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"bilinear: {name} must be a Tensor, got {type(t).__name__}")
    if weight.ndim != 3 or input1.ndim == 0 or input1.shape[:-1] != input2.shape[:-1] \
            or (input1.shape[-1], input2.shape[-1]) != weight.shape[1:]:
        raise ValueError(f"bilinear: expected input1 (*, in1), input2 (*, in2) with the same "
                         f"leading dims and weight (out, in1, in2); got {input1.shape}, "
                         f"{input2.shape} and {weight.shape}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bilinear: bias of shape {bias.shape} does not match out_features "
                         f"{weight.shape[0]}")
    if _autocast.active:     # one op to autocast, as torch's (its matmul is not cast again)
        input1, input2, weight, bias = cast_inputs("bilinear", input1, input2, weight, bias)
        with autocast(input1._device, enabled=False):
            return _bilinear(input1, input2, weight, bias)
    return _bilinear(input1, input2, weight, bias)


def _bilinear(input1, input2, weight, bias):
    out, in1, in2 = weight.shape
    mixed = input1 @ weight.permute(1, 0, 2).reshape(in1, out * in2)     # (*, out * in2)
    y = (mixed.reshape(*input1.shape[:-1], out, in2) * input2.unsqueeze(-2)).sum(-1)
    return y if bias is None else y + bias
