"""Optimizer scalars that stay on the device: the step count of ``capturable=True`` and a learning
rate given as a 0-d Tensor.

A CUDA graph replays its kernels with the arguments they were captured with, so a step count or a
bias correction passed as a Python number would be frozen at its captured value. With
``capturable=True`` (torch's option of the same name) ``state["step"]`` is a 0-d float32 tensor on
the parameter's device, advanced in place, and everything derived from it is computed on the
device: a replayed graph advances it. A 0-d tensor learning rate is read by the update kernels
where it lies, so a scheduler that writes it in place changes what a replay uses. Neither reads the
device (backend.count_read).
"""

import numpy as np

from .. import backend
from ..tensor import Tensor


def check_lr(optimizer, lr, check_range):
    """Refuse a learning rate that is neither a real number >= 0 (``check_range``) nor a
    one-element floating Tensor."""
    if not isinstance(lr, Tensor):
        check_range(optimizer, "lr", lr)
        return
    if lr.numel() != 1 or lr.dtype.kind != "f":
        raise ValueError(f"{optimizer}: a Tensor lr must be a one-element floating tensor, got "
                         f"dtype {lr.dtype} and shape {lr.shape}")


def lr_array(lr):
    """The learning rate as the update uses it: a number, or a Tensor lr's 0-d array."""
    return lr._data.reshape(()) if isinstance(lr, Tensor) else lr


def advance_step(state, param, capturable):
    """Add one to ``state["step"]`` and return it: an int, or with ``capturable`` the 0-d float32
    device array (created from a loaded int the first time, without a read)."""
    step = state["step"]
    if not capturable:
        if isinstance(step, Tensor):     # capturable was switched off (or a torch state loaded)
            step = int(backend.host_value(step._data, "optimizer step count"))
        state["step"] = step + 1
        return step + 1
    if not isinstance(step, Tensor):
        step = state["step"] = device_step(param, step)
    step._data += 1
    return step._data


def device_step(param, value=0):
    """A 0-d float32 tensor on ``param``'s device holding ``value`` (the step count torch keeps)."""
    device = param.device.type if isinstance(param, Tensor) else \
        ("cuda" if backend.on_device(param) else "cpu")
    array = backend.to_device_array(np.array(value, np.float32), device)
    return Tensor._make(array, False, None, 0, device)


def bias_corrections(step, lr, beta1, beta2):
    """CUDA expressions of Adam's ``(neg_step_size, bias_correction2_sqrt)`` from the float64
    step count and float64 scalars named: the float64 arithmetic of advance_step,
    power_complement and Adam._update, each result cast to the parameter's dtype T."""
    return (f"(T)(-{lr} / (1.0 - pow({beta1}, {step})))",
            f"(T)pow(1.0 - pow({beta2}, {step}), 0.5)")


# Adam's step count and bias corrections in one launch on the cuda path
_BIAS_CORRECTIONS = (
    "float64 lr, float64 beta1, float64 beta2",
    "float32 step, T neg_step_size, T bias_correction2_sqrt",
    "step += 1;\n"
    "double s = step;\n"
    "neg_step_size = {};\n"
    "bias_correction2_sqrt = {};".format(*bias_corrections("s", "lr", "beta1", "beta2")),
    "gpudl_adam_bias_corrections")


def fused_bias_corrections(state, param, lr, betas):
    """On the cuda path with ``capturable``, for a float32/float64 parameter and a number ``lr``:
    advance ``state["step"]`` and return Adam's ``(-lr / (1 - beta1**step), sqrt(1 -
    beta2**step))`` as 0-d arrays of the parameter's dtype, all in one kernel. The composed
    version (advance_step, power_complement, casts) takes eleven small kernels per parameter,
    each a node a CUDA graph replays. None where this does not apply (a Tensor lr, another
    dtype, a step count that is not a 0-d float32 array on the parameter's device)."""
    step = device_step_array(state, param)
    if (step is None or not isinstance(lr, (int, float, np.floating))
            or param.dtype not in (np.float32, np.float64)):
        return None
    xp = backend.get_array_module(param)
    neg_step_size, bias_correction2_sqrt = xp.empty((), param.dtype), xp.empty((), param.dtype)
    backend.elementwise_kernel(*_BIAS_CORRECTIONS)(float(lr), float(betas[0]), float(betas[1]),
                                                   step, neg_step_size, bias_correction2_sqrt)
    return neg_step_size, bias_correction2_sqrt


def device_step_array(state, param):
    """``state["step"]``'s 0-d float32 array on ``param``'s device (the state made a device
    tensor from a loaded number the first time, without a read); None if it is not that."""
    step = state["step"]
    if not isinstance(step, Tensor):
        step = state["step"] = device_step(param, step)
    if (step._data.shape != () or step._data.dtype != np.float32
            or backend.get_array_module(step._data) is not backend.get_array_module(param)):
        return None
    return step._data


def power_complement(beta, step):
    """``1 - beta ** step`` in float64: host math for an int step, device math for an array."""
    if isinstance(step, int):
        return 1 - beta ** step
    return 1 - beta ** step.astype(np.float64)


def kernel_scalar(value, dtype):
    """A scalar of an update: numbers as they are (NumPy and CuPy cast them to the arrays'
    dtype), a computed array or NumPy scalar cast to ``dtype`` (0-d on the device: CuPy broadcasts
    it, no read), so that the arithmetic is the same in both cases."""
    return value.astype(dtype) if hasattr(value, "astype") else value
