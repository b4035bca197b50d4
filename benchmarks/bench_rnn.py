"""asv suites for the recurrent layers: LSTM (and GRU) forward and forward+backward over a whole
sequence, (seq, batch, input, hidden) as in benchmarks/compare.py. The large shape runs on a GPU only.
``SunspotsLSTM``: the sunspots example's 2-layer LSTM (hidden 32), on a GPU on both LSTM paths
(the persistent kernels, and the per-step launches they replace)."""

import gpudl as gd
from gpudl import nn

from .common import sync

SMALL = (32, 32, 64, 128)
LARGE = (64, 64, 256, 512)


class _Recurrent:
    layer = None
    param_names = ["shape"]

    def setup(self, shape):
        seq, batch, inp, hidden = shape
        if shape == LARGE and gd.device() == "cpu":
            raise NotImplementedError("the large shape is a GPU benchmark (~0.3 s a call on 2 "
                                      "CPU cores)")
        gd.manual_seed(0)
        self.module = getattr(nn, self.layer)(inp, hidden)
        self.x = gd.randn(seq, batch, inp, requires_grad=True)
        self.gout = gd.randn(seq, batch, hidden)

    def time_forward(self, shape):
        with gd.no_grad():
            self.module(self.x)
        sync()

    def time_forward_backward(self, shape):
        self.module(self.x)[0].backward(self.gout)
        sync()


class LSTM(_Recurrent):
    layer = "LSTM"
    params = [[SMALL, LARGE]]


class GRU(_Recurrent):
    layer = "GRU"
    params = [[SMALL]]


class SunspotsLSTM:
    """LSTM(1 -> 32, 2 layers) forward+backward, (seq, batch) from the sunspots example's range.
    ``per-step`` forces the plain step loop (kernels/lstm.py FORCE_PATH; neither the persistent
    kernels nor a graph of the steps); the CPU has the per-step path only."""
    params = [[(32, 16), (32, 64), (128, 16), (128, 64)], ["persistent", "per-step"]]
    param_names = ["seq, batch", "path"]

    def setup(self, shape, path):
        if gd.device() == "cpu" and path == "per-step":
            raise NotImplementedError("the CPU runs the per-step path only")
        if path == "per-step":
            from gpudl.kernels import lstm as K
            K.FORCE_PATH = "per-step"
        seq, batch = shape
        gd.manual_seed(0)
        self.module = nn.LSTM(1, 32, num_layers=2)
        self.x = gd.randn(seq, batch, 1, requires_grad=True)
        self.gout = gd.randn(seq, batch, 32)

    def teardown(self, shape, path):
        from gpudl.kernels import lstm as K
        K.FORCE_PATH = None

    def time_forward_backward(self, shape, path):
        self.module(self.x)[0].backward(self.gout)
        sync()
