"""asv suites for the recurrent layers: LSTM (and GRU) forward and forward+backward over a whole
sequence, (seq, batch, input, hidden) as in benchmarks/compare.py. The large shape runs on a GPU only."""

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
