"""A recurrent layer written step by step in Tensor ops, autograd recording every step.

Two users: the LSTM with a projection (ops.lstm_projection; the fused recurrent kernels of
ops.rnn have none), and ``create_graph=True`` through the fused layers, whose graph backward
recomputes the layer this way and differentiates that (ops.graph_backward_nn). The formulas
are PyTorch's (gate order i, f, g, o for the LSTM; r, z, n for the GRU, whose hidden bias
stays inside ``r * (W_hn h + b_hn)``).
"""

from ..functions import stack


def unrolled_layer(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=False, w_hr=None):
    """One direction of a layer over a whole sequence: ``(output, h_n, c_n)`` (c_n None unless
    ``mode`` is ``"lstm"``).

    Args:
        mode: ``"lstm"``, ``"gru"``, ``"rnn_tanh"`` or ``"rnn_relu"``.
        x: (T, B, I). h0: (B, P) or None (zeros), P = H or the projection's size; c0: (B, H)
            or None (LSTM only). w_ih: (G*H, I); w_hh: (G*H, P); b_ih, b_hh: (G*H,) or None.
        reverse: run from the last step to the first. w_hr: (P, H), the LSTM's projection.
    """
    batch, hidden = x.shape[1], w_ih.shape[0] // {"lstm": 4, "gru": 3}.get(mode, 1)
    h = h0 if h0 is not None else x.new_zeros((batch, w_hh.shape[1]))
    c = (c0 if c0 is not None else x.new_zeros((batch, hidden))) if mode == "lstm" else None
    from_input = x @ w_ih.t()                                   # every step's at once
    if b_ih is not None:
        from_input = from_input + b_ih
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in steps:
        from_state = h @ w_hh.t()
        if b_hh is not None:
            from_state = from_state + b_hh
        if mode == "lstm":
            i, f, g, o = (from_input[t] + from_state).chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
            if w_hr is not None:
                h = h @ w_hr.t()
        elif mode == "gru":
            x_r, x_z, x_n = from_input[t].chunk(3, 1)
            h_r, h_z, h_n = from_state.chunk(3, 1)
            r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
            h = (1 - z) * (x_n + r * h_n).tanh() + z * h
        else:
            pre = from_input[t] + from_state
            h = pre.tanh() if mode == "rnn_tanh" else pre.relu()
        outputs.append(h)
    if reverse:
        outputs.reverse()
    return stack(outputs), h, c
