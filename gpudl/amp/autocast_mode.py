"""``gd.autocast``: PyTorch's automatic mixed precision, per thread, with its op lists.

Inside ``with gd.autocast(device_type):`` an op on that device's tensors first casts its
floating inputs as PyTorch 2.13 does for that device (``aten/src/ATen/autocast_mode.{h,cpp}``):

- ``lower``: matmuls, convolutions, attention (and LSTM) run in the autocast dtype (float16 on
  cuda, bfloat16 on cpu by default);
- ``fp32``: ops that need float32's range or accuracy (losses everywhere; on cuda also softmax,
  exp/log/pow, sum/prod/cumsum, layer and group norm, ...) run in float32;
- ops in neither list run in whatever dtype their inputs have (cat/stack promote to the widest);
- ``promote`` (cuda's scatter_add): the widest floating dtype among the inputs;
- ``state`` (the cpu's GRU, LSTMCell and GRUCell; arguments ``(input, h0, c0, weights...)``):
  torch runs their matmuls in the lower dtype and the state in its own dtype (h0's and c0's,
  else the input's, as the zeros it makes), so the result is the promotion of the two: a float32
  input keeps float32 whatever the weights' dtype, a bfloat16 one gives bfloat16.

The CPU and CUDA lists differ, as in PyTorch (on the cpu, softmax and layer_norm keep bfloat16).
float64 tensors are never cast. The cast is an ordinary graph node (``Tensor.to``), so backward
returns each gradient in its input's dtype. Within one autocast region a float32 leaf that
requires grad (a weight) is cast once and the copy reused (``cache_enabled``); the cache empties
when the outermost region exits, as torch's.

Ops ask ``state.active`` first, one thread-local attribute read: with autocast off nothing else
runs.
"""

import functools
import threading
import warnings

from .. import autograd as _autograd, backend, dtypes

DEVICE_TYPES = ("cuda", "cpu")
DEFAULT_DTYPES = {"cuda": dtypes.float16, "cpu": dtypes.bfloat16}
SUPPORTED_DTYPES = (dtypes.float16, dtypes.bfloat16)

# op name -> policy, per device. Names are gpudl's (and torch's) functional names.
_LOWER_BOTH = {"linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "conv1d", "conv2d",
               "conv_transpose1d", "conv_transpose2d", "prelu", "scaled_dot_product_attention",
               "lstm", "addbmm"}
_FP32_BOTH = {"nll_loss", "cross_entropy", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
              "kl_div", "binary_cross_entropy_with_logits", "prod", "cosine_embedding_loss",
              "margin_ranking_loss", "poisson_nll_loss", "soft_margin_loss", "cdist"}
POLICIES = {
    "cuda": {
        **dict.fromkeys(_LOWER_BOTH | {"gru", "rnn", "lstm_cell", "gru_cell", "rnn_cell"},
                        "lower"),
        **dict.fromkeys(_FP32_BOTH | {
            "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "pow",
            "softplus", "layer_norm", "group_norm", "norm", "vector_norm", "cosine_similarity",
            "normalize", "logsumexp", "softmax", "log_softmax", "cumsum", "cumprod", "sum",
            "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
            "upsample_bilinear2d"},
            "fp32"),
        "binary_cross_entropy": "banned",
        "scatter_add": "promote", "cross": "promote", "tensordot": "promote",
    },
    "cpu": {
        # rnn, rnn_cell: torch's CPU RNN and RNNCell are made of linear ops, which autocast (its
        # GRU, LSTMCell and GRUCell combine lowered matmuls with the state's dtype: "state")
        **dict.fromkeys(_LOWER_BOTH | {"rnn", "rnn_cell"}, "lower"),
        **dict.fromkeys(_FP32_BOTH | {
            "binary_cross_entropy", "reflection_pad1d", "reflection_pad2d", "replication_pad1d",
            "replication_pad2d", "replication_pad3d"}, "fp32"),
        # torch's CPU GRU, LSTMCell and GRUCell are linear ops (which autocast) combined with
        # the state in its dtype (the input's when not given): a low-precision state makes a
        # low-precision result, a float32 one keeps float32, whatever the weights' dtype
        **dict.fromkeys(("gru", "lstm_cell", "gru_cell"), "state"),
    },
}

# session 10, nn breadth: the margin losses torch casts to float32 on both devices; rms_norm
# (float32) and bilinear (the widest input dtype) have autocast kernels on cuda only
for _policies in POLICIES.values():
    _policies.update(dict.fromkeys(("hinge_embedding_loss", "triplet_margin_loss",
                                    "multi_margin_loss"), "fp32"))
POLICIES["cuda"].update(rms_norm="fp32", bilinear="promote")
# ... and torch's names added then: mv lowered and dot, addcmul, addcdiv promoted on cuda; trace
# in float32 on the cpu (dot and mv keep their dtype there, unlike matmul)
POLICIES["cuda"].update(mv="lower", dot="promote", addcmul="promote", addcdiv="promote")
POLICIES["cpu"].update(trace="fp32")
# session 11, math-ops: torch's cuda fp32 list's trigonometric and hyperbolic functions;
# atan2 takes the widest input dtype there
POLICIES["cuda"].update(dict.fromkeys(("acos", "asin", "cosh", "sinh", "tan"), "fp32"),
                        atan2="promote")
# session 11, nn-utils: ctc_loss and multilabel_margin_loss run in float32 on both devices
for _policies in POLICIES.values():
    _policies.update(dict.fromkeys(("ctc_loss", "multilabel_margin_loss"), "fp32"))
# branch linalg: torch's CPU list runs its factorizations and solves in float32 (CUDA has no
# autocast kernel for them: float16 input is refused there, as torch's); on cuda the norms
# built on them run in float32 and the products lower
POLICIES["cpu"].update(dict.fromkeys((
    "linalg_inv", "linalg_inv_ex", "linalg_cholesky", "linalg_cholesky_ex", "cholesky_inverse",
    "cholesky_solve", "linalg_cond", "linalg_eigh", "linalg_eigvalsh", "linalg_lstsq",
    "linalg_householder_product", "linalg_matrix_rank", "linalg_qr", "linalg_solve",
    "linalg_svd", "linalg_svdvals", "linalg_tensorinv", "linalg_tensorsolve", "lu_solve",
    "pinverse", "triangular_solve"), "fp32"), linalg_vecdot="lower")
POLICIES["cuda"].update(dict.fromkeys((
    "linalg_matrix_norm", "dist", "frobenius_norm", "nuclear_norm", "renorm"), "fp32"),
    linalg_vecdot="lower", addmv="lower", addr="lower", linalg_multi_dot="lower",
    chain_matmul="lower", vdot="promote")
# session 11, nn-vision: the 3-D convolutions lower on both devices; the 3-D pools, unpooling
# and grid sampling are float32 on the cpu; pdist float32 and grid sampling promoting on cuda
for _policies in POLICIES.values():
    _policies.update(dict.fromkeys(("conv3d", "conv_transpose3d"), "lower"))
POLICIES["cpu"].update(dict.fromkeys((
    "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d", "max_unpool2d",
    "max_unpool3d", "grid_sampler", "fractional_max_pool2d"), "fp32"))
POLICIES["cuda"].update(pdist="fp32", grid_sampler="promote")

_BANNED = ("{op} and torch.nn.BCELoss are unsafe to autocast: many models use a sigmoid layer "
           "right before the binary cross entropy layer, and in that case the combination is "
           "not autocast-safe. Use gpudl.nn.functional.binary_cross_entropy_with_logits or "
           "gpudl.nn.BCEWithLogitsLoss, which are safe to autocast.")


class _State(threading.local):
    """Autocast settings of the current thread (every new thread starts with autocast off)."""

    def __init__(self):
        self.active = False                   # any device enabled: the one read ops make
        self.enabled = {"cuda": False, "cpu": False}
        self.dtype = dict(DEFAULT_DTYPES)
        self.cache_enabled = True
        self.nesting = 0
        self.cache = {}           # (id(weight), dtype) -> (weight, its version, cast copy)


state = _State()


def _device_type(device_type, where):
    if not isinstance(device_type, str):
        raise ValueError(f"{where}: device_type must be a str ('cuda' or 'cpu'), got "
                         f"{type(device_type).__name__}")
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"{where}: device_type must be 'cuda' or 'cpu', got {device_type!r}")
    return device_type


def is_autocast_available(device_type):
    """Whether autocast exists for ``device_type`` ('cuda' and 'cpu' do)."""
    return device_type in DEVICE_TYPES


def is_autocast_enabled(device_type="cuda"):
    return state.enabled[_device_type(device_type, "is_autocast_enabled")]


def get_autocast_dtype(device_type):
    return state.dtype[_device_type(device_type, "get_autocast_dtype")]


def is_autocast_cache_enabled():
    return state.cache_enabled


def clear_autocast_cache():
    state.cache.clear()


class autocast:
    """``torch.autocast``: a context manager (and decorator) that runs the ops of
    ``device_type``'s tensors in mixed precision (see the module docstring for the op lists).

    Args:
        device_type: ``'cuda'`` or ``'cpu'``.
        dtype: the lower precision, ``gd.float16`` or ``gd.bfloat16``; None takes the device's
            current autocast dtype (float16 on cuda, bfloat16 on cpu unless changed).
        enabled: False turns autocast off inside the region (nested regions restore it).
        cache_enabled: reuse one cast of each weight within the region (None: the current
            setting, True by default).

    As in torch, an unsupported dtype, or ``'cuda'`` in a process without the cuda device,
    warns and disables autocast for the region.
    """

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device = _device_type(device_type, "autocast")
        self.fast_dtype = state.dtype[self.device] if dtype is None \
            else dtypes.as_dtype(dtype, "autocast")
        self._enabled = bool(enabled)
        self._cache_enabled = cache_enabled
        if not self._enabled:
            return
        if self.device == "cuda" and not backend.cuda_available():
            warnings.warn("autocast: the cuda device is not available in this process; "
                          "disabling autocast", UserWarning, stacklevel=2)
            self._enabled = False
        elif self.fast_dtype not in SUPPORTED_DTYPES:
            warnings.warn(f"autocast: {self.device} autocast supports float16 and bfloat16, got "
                          f"{self.fast_dtype}; disabling autocast", UserWarning, stacklevel=2)
            self._enabled = False
        else:
            backend.check_dtype_on_device(self.fast_dtype, self.device, "autocast")

    def __enter__(self):
        s = state
        self._saved = (s.enabled[self.device], s.dtype[self.device], s.cache_enabled)
        s.enabled[self.device] = self._enabled
        s.dtype[self.device] = self.fast_dtype
        if self._cache_enabled is not None:
            s.cache_enabled = bool(self._cache_enabled)
        s.nesting += 1
        s.active = s.enabled["cuda"] or s.enabled["cpu"]
        return self

    def __exit__(self, *exc):
        s = state
        s.nesting -= 1
        if s.nesting == 0:
            s.cache.clear()
        s.enabled[self.device], s.dtype[self.device], s.cache_enabled = self._saved
        s.active = s.enabled["cuda"] or s.enabled["cpu"]
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with autocast(self.device, self.fast_dtype, self._enabled, self._cache_enabled):
                return func(*args, **kwargs)
        return wrapper


def _eligible(t, device):
    return (getattr(t, "_device", None) == device and t.dtype != dtypes.float64
            and dtypes.is_floating(t.dtype))


def _cast(t, dtype, device):
    """``t`` in ``dtype``; float32 weights (leaves that require grad) through the cache.

    As torch, a cast made under no_grad is neither cached nor taken from the cache (a copy
    without a graph would cut the weight's gradient in a later forward). Unlike torch, a weight
    edited in place since its cast (an optimizer step inside the region) is cast again: the
    entry keeps the version it was made at."""
    if not _eligible(t, device) or t.dtype == dtype:
        return t
    s = state
    cached = (s.cache_enabled and dtype == s.dtype[device] and t.dtype == dtypes.float32
              and t.requires_grad and t.grad_fn is None and _autograd.is_grad_enabled())
    if not cached:
        return t.to(dtype)
    key = (id(t), dtype)
    hit = s.cache.get(key)
    if hit is None or hit[0] is not t or hit[1] != t._version:
        hit = s.cache[key] = (t, t._version, t.to(dtype))
    return hit[2]


def cast_inputs(op, *args):
    """``args`` with their tensors cast as ``op``'s autocast policy says (``args`` unchanged
    when no device of theirs has autocast on, or ``op`` is in neither list). Lists and tuples
    of tensors are cast element by element."""
    device = next((a._device for a in _tensors(args)), None)
    s = state
    if device is None or not s.enabled[device]:
        return args
    policy = POLICIES[device].get(op)
    if policy is None:
        return args
    if policy == "banned":
        raise RuntimeError(_BANNED.format(op=op))
    if policy == "state":
        states = [t for t in args[1:3] if t is not None] or args[:1]
        dtype = functools.reduce(dtypes.promote_types, [t.dtype for t in states],
                                 s.dtype[device])
    elif policy == "promote":
        floating = [t.dtype for t in _tensors(args) if _eligible(t, device)]
        dtype = functools.reduce(dtypes.promote_types, floating) if floating else None
    else:
        dtype = dtypes.float32 if policy == "fp32" else s.dtype[device]
    return tuple(_cast_arg(a, dtype, device) for a in args)


def _cast_arg(a, dtype, device):
    if isinstance(a, (list, tuple)):
        return type(a)(_cast_arg(x, dtype, device) for x in a)
    return _cast(a, dtype, device) if hasattr(a, "_device") else a


def _tensors(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _tensors(a)
        elif hasattr(a, "_device") and hasattr(a, "grad_fn"):
            yield a

# session 11, tensor-misc: quantile and nanquantile in float32 and index_copy promoted on the
# cpu; index_put promoted on cuda
POLICIES["cpu"].update(quantile="fp32", nanquantile="fp32", index_copy="promote")
POLICIES["cuda"].update(index_put="promote")
# session 11, distributions: erfinv runs in float32 under cuda autocast (torch's fp32 list)
POLICIES["cuda"].update(erfinv="fp32")
# parity: interpolate's bicubic, trilinear and nearest-exact modes run in float32 under cuda
# autocast (torch's fp32 list, as its other upsampling modes)
POLICIES["cuda"].update(dict.fromkeys((
    "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d"), "fp32"))
# session 26, breadth2: stft and fractional_max_pool3d run in float32 under cpu autocast (torch's
# CPU fp32 list, as fractional_max_pool2d)
POLICIES["cpu"].update(stft="fp32", fractional_max_pool3d="fp32")
