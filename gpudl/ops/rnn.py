"""Recurrent layers as ONE autograd node per layer and direction, over the whole sequence.

``RecurrentLayer`` wraps ``kernels.lstm.rnn_forward``/``rnn_backward``: the graph holds a single
node however long the sequence, so neither its size nor the Python work of the backward walk
grows with T. ``lstm_layer``, ``gru_layer`` and ``rnn_layer`` validate their arguments and apply
it; gpudl.nn.LSTM / GRU / RNN stack them into layers and directions.
"""

from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating
from .. import backend
from ..dtypes import LOW_PRECISION, float16, float32
from ..autograd import ArrayFunction
from ..kernels import lstm as K
from ..sliced_gradient import known_zero
from ..tensor import Tensor
from ._util import xp_of
from .shape import Stack


class RecurrentLayer(ArrayFunction):
    """(x, hx, cx, w_ih, w_hh, b_ih, b_hh, mode, reverse) -> (y, h_n[, c_n]); c_n for LSTM
    only; hx, cx None for zeros. An output without gradient gets None in backward, not zeros:
    the kernels take it as zeros without one being made (a stacked LSTM's last y, its c_n), and
    so is a gradient known to be zero (the h_n of layers ``stack(h_n)[-1]`` leaves out)."""

    takes_sliced_gradients = True

    @staticmethod
    def forward(ctx, x, hx, cx, w_ih, w_hh, b_ih, b_hh, mode, reverse, final_states=None):
        ctx.set_materialize_grads(False)
        # what create_graph=True recomputes the layer from (ops.graph_backward_nn)
        ctx.layer, ctx.inputs = (mode, reverse), (x, hx, cx, w_ih, w_hh, b_ih, b_hh)
        # float16/bfloat16 run in float32 on both devices; the results are rounded back
        ctx.dtype = x.dtype
        if final_states is not None and final_states[0].dtype != x.dtype:
            final_states = None             # (autocast's float16: rounded copies instead)
        x, hx, cx, w_ih, w_hh, b_ih, b_hh = _working(x, hx, cx, w_ih, w_hh, b_ih, b_hh)
        x = xp_of(x).ascontiguousarray(x)
        y, h_n, c_n, saved = K.rnn_forward(mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, reverse,
                                           for_backward=any(ctx.needs_input_grad),
                                           final_states=final_states)
        ctx.saved = saved                  # the activation buffers (freed with the node)
        ctx.save_for_backward(w_ih, w_hh)
        out = (y, h_n, c_n) if mode == "lstm" else (y, h_n)
        return tuple(_rounded(o, ctx.dtype) for o in out)

    @staticmethod
    def backward(ctx, gy, g_hn, g_cn=None):
        w_ih, w_hh = ctx.saved_tensors
        gy, g_hn, g_cn = _working(*(known_zero(g) for g in (gy, g_hn, g_cn)))
        grads = K.rnn_backward(ctx.saved, w_ih, w_hh, gy, g_hn, g_cn, ctx.needs_input_grad[:7])
        return tuple(_rounded(g, ctx.dtype) for g in grads) + (None, None, None)


class StackedStates(Stack):
    """``stack(states)`` of final states the layers wrote into the slots (``slots``) of
    ``buffer`` as they ran: the buffer itself, no copy; stacked where a layer returned other
    arrays than its slots (rounded to float16, say). The backward is Stack's."""

    @staticmethod
    def forward(ctx, buffer, slots, *arrays):
        ctx.axis = 0
        for state, slot in zip(arrays, slots):
            if state is not slot:
                return xp_of(state).stack(arrays)
        return buffer

    @staticmethod
    def backward(ctx, g):
        return (None,) + Stack.backward(ctx, g)


def final_state_buffers(x, count, hidden_size):
    """Two empty (count, B, H) arrays for the LSTM layers over x (a (T, B, I) Tensor) to write
    their final states h_n and c_n into (``lstm_layer``'s ``final_states``, then
    ``StackedStates``), where the layers' kernels write them there as they end; else None (a
    copy there would cost what the stack does)."""
    data = x._data
    if _autocast.active or not K.writes_final_states(data, hidden_size):
        return None
    xp = xp_of(data)
    return tuple(xp.empty((count, data.shape[1], hidden_size), data.dtype) for _ in range(2))


def _working(*arrays):
    """float16/bfloat16 arrays in float32: Numba's CPU target has neither, and the CUDA kernels
    are built and gated for float32/float64 only (cuDNN too computes a float16 RNN in float32).
    bfloat16 CuPy arrays are left to the kernels' clear refusal (CuPy cannot cast back)."""
    return tuple(a.astype(float32) if a is not None and a.dtype in LOW_PRECISION
                 and (a.dtype == float16 or not backend.is_device_array(a)) else a
                 for a in arrays)


def _rounded(array, dtype):
    return array if array is None or array.dtype == dtype else array.astype(dtype)


def lstm_layer(input, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False,
               final_states=None):
    """One LSTM layer in one direction over a whole sequence (PyTorch's gate order i, f, g, o).

    Args:
        input: (T, B, I). h0, c0: (B, H) initial states, or None for zeros.
        weight_ih: (4H, I); weight_hh: (4H, H); bias_ih, bias_hh: (4H,) or None.
        reverse: run from the last step to the first (the ``_reverse`` direction).
        final_states: None, or two C-contiguous (B, H) arrays of input's dtype and device
            (slots of ``final_state_buffers``) that h_n and c_n are written into and are.

    Returns:
        ``(output, h_n, c_n)``: output (T, B, H), the final states (B, H).
    """
    return _layer("lstm", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, reverse,
                  final_states)


def gru_layer(input, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, reverse=False):
    """One GRU layer in one direction (gates r, z, n; weights (3H, I), (3H, H)).

    Returns ``(output, h_n)``: output (T, B, H), h_n (B, H).
    """
    return _layer("gru", input, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, reverse)


def rnn_layer(input, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
              nonlinearity="tanh", reverse=False):
    """One Elman RNN layer in one direction: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    with act ``"tanh"`` or ``"relu"`` (weights (H, I), (H, H)).

    Returns ``(output, h_n)``: output (T, B, H), h_n (B, H).
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn: unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
    return _layer("rnn_" + nonlinearity, input, h0, None, weight_ih, weight_hh, bias_ih, bias_hh,
                  reverse)


def _layer(mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, reverse, final_states=None):
    name = mode.split("_")[0]
    if _autocast.active:
        x, hx, cx, w_ih, w_hh, b_ih, b_hh = cast_inputs(name, x, hx, cx, w_ih, w_hh, b_ih, b_hh)
    _check_types(name, x=x, h0=hx, c0=cx, weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih,
                 bias_hh=b_hh)
    H = _check_shapes(name, K.GATES[mode], x, w_ih, w_hh, b_ih, b_hh)
    batch = (x.shape[1], H)
    for label, state in (("h0", hx), ("c0", cx)):
        if state is not None and state.shape != batch:
            raise ValueError(f"{name}: {label} has shape {state.shape} but expected {batch} "
                             f"(batch, hidden_size) for input of shape {x.shape}")
    return RecurrentLayer.apply(x, hx, cx, w_ih, w_hh, b_ih, b_hh, mode, bool(reverse),
                                final_states)


def _check_types(name, **tensors):
    x = tensors["x"]
    for label, t in tensors.items():
        if t is None and label not in ("x", "weight_ih", "weight_hh"):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {label} must be a Tensor, got {type(t).__name__}")
        if t.dtype != x.dtype or not is_floating(t.dtype):
            raise TypeError(f"{name}: {label} has dtype {t.dtype} but input has dtype "
                            f"{x.dtype}; expected one floating dtype for all")


def _check_shapes(name, gates, x, w_ih, w_hh, b_ih, b_hh):
    """Check input (T, B, I) against the weights; return the hidden size H."""
    if x.ndim != 3:
        raise ValueError(f"{name}: expected input of 3 dimensions (seq_len, batch, input_size), "
                         f"got shape {x.shape}")
    if w_hh.ndim != 2 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ValueError(f"{name}: weight_hh has shape {w_hh.shape} but expected "
                         f"({gates} * hidden_size, hidden_size)")
    H = w_hh.shape[1]
    if w_ih.shape != (gates * H, x.shape[2]):
        raise ValueError(f"{name}: input has {x.shape[2]} features but weight_ih has shape "
                         f"{w_ih.shape}; expected {(gates * H, x.shape[2])} (input shape "
                         f"{x.shape})")
    for label, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None and b.shape != (gates * H,):
            raise ValueError(f"{name}: {label} has shape {b.shape} but expected {(gates * H,)}")
    return H
