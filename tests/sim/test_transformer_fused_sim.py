"""The transformer step's fused paths (PackedSelfAttention, ResidualLayerNorm, gradients taken
as the .grad) under gd.cuda.graph in Numba's simulator: the CPU recorder captures the step and
its replays match eager steps (nothing in the paths reads the host or changes shape)."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import replayed_losses
from gpudl import backend, nn

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


class _Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                           dtype=np.float64)
        self.encoder = nn.TransformerEncoder(layer, 1)
        self.head = nn.Linear(8, 3, dtype=np.float64)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def _model():
    gd.manual_seed(3)
    return _Classifier().to("cuda")


def test_simulated_transformer_step_replays_match_eager_steps(monkeypatch):
    from gpudl.ops import normalization
    fused = []
    real = normalization.ResidualLayerNorm.forward
    monkeypatch.setattr(normalization.ResidualLayerNorm, "forward",
                        staticmethod(lambda ctx, *a: fused.append(1) or real(ctx, *a)))
    rng = np.random.default_rng(5)
    data = [(gd.tensor(rng.standard_normal((2, 4, 8)), device="cuda"),
             gd.tensor(rng.integers(0, 3, 2), device="cuda")) for _ in range(2)]
    eager, graphed = _model(), _model()
    opts = [gd.optim.AdamW(m.parameters(), lr=1e-2, capturable=True) for m in (eager, graphed)]
    losses = []
    for x, y in data:
        opts[0].zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(eager(x), y)
        loss.backward()
        opts[0].step()
        losses.append(loss.numpy().copy())
    assert len(fused) == 2 * 2                # two per step: the fused path ran
    fused.clear()
    # one warm-up step (Adam's state is made then), the second step replayed
    np.testing.assert_allclose(replayed_losses(graphed, opts[1], data,
                                               nn.functional.cross_entropy, warmup=1),
                               losses, rtol=1e-10)
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-9, atol=1e-12)
