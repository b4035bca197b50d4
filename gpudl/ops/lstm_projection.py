"""One LSTM layer with a projection (torch's LSTM(proj_size=P)): h_t = W_hr (o_t * tanh(c_t)).

Runs as Tensor ops, one step at a time (ops.rnn_steps, autograd records every step): the fused
recurrent kernels (gpudl.ops.rnn) have no projection.
"""

from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..tensor import Tensor
from .rnn_steps import unrolled_layer


def lstm_projected_layer(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                         reverse=False):
    """One direction of a projected LSTM layer over a whole sequence (gates i, f, g, o).

    Args:
        input: (T, B, I). h0: (B, P), c0: (B, H) initial states (None: zeros).
        weight_ih: (4H, I); weight_hh: (4H, P); bias_ih, bias_hh: (4H,) or None;
        weight_hr: (P, H). reverse: run from the last step to the first.

    Returns:
        ``(output, h_n, c_n)``: output (T, B, P), h_n (B, P), c_n (B, H).
    """
    if _autocast.active:
        input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = cast_inputs(
            "lstm", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    hidden, proj = weight_hr.shape[1], weight_hr.shape[0]
    _check(input, h0, c0, weight_ih, weight_hh, weight_hr, hidden, proj)
    return unrolled_layer("lstm", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                          weight_hr)


def _check(x, h0, c0, w_ih, w_hh, w_hr, hidden, proj):
    for label, t in (("input", x), ("weight_ih", w_ih), ("weight_hh", w_hh),
                     ("weight_hr", w_hr)):
        if not isinstance(t, Tensor):
            raise TypeError(f"lstm: {label} must be a Tensor, got {type(t).__name__}")
    if x.ndim != 3:
        raise ValueError(f"lstm: expected input of 3 dimensions (seq_len, batch, input_size), "
                         f"got shape {x.shape}")
    expected = {"weight_ih": (4 * hidden, x.shape[2]), "weight_hh": (4 * hidden, proj)}
    for label, w in (("weight_ih", w_ih), ("weight_hh", w_hh)):
        if w.shape != expected[label]:
            raise ValueError(f"lstm: {label} has shape {w.shape} but expected "
                             f"{expected[label]} (input shape {x.shape}, weight_hr shape "
                             f"{w_hr.shape})")
    for label, state, size in (("h0", h0, proj), ("c0", c0, hidden)):
        if state is not None and state.shape != (x.shape[1], size):
            raise ValueError(f"lstm: {label} has shape {state.shape} but expected "
                             f"{(x.shape[1], size)}")
