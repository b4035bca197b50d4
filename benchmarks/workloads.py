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
