"""asv suites for scaled dot-product attention: the fused kernels on a GPU, the blockwise twin on
the CPU, and the CPU twin's peak memory at L = S = 8192."""

import numpy as np

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.kernels import attention as K

from .common import sync


class _SDPA:
    """fwd and fwd+bwd of F.scaled_dot_product_attention on (batch, heads, length, head dim)."""

    device = None

    def setup(self, shape, is_causal):
        if gd.device() != self.device:
            raise NotImplementedError(f"this suite runs on the {self.device} device only")
        gd.manual_seed(0)
        self.q, self.k, self.v = (gd.randn(*shape, requires_grad=True) for _ in range(3))
        self.gout = gd.randn(*shape)
        self.is_causal = is_causal

    def _attend(self):
        return F.scaled_dot_product_attention(self.q, self.k, self.v, is_causal=self.is_causal)

    def time_forward(self, shape, is_causal):
        with gd.no_grad():
            self._attend()
        sync()

    def time_forward_backward(self, shape, is_causal):
        self._attend().backward(self.gout)
        sync()


class AttentionCUDA(_SDPA):
    device = "cuda"
    params = [[(4, 8, 1024, 64)], [False, True]]
    param_names = ["shape", "is_causal"]

    def track_peak_device_memory(self, shape, is_causal):
        """MiB the memory pool grows by over one fwd+bwd (freed blocks stay cached in the pool,
        so its growth is the peak of what the step held at once, beyond the inputs)."""
        pool = backend.xp_for("cuda").get_default_memory_pool()
        for t in (self.q, self.k, self.v):
            t.grad = None
        sync()
        pool.free_all_blocks()
        before = pool.total_bytes()
        self._attend().backward(self.gout)
        sync()
        return (pool.total_bytes() - before) / 2 ** 20

    track_peak_device_memory.unit = "MiB"


class AttentionCPU(_SDPA):
    device = "cpu"
    params = [[(4, 4, 256, 32)], [True]]
    param_names = ["shape", "is_causal"]


class AttentionLongCPU:
    """Forward at L = S = 8192, one head, E = 64: the score matrix alone would be 256 MiB."""

    def setup(self):
        if gd.device() != "cpu":
            raise NotImplementedError("this suite measures the CPU twin")
        rng = np.random.default_rng(0)
        self.q, self.k, self.v = (rng.standard_normal((1, 8192, 64), dtype=np.float32)
                                  for _ in range(3))

    def peakmem_forward(self):
        K.attention_forward(self.q, self.k, self.v, None, False)

    def time_forward(self):
        K.attention_forward(self.q, self.k, self.v, None, False)

    time_forward.timeout = 120
