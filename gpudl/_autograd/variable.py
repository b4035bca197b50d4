"""torch.autograd.Variable: the legacy wrapper, which today makes a Tensor."""

from .. import autograd


class _VariableMeta(type):
    def __instancecheck__(cls, other):
        return isinstance(other, autograd._Tensor)     # every Tensor is a Variable, as torch


class Variable(metaclass=_VariableMeta):
    """``Variable(tensor, requires_grad=False)``: a Tensor sharing ``tensor``'s memory, detached
    from its graph, requiring grad as asked (torch's result); ``Variable()`` an empty one."""

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        Tensor = autograd._Tensor
        if data is None:
            from ..creation import empty
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        return data.detach().requires_grad_(requires_grad)
