"""Module.register_full_backward_hook: ``hook(module, grad_input, grad_output)`` once the
gradients of a module call's tensor inputs are known (Grad-CAM and gradient logging use it);
register_full_backward_pre_hook: ``hook(module, grad_output)`` as the outputs' gradients arrive.

A call of a module with such hooks passes its tensor inputs that require grad through one
identity node and its tensor outputs through another, as torch's BackwardHook does: the
outputs' node runs the pre-hooks on the gradients arriving at the outputs and notes what they
pass on; the inputs' node hands the hooks both and passes on what they return. When no input requires grad the hooks run at the outputs' node,
with None for every input.
"""

from ..autograd import ArrayFunction
from ..higher_order import graph_backward
from ..tensor import Tensor


class _Call:
    """One module call's hooks and the output gradients noted for them."""

    def __init__(self, module, hooks, pre_hooks, device):
        self.module, self.device = module, device
        self.hooks = [hook for hook, _ in hooks.values()]
        self.pre_hooks = [hook for hook, _ in pre_hooks.values()]
        self.grad_output, self.needs = None, ()

    def tensors(self, arrays):
        return tuple(None if a is None else Tensor._make(a, False, None, 0, self.device)
                     for a in arrays)

    def run(self, grad_input):
        return self._replaced("backward hook", grad_input, [
            lambda g, hook=hook: hook(self.module, g, self.grad_output) for hook in self.hooks])

    def run_pre(self, grad_output):
        return self._replaced("backward pre-hook", grad_output, [
            lambda g, hook=hook: hook(self.module, g) for hook in self.pre_hooks])

    def _replaced(self, what, grads, calls):
        """``grads`` through each hook call in turn; a result other than None replaces them."""
        for call in calls:
            result = call(grads)
            if result is None:
                continue
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(result) != len(grads):
                raise RuntimeError(f"{what} of {type(self.module).__name__} returned "
                                   f"{len(result)} gradients, expected {len(grads)}")
            grads = result
        return grads


class _Identity(ArrayFunction):
    """Passes its arrays through; the subclasses' backward sees the gradients go by."""

    @staticmethod
    def forward(ctx, call, *arrays):
        ctx.call = call
        return arrays if len(arrays) > 1 else arrays[0]


class _Inputs(_Identity):
    @staticmethod
    def backward(ctx, *grads):
        call = ctx.call
        received = iter(call.tensors(grads))
        grad_input = tuple(next(received) if need else None for need in call.needs)
        grad_input = call.run(grad_input)
        passed = [g for g, need in zip(grad_input, call.needs) if need]
        return (None, *[None if g is None else g._data for g in passed])


class _Outputs(_Identity):
    @staticmethod
    def backward(ctx, *grads):
        call = ctx.call
        call.grad_output = call.run_pre(call.tensors(grads))
        if not any(call.needs):
            call.run((None,) * len(call.needs))
        return (None, *[None if g is None else g._data for g in call.grad_output])


# create_graph=True (gpudl.higher_order): the same, with the gradients already Tensors
@graph_backward(_Inputs)
def _inputs_graph_backward(saved, *grads):
    call = saved.ctx.call
    received = iter(grads)
    grad_input = call.run(tuple(next(received) if need else None for need in call.needs))
    return (None, *[g for g, need in zip(grad_input, call.needs) if need])


@graph_backward(_Outputs)
def _outputs_graph_backward(saved, *grads):
    call = saved.ctx.call
    call.grad_output = call.run_pre(grads)
    if not any(call.needs):
        call.run((None,) * len(call.needs))
    return (None, *call.grad_output)


def hooked_call(module, hooks, pre_hooks, forward, args, kwargs):
    """``forward(*args, **kwargs)`` with the module's full backward ``hooks`` and
    ``pre_hooks`` attached."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    device = tensors[0]._device if tensors else None
    call = _Call(module, hooks, pre_hooks, device)
    call.needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
    wanted = [a for a, need in zip(args, call.needs) if need]
    if wanted and call.hooks:
        through = _Inputs.apply(call, *wanted)
        through = iter(through if isinstance(through, tuple) else (through,))
        args = tuple(next(through) if need else a for a, need in zip(args, call.needs))
    output = forward(*args, **kwargs)
    single = isinstance(output, Tensor)
    outputs = (output,) if single else output
    if not isinstance(outputs, tuple):
        return output
    graded = [o for o in outputs if isinstance(o, Tensor) and o.requires_grad]
    if not graded:
        return output
    if call.device is None:
        call.device = graded[0]._device
    through = _Outputs.apply(call, *graded)
    through = iter(through if isinstance(through, tuple) else (through,))
    outputs = tuple(next(through) if isinstance(o, Tensor) and o.requires_grad else o
                    for o in outputs)
    return outputs[0] if single else outputs
