"""asv suites for F.conv2d and F.conv_transpose2d, forward and forward+backward.

The large ImageNet-style shapes run on a GPU only: on the CPU ``setup`` raises NotImplementedError,
asv's way of skipping a parameter combination.
"""

import gpudl as gd
import gpudl.nn.functional as F

from .common import sync

# label -> (input shape, weight shape, stride, padding, runs on the CPU)
CONV2D = {
    "32x16x32x32 k32 3x3 p1": ((32, 16, 32, 32), (32, 16, 3, 3), 1, 1, True),
    "64x64x56x56 k64 3x3 p1": ((64, 64, 56, 56), (64, 64, 3, 3), 1, 1, False),
    "128x128x28x28 k128 3x3 p1": ((128, 128, 28, 28), (128, 128, 3, 3), 1, 1, False),
    "32x3x224x224 k64 7x7 s2 p3": ((32, 3, 224, 224), (64, 3, 7, 7), 2, 3, False),
}

# label -> (input shape, weight shape (in, out, kh, kw), stride, padding, runs on the CPU)
CONV_TRANSPOSE2D = {
    "32x64x8x8 -> 32 4x4 s2 p1": ((32, 64, 8, 8), (64, 32, 4, 4), 2, 1, True),
    "64x256x16x16 -> 128 4x4 s2 p1": ((64, 256, 16, 16), (256, 128, 4, 4), 2, 1, False),
}


class _Conv:
    shapes = None
    function = None
    out_dim = 0

    def setup(self, label):
        x_shape, w_shape, self.stride, self.padding, on_cpu = self.shapes[label]
        if gd.device() == "cpu" and not on_cpu:
            raise NotImplementedError("GPU-sized shape: skipped on the CPU")
        gd.manual_seed(0)
        self.x = gd.randn(*x_shape, requires_grad=True)
        self.w = gd.randn(*w_shape, requires_grad=True)
        self.b = gd.randn(w_shape[self.out_dim], requires_grad=True)

    def _run(self):
        return self.function(self.x, self.w, self.b, stride=self.stride, padding=self.padding)

    def time_forward(self, label):
        self._run()
        sync()

    def time_forward_backward(self, label):
        self._run().sum().backward()
        sync()


class Conv2d(_Conv):
    params = [list(CONV2D)]
    param_names = ["shape"]
    shapes = CONV2D
    function = staticmethod(F.conv2d)


class ConvTranspose2d(_Conv):
    params = [list(CONV_TRANSPOSE2D)]
    param_names = ["shape"]
    shapes = CONV_TRANSPOSE2D
    function = staticmethod(F.conv_transpose2d)
    out_dim = 1
