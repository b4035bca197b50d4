"""F.linear: y = x @ w.T + b as one autograd node (ops.linalg.Linear), with torch's checks."""

from ..amp.autocast_mode import cast_inputs, state as _autocast
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
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} has {input.shape[-1:]} features "
                         f"but weight of shape {weight.shape} expects (out_features, "
                         "in_features) with matching in_features")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias of shape {bias.shape} does not match "
                         f"out_features {weight.shape[0]}")
    if input.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} "
                        "differ")
    return Linear.apply(input, weight, bias)
