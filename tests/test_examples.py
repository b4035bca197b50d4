"""Each example learns for real (fast settings)."""

from gpudl.examples import xor


def test_xor_learns():
    loss, predictions = xor.train(steps=1500, progress=False)
    assert predictions.tolist() == [0, 1, 1, 0]
    assert loss < 0.05                     # from ~0.69 at chance
