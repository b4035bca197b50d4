"""asv: the foundation's costs: import time, Python overhead per op, matmul."""

import gpudl as gd
from benchmarks.common import sync


def timeraw_import_gpudl():
    """``import gpudl`` in a fresh interpreter (target: under 0.5 s on a CPU machine)."""
    return "import gpudl"


class ElementwiseChain:
    """Ten small elementwise ops forward and backward: measures overhead per op, not maths."""
    params = [(16, 4096)]
    param_names = ["n"]

    def setup(self, n):
        self.x = gd.randn(n, requires_grad=True)

    def time_forward_backward(self, n):
        y = self.x
        for _ in range(5):
            y = (y * 1.01 + 0.1).tanh()
        y.sum().backward()
        sync()


class MatMul:
    params = [(64, 512, 1024)]
    param_names = ["n"]

    def setup(self, n):
        self.a = gd.randn(n, n, requires_grad=True)
        self.b = gd.randn(n, n, requires_grad=True)

    def time_forward(self, n):
        self.a @ self.b
        sync()

    def time_forward_backward(self, n):
        (self.a @ self.b).sum().backward()
        sync()
