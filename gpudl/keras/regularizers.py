"""Keras's weight regularizers: ``kernel_regularizer=regularizers.l2(1e-4)`` adds
``1e-4 * sum(kernel ** 2)`` to the training loss (L1: ``sum(|w|)``), as Keras does."""

from .serialization import Configurable


class Regularizer(Configurable):
    def __call__(self, weight):
        raise NotImplementedError


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, weight):
        total = 0
        if self.l1:
            total = total + self.l1 * weight.abs().sum()
        if self.l2:
            total = total + self.l2 * (weight * weight).sum()
        return total


class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)


class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)


l1, l2, l1_l2 = L1, L2, L1L2


def get(identifier):
    """A regularizer from None, a name ('l1', 'l2', 'l1_l2': Keras's 0.01) or a callable."""
    if identifier is None or callable(identifier):
        return identifier
    names = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(0.01, 0.01)}
    if isinstance(identifier, str) and identifier.lower() in names:
        return names[identifier.lower()]()
    raise ValueError(f"unknown regularizer {identifier!r}; expected None, 'l1', 'l2', 'l1_l2' "
                     "or a callable")
