"""A PyTorch-style training script runs on gpudl by changing only its imports, and gives
PyTorch's numbers (float32 rounding): device selection, .to(device), from_numpy, a DataLoader
with 2 workers and pinned memory, `p -= lr * p.grad` under no_grad, `w.data -= ...`,
`torch.max(outputs.data, 1)`, and a `.pth` file written by PyTorch loaded with `torch.load`."""

import numpy as np
import pytest

pytest.importorskip("torch")

TORCH_IMPORTS = """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
"""

GPUDL_IMPORTS = """
import gpudl as torch
import gpudl.nn as nn
import gpudl.nn.functional as F
from gpudl.utils.data import DataLoader, TensorDataset
"""

SCRIPT = """
import numpy as np

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
rng = np.random.default_rng(0)
X = rng.standard_normal((96, 1, 8)).astype(np.float32)
y = (X.sum(axis=(1, 2)) > 0).astype(np.int64)
dataset = TensorDataset(torch.from_numpy(X[:64]), torch.from_numpy(y[:64]))
loader = DataLoader(dataset, batch_size=16, shuffle=False, num_workers=2, pin_memory=True)

model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.from_numpy(0.3 * rng.standard_normal(tuple(p.shape)).astype(np.float32)))
model = model.to(device)
first_weight = model[1].weight

losses = []
for epoch in range(3):
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        losses.append(loss.item())

# the older idiom: update through .data, outside no_grad
for xb, yb in loader:
    xb, yb = xb.to(device), yb.to(device)
    loss = F.cross_entropy(model(xb), yb)
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data -= 0.05 * p.grad.data
    losses.append(loss.item())

# a checkpoint written by PyTorch's torch.save (CHECKPOINT: set by the test)
pretrained = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
pretrained.load_state_dict(torch.load(CHECKPOINT, map_location=device, weights_only=True))

test_x = torch.from_numpy(X[64:]).to(device)
with torch.no_grad():
    pretrained_outputs = pretrained(test_x).cpu().numpy()
with torch.no_grad():
    outputs = model(test_x)
_, predicted = torch.max(outputs.data, 1)
accuracy = (predicted.cpu().numpy() == y[64:]).mean()
same_parameter = model[1].weight is first_weight
final_weight = model[3].weight.detach().cpu().numpy()
"""


def _run(imports, checkpoint):
    namespace = {"CHECKPOINT": str(checkpoint)}
    exec(compile(imports + SCRIPT, "<script>", "exec"), namespace)
    return namespace


def _torch_checkpoint(path):
    import torch
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 2))
    torch.save(model.state_dict(), path)
    return path


def test_the_same_script_runs_on_torch_and_gpudl(tmp_path):
    checkpoint = _torch_checkpoint(tmp_path / "pretrained.pth")
    theirs, ours = _run(TORCH_IMPORTS, checkpoint), _run(GPUDL_IMPORTS, checkpoint)
    np.testing.assert_allclose(ours["pretrained_outputs"], theirs["pretrained_outputs"],
                               rtol=1e-5, atol=1e-6)
    assert ours["same_parameter"] and theirs["same_parameter"]
    assert len(ours["losses"]) == len(theirs["losses"]) == 16
    np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["final_weight"], theirs["final_weight"], rtol=1e-4,
                               atol=1e-5)
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["losses"][-1] < ours["losses"][0]
