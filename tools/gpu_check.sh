#!/usr/bin/env bash
# The GPU check: run it first thing on a lent GPU machine (see README, Contributing).
#   bash tools/gpu_check.sh check      # log in tools/gpu_check.log (and $OUT/ when set)
#   bash tools/gpu_check.sh measure
# Installs the checkout without network, runs the attention precision tests (float16, bfloat16,
# TF32 and 3xTF32 kernels against torch float64), the whole suite with GPUDL_DEVICE=cuda, then the
# NCCL world-of-1 tests with their skip reasons shown and the NCCL all-reduce figure (a world of
# one: the per-call floor; benchmarks/allreduce.py), the GPU benchmarks against PyTorch
# (the benchmark shapes of benchmarks/compare.py, forward and forward+backward, strict fp32 and PyTorch's defaults, each with
# its fraction of the floor; the LeNet-5, sunspots LSTM and transformer steps eager and as a CUDA
# graph), the host time per kernel launch, and the time and host time per training step, eager
# and graphed, gpudl and PyTorch (benchmarks/graph_steps.py), and one LSTM layer (hidden 128, 256,
# 512) through each of gpudl's paths against cuDNN, with the paths' differences
# (benchmarks/lstm_paths.py). The zero-sync test (a whole training step adds nothing to
# gd.cuda.sync_count) runs on the GPU after the suite. Two profiles say why a figure is what it
# is: every kernel a step or benchmark row runs, gpudl's and torch's, from CUPTI
# (benchmarks/kernel_profile.py), and where an eager step's host time goes (host_profile.py).
# One device command may run at most 10 minutes and a session has 15 minutes of device time
# (the start, ~35 s, included), so the steps come in two groups, one command each, the second
# sent as soon as the first returns (the machine stays warm 30 s):
#   check:   install, kernel_cache, graph_probe, tests_new, tests, numba_launch,
#            attention_precision                                                    (~500 s)
#   measure: install, kernel_cache, launches, numba_launch_rows, benchmarks, host_profile,
#            kernel_profile, conv_paths, zero_sync, graph_steps, lstm_paths, nccl,
#            nccl_allreduce                                                          (~800 s)
# the measure group's steps go by what they decide: first what the packed launch (the default
# for eager launches since session 21) saves: its host time a launch, and the host-bound rows
# through Numba's launcher (pooling, single SDPA calls, conv forwards, eager steps; the third
# run's kernel profile put max_pool2d's kernel at 19 us against torch's 41, behind ~106 us of
# host time a call) against the same rows in the compare table, then the compare
# table that issue 12's targets are read from, where the host and device time go, the
# convolution paths (Winograd against conv_cuda), then the rest (graph_steps: issue 14's
# targets were met in session 20's run); a step past the deadline is skipped. Session 20's
# measure command (475 s) got through graph_steps, compare.py up to the fp16 SDPA rows
# (compiling), kernel_profile and part of conv_paths. Give each command a deadline that fits what is left
# (GPU_CHECK_DEADLINE, below), e.g. with 900 s left: `GPU_CHECK_DEADLINE=$(( $(date +%s) + 480 ))
# bash tools/gpu_check.sh check` with timeout_s 500, then the measure group with the time then
# left. As seen on the second run (H200, session 13, benchmarks/RESULTS.md): the suite runs
# ~28 tests/s in 14 processes, compiling included (5,100 tests in 186 s, not all of it);
# compare.py needs ~260 s; graph_steps ~65 s; lstm_paths more than 15 s.
# Step names as arguments run only those steps, e.g.
# `bash tools/gpu_check.sh install tests benchmarks launches`. No argument: every step.
# The offline PTX check is CI's job; here the kernels compile for the real device as tests run.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${GPU_CHECK_LOG:-tools/gpu_check.log}
status=0
chosen=" $* "
chosen=${chosen// check / install kernel_cache graph_probe tests_new tests numba_launch attention_precision }
chosen=${chosen// measure / install kernel_cache launches numba_launch_rows benchmarks host_profile kernel_profile conv_paths zero_sync graph_steps lstm_paths nccl nccl_allreduce }
known=" install kernel_cache graph_probe attention_precision tests_new tests numba_launch zero_sync kernel_profile host_profile nccl nccl_allreduce benchmarks launches graph_steps lstm_paths conv_paths numba_launch_rows "
for name in $chosen; do
    [[ "$known" == *" $name "* ]] || { echo "gpu_check.sh: no step '$name' (steps:$known; groups: check measure)"; exit 2; }
done
# GPU_CHECK_DEADLINE=EPOCH_SECONDS (date +%s): a step gets at most the time left before it, less
# 15 s to copy the logs, so that a device command ending then returns every log (two runs of
# this script in one command can share it); GPU_CHECK_LOG names the log (default below)
deadline=${GPU_CHECK_DEADLINE:-$(( $(date +%s) + 100000 ))}
step() {   # step NAME SECONDS COMMAND...: run with a time limit, keep going, remember failures
    # (step_ok: 1 when this step ran and passed)
    local name=$1 limit=$2; shift 2
    step_ok=0
    if [ -n "${chosen// /}" ] && [[ "$chosen" != *" $name "* ]]; then return 0; fi
    local left=$((deadline - $(date +%s) - 15))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -le 5 ]; then echo "== $name skipped: the budget is spent"; status=1; return 0; fi
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    # SIGINT first: pytest then reports the failures it has seen before it stops
    if timeout -s INT -k 10 "$limit" "$@"; then step_ok=1
    else echo "!! $name failed (exit $?)"; status=1; fi
    echo "== $name took $((SECONDS - start))s"
}
# every pytest failure with its reason, written as it happens (tests/conftest.py): a step cut at
# its limit kills pytest before its summary (session 18 lost ~150 failures' reasons that way);
# beside it ${failures}.counts, the outcome counts so far
failures=${log%.log}_failures.log
export GPUDL_FAILURE_LOG=$PWD/$failures
rm -f "$failures" "$failures.counts"
exec > >(tee "$log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
# gpudl.kernels is the folder kernels/ (pyproject's package-dir); an editable install maps it
# with a finder that some setuptools versions do not write (session 13's machine: `import
# gpudl` from the checkout then found no gpudl.kernels), so the checkout gets the same link
# a developer's has (ignored by git)
install() {
    pip install -q --no-deps --no-build-isolation -e . || return
    [ -e gpudl/kernels ] || ln -s ../kernels gpudl/kernels
    python -c "import gpudl.kernels.launch, setuptools; print('gpudl.kernels from', \
gpudl.kernels.__path__[0], '; setuptools', setuptools.__version__)"
}
export -f install
step install 45 bash -c install
python -c "import numpy, numba, cupy, torch, importlib.metadata as m; print('numpy', \
numpy.__version__, 'numba', numba.__version__, 'numba-cuda', m.version('numba-cuda'), 'cupy', \
cupy.__version__, 'torch', torch.__version__)"
# the suite in 14 processes where pytest-xdist is installed (the device image has it; one file
# per process at a time, so a file's tests keep their order): 6,000 tests take ~260 s so
workers=$(python -c "import xdist" 2>/dev/null && echo "-n ${GPU_CHECK_WORKERS:-14} --dist loadfile")
details="-rfE --tb=short --durations=20"   # every failure's reason, even when a step runs out; the slowest tests
# compiled kernels kept on disk (kernels/kernel_cache.py), shared by the test processes and by
# the measure command after the check (the working tree stays while the machine is warm): on
# only once two processes have shown, on this GPU, that the second loads every kernel the first
# compiled and computes the same bits, through each launcher (tools/kernel_cache_check.py)
# (the measure command finds the check command's verdict and entries there)
kernel_cache=$PWD/.gpudl_kernel_cache
if [ ! -e "$kernel_cache/verified" ]; then
    step kernel_cache 90 env GPUDL_DEVICE=cuda python -m tools.kernel_cache_check
    [ "$step_ok" = 1 ] && mkdir -p "$kernel_cache" && touch "$kernel_cache/verified"
fi
if [ -e "$kernel_cache/verified" ]; then
    export GPUDL_KERNEL_CACHE=$kernel_cache
    echo "== kernel cache on: $kernel_cache ($(du -sh "$kernel_cache" | cut -f1) kept)"
fi
# session 20's NaN replay of the hand-written SGD step with packed launches: the same MLP step
# captured in parts (forward, backward, update, optimizer step), with and without .grad at the
# capture, warmed up on the current or a side stream, through Numba's launcher and the packed
# one, each replay against eager (tools/graph_probe.py): where a capture first goes wrong
step graph_probe 60 env GPUDL_DEVICE=cuda python -m tools.graph_probe \
    --markdown tools/gpu_graph_probe.md
# code that has not met a GPU yet first, in its own step, so that its failures are reported even
# if the rest of the suite runs past its limit: session 18's fixes of session 17's CPU-loop
# tests (on cpu tensors now), files added since session 13's run, session 17's (sliced gradients' CuPy operator
# dispatch, the LSTM weight-gradient and fused MSE kernels, conv_cuda's gather_weights, the
# attention grid with a batch past 65,535), session 16's multi-tensor RawKernels (optimizers,
# clip_grad_norm_, GradScaler), sessions 13-15's (Winograd through capture_blas,
# the cross entropy, LayerNorm, dropout and 2x2 pool kernels, whose simulator tests run the real
# kernels here, Adam's one-kernel bias corrections, the launch without Numba's sync, the fixes
# of the second run, scatter_add and sorts of bfloat16), then session 11's (cupy.linalg,
# cupyx.scipy.special, the N-d conv and pools, grid_sample, the Keras ops)
# session 24's fused Winograd kernel (the default strict-fp32 path of 3x3 stride-1 convolutions
# with 32 channels or more) first: against torch float64, partial tiles, NaN, a graph capture;
# session 21's question whether the device flushes float32 subnormals in casts and arithmetic
# (tests/test_device_subnormals.py); session 20 first: the graph tests (the hand-written SGD step replayed a NaN loss with packed
# launches in session 20's run; here with the packed launch eagerly and Numba's inside the capture), the few-channel grad_input kernel (the
# stem's: tests/test_conv.py's few-channel tests take it on the device), then session 19's: packed
# launches, the pooling plans, the attention outputs allocated whole
new_cupy_code="tests/kernels/test_conv_winograd_fused_cuda.py tests/test_cuda_graphs.py tests/test_device_subnormals.py tests/test_conv.py tests/kernels/test_fast_launch.py tests/kernels/test_launch_no_sync.py tests/test_pool.py \
tests/sim/test_pool_sim.py tests/sim/test_attention_tc_sim.py \
tests/test_fused_second_order.py tests/test_grad_adoption.py \
tests/test_packed_self_attention.py \
tests/test_residual_layer_norm.py tests/kernels/test_row_kernels_cpu.py tests/optim/test_cpu_loops.py \
tests/test_relu_fused_kernel.py tests/test_host_syncs_ops.py tests/test_custom_function.py \
tests/test_sliced_gradient.py tests/kernels/test_lstm_wgrad.py \
tests/test_mse_fused_kernel.py tests/kernels/test_attention_kernels.py \
tests/optim/test_multi_tensor.py tests/optim/test_optimizers.py \
tests/test_amp_grad_scaler.py tests/sim/test_row_kernels_sim.py tests/sim/test_dropout_sim.py \
tests/sim/test_bfloat16_ops_sim.py tests/kernels/test_conv_winograd_cuda.py \
tests/optim/test_capturable.py \
tests/test_second_gpu_run_fixes.py tests/test_deferred_checks.py tests/test_embedding_bag.py \
tests/test_cupy_semantics.py tests/test_linalg.py tests/test_special.py tests/test_tensor_misc.py \
tests/test_math_ops.py tests/test_distributions_breadth.py tests/nn/test_vision_layers.py \
tests/keras/test_keras_breadth.py tests/keras/test_keras_ops.py tests/test_grad_ownership.py"
step tests_new 150 env GPUDL_DEVICE=cuda python -m pytest -q --maxfail=${GPU_CHECK_MAXFAIL:-1000} \
    -p no:cacheprovider $details $workers $new_cupy_code
step tests 260 env GPUDL_DEVICE=cuda python -m pytest -q --maxfail=${GPU_CHECK_MAXFAIL:-1000} \
    -p no:cacheprovider $details --ignore=tests/sim ${new_cupy_code//tests\//--ignore=tests/} $workers
# the kernels' tests again through Numba's launcher (GPUDL_LAUNCH=numba): since session 21 the
# packed launch (kernels/fast_launch.py) is the default for eager launches
step numba_launch 90 env GPUDL_DEVICE=cuda GPUDL_LAUNCH=numba python -m pytest -q \
    --maxfail=${GPU_CHECK_MAXFAIL:-1000} -p no:cacheprovider $details $workers tests/kernels \
    tests/test_conv.py tests/test_pool.py tests/test_rnn.py tests/test_rnn_paths.py \
    tests/test_attention.py tests/test_cuda_graphs.py
# one process took more than 120 s for these (session 13), compiling each kernel variant
step attention_precision 90 env GPUDL_DEVICE=cuda python -m pytest -q -p no:cacheprovider \
    $details ${workers/loadfile/load} tests/test_attention_precision.py tests/test_attention.py \
    -k "float16 or bfloat16 or float32"
step launches 20 env GPUDL_DEVICE=cuda python -m benchmarks.launch_overhead
# the rows that host time decides (pooling, single SDPA calls, conv forwards, eager steps)
# through Numba's launcher (GPUDL_LAUNCH=numba), the before of the packed launch's default
# (the benchmarks step below; the launches step says the cost of one launch each way)
step numba_launch_rows 75 env GPUDL_DEVICE=cuda GPUDL_LAUNCH=numba python -m benchmarks.compare \
    --device cuda --repeats 11 --only "pool2d 2x2|SDPA fwd (4|conv2d fwd (|step, batch 64" \
    --markdown tools/gpu_results_numba_launch.md
# compare.py without its training-step rows (graph_steps times those steps, eager and graphed,
# for both libraries) nor the fp16/bf16 SDPA rows (session 20's run spent its last ~60 s of 240
# compiling their backward): issue 12's strict-fp32 shapes
step benchmarks 240 env GPUDL_DEVICE=cuda python -m benchmarks.compare --device cuda --repeats 11 \
    --only "conv2d|pool2d|LSTM(64|LSTM(256|x seq 128|SDPA fwd (4,8|SDPA fwd+bwd (4,8" \
    --markdown tools/gpu_results.md
# where an eager step's host time goes (cProfile): the eager steps are host-bound; then the
# single-op rows whose gpudl time the kernels do not explain (max pool forward: 0.32 ms)
step host_profile 60 env GPUDL_DEVICE=cuda bash -c "python -m benchmarks.host_profile --steps 20 \
    && python -m benchmarks.host_profile --steps 20 --ops 'max_pool2d 2x2 fwd (64|SDPA fwd (4'"
# every kernel of the conv/pool/attention rows (the 3x3 ones also through the direct sum, the
# before of the fused Winograd kernel), then of the training steps, from CUPTI (through
# torch.profiler): where the device time goes, for gpudl and for torch
step kernel_profile 100 env GPUDL_DEVICE=cuda python -m benchmarks.kernel_profile --steps 10 \
    --markdown tools/gpu_kernel_profile.md
# conv_paths: the 3x3 stride-1 shapes through the fused Winograd kernel (their default), the
# direct sum (conv_cuda) and the unfused Winograd, against cuDNN (issue 12)
step conv_paths 90 env GPUDL_DEVICE=cuda python -m benchmarks.conv_paths --repeats 11 \
    --markdown tools/gpu_conv_paths.md
step zero_sync 60 env GPUDL_DEVICE=cuda python -m pytest -q -p no:cacheprovider \
    tests/sim/test_zero_sync_sim.py
step graph_steps 90 env GPUDL_DEVICE=cuda python -m benchmarks.graph_steps --repeats 11 \
    --markdown tools/gpu_graph_steps.md
step lstm_paths 45 env GPUDL_DEVICE=cuda python -m benchmarks.lstm_paths --repeats 11 \
    --markdown tools/gpu_lstm_paths.md
step nccl 30 env GPUDL_DEVICE=cuda GPUDL_NCCL_REQUIRED=1 python -m pytest -q -rs -p no:cacheprovider \
    tests/distributed/test_distributed_nccl.py
step nccl_allreduce 20 env GPUDL_DEVICE=cuda RANK=0 WORLD_SIZE=1 python -m benchmarks.allreduce \
    --backend nccl --repeats 21
echo "gpu_check exit status: $status"
if [ -n "${OUT:-}" ]; then
    cp "$log" "$failures" "$failures.counts" tools/gpu_results.md tools/gpu_graph_steps.md tools/gpu_lstm_paths.md tools/gpu_conv_paths.md \
        tools/gpu_kernel_profile.md tools/gpu_results_numba_launch.md tools/gpu_graph_probe.md "$OUT"/ \
        2>/dev/null
fi
exit $status
