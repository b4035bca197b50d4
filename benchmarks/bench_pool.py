"""asv suites for max and average pooling, forward and forward+backward.

The (64, 64, 56, 56) shape (ResNet's first pooling layer) runs on a GPU only; the small shape runs
everywhere. Backward is driven by a fixed output gradient, so no reduction is timed with it.
"""

import gpudl as gd
import gpudl.nn.functional as F

from .common import sync

BIG = (64, 64, 56, 56)
SMALL = (32, 16, 32, 32)
WINDOWS = {"2x2 s2": dict(kernel_size=2, stride=2),
           "3x3 s2 p1": dict(kernel_size=3, stride=2, padding=1)}


class _Pool:
    """fwd and fwd+bwd of ``pool`` on an (N, C, H, W) input with one of WINDOWS."""

    params = [[BIG, SMALL], list(WINDOWS)]
    param_names = ["shape", "window"]
    pool = None

    def setup(self, shape, window):
        if shape == BIG and gd.device() != "cuda":
            raise NotImplementedError("the large shape runs on the cuda device only")
        gd.manual_seed(0)
        self.x = gd.randn(*shape, requires_grad=True)
        self.kwargs = WINDOWS[window]
        with gd.no_grad():
            self.gy = gd.randn(*self._pool().shape)

    def _pool(self):
        return type(self).pool(self.x, **self.kwargs)

    def time_forward(self, shape, window):
        with gd.no_grad():
            self._pool()
        sync()

    def time_forward_backward(self, shape, window):
        self._pool().backward(self.gy)
        sync()


class MaxPool2d(_Pool):
    pool = staticmethod(F.max_pool2d)


class AvgPool2d(_Pool):
    pool = staticmethod(F.avg_pool2d)
