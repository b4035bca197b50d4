"""Multi-layer perceptrons: ``MLP`` and the activation lookup the other models share."""

import numbers

from .. import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "silu": nn.SiLU, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def make_activation(activation, where):
    """A fresh activation Module from a name in ``ACTIVATIONS`` or a Module class/factory."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"{where}: unknown activation {activation!r}; expected one of "
                             f"{sorted(ACTIVATIONS)} or a callable returning a Module")
        return ACTIVATIONS[activation]()
    if callable(activation):
        module = activation()
        if isinstance(module, nn.Module):
            return module
    raise TypeError(f"{where}: activation must be a name or a callable returning a Module, got "
                    f"{activation!r}")


def check_positive(where, **sizes):
    """Raise ValueError unless every size is a positive int."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


class MLP(nn.Sequential):
    """Linear layers with an activation (and optional dropout) between them.

    ``MLP(64, hidden=(128, 64), out_features=10)`` is
    ``Linear(64, 128), ReLU, Linear(128, 64), ReLU, Linear(64, 10)``: the output is raw (logits
    or regression values), so pair it with ``CrossEntropyLoss``/``MSELoss``. Keras-style
    training: ``gpudl.keras.compile(mlp, ...)`` then ``gpudl.keras.fit(mlp, x, y)``.

    Args:
        in_features, out_features: input and output sizes.
        hidden: sizes of the hidden layers (an int for one layer, ``()`` for a linear model).
        activation: 'relu', 'tanh', 'sigmoid', 'gelu', 'silu', 'elu', 'leaky_relu', or a
            callable returning a Module.
        dropout: dropout probability after each hidden activation (0 adds no Dropout layer).

    Shape: (N, in_features) -> (N, out_features).
    """

    def __init__(self, in_features, hidden=(64,), out_features=1, activation="relu",
                 dropout=0.0):
        hidden = (hidden,) if isinstance(hidden, numbers.Integral) else tuple(hidden)
        check_positive("MLP", in_features=in_features, out_features=out_features,
                       **{f"hidden[{i}]": h for i, h in enumerate(hidden)})
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0 <= dropout < 1:
            raise ValueError(f"MLP: dropout must be a number in [0, 1), got {dropout!r}")
        layers = []
        sizes = (in_features,) + hidden
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), make_activation(activation, "MLP")]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features
