"""``gd.testing``: gradient checking (autograd against central finite differences, in float64)
and ``assert_close`` (gpudl.assert_close)."""

import numpy as np

from .assert_close import assert_close  # noqa: F401  (torch.testing's name)
from .dtypes import is_floating
from . import backend
from .autograd import no_grad
from .tensor import Tensor


def _scalar_output(fn, inputs, weights):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum((o * w).sum() for o, w in zip(outs, weights) if w is not None)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check the gradients autograd gives ``fn`` at ``inputs`` against finite differences.

    ``inputs`` is a sequence; its float64 Tensors with ``requires_grad`` are checked. ``fn`` may
    return a Tensor or a tuple of Tensors; each is contracted with fixed random weights so every
    output element is checked. Raises AssertionError naming the input and the worst element.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 for "
                            "finite differences")
    with no_grad():
        first = fn(*inputs)
    outs = first if isinstance(first, (tuple, list)) else (first,)
    rng = np.random.default_rng(0)
    weights = [Tensor._make(backend.to_device_array(rng.standard_normal(o.shape), o.device),
                            False, None, 0, o.device)
               if isinstance(o, Tensor) and is_floating(o.dtype) else None for o in outs]
    for i in checked:
        inputs[i].grad = None
    _scalar_output(fn, inputs, weights).backward()
    for i in checked:
        t = inputs[i]
        analytic = backend.to_numpy(t.grad._data) if t.grad is not None else np.zeros(t.shape)
        numeric = np.zeros(t.shape)
        flat = t._data.reshape(-1)          # a view: perturb in place
        for k in range(flat.size):
            original = flat[k].item()
            with no_grad():
                flat[k] = original + eps
                plus = _scalar_output(fn, inputs, weights).item()
                flat[k] = original - eps
                minus = _scalar_output(fn, inputs, weights).item()
            flat[k] = original
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol, equal_nan=True):
            worst = np.unravel_index(np.argmax(np.abs(analytic - numeric)), t.shape)
            raise AssertionError(
                f"gradcheck: input {i} (shape {t.shape}) mismatch at {worst}: autograd "
                f"{analytic[worst]:.8g} vs finite difference {numeric[worst]:.8g}; max abs error "
                f"{np.max(np.abs(analytic - numeric)):.3g}")
    return True
