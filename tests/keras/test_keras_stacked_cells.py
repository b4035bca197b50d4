"""RNN over a list of cells (StackedRNNCells) against torch's LSTM and RNN layers stacked
(float64, Keras's weights transposed to torch's), a NumPy loop for a Keras-style custom cell
with masks, Keras's state structure, and a .keras round trip."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import layers
from oracle import torch


def _torch_stack(x, weights, lengths=None):
    """torch.nn.LSTM(6) then torch.nn.RNN(5) with Keras's (kernel, recurrent, bias) of each,
    run on each sample's first ``lengths`` steps: (last outputs, [h1, c1], h2)."""
    (k1, r1, b1), (k2, r2, b2) = weights
    lstm = torch.nn.LSTM(x.shape[-1], 6, batch_first=True).double()
    rnn = torch.nn.RNN(6, 5, batch_first=True).double()
    with torch.no_grad():
        for module, k, r, b in ((lstm, k1, r1, b1), (rnn, k2, r2, b2)):
            module.weight_ih_l0.copy_(torch.tensor(k.T))
            module.weight_hh_l0.copy_(torch.tensor(r.T))
            module.bias_ih_l0.copy_(torch.tensor(b))
            module.bias_hh_l0.zero_()
    results = []
    for i in range(len(x)):
        steps = torch.tensor(x[i:i + 1, :x.shape[1] if lengths is None else lengths[i]])
        hidden, (h1, c1) = lstm(steps)
        out, h2 = rnn(hidden)
        results.append((out[0, -1], h1[0, 0], c1[0, 0], h2[0, 0]))
    return [torch.stack(parts).detach().numpy() for parts in zip(*results)]


@pytest.mark.parametrize("masked", [False, True])
def test_stacked_cells_equal_stacked_torch_layers(rng, masked):
    x = rng.standard_normal((3, 6, 4))
    rnn = layers.RNN([layers.LSTMCell(6), layers.SimpleRNNCell(5)], return_state=True)
    rnn(gd.tensor(x[:, :1].astype(np.float32)))
    rnn.double()
    weights = [w.astype(np.float64) for w in rnn.get_weights()]
    lengths = [6, 4, 2] if masked else None
    mask = None if not masked else gd.tensor(np.arange(6)[None, :] < np.array(lengths)[:, None])
    output, (h1, c1), h2 = rnn(gd.tensor(x), mask=mask)
    expected = _torch_stack(x, [weights[:3], weights[3:]], lengths)
    for got, want in zip((output, h1, c1, h2), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    assert isinstance(rnn.cell, layers.StackedRNNCells)
    assert rnn.cell.state_size == [[6, 6], 5] and rnn.cell.output_size == 5


def test_stacked_custom_cell_steps_with_masks(rng):
    class LeakyCell(layers.Layer):
        """``h = tanh(x @ kernel) + h / 2``: a Keras-style cell, stepped one call at a time."""

        state_size = 4

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 4), initializer="random_normal")

        def call(self, inputs, states):
            output = (inputs @ self.kernel).tanh() + 0.5 * states[0]
            return output, [output]

    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.ones((2, 5), bool)
    mask[0, 3:] = False
    rnn = layers.RNN(layers.StackedRNNCells([LeakyCell(), layers.GRUCell(3)]),
                     return_sequences=True, return_state=True)
    sequence, h1, h2 = rnn(gd.tensor(x), mask=gd.tensor(mask))
    gru = layers.GRU(3, return_sequences=True)
    kernel = rnn.get_weights()[0].astype(np.float64)
    gru(gd.tensor(np.zeros((1, 1, 4), np.float32)))
    gru.set_weights(rnn.get_weights()[1:])
    h, first = np.zeros((2, 4)), []
    for t in range(5):
        new = np.tanh(x[:, t] @ kernel) + 0.5 * h
        h = np.where(mask[:, t:t + 1], new, h)
        first.append(h)
    np.testing.assert_allclose(h1.numpy(), h, rtol=1e-5, atol=1e-6)
    expected = gru(gd.tensor(np.stack(first, 1).astype(np.float32))).numpy()  # unmasked rows
    np.testing.assert_allclose(sequence.numpy()[1], expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2.numpy()[1], expected[1, -1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sequence.numpy()[0, 3:], expected[0, [2, 2]], rtol=1e-5,
                               atol=1e-6)                     # masked: the output repeats


def test_stacked_cells_refuse_non_cells_and_save(rng, tmp_path):
    with pytest.raises(TypeError, match=r"cells\[1\]"):
        layers.StackedRNNCells([layers.LSTMCell(2), layers.Dense(2)])
    model = keras.Sequential([keras.Input((5, 3)),
                              layers.RNN([layers.GRUCell(4), layers.LSTMCell(2)])])
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "s.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "s.keras").predict(
        x, verbose=0), before)
