"""Custom autograd Functions written as in PyTorch's tutorials (Tensors in, Tensors out), run
side by side with torch on fresh random inputs: values, gradients, ctx's methods, and the
errors torch gives."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng()


def _functions(T):
    """The same custom Functions for torch or gpudl (``T``)."""

    class MyReLU(T.autograd.Function):           # the 60-minute blitz's
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return input.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad_input[input < 0] = 0
            return grad_input

    class LinearFunction(T.autograd.Function):   # "Extending PyTorch"'s, optional bias
        @staticmethod
        def forward(ctx, input, weight, bias=None):
            ctx.save_for_backward(input, weight, bias)
            output = input.mm(weight.t())
            if bias is not None:
                output += bias.unsqueeze(0).expand_as(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            input, weight, bias = ctx.saved_tensors
            grad_input = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_input = grad_output.mm(weight)
            if ctx.needs_input_grad[1]:
                grad_weight = grad_output.t().mm(input)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)
            return grad_input, grad_weight, grad_bias

    class MulConstant(T.autograd.Function):      # torch 2's forward without ctx
        @staticmethod
        def forward(tensor, constant):
            return tensor * constant

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.constant = inputs[1]

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output * ctx.constant, None

    class SortWithIndex(T.autograd.Function):    # an integer output, marked
        @staticmethod
        def forward(ctx, x):
            values, index = x.sort(dim=-1)
            ctx.mark_non_differentiable(index)
            ctx.save_for_backward(index)
            ctx.set_materialize_grads(False)
            return values, index

        @staticmethod
        def backward(ctx, grad_values, grad_index):
            index, = ctx.saved_tensors
            return T.zeros_like(grad_values).scatter(-1, index, grad_values)

    class Exp(T.autograd.Function):             # saves its output
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            y, = ctx.saved_tensors
            return grad * y

    class ExpInPlace(Exp):                       # edits its input, marked dirty; inherits backward
        @staticmethod
        def forward(ctx, x):
            x.exp_()
            ctx.mark_dirty(x)
            ctx.save_for_backward(x)
            return x

    return MyReLU, LinearFunction, MulConstant, SortWithIndex, ExpInPlace, Exp


def _run(T, arrays):
    my_relu, linear, mul_constant, sort_with_index, exp_in_place, _ = _functions(T)
    x, w, b, v = (T.tensor(a, requires_grad=True) for a in arrays)
    h = my_relu.apply(linear.apply(x, w, b))
    h = mul_constant.apply(h, 2.5)
    values, index = sort_with_index.apply(h)
    edited = exp_in_place.apply(v * 0.5)
    loss = (values * T.arange(values.shape[-1], dtype=values.dtype)).sum() + edited.sum()
    loss.backward()
    return dict(values=values, index=index, edited=edited, x=x.grad, w=w.grad, b=b.grad, v=v.grad,
                flags=(values.requires_grad, index.requires_grad, edited.requires_grad))


def test_tutorial_functions_match_torch(rng):
    arrays = (rng.standard_normal((5, 4)), rng.standard_normal((6, 4)), rng.standard_normal(6),
              rng.standard_normal((2, 3)))
    ours, theirs = _run(gd, arrays), _run(torch, arrays)
    assert ours.pop("flags") == theirs.pop("flags") == (True, False, True)
    for name, expected in theirs.items():
        np.testing.assert_allclose(ours[name].numpy(), expected.detach().numpy(), rtol=1e-12,
                                   err_msg=name)


def test_forward_and_backward_see_tensors_without_recording(rng):
    seen = {}

    class Probe(gd.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            seen["forward"] = (type(x), x.requires_grad, gd.is_grad_enabled(), scale)
            return x * scale

        @staticmethod
        def backward(ctx, grad):
            seen["backward"] = (type(grad), gd.is_grad_enabled())
            return grad * 2, None

    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    Probe.apply(x, 2).sum().backward()
    assert seen == {"forward": (gd.Tensor, False, False, 2), "backward": (gd.Tensor, False)}
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_a_saved_tensor_edited_in_place_makes_backward_raise(rng):
    my_relu = _functions(gd)[0]
    x = gd.tensor(rng.standard_normal(4), requires_grad=True)
    h = x * 1.0
    y = my_relu.apply(h)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_second_backward_needs_retain_graph(rng):
    my_relu = _functions(gd)[0]
    x = gd.tensor(rng.standard_normal(4), requires_grad=True)
    y = my_relu.apply(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 * (x.numpy() > 0))
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def _double_backward(T, values):
    class Cube(T.autograd.Function):            # saves its input
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return grad * 3 * x ** 2

    functions = _functions(T)
    my_relu, exp = functions[0], functions[5]
    x = T.tensor(values, requires_grad=True)
    y = (Cube.apply(x) * exp.apply(x) + my_relu.apply(x) * x).sum()
    g, = T.autograd.grad(y, x, create_graph=True)
    h, = T.autograd.grad((g * g).sum(), x)
    return g.detach().numpy(), h.numpy()


def test_double_backward_through_custom_functions_matches_torch(rng):
    # create_graph=True runs each custom backward recording, its saved tensors (an input, an
    # output) at their places in the graph: the gradient penalty of WGAN-GP through custom ops
    values = rng.standard_normal(6)
    for ours, theirs in zip(_double_backward(gd, values), _double_backward(torch, values)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_backward_returning_too_few_gradients_is_named(rng):
    class Two(gd.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad

    a, b = (gd.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(2))
    with pytest.raises(RuntimeError, match=r"Two.backward returned 1 gradients, expected 2"):
        Two.apply(a, b).sum().backward()
