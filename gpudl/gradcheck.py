"""gradcheck: the gradients autograd computes, against central finite differences.

``gpudl.autograd.gradcheck(fn, inputs)`` builds both Jacobians of ``fn``'s floating outputs with
respect to its inputs that require grad: column by column from ``autograd.grad`` with one-hot
output gradients, and from ``(fn(x + eps) - fn(x - eps)) / (2 eps)`` per input element. Inputs
should be float64 (float32 differences are too coarse for the default tolerances).
"""

import warnings

import numpy as np

from . import autograd, backend


class GradcheckError(RuntimeError):
    """Raised by gradcheck (``raise_exception=True``) when the Jacobians differ."""


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, check_grad_dtypes=False,
              check_batched_grad=False, check_batched_forward_grad=False,
              check_forward_ad=False, check_backward_ad=True, fast_mode=False, masked=None):
    """True when autograd's Jacobian of ``func(*inputs)`` matches finite differences within
    ``atol + rtol * |numerical|`` element by element; otherwise raises GradcheckError (or returns
    False with ``raise_exception=False``). torch's signature; the batched and forward-mode
    checks are not supported (refused when asked for), the other flags change nothing here."""
    if check_batched_grad or check_batched_forward_grad or check_forward_ad:
        raise NotImplementedError("gradcheck: batched and forward-mode checks are not supported")
    Tensor = autograd._Tensor
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    wrt = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: expected at least one input tensor to require gradient, "
                         "but none of them have requires_grad=True")
    for i, t in enumerate(wrt):
        if t.dtype != np.float64:
            warnings.warn(f"gradcheck: input {i} requires gradient and is {t.dtype}, not "
                          "float64: finite differences will be inaccurate", stacklevel=2)
    numerical = [_numerical_jacobian(func, inputs, t, eps) for t in wrt]
    analytical = _analytical_jacobian(func, inputs, wrt)
    for i, (num, ana) in enumerate(zip(numerical, analytical)):
        if num.shape != ana.shape:
            return _fail(raise_exception, f"the outputs of func differ between calls: Jacobian "
                         f"shapes {num.shape} (numerical) and {ana.shape} (analytical)")
        if not np.allclose(ana, num, rtol=rtol, atol=atol):
            worst = np.unravel_index(np.argmax(np.abs(ana - num) - rtol * np.abs(num)),
                                     num.shape)
            return _fail(raise_exception,
                         f"Jacobian mismatch with respect to input {i} (of those that require "
                         f"grad), worst at (input element, output element) {worst}: numerical "
                         f"{num[worst]!r}, analytical {ana[worst]!r}\nnumerical:\n{num}\n"
                         f"analytical:\n{ana}")
    return True


def _fail(raise_exception, message):
    if raise_exception:
        raise GradcheckError("gradcheck: " + message)
    return False


def _flat_outputs(func, inputs):
    """The floating outputs of ``func(*inputs)``, as the Tensors (a tuple)."""
    out = func(*inputs)
    out = (out,) if isinstance(out, autograd._Tensor) else tuple(out)
    return tuple(o for o in out if isinstance(o, autograd._Tensor)
                 and autograd._differentiable(o.dtype))


def _values(outputs):
    return np.concatenate([backend.to_numpy(o._data, "gradcheck").astype(np.float64).ravel()
                           for o in outputs]) if outputs else np.zeros(0)


def _numerical_jacobian(func, inputs, t, eps):
    """(t.numel(), outputs' numel) of central differences, perturbing ``t``'s memory in
    place (and restoring it) without recording."""
    data = t._data
    columns = []
    with autograd.no_grad():
        for flat in range(data.size):
            index = np.unravel_index(flat, data.shape)
            original = data[index].copy()
            data[index] = original + eps
            plus = _values(_flat_outputs(func, inputs))
            data[index] = original - eps
            minus = _values(_flat_outputs(func, inputs))
            data[index] = original
            columns.append((plus - minus) / (2 * eps))
    width = columns[0].size if columns else 0
    return np.array(columns).reshape(data.size, width)


def _analytical_jacobian(func, inputs, wrt):
    """Per input of ``wrt``: (its numel, outputs' numel), one autograd.grad per output element."""
    outputs = _flat_outputs(func, inputs)
    total = sum(o._data.size for o in outputs)
    jacobians = [np.zeros((t._data.size, total)) for t in wrt]
    column = 0
    for o in outputs:
        xp = backend.get_array_module(o._data)
        for flat in range(o._data.size):
            seed = xp.zeros(o._data.shape, o.dtype)
            seed[np.unravel_index(flat, seed.shape)] = 1
            if o.requires_grad:
                grads = autograd.grad(o, wrt, autograd._Tensor._make(seed, False, None, 0,
                                                                     o._device),
                                      retain_graph=True, allow_unused=True)
                for jacobian, g in zip(jacobians, grads):
                    if g is not None:
                        jacobian[:, column] = backend.to_numpy(g._data, "gradcheck").ravel()
            column += 1
    return jacobians


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
                  check_fwd_over_rev=False, check_rev_over_rev=True, fast_mode=False,
                  masked=False):
    """torch.autograd.gradgradcheck: gradcheck of the first gradient, the function
    ``(inputs, grad_outputs) -> autograd.grad(func(*inputs), inputs, grad_outputs,
    create_graph=True)``, whose Jacobian autograd computes by differentiating that gradient
    (second derivatives) and compares with finite differences of it. ``grad_outputs`` (one per
    floating output) default to random normal float64 tensors that require grad."""
    if check_batched_grad or check_fwd_over_rev:
        raise NotImplementedError("gradgradcheck: batched and forward-mode checks are not "
                                  "supported")
    Tensor = autograd._Tensor
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    wrt_positions = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(
            Tensor(rng.standard_normal(o.shape), requires_grad=True, dtype=np.float64,
                   device=o._device)
            for o in _flat_outputs(func, inputs))
    grad_outputs = (grad_outputs,) if isinstance(grad_outputs, Tensor) else tuple(grad_outputs)

    def first_gradient(*args):
        values, seeds = args[:len(inputs)], args[len(inputs):]
        with autograd.enable_grad():     # the numerical Jacobian calls this under no_grad
            outputs = _flat_outputs(func, values)
            return autograd.grad(outputs, [values[i] for i in wrt_positions], seeds,
                                 create_graph=True, materialize_grads=True)

    return gradcheck(first_gradient, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
