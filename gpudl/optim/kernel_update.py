"""The GPU updates of an optimizer whose per-step numbers are host numbers (an int step count, a
number lr): NAdam, RAdam, Adamax, Adadelta, Rprop and ASGD.

One description gives both GPU paths, so they run the same CUDA lines on the same scalars and
give the same bits: one fused ElementwiseKernel per parameter (``foreach=False``, and what a
multi-tensor launch cannot take), or one multi-tensor launch per dtype and variant
(gpudl/multi_tensor.py, torch's foreach implementations). The per-step numbers a tensor's state
gives (bias corrections, decayed step sizes) go with each tensor in the launch's table.
"""

import functools

from .. import backend
from .. import multi_tensor
from .optimizer import Optimizer, fused


@functools.cache
def _kernel_params(scalars):
    return ", ".join(("T grad",) + tuple("T " + name for name in scalars))


@functools.cache
def _outputs(buffers):
    return ", ".join("T " + name for name in ("param",) + buffers)


class KernelUpdate(Optimizer):
    """An optimizer with one CUDA description of its update. A subclass sets

    - ``_KERNEL``: the per-parameter kernel's name, ``gpudl_<name>`` (the multi-tensor one is
      ``gpudl_mt_<name>``);
    - ``_GROUP_SCALARS``: the names of the kernel scalars every tensor of a group shares;
    - ``_TENSOR_SCALARS``: the names of those each tensor has its own value of (from its state);
    - ``_BUFFERS``: the state buffers the update writes after the parameter (their kernel names);

    and defines ``_group_values(group)`` (the group scalars' values), ``_step_numbers(state,
    group)`` (advance the state's step; return ``(variant, numbers)``: the tensor scalars' values
    and the variant of the lines they call for, such as RAdam's rectification, or None),
    ``_lines(group, variant)`` (the CUDA lines) and ``_cpu_update(param, grad, state, group,
    variant, numbers)`` (the same update with NumPy)."""

    _TENSOR_SCALARS = ()

    _reads_lr_as_number = True        # a Tensor lr is read each step

    def _update(self, param, grad, state, group):
        variant, numbers = self._step_numbers(state, group)
        if not backend.is_device_array(param):
            self._cpu_update(param, grad, state, group, variant, numbers)
            return
        kernel = fused(_kernel_params(self._GROUP_SCALARS + self._TENSOR_SCALARS),
                       _outputs(self._BUFFERS), self._lines(group, variant), self._KERNEL)
        kernel(grad, *self._group_values(group), *numbers, param,
               *(state[name]._data for name in self._BUFFERS))

    def _update_batched(self, updates, group):
        """Float32/float64 contiguous device tensors: one multi-tensor launch per dtype and
        variant (and ``SLOTS`` tensors), each tensor's own numbers in the table."""
        batches, rest = {}, []
        for param, grad, state in updates:
            arrays = (grad, param) + tuple(state[name]._data for name in self._BUFFERS)
            if multi_tensor.batchable(*arrays):
                variant, numbers = self._step_numbers(state, group)
                batches.setdefault((param.dtype, variant), []).append((arrays, numbers))
            else:
                rest.append((param, grad, state))
        scalars = self._group_values(group)
        for (_, variant), batch in batches.items():
            update = multi_tensor.Update(
                self._KERNEL.replace("gpudl_", "gpudl_mt_", 1), ("grad",),
                ("param",) + self._BUFFERS, _kernel_params(self._GROUP_SCALARS).partition(", ")[2],
                self._lines(group, variant), self._TENSOR_SCALARS)
            multi_tensor.launch(update, [arrays for arrays, _ in batch], scalars,
                                [numbers for _, numbers in batch])
        return rest
