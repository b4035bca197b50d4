"""Keras's recurrent cells (SimpleRNNCell, LSTMCell, GRUCell: one time step each, Keras's
weights), StackedRNNCells, and the ``RNN`` layer that runs a cell over a sequence.

``RNN`` runs gpudl's own cells as their fused layers do (one kernel call for the sequence;
for stacked gpudl cells, one per cell); any other cell (a Keras-style custom cell:
``state_size`` and ``call(inputs, states) -> (output, new_states)``) step by step. Masks (from
Embedding(mask_zero=True) or Masking) make masked steps keep the states and repeat the previous
output, as Keras.
"""

from ... import creation, functions
from ..engine import Layer
from .recurrent import GRU, LSTM, SimpleRNN


class _Cell:
    """A recurrent layer's one step: ``cell(inputs, states)`` -> ``(output, new_states)`` for
    inputs (N, features) and states a list of (N, units)."""

    returns_list = True

    def __init__(self, units, dropout=0.0, recurrent_dropout=0.0, seed=None, **kwargs):
        if dropout or recurrent_dropout:
            raise NotImplementedError(f"{type(self).__name__}: dropout and recurrent_dropout "
                                      "are not supported in cells (the LSTM, GRU and SimpleRNN "
                                      "layers have them)")
        super().__init__(units, **kwargs)

    @property
    def state_size(self):
        return [self.units] * self.n_states if self.n_states > 1 else self.units

    @property
    def output_size(self):
        return self.units

    def get_initial_state(self, batch_size=None):
        return [creation.zeros(batch_size, self.units, dtype=self.weight_dtype)
                for _ in range(self.n_states)]

    def call(self, inputs, states, training=None):
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        output, *new_states = self.run(inputs[None], states)     # one step: (1, N, units)
        return output[0], new_states


class SimpleRNNCell(_Cell, SimpleRNN):
    """One step of SimpleRNN: ``h = activation(x @ kernel + h @ recurrent_kernel + bias)``."""

    n_states = 1

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(units, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, **kwargs)


class LSTMCell(_Cell, LSTM):
    """One step of LSTM; states ``[h, c]``."""

    n_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(units, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                         **kwargs)


class GRUCell(_Cell, GRU):
    """One step of GRU (``reset_after=True``: bias (2, 3 * units), Keras 3's default)."""

    n_states = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0, reset_after=True,
                 seed=None, **kwargs):
        super().__init__(units, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, reset_after=reset_after, **kwargs)


class RNN(Layer):
    """Run ``cell`` over the time axis of (N, T, features) inputs: the last output (N, units),
    or every output (N, T, units) with ``return_sequences``; with ``return_state``, ``[output,
    *final states]``. ``initial_state`` (a list) starts the states (zeros by default)."""

    consumes_mask = True

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        if not hasattr(cell, "state_size") or not callable(cell):
            raise TypeError(f"RNN: cell must be a layer with state_size and call(inputs, "
                            f"states), got {type(cell).__name__}")
        if stateful or zero_output_for_mask:
            raise NotImplementedError("RNN: stateful and zero_output_for_mask are not supported")
        self.cell = cell
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards = go_backwards
        self.returns_list = bool(return_state)

    def _zero_states(self, inputs):
        def zeros(size):
            if isinstance(size, (list, tuple)):      # a stacked cell's: one entry per cell
                return [zeros(s) for s in size]
            return creation.zeros(inputs.shape[0], size, dtype=inputs.dtype,
                                  device=inputs.device)
        sizes = self.cell.state_size
        return zeros(sizes if isinstance(sizes, (list, tuple)) else [sizes])

    def call(self, inputs, initial_state=None, mask=None, training=None):
        x = inputs[:, ::-1] if self.go_backwards else inputs
        if mask is not None and self.go_backwards:
            mask = mask[:, ::-1]
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else \
            ([initial_state] if initial_state is not None else self._zero_states(x))
        if isinstance(self.cell, _Cell) and mask is None:
            outputs, states = _run_fused(self.cell, x, states)
            last = outputs[:, -1]
        elif isinstance(self.cell, StackedRNNCells) and mask is None and \
                all(isinstance(cell, _Cell) for cell in self.cell.cells):
            outputs, stacked = x, []                 # one fused pass per cell, layer by layer
            for cell, cell_states in zip(self.cell.cells, states):
                outputs, cell_states = _run_fused(cell, outputs, _as_list(cell_states))
                stacked.append(cell_states if cell.n_states > 1 else cell_states[0])
            states, last = stacked, outputs[:, -1]
        else:
            outputs, last, states = self._stepwise(x, mask, states)
        output = outputs if self.return_sequences else last
        return [output] + list(states) if self.return_state else output

    def _stepwise(self, x, mask, states):
        keep = None if mask is None else mask.astype(x.dtype)[:, :, None]     # (N, T, 1)
        previous, outputs = None, []
        for t in range(x.shape[1]):
            step, new_states = self.cell(x[:, t], states)
            new_states = list(new_states) if isinstance(new_states, (list, tuple)) else \
                [new_states]
            if keep is None:
                states, previous = new_states, step
            else:                     # a masked step: the states stay, the output repeats
                k = keep[:, t]
                previous = k * step + (1 - k) * (step * 0 if previous is None else previous)
                states = _blend(k, new_states, states)
            outputs.append(previous)
        return functions.stack(outputs, dim=1), previous, states

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None


def _as_list(states):
    return list(states) if isinstance(states, (list, tuple)) else [states]


def _run_fused(cell, x, states):
    """A gpudl cell over all of (N, T, features) in one call: ((N, T, units), final states)."""
    if not cell.built:
        cell(x[:, 0], states)                                    # builds the weights
    outputs, *states = cell.run(x.transpose(0, 1), states)       # (T, N, units)
    return outputs.transpose(0, 1), states


def _blend(keep, new, old):
    """``keep * new + (1 - keep) * old`` through (nested) lists of states."""
    if isinstance(new, (list, tuple)):
        return [_blend(keep, a, b) for a, b in zip(new, old)]
    return keep * new + (1 - keep) * old


class StackedRNNCells(Layer):
    """Several cells as one: each step feeds the input through ``cells`` in order, each cell's
    output the next one's input; the states are a list with each cell's (``RNN(cells=[...])``
    makes one). ``RNN(StackedRNNCells(cells))`` equals stacked RNN layers with
    ``return_sequences=True`` below the last."""

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        cells = list(cells)
        for i, cell in enumerate(cells):
            if not hasattr(cell, "state_size") or not callable(cell):
                raise TypeError(f"StackedRNNCells: cells[{i}] must be a cell (a layer with "
                                f"state_size and call(inputs, states)), got "
                                f"{type(cell).__name__}")
        if not cells:
            raise ValueError("StackedRNNCells: cells must not be empty")
        for i, cell in enumerate(cells):
            self.add_module(f"cell_{i}", cell)
        self.cells = cells

    @property
    def state_size(self):
        return [cell.state_size for cell in self.cells]

    @property
    def output_size(self):
        last = self.cells[-1]
        size = getattr(last, "output_size", None)
        if size is not None:
            return size
        return last.state_size[0] if isinstance(last.state_size, (list, tuple)) else \
            last.state_size

    def call(self, inputs, states, training=None):
        new_states = []
        for cell, cell_states in zip(self.cells, states):
            several = isinstance(cell_states, (list, tuple))
            inputs, cell_states = cell(inputs, _as_list(cell_states))
            cell_states = _as_list(cell_states)
            new_states.append(cell_states if several or len(cell_states) > 1 else cell_states[0])
        return inputs, new_states
