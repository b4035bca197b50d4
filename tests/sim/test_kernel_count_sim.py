"""Kernels per training step on the cuda path, counted offline (benchmarks/kernel_count.py): the
optimizers update every parameter in one multi-tensor launch (gpudl/multi_tensor.py), Adam
with ``capturable=True`` in one more for the step counts, where the per-parameter kernels
(``foreach=False``) took one (SGD) or two (Adam) per parameter."""

import pytest

import gpudl
from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIM_DEVICE_ARRAYS,
                                 reason="counts on the strict simulator's cuda device: "
                                 "NUMBA_ENABLE_CUDASIM=1 with GPUDL_DEVICE=cuda")]


def _optimizer_kernels(builder, foreach, **sizes):
    from benchmarks import kernel_count, workloads
    kernel_count._import_kernel_modules()
    parts = getattr(workloads, builder)(gpudl, "cuda", True, **sizes)
    for group in parts[2].param_groups:
        group["foreach"] = foreach
    kernels, sites = kernel_count.count_step(parts)
    assert sum(kernels.values()) > 20        # the forward and backward are counted too
    return sum(n for site, n in sites.items() if site.startswith("optim/")), kernels


@pytest.mark.parametrize("builder, sizes, parameters, per_parameter, batched", [
    ("lenet_parts", {"batch": 2}, 10, 1, 1),
    ("sunspots_parts", {"batch": 2, "window": 4}, 10, 2, 2),
    ("transformer_parts", {"batch": 2, "seq": 4}, 26, 2, 2)])
def test_the_optimizer_step_is_one_launch_not_one_per_parameter(builder, sizes, parameters,
                                                                per_parameter, batched):
    looped, _ = _optimizer_kernels(builder, False, **sizes)
    assert looped == per_parameter * parameters
    together, kernels = _optimizer_kernels(builder, None, **sizes)
    assert together == batched
    assert any(name.startswith("cupy kernel gpudl_mt_") for name in kernels)


# The sunspots step (2-layer LSTM, Linear head, MSE, capturable Adam) as session 17 left it; a
# change that adds a kernel to the recurrent layers or the loss fails here (lower it when a
# kernel goes away). Per layer: the input projection (a GEMM), one persistent launch forward
# and one backward, one launch for the weight and bias gradients, and a GEMM for the layer's
# input gradient where the input needs one; the MSE one kernel each way.
SUNSPOTS_RECURRENT_AND_LOSS = {"kernels/lstm.py:_input_projection": 2,
                               "kernels/lstm_persistent_cuda.py:_launch": 4,
                               "kernels/lstm_wgrad_cuda.py:weight_grads": 2,
                               "kernels/lstm.py:_weight_grads": 1,
                               "ops/rnn.py:forward": 1,            # batch_first x, made (T, B, I)
                               "ops/loss.py:device_value": 1, "ops/loss.py:device_grads": 1}
SUNSPOTS_KERNELS = 24       # 54 before session 17 (counted as now)


def test_the_sunspots_step_keeps_its_kernel_count():
    from benchmarks import kernel_count, workloads
    kernel_count._import_kernel_modules()
    parts = workloads.sunspots_parts(gpudl, "cuda", True, batch=2, window=4)
    kernels, sites = kernel_count.count_step(parts)
    recurrent_and_loss = {site: n for site, n in sites.items()
                          if site.startswith(("kernels/lstm", "ops/rnn", "ops/loss"))}
    assert recurrent_and_loss == SUNSPOTS_RECURRENT_AND_LOSS
    assert not any(site.startswith(("creation", "autograd.py:<listcomp>")) for site in sites), \
        "zeros made for the initial states or for outputs without gradient"
    assert sum(kernels.values()) <= SUNSPOTS_KERNELS, sites
