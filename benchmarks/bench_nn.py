"""asv suites for the nn ops: normalisation, activations, cross entropy, and a small MLP step."""

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn

from .common import sync


class BatchNorm2d:
    params = [[(32, 16, 32, 32), (8, 64, 28, 28)]]
    param_names = ["shape"]

    def setup(self, shape):
        gd.manual_seed(0)
        self.layer = nn.BatchNorm2d(shape[1])
        self.x = gd.randn(*shape, requires_grad=True)

    def time_forward(self, shape):
        self.layer(self.x)
        sync()

    def time_forward_backward(self, shape):
        self.layer(self.x).sum().backward()
        sync()


class LayerNorm:
    params = [[(64, 128, 256)]]
    param_names = ["shape"]

    def setup(self, shape):
        gd.manual_seed(0)
        self.layer = nn.LayerNorm(shape[-1])
        self.x = gd.randn(*shape, requires_grad=True)

    def time_forward(self, shape):
        self.layer(self.x)
        sync()

    def time_forward_backward(self, shape):
        self.layer(self.x).sum().backward()
        sync()


class Activation:
    params = [["gelu", "silu", "leaky_relu"]]
    param_names = ["op"]

    def setup(self, op):
        gd.manual_seed(0)
        self.fn = getattr(F, op)
        self.x = gd.randn(256, 1024, requires_grad=True)

    def time_forward(self, op):
        self.fn(self.x)
        sync()

    def time_forward_backward(self, op):
        self.fn(self.x).sum().backward()
        sync()


class CrossEntropy:
    params = [[(256, 1000), (64, 10)], [0.0, 0.1]]
    param_names = ["shape", "label_smoothing"]

    def setup(self, shape, label_smoothing):
        gd.manual_seed(0)
        self.x = gd.randn(*shape, requires_grad=True)
        self.t = gd.randint(0, shape[1], (shape[0],))

    def time_forward(self, shape, label_smoothing):
        F.cross_entropy(self.x, self.t, label_smoothing=label_smoothing)
        sync()

    def time_forward_backward(self, shape, label_smoothing):
        F.cross_entropy(self.x, self.t, label_smoothing=label_smoothing).backward()
        sync()


class MLPStep:
    """MLP 32-64-10, batch 16: forward, cross entropy, backward and a plain SGD update."""

    params = [16]
    param_names = ["batch"]

    def setup(self, batch):
        gd.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
        self.loss = nn.CrossEntropyLoss()
        self.x = gd.randn(batch, 32)
        self.t = gd.randint(0, 10, (batch,))
        self.params_ = list(self.model.parameters())

    def time_forward(self, batch):
        self.loss(self.model(self.x), self.t)
        sync()

    def time_forward_backward(self, batch):
        self.model.zero_grad()
        self.loss(self.model(self.x), self.t).backward()
        with gd.no_grad():
            for p in self.params_:
                p.data -= 0.01 * p.grad.data
        sync()
