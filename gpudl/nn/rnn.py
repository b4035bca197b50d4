"""RNN, LSTM, GRU and their single-step cells, with PyTorch's arguments, names and layouts.

Parameters are ``weight_ih_l{k}`` (G*H, I), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``,
``bias_hh_l{k}`` (G*H,), with ``_reverse`` for the backward direction and gate blocks in PyTorch's
order (LSTM i, f, g, o; GRU r, z, n), so a PyTorch state dict loads as is. Each layer and
direction runs as one autograd node (gpudl.ops.rnn) over the whole sequence. A PackedSequence
input runs each layer and direction as one such node per run of steps with the same batch size
(see _run_packed).
"""

import functools
import math
import warnings

import numpy as np

from .. import backend, creation, dtypes
from ..amp import autocast_mode
from ..functions import cat, stack
from ..ops.dropout import dropout
from ..ops._util import is_int
from ..ops.lstm_projection import lstm_projected_layer
from ..ops.rnn import StackedStates, final_state_buffers, gru_layer, lstm_layer, rnn_layer
from ..tensor import Tensor
from . import init
from .module import Module, Parameter
from .utils.rnn import PackedSequence

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _check_sizes(owner, **sizes):
    for name, value in sizes.items():
        if not is_int(value) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


def _check_nonlinearity(owner, nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{owner}: unknown nonlinearity {nonlinearity!r}; expected 'tanh' or "
                         "'relu'")


def _reset_uniform(module):
    """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch."""
    bound = 1 / math.sqrt(module.hidden_size)
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _run_layer(mode, x, h0, c0, weights, reverse, final_states=None):
    """One layer, one direction: (output, h_n, c_n or None); an LSTM's weights may end with
    weight_hr (a projection). ``final_states``: see ops.rnn.lstm_layer."""
    if mode == "LSTM" and len(weights) == 5:
        return lstm_projected_layer(x, h0, c0, *weights, reverse=reverse)
    if mode == "LSTM":
        return lstm_layer(x, h0, c0, *weights, reverse=reverse, final_states=final_states)
    if mode == "GRU":
        y, h_n = gru_layer(x, h0, *weights, reverse=reverse)
    else:
        y, h_n = rnn_layer(x, h0, *weights, nonlinearity=mode[4:].lower(), reverse=reverse)
    return y, h_n, None


def _runs(batch_sizes):
    """[(first packed row, steps, batch)] for each run of equal batch sizes, in time order."""
    runs, row, t = [], 0, 0
    while t < len(batch_sizes):
        batch = int(batch_sizes[t])
        steps = int(np.sum(batch_sizes[t:] == batch))        # batch sizes never increase
        runs.append((row, steps, batch))
        row, t = row + steps * batch, t + steps
    return runs


def _run_rows(mode, x, run, h, c, weights, reverse):
    """The layer over one run's packed rows from states (batch, H): (rows out, h, c)."""
    row, steps, batch = run
    y, h, c = _run_layer(mode, x[row:row + steps * batch].reshape(steps, batch, -1), h, c,
                         weights, reverse)
    return y.reshape(steps * batch, -1), h, c


def _packed_forward(mode, x, runs, h0, c0, weights):
    """Forward direction: a run continues the leading rows of the previous run's states; the
    sequences it drops finished there, so h_n gathers each run's trailing rows."""
    outputs, finished = [], []
    h, c = h0, c0
    for i, run in enumerate(runs):
        batch = run[2]
        y, h, c = _run_rows(mode, x, run, h[:batch], c[:batch] if c is not None else None,
                            weights, False)
        outputs.append(y)
        ends = runs[i + 1][2] if i + 1 < len(runs) else 0
        finished.append((h[ends:], c[ends:] if c is not None else None))
    h_n = cat([f[0] for f in reversed(finished)])
    c_n = cat([f[1] for f in reversed(finished)]) if c0 is not None else None
    return cat(outputs), h_n, c_n


def _packed_reverse(mode, x, runs, h0, c0, weights):
    """Backward direction: runs from the last to the first; the sequences a run adds start
    there (at their own last step) from their initial states."""
    outputs = []
    h = c = None
    started = 0
    for run in reversed(runs):
        batch = run[2]
        h = h0[:batch] if h is None else cat([h, h0[started:batch]])
        if c0 is not None:
            c = c0[:batch] if c is None else cat([c, c0[started:batch]])
        y, h, c = _run_rows(mode, x, run, h, c, weights, True)
        outputs.append(y)
        started = batch
    return cat(outputs[::-1]), h, c


class RNNBase(Module):
    """The stacked, optionally bidirectional recurrence shared by RNN, LSTM and GRU."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, proj_size=0):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        if not is_int(proj_size) or proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to "
                             f"disable projections, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size, got "
                             f"proj_size={proj_size}, hidden_size={hidden_size}")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.proj_size = int(proj_size)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} and num_layers=1: dropout acts between "
                          "layers, so it has no effect", UserWarning, stacklevel=3)
        self.mode = mode
        input_size, hidden_size, num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        dtype = dtypes.as_dtype(dtype, name) or dtypes.DEFAULT_FLOAT
        gate_size = _GATES[mode] * hidden_size
        directions = 2 if bidirectional else 1
        out_size = self.proj_size or hidden_size          # the size of h (and of the output)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for suffix in ("", "_reverse")[:directions]:
                shapes = {"weight_ih": (gate_size, layer_input),
                          "weight_hh": (gate_size, out_size)}
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if self.proj_size:
                    shapes.update(weight_hr=(self.proj_size, hidden_size))
                for kind, shape in shapes.items():
                    setattr(self, f"{kind}_l{layer}{suffix}",
                            Parameter(creation.empty(*shape, dtype=dtype, device=device)))
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """Nothing to do (there is no cuDNN weight buffer); kept so PyTorch code runs as is."""

    def _layer_weights(self, layer, reverse):
        suffix = f"l{layer}" + ("_reverse" if reverse else "")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
        weights = [getattr(self, f"{n}_{suffix}") for n in names]
        weights += [None] * (4 - len(weights))
        return weights + [getattr(self, f"weight_hr_{suffix}")] if self.proj_size else weights

    def forward(self, input, hx=None):
        """Run the sequence. input (T, B, I), or (B, T, I) with batch_first, or unbatched (T, I);
        hx: the initial state(s) of shape (num_layers * num_directions, B, H), (..., H) unbatched,
        or None for zeros. Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for LSTM).

        input may be a PackedSequence (nn.utils.rnn): each sequence then stops at its own length
        (the backward direction starts at its last step), output is a PackedSequence and h_n the
        state after each sequence's last step, in the batch's original order."""
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected input of 2 (unbatched) or 3 dimensions, got "
                             f"shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features but input_size is "
                             f"{self.input_size} (input shape {input.shape})")
        batched = input.ndim == 3
        x = input if not batched else (input.transpose(0, 1) if self.batch_first else input)
        x = x if batched else x.unsqueeze(1)                        # (T, B, I)
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected a sequence length > 0, got input shape "
                             f"{input.shape}")
        states = self._initial_states(hx, x.shape[1], batched)
        output, h_n, c_n = self._run(x, *states)
        if batched and self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output, h_n = output.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        return (output, (h_n, c_n)) if self.mode == "LSTM" else (output, h_n)

    def _run(self, x, h0, c0, run_direction=None):
        """Every layer and direction: ``run_direction(x, h0, c0, weights, reverse)`` gives one
        direction's (output, h_n, c_n); by default the layer over the padded x (T, B, I)."""
        directions = 2 if self.bidirectional else 1
        buffers = None          # (h_n, c_n) the LSTM layers' kernels write into as they end
        if run_direction is None and self.mode == "LSTM" and not self.proj_size:
            buffers = final_state_buffers(x, self.num_layers * directions, self.hidden_size)
        run_direction = run_direction or functools.partial(_run_layer, self.mode)
        slots = [list(b) for b in buffers] if buffers else None
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = dropout(x, self.dropout, True)
            outputs = []
            for d in range(directions):
                k = layer * directions + d
                finals = {"final_states": (slots[0][k], slots[1][k])} if slots else {}
                y, h, c = run_direction(x, h0[k] if h0 is not None else None,
                                        c0[k] if c0 is not None else None,
                                        self._layer_weights(layer, d == 1), d == 1, **finals)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            x = cat(outputs, dim=-1) if directions == 2 else outputs[0]    # (..., D*H)
        if slots:
            return (x, StackedStates.apply(buffers[0], slots[0], *h_n),
                    StackedStates.apply(buffers[1], slots[1], *c_n))
        return x, stack(h_n), (stack(c_n) if self.mode == "LSTM" else None)

    def _forward_packed(self, packed, hx):
        name = type(self).__name__
        data = packed.data
        if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[1] != self.input_size:
            got = data.shape if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"{name}: expected PackedSequence data of shape (N, "
                             f"{self.input_size}), got {got}")
        batch_sizes = backend.to_numpy(packed.batch_sizes._data).astype(np.int64)
        h0, c0 = self._initial_states(hx, int(batch_sizes[0]), True)
        if packed.sorted_indices is not None:       # hx is in the batch's order, data sorted
            h0, c0 = (s.index_select(1, packed.sorted_indices) if s is not None else None
                      for s in (h0, c0))
        output, h_n, c_n = self._run_packed(data, _runs(batch_sizes), h0, c0)
        if packed.unsorted_indices is not None:
            h_n, c_n = (s.index_select(1, packed.unsorted_indices) if s is not None else None
                        for s in (h_n, c_n))
        output = PackedSequence(output, packed.batch_sizes, packed.sorted_indices,
                                packed.unsorted_indices)
        return (output, (h_n, c_n)) if self.mode == "LSTM" else (output, h_n)

    def _run_packed(self, x, runs, h0, c0):
        """_run on packed rows x (N, I): each direction runs the layer once per run of steps
        with one batch size (the longest sequences first, so a run's sequences are its batch's
        leading rows); a run's output rows are contiguous in the packed layout."""
        def run_direction(x, h, c, weights, reverse):
            zeros = functools.partial(creation.zeros, runs[0][2], dtype=x.dtype,
                                      device=x.device)                    # None means zeros
            h = h if h is not None else zeros(self.proj_size or self.hidden_size)
            c = c if c is not None or self.mode != "LSTM" else zeros(self.hidden_size)
            run = _packed_reverse if reverse else _packed_forward
            return run(self.mode, x, runs, h, c, weights)

        return self._run(x, h0, c0, run_direction)

    def _initial_states(self, hx, batch, batched):
        """(h0, c0) as (L*D, B, H) tensors (or None), checked against the expected shape."""
        name = type(self).__name__
        if hx is None:
            return None, None
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0) of Tensors, got "
                                f"{type(hx).__name__}")
            labels, states = ("h_0", "c_0"), tuple(hx)
        else:
            labels, states = ("h_0",), (hx,)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        for label, state in zip(labels, states):
            size = self.proj_size if label == "h_0" and self.proj_size else self.hidden_size
            expected = (layers, batch, size) if batched else (layers, size)
            if not isinstance(state, Tensor):
                raise TypeError(f"{name}: {label} must be a Tensor, got {type(state).__name__}")
            if state.shape != expected:
                raise ValueError(f"{name}: expected {label} of shape {expected}, got "
                                 f"{state.shape}")
        states = states if batched else tuple(s.unsqueeze(1) for s in states)
        return states if self.mode == "LSTM" else (states[0], None)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:                 # torch's order: proj_size, then num_layers
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        for key, default in (("bias", True), ("batch_first", False),
                             ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, key) != default:
                text += f", {key}={getattr(self, key)}"
        return text


class RNN(RNNBase):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu.

    Args as torch.nn.RNN: input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False. Returns ``(output, h_n)``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        _check_nonlinearity("RNN", nonlinearity)
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, device, dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory (gates i, f, g, o). Args as torch.nn.LSTM.

    With ``proj_size`` P > 0 the hidden state is projected: h_t = W_hr (o_t * tanh(c_t)) with
    ``weight_hr_l{k}`` (P, H); h_0, h_n and the output have P features (c has H), and the
    layers run step by step as Tensor ops (the fused kernels have no projection).

    Example: ``out, (h_n, c_n) = LSTM(10, 20, num_layers=2)(x)`` with x (T, B, 10).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype, proj_size=proj_size)


class GRU(RNNBase):
    """Gated recurrent unit (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).
    Args as torch.nn.GRU. Returns ``(output, h_n)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype)


class RNNCellBase(Module):
    """One time step: parameters ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih``,
    ``bias_hh`` (G*H,), run through the same fused step as the layers (a sequence of length 1)."""

    def __init__(self, mode, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size=input_size, hidden_size=hidden_size)
        input_size, hidden_size = int(input_size), int(hidden_size)
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        dtype = dtypes.as_dtype(dtype, name) or dtypes.DEFAULT_FLOAT
        gate_size = _GATES[mode] * hidden_size
        self.weight_ih = Parameter(creation.empty(gate_size, input_size, dtype=dtype,
                                                  device=device))
        self.weight_hh = Parameter(creation.empty(gate_size, hidden_size, dtype=dtype,
                                                  device=device))
        for kind in ("bias_ih", "bias_hh"):
            if bias:
                setattr(self, kind, Parameter(creation.empty(gate_size, dtype=dtype,
                                                             device=device)))
            else:
                self.register_parameter(kind, None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def _step(self, input, states):
        """(h_1, c_1 or None) for input (B, I) or unbatched (I,), states (B, H) / (H,) or None."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {input.shape}")
        batched = input.ndim == 2
        x = input.unsqueeze(0) if batched else input.reshape(1, 1, -1)     # (1, B, I)
        expected = (x.shape[1], self.hidden_size) if batched else (self.hidden_size,)
        for label, state in states.items():
            if state is not None and not isinstance(state, Tensor):
                raise TypeError(f"{name}: {label} must be a Tensor, got {type(state).__name__}")
            if state is not None and state.shape != expected:
                raise ValueError(f"{name}: expected {label} of shape {expected}, got "
                                 f"{state.shape}")
        h0, c0 = (list(states.values()) + [None])[:2]
        if not batched:                                 # (H,) -> (1, H)
            h0, c0 = (s.reshape(1, -1) if s is not None else None for s in (h0, c0))
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        if autocast_mode.state.active:
            # torch's autocast lists name the cells apart from the layers (on the cpu a cell
            # keeps float32, an LSTM layer does not): the cell's policy decides, and the layer
            # it runs through must not cast again
            op = self.mode.split("_")[0].lower() + "_cell"
            x, h0, c0, *weights = autocast_mode.cast_inputs(op, x, h0, c0, *weights)
            with autocast_mode.autocast(x._device, enabled=False):
                _, h, c = _run_layer(self.mode, x, h0, c0, weights, False)
        else:
            _, h, c = _run_layer(self.mode, x, h0, c0, weights, False)
        if not batched:
            h, c = h.reshape(-1), (c.reshape(-1) if c is not None else None)
        return h, c

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        return text


class LSTMCell(RNNCellBase):
    """One LSTM step: ``h_1, c_1 = cell(input, (h_0, c_0))``; hx None means zeros."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h_0, c_0) of Tensors, got "
                            f"{type(hx).__name__}")
        h0, c0 = hx if hx is not None else (None, None)
        return self._step(input, {"h_0": h0, "c_0": c0})


class GRUCell(RNNCellBase):
    """One GRU step: ``h_1 = cell(input, h_0)``; hx None means zeros."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return self._step(input, {"h_0": hx})[0]


class RNNCell(RNNCellBase):
    """One Elman RNN step: ``h_1 = act(input W_ih^T + b_ih + h_0 W_hh^T + b_hh)``."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        _check_nonlinearity("RNNCell", nonlinearity)
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, bias, device,
                         dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step(input, {"h_0": hx})[0]
