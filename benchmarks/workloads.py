"""Workloads written once against a library module ``lib`` (``gpudl`` or ``torch``).

Imports neither library itself, so a caller controls the import order (tests/test_busy_machine.py
runs both orders).
"""


def randn(lib, device, *shape, grad=False):
    x = lib.randn(*shape, device=device)
    return x.requires_grad_() if grad else x


def train_step(model, loss_fn, optimizer, x, y):
    """A callable doing one optimizer step of ``model`` on the batch (x, y)."""
    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return step


def lenet(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def lenet_step(lib, device, batch=64):
    """LeNet-5 SGD-momentum training step on a (batch, 1, 28, 28) batch."""
    model = lenet(lib).to(device)
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = randn(lib, device, batch, 1, 28, 28), lib.randint(0, 10, (batch,), device=device)
    return train_step(model, lib.nn.CrossEntropyLoss(), opt, x, y)


# ---------------------------------------------------------------- whole steps, eager and graphed
# (model, loss_fn, optimizer, x, y) builders: issue 14's launch-bound steps. ``capturable`` asks
# for the optimizer state on the device, which a CUDA graph of Adam's step needs.

def lenet_parts(lib, device, capturable=False, batch=64):
    """LeNet-5 with SGD momentum on (batch, 1, 28, 28)."""
    model = lenet(lib).to(device)
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = randn(lib, device, batch, 1, 28, 28), lib.randint(0, 10, (batch,), device=device)
    return model, lib.nn.CrossEntropyLoss(), opt, x, y


def sunspots_parts(lib, device, capturable=False, batch=32, window=12):
    """gpudl.examples.sunspots' model and optimizer: a 2-layer LSTM (hidden 32) over 12-year
    windows, its last hidden state through a Linear head, Adam(lr=5e-3), batch 32."""
    nn = lib.nn

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(1, 32, 2, batch_first=True)
            self.head = nn.Linear(32, 1)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])

    model = Regressor().to(device)
    opt = lib.optim.Adam(model.parameters(), lr=5e-3, **_capturable(capturable))
    x, y = randn(lib, device, batch, window, 1), randn(lib, device, batch, 1)
    return model, nn.MSELoss(), opt, x, y


def transformer_parts(lib, device, capturable=False, batch=32, seq=32, width=64, dropout=0.0):
    """A 2-layer transformer encoder (width 64, 4 heads, feed-forward 128, ``dropout``)
    classifying mean-pooled tokens, AdamW."""
    nn = lib.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=dropout,
                                               batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            return self.head(self.encoder(x).mean(1))

    model = Classifier().to(device)
    opt = lib.optim.AdamW(model.parameters(), lr=1e-3, **_capturable(capturable))
    x, y = randn(lib, device, batch, seq, width), lib.randint(0, 10, (batch,), device=device)
    return model, nn.CrossEntropyLoss(), opt, x, y


def _capturable(wanted):
    return {"capturable": True} if wanted else {}


def graphed_step(lib, parts, warmup=3):
    """PyTorch's whole-step CUDA graph recipe: warm-up steps on a side stream, one capture of
    forward, loss, backward and optimizer step on the static batch, then ``replay`` per step."""
    model, loss_fn, opt, x, y = parts
    side = lib.cuda.Stream()
    side.wait_stream(lib.cuda.current_stream())
    with lib.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
    lib.cuda.current_stream().wait_stream(side)
    graph = lib.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with lib.cuda.graph(graph):
        loss_fn(model(x), y).backward()
        opt.step()
    return graph.replay
