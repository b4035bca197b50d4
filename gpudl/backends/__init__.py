"""``gd.backends``: PyTorch's precision switches, with PyTorch 2.13's names and defaults.

- ``gd.backends.cudnn.allow_tf32`` (default True): convolutions on float32 tensors may run on
  TF32 tensor cores (inputs rounded to 10 mantissa bits, float32 accumulation).
- ``gd.backends.cuda.matmul.allow_tf32`` (default False): the same for matmul/linear; it is
  another view of ``gd.set_float32_matmul_precision``: True is "high", False is "highest".
- ``gd.set_float32_matmul_precision("highest"|"high"|"medium")`` and
  ``gd.get_float32_matmul_precision()``.
- ``gd.backends.cuda.enable_mem_efficient_sdp(bool)`` / ``mem_efficient_sdp_enabled()`` (default
  True): float32 scaled_dot_product_attention may take the memory-efficient path (3xTF32 tensor
  cores, float32 accuracy, as PyTorch's); off, it takes the math path, which follows
  ``matmul.allow_tf32`` (kernels/attention_tc_cuda.py has the rule and its sources).

Kernels never read these flags: the ops layer asks ``conv_allows_tf32()`` /
``matmul_allows_tf32()`` and passes the answer down, so a kernel's result depends only on its
arguments.
"""

import sys
import types

_PRECISIONS = ("highest", "high", "medium")
_state = {"float32_matmul_precision": "highest"}


def set_float32_matmul_precision(precision):
    """Set how float32 matmuls may run: "highest" (strict fp32), "high" (TF32 allowed), or
    "medium" (bfloat16-based passes allowed; gpudl runs these as TF32)."""
    if precision not in _PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: precision must be one of {_PRECISIONS}, "
                         f"got {precision!r}")
    _state["float32_matmul_precision"] = precision


def get_float32_matmul_precision():
    return _state["float32_matmul_precision"]


class _Matmul:
    @property
    def allow_tf32(self):
        return _state["float32_matmul_precision"] != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value):
        if not isinstance(value, bool):
            raise TypeError(f"backends.cuda.matmul.allow_tf32: expected a bool, got {value!r}")
        _state["float32_matmul_precision"] = "high" if value else "highest"


class _CudnnModule(types.ModuleType):
    """``gd.backends.cudnn``: ``allow_tf32`` (conv on TF32), plus torch's ``enabled`` and
    ``benchmark``/``deterministic`` switches, accepted for portability (gpudl's kernels are
    deterministic and need no autotuning)."""
    allow_tf32 = True
    enabled = True
    benchmark = False
    deterministic = False

    def __setattr__(self, name, value):
        if name in ("allow_tf32", "enabled", "benchmark", "deterministic") \
                and not isinstance(value, bool):
            raise TypeError(f"backends.cudnn.{name}: expected a bool, got {value!r}")
        super().__setattr__(name, value)


cudnn = _CudnnModule(__name__ + ".cudnn")
cuda = types.ModuleType(__name__ + ".cuda", "``gd.backends.cuda``: ``matmul.allow_tf32``, "
                        "``enable_mem_efficient_sdp``, ``mem_efficient_sdp_enabled``.")
cuda.matmul = _Matmul()
_sdp = {"mem_efficient": True}


def _enable_mem_efficient_sdp(enabled):
    """Enable or disable the memory-efficient path of scaled_dot_product_attention (torch's
    name); for gpudl it decides float32 attention on the GPU (``attention_precision``)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"backends.cuda.enable_mem_efficient_sdp: expected a bool, got "
                        f"{enabled!r}")
    _sdp["mem_efficient"] = enabled


def _mem_efficient_sdp_enabled():
    return _sdp["mem_efficient"]


cuda.enable_mem_efficient_sdp = _enable_mem_efficient_sdp
cuda.mem_efficient_sdp_enabled = _mem_efficient_sdp_enabled
sys.modules[cudnn.__name__] = cudnn
sys.modules[cuda.__name__] = cuda

# device-picking code asks torch.backends.mps (Apple GPUs): gpudl has no such device
mps = types.ModuleType(__name__ + ".mps", "``gd.backends.mps``: no Apple GPU device in gpudl.")
mps.is_available = mps.is_built = lambda: False
sys.modules[mps.__name__] = mps


def conv_allows_tf32():
    """Whether a float32 convolution may use TF32 tensor cores (``cudnn.allow_tf32``)."""
    return cudnn.allow_tf32


def matmul_allows_tf32():
    """Whether a float32 matmul (and attention's GEMMs) may use TF32 tensor cores."""
    return cuda.matmul.allow_tf32


def attention_precision():
    """The flags that pick float32 attention's kernels, as keyword arguments of
    ``kernels.attention``'s entries: ``allow_tf32`` and ``mem_efficient``."""
    return {"allow_tf32": matmul_allows_tf32(), "mem_efficient": cuda.mem_efficient_sdp_enabled()}


def set_cublas_math_mode():
    """Put CuPy's cuBLAS handle (this thread's, current device's) in the math mode the flags
    ask for: TF32 tensor-op math when ``matmul_allows_tf32()``, else the default (strict
    float32). The ops layer calls it before each float32 GEMM on CuPy arrays, not once per flag
    change: CuPy's own float16 matmul resets the handle's mode to the default after it runs.
    A host-side call (no device sync). Not yet run on a GPU (written from cuBLAS's and CuPy's
    documented API)."""
    import cupy
    from cupy_backends.cuda.libs import cublas
    mode = cublas.CUBLAS_TF32_TENSOR_OP_MATH if matmul_allows_tf32() else \
        cublas.CUBLAS_DEFAULT_MATH
    cublas.setMathMode(cupy.cuda.device.get_cublas_handle(), mode)
