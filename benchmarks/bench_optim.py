"""asv suites for optimizers (one step over a model's parameters) and the DataLoader."""

import numpy as np

import gpudl as gd
from gpudl import optim
from gpudl.data import DataLoader, TensorDataset

from .common import sync

# (name, parameter shapes): a small MLP's 4 tensors, and ~1M parameters in 4 tensors
PARAMETER_SETS = {
    "mlp-2.8k": [(64, 32), (64,), (10, 64), (10,)],
    "mlp-1M": [(1024, 512), (1024,), (512, 1024), (512,)],
}

OPTIMIZERS = {
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.01, momentum=0.9),
    "adam": lambda p: optim.Adam(p, lr=1e-3),
    "adamw-amsgrad": lambda p: optim.AdamW(p, lr=1e-3, amsgrad=True),
    "rmsprop-centered": lambda p: optim.RMSprop(p, lr=1e-3, centered=True, momentum=0.9),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2),
}


class OptimizerStep:
    params = [list(OPTIMIZERS), list(PARAMETER_SETS)]
    param_names = ["optimizer", "parameters"]

    def setup(self, optimizer, parameters):
        gd.manual_seed(0)
        self.params = [gd.randn(*s, requires_grad=True) for s in PARAMETER_SETS[parameters]]
        for p in self.params:
            p.grad = gd.randn(*p.shape)
        self.optimizer = OPTIMIZERS[optimizer](self.params)
        self.optimizer.step()                    # state allocated outside the timing

    def time_step(self, optimizer, parameters):
        self.optimizer.step()
        sync()


class DataLoaderEpoch:
    params = [[32, 256], [False, True]]
    param_names = ["batch_size", "shuffle"]

    def setup(self, batch_size, shuffle):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((8192, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 10, 8192)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                                 seed=0)

    def time_epoch(self, batch_size, shuffle):
        for _ in self.loader:
            pass
        sync()
