"""asv: whole training steps of the models users train (forward, backward, optimizer step),
and the peak memory of one step. On a GPU every timed step ends with a device sync."""

import gpudl as gd
from gpudl import models, nn, optim
from benchmarks.common import sync


class _Step:
    """Subclasses set ``build()`` -> (model, inputs, targets, loss_fn)."""
    timeout = 120

    def setup(self):
        gd.manual_seed(0)
        self.model, self.x, self.y, self.loss_fn = self.build()
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.step()                       # warm-up: Numba compiles, caches fill

    def step(self):
        self.optimizer.zero_grad()
        self.loss_fn(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def time_train_step(self):
        self.step()
        sync()

    def peakmem_train_step(self):
        self.step()


class LeNetStep(_Step):
    """LeNet-5, batch 64 of 1x28x28, SGD with momentum (issue 8's CPU target)."""

    def build(self):
        return (models.LeNet(image_size=28), gd.randn(64, 1, 28, 28),
                gd.randint(0, 10, (64,)), nn.CrossEntropyLoss())


class LSTMRegressorStep(_Step):
    """Two stacked LSTM(1 -> 64) layers over 32 steps, batch 32, one value out."""

    def build(self):
        return (models.LSTMRegressor(1, 64, num_layers=2), gd.randn(32, 32, 1),
                gd.randn(32, 1), nn.MSELoss())


class TransformerStep(_Step):
    """A 2-layer transformer classifier, d_model 64, 4 heads, batch 32 of 64 tokens."""

    def build(self):
        model = models.TransformerClassifier(vocab_size=100, d_model=64, nhead=4, num_layers=2,
                                             num_classes=4, max_len=64, dropout=0.0)
        return (model, gd.randint(0, 100, (32, 64)), gd.randint(0, 4, (32,)),
                nn.CrossEntropyLoss())
