"""Keras's recurrent layers on gpudl's fused recurrent kernels: SimpleRNN, LSTM, GRU (batch
first, ``return_sequences``, ``return_state``, ``initial_state``, ``go_backwards``),
Bidirectional and TimeDistributed.

Weights have Keras's layouts: kernel (in, gates * units), recurrent_kernel (units,
gates * units), bias (gates * units,) — GRU's (2, 3 * units) with ``reset_after=True``. LSTM's
gate order (i, f, c, o) is PyTorch's; GRU's (z, r, h) is reordered to PyTorch's (r, z, n).
"""

from ... import creation, functions
from ...nn import functional as F
from ...ops.rnn import gru_layer, lstm_layer, rnn_layer
from ..engine import Layer
from .core import check_positive_int


class _RNN(Layer):
    gates = 1
    returns_list = False
    consumes_mask = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, **kwargs):
        self.config = dict(units=units, activation=activation,
                           recurrent_activation=recurrent_activation, use_bias=use_bias,
                           kernel_initializer=kernel_initializer,
                           recurrent_initializer=recurrent_initializer,
                           bias_initializer=bias_initializer, return_sequences=return_sequences,
                           return_state=return_state, go_backwards=go_backwards)
        super().__init__(**kwargs)
        where = type(self).__name__
        check_positive_int(where, units=units)
        if stateful:
            raise NotImplementedError(f"{where}: stateful is not supported")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0 <= rate < 1:
                raise ValueError(f"{where}: {name} must be in [0, 1), got {rate!r}")
        if recurrent_dropout and self.gates == 3:
            raise NotImplementedError("GRU: recurrent_dropout is not supported (LSTM and "
                                      "SimpleRNN support it)")
        self.dropout, self.recurrent_dropout = float(dropout), float(recurrent_dropout)
        self.config.update(dropout=dropout, recurrent_dropout=recurrent_dropout)
        self.check_activations(activation, recurrent_activation)
        self.units, self.use_bias = int(units), use_bias
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards = go_backwards
        self.returns_list = bool(return_state)
        self.initializers = kernel_initializer, recurrent_initializer, bias_initializer

    def check_activations(self, activation, recurrent_activation):
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise NotImplementedError(f"{type(self).__name__}: only activation='tanh' and "
                                      "recurrent_activation='sigmoid' (the defaults) are "
                                      "supported by the fused kernels")

    def build(self, input_shape):
        kernel, recurrent, bias = self.initializers
        width = self.gates * self.units
        self.add_weight("kernel", (input_shape[-1], width), kernel)
        self.add_weight("recurrent_kernel", (self.units, width), recurrent)
        if self.use_bias:
            self.add_weight("bias", self.bias_shape(), bias)

    def bias_shape(self):
        return (self.gates * self.units,)

    def call(self, inputs, initial_state=None, training=None, mask=None):
        """``mask`` (N, T), True for real steps: a masked step keeps the states and repeats
        the previous output (Keras's default). Masks and recurrent dropout run one
        fused-kernel step at a time; otherwise the whole sequence is one kernel call.

        Dropout as Keras: one mask per sequence on the inputs (``dropout``) and one on the
        previous output entering the recurrent matmul (``recurrent_dropout``), in training.
        """
        training = self.training if training is None else training
        x = inputs[:, ::-1] if self.go_backwards else inputs
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else \
            ([initial_state] if initial_state is not None else [])
        if training and self.dropout:
            ones = creation.ones(x.shape[0], 1, x.shape[2], dtype=x.dtype, device=x.device)
            x = x * F.dropout(ones, self.dropout, True)               # one mask per sequence
        recurrent_keep = None
        if training and self.recurrent_dropout:
            ones = creation.ones(x.shape[0], self.units, dtype=x.dtype, device=x.device)
            recurrent_keep = F.dropout(ones, self.recurrent_dropout, True)
        if mask is None and recurrent_keep is None:
            output, *final = self.run(x.transpose(0, 1), states)  # (T, N, units), states
            output = output.transpose(0, 1) if self.return_sequences else final[0]
        else:
            if mask is not None and self.go_backwards:
                mask = mask[:, ::-1]
            output, final = self._stepwise(x, mask, states, recurrent_keep)
        return [output] + final if self.return_state else output

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def _stepwise(self, x, mask, states, recurrent_keep):
        n, steps = x.shape[:2]
        n_states = 2 if isinstance(self, LSTM) else 1
        states = states or [creation.zeros(n, self.units, dtype=x.dtype, device=x.device)
                            for _ in range(n_states)]
        keep = None if mask is None else mask.astype(x.dtype)[:, :, None]     # (N, T, 1)
        previous, outputs = creation.zeros(n, self.units, dtype=x.dtype, device=x.device), []
        for t in range(steps):
            given = states if recurrent_keep is None else \
                [states[0] * recurrent_keep] + states[1:]     # h enters only the matmul
            step, *new = self.run(x[:, t:t + 1].transpose(0, 1), given)
            if keep is None:
                states, previous = new, step[0]
            else:
                k = keep[:, t]
                states = [k * a + (1 - k) * b for a, b in zip(new, states)]
                previous = k * step[0] + (1 - k) * previous
            outputs.append(previous)
        output = functions.stack(outputs, dim=1) if self.return_sequences else previous
        return output, states


class SimpleRNN(_RNN):
    """``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)`` (tanh or relu)."""

    def check_activations(self, activation, recurrent_activation):
        if activation not in ("tanh", "relu"):
            raise NotImplementedError(f"SimpleRNN: activation must be 'tanh' or 'relu', got "
                                      f"{activation!r}")
        self.nonlinearity = activation

    def run(self, x, states):
        h0 = states[0] if states else None
        return rnn_layer(x, h0, self.kernel.T, self.recurrent_kernel.T,
                         self.bias if self.use_bias else None, None, self.nonlinearity)


class LSTM(_RNN):
    """Long short-term memory; ``unit_forget_bias=True`` starts the forget gate's bias at 1.
    With ``return_state`` it returns ``[output, h, c]``."""

    gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.config["unit_forget_bias"] = self.unit_forget_bias = unit_forget_bias

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_bias and self.unit_forget_bias:
            from ...autograd import no_grad
            with no_grad():
                self.bias[self.units:2 * self.units] = 1.0

    def run(self, x, states):
        h0, c0 = (states + [None, None])[:2]
        return lstm_layer(x, h0, c0, self.kernel.T, self.recurrent_kernel.T,
                          self.bias if self.use_bias else None, None)


class GRU(_RNN):
    """Gated recurrent unit. ``reset_after=True`` (Keras 3 / TF2's default, PyTorch's form, the
    fused kernel): bias (2, 3 * units), input and recurrent biases. ``reset_after=False``
    (Keras 1/2's original form: the reset gate multiplies h before the recurrent matmul;
    bias (3 * units,)) runs step by step on gpudl ops."""

    gates = 3

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.config["reset_after"] = self.reset_after = bool(reset_after)

    def bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _torch_order(self, w):
        """Keras's gate blocks (z, r, h) along the last axis -> PyTorch's (r, z, n)."""
        u = self.units
        return functions.cat([w[..., u:2 * u], w[..., :u], w[..., 2 * u:]], dim=-1)

    def run(self, x, states):
        h0 = states[0] if states else None
        if not self.reset_after:
            return self._run_reset_before(x, h0)
        bias = self._torch_order(self.bias) if self.use_bias else None
        return gru_layer(x, h0, self._torch_order(self.kernel).T,
                         self._torch_order(self.recurrent_kernel).T,
                         None if bias is None else bias[0], None if bias is None else bias[1])

    def _run_reset_before(self, x, h):
        """(T, N, F) -> ((T, N, units), h_T) with Keras's reset_after=False equations."""
        u = self.units
        if h is None:
            h = creation.zeros(x.shape[1], u, dtype=x.dtype, device=x.device)
        projected = x @ self.kernel + (self.bias if self.use_bias else 0)   # (T, N, 3u)
        recurrent = self.recurrent_kernel
        outputs = []
        for t in range(x.shape[0]):
            gates = projected[t, :, :2 * u] + h @ recurrent[:, :2 * u]
            z, r = gates[:, :u].sigmoid(), gates[:, u:].sigmoid()
            candidate = (projected[t, :, 2 * u:] + (r * h) @ recurrent[:, 2 * u:]).tanh()
            h = z * h + (1 - z) * candidate
            outputs.append(h)
        return functions.stack(outputs, dim=0), h


class Bidirectional(Layer):
    """Run a recurrent ``layer`` forwards and a copy backwards; ``merge_mode`` 'concat' (the
    default), 'sum', 'mul', 'ave' or None (a list). With a mask and ``return_sequences`` both
    directions give zeros at the masked steps (Keras's ``zero_output_for_mask``)."""

    consumes_mask = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, _RNN):
            raise TypeError(f"Bidirectional: layer must be a SimpleRNN, LSTM or GRU, got "
                            f"{type(layer).__name__}")
        if merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise ValueError(f"Bidirectional: unknown merge_mode {merge_mode!r}")
        self.forward_layer = layer
        if backward_layer is None:
            config = dict(layer.config, go_backwards=not layer.go_backwards)
            backward_layer = type(layer)(name="backward_" + layer.name, **config)
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.returns_list = merge_mode is None or layer.return_state

    def compute_mask(self, inputs, mask=None):
        return self.forward_layer.compute_mask(inputs, mask)

    def call(self, inputs, mask=None):
        """The merged outputs; with ``return_state``, ``[output, *forward states, *backward
        states]`` as Keras."""
        masked = {} if mask is None else {"mask": mask}
        forward = self.forward_layer(inputs, **masked)
        backward = self.backward_layer(inputs, **masked)
        states = []
        if self.forward_layer.return_state:
            (forward, *forward_states), (backward, *backward_states) = forward, backward
            states = forward_states + backward_states
        if self.forward_layer.return_sequences:
            backward = backward[:, ::-1]                     # align with the forward steps
            if mask is not None:         # Keras's Bidirectional: zero outputs at masked steps
                keep = mask.astype(forward.dtype).unsqueeze(-1)
                forward, backward = forward * keep, backward * keep
        merged = self._merge(forward, backward)
        if not states:
            return merged
        return (merged if isinstance(merged, list) else [merged]) + states

    def _merge(self, forward, backward):
        if self.merge_mode == "concat":
            return functions.cat([forward, backward], dim=-1)
        if self.merge_mode == "sum":
            return forward + backward
        if self.merge_mode == "mul":
            return forward * backward
        if self.merge_mode == "ave":
            return (forward + backward) / 2
        return [forward, backward]


class TimeDistributed(Layer):
    """Apply ``layer`` to every time step: (N, T, ...) -> (N, T, ...')."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        n, t = inputs.shape[:2]
        out = self.layer(inputs.reshape((n * t,) + tuple(inputs.shape[2:])))
        return out.reshape((n, t) + tuple(out.shape[1:]))
