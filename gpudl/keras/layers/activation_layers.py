"""Keras's activation layers with weights or options of their own: PReLU and ELU."""

from ...nn import functional as F
from .. import activations
from ..engine import Layer


class PReLU(Layer):
    """``max(x, 0) - alpha * max(-x, 0)`` with a learned ``alpha`` per input position (Keras's
    weight ``alpha``, shape ``input_shape[1:]``, zeros), shared (size 1) along ``shared_axes``
    (1-based, the batch excluded: ``shared_axes=[1, 2]`` for one alpha per channel of images)."""

    supports_masking = True

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kwargs):
        if alpha_constraint is not None:
            raise NotImplementedError("PReLU: alpha_constraint is not supported")
        super().__init__(alpha_regularizer=alpha_regularizer, **kwargs)
        self.alpha_initializer = alpha_initializer
        self.shared_axes = [] if shared_axes is None else \
            [shared_axes] if isinstance(shared_axes, int) else list(shared_axes)

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes:
            if not 1 <= axis < len(input_shape):
                raise ValueError(f"PReLU: shared_axes entries must be in [1, "
                                 f"{len(input_shape) - 1}], got {axis}")
            shape[axis - 1] = 1
        self.add_weight("alpha", tuple(shape), self.alpha_initializer)

    def call(self, inputs):
        return F.relu(inputs) - self.alpha * F.relu(-inputs)


class ELU(Layer):
    """``x`` if positive, else ``alpha * (exp(x) - 1)``."""

    supports_masking = True

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return activations.elu(inputs, self.alpha)
