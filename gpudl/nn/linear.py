"""Linear, Bilinear, Identity, Flatten, Unflatten."""

import math

from .. import creation, dtypes
from ..ops._util import is_int
from ..ops.linear import bilinear, linear
from . import init
from .module import Module, Parameter


class Identity(Module):
    """Returns its input unchanged (a placeholder that accepts and ignores any arguments)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias, with PyTorch's initialisation: weight by
    kaiming_uniform_(a=sqrt(5)) (U(-1/sqrt(in), 1/sqrt(in))), bias U(-1/sqrt(in), 1/sqrt(in)).

    Shape: (*, in_features) -> (*, out_features).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _check_size("Linear", in_features=in_features, out_features=out_features)
        in_features, out_features = int(in_features), int(out_features)
        self.in_features, self.out_features = in_features, out_features
        dtype = dtypes.as_dtype(dtype, "Linear") or dtypes.DEFAULT_FLOAT
        self.weight = Parameter(creation.empty(out_features, in_features, dtype=dtype,
                                               device=device))
        if bias:
            self.bias = Parameter(creation.empty(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Expand dim ``dim`` into ``unflattened_size``: Unflatten(1, (C, H, W))."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input):
        dim = self.dim % input.ndim if input.ndim else 0
        shape = input.shape
        known = math.prod(n for n in self.unflattened_size if n != -1)
        inferred = -1 in self.unflattened_size
        if (known == 0 or shape[dim] % known) if inferred else known != shape[dim]:
            raise ValueError(f"Unflatten: size {shape[dim]} of dim {self.dim} of input of shape "
                             f"{shape} cannot be unflattened into {self.unflattened_size}")
        return input.reshape(shape[:dim] + self.unflattened_size + shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


def _check_size(op, **sizes):
    for name, n in sizes.items():
        if not is_int(n) or n < 0:
            raise ValueError(f"{op}: {name} must be a non-negative int, got {n!r}")


class Bilinear(Module):
    """y = x1^T A x2 + b per output feature, with PyTorch's initialisation: weight
    (out_features, in1_features, in2_features) and bias (out_features,) both
    U(-1/sqrt(in1_features), 1/sqrt(in1_features)).

    Shape: (*, in1_features), (*, in2_features) -> (*, out_features).
    """

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None,
                 dtype=None):
        super().__init__()
        _check_size("Bilinear", in1_features=in1_features, in2_features=in2_features,
                    out_features=out_features)
        self.in1_features, self.in2_features = int(in1_features), int(in2_features)
        self.out_features = int(out_features)
        dtype = dtypes.as_dtype(dtype, "Bilinear") or dtypes.DEFAULT_FLOAT
        self.weight = Parameter(creation.empty(self.out_features, self.in1_features,
                                               self.in2_features, dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(creation.empty(self.out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.in1_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
