"""gpudl.keras layers: values and gradients against the same computation in PyTorch (float64),
and Keras's own semantics (padding 'same' with strides, BatchNormalization's momentum,
LeakyReLU's slope) against formulas written here."""

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.keras import Input, layers
from oracle import torch

F = torch.nn.functional


def _grads_match(layer, x, reference, rtol=1e-7, atol=1e-9, extra=(), extra32=()):
    """Build ``layer`` on x (float64), run it and ``reference(tx, weights)`` on the same values
    (weights: name -> torch tensor in Keras's layout); compare outputs and every gradient."""
    layer(gd.tensor(x[:1].astype(np.float32)), *extra32)       # builds float32 weights
    layer.double()
    xg = gd.tensor(x, requires_grad=True)
    out = layer(xg, *extra)
    tx = torch.tensor(x, requires_grad=True)
    weights = {name: torch.tensor(p.numpy(), requires_grad=True)
               for name, p in layer.named_parameters()}
    expected = reference(tx, weights)
    outs = out if isinstance(out, list) else [out]
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    rng = np.random.default_rng(1)
    loss, tloss = 0, 0
    for a, b in zip(outs, expected):
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol)
        w = rng.standard_normal(a.shape)
        loss, tloss = loss + (a * gd.tensor(w)).sum(), tloss + (b * torch.tensor(w)).sum()
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(xg.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), weights[name].grad.numpy(), rtol=rtol,
                                   atol=atol, err_msg=name)
    return out


def test_dense_kernel_is_in_by_out_with_glorot_uniform(rng):
    layer = layers.Dense(7, activation="relu")
    x = rng.standard_normal((5, 3, 4))                        # applies to the last axis
    _grads_match(layer, x, lambda tx, w: F.relu(tx @ w["kernel"] + w["bias"]))
    assert tuple(layer.kernel.shape) == (4, 7) and layer.count_params() == 35
    big = layers.Dense(300)
    big(gd.zeros(1, 200))
    limit = math.sqrt(6 / (200 + 300))                        # glorot_uniform
    k = big.kernel.numpy()
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.95 * limit
    assert np.all(big.bias.numpy() == 0)


def _tf_same(n, k, s, d=1):
    """TensorFlow's 'same' padding (before, after) written from its definition."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _conv_reference(x, kernel, bias, strides, padding, dilation=(1, 1)):
    """NHWC x, (kh, kw, in, out) kernel: pad as TF, then torch's conv2d."""
    t = x.permute(0, 3, 1, 2)
    if padding == "same":
        (top, bottom), (left, right) = (_tf_same(n, k, s, d) for n, k, s, d in
                                        zip(t.shape[2:], kernel.shape[:2], strides, dilation))
        t = F.pad(t, (left, right, top, bottom))
    out = F.conv2d(t, kernel.permute(3, 2, 0, 1), bias, stride=strides, dilation=dilation)
    return out.permute(0, 2, 3, 1)


@pytest.mark.parametrize("size, kernel, strides, padding, expected_hw", [
    ((7, 8), (3, 3), (2, 2), "same", (4, 4)),       # pads (1, 1) rows, (0, 1) cols
    ((8, 8), (4, 4), (2, 2), "same", (4, 4)),       # pads (1, 1): extra after when odd
    ((9, 6), (5, 2), (3, 2), "same", (3, 3)),
    ((9, 6), (3, 3), (1, 1), "same", (9, 6)),
    ((9, 6), (3, 2), (2, 1), "valid", (4, 5)),
])
def test_conv2d_channels_last_and_tf_same_padding(rng, size, kernel, strides, padding,
                                                  expected_hw):
    layer = layers.Conv2D(5, kernel, strides=strides, padding=padding, activation="tanh")
    x = rng.standard_normal((2,) + size + (3,))
    out = _grads_match(layer, x, lambda tx, w: torch.tanh(_conv_reference(
        tx, w["kernel"], w["bias"], strides, padding)))
    assert tuple(out.shape) == (2,) + expected_hw + (5,)
    assert tuple(layer.kernel.shape) == kernel + (3, 5)


def test_same_padding_with_stride_two_puts_the_extra_zero_after():
    """n=8, k=3, s=2: TF pads 0 before and 1 after (PyTorch's padding=1 would pad both sides)."""
    layer = layers.Conv2D(1, 3, strides=2, padding="same", use_bias=False)
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    layer(gd.tensor(x))
    layer.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    out = layer(gd.tensor(x)).numpy()[0, :, :, 0]
    # output (0, 0) sums rows 0-2, cols 0-2 (no zero row before); the last one sums rows 6-7
    assert out[0, 0] == x[0, 0:3, 0:3, 0].sum()
    assert out[3, 3] == x[0, 6:8, 6:8, 0].sum()


def test_conv2d_channels_first(rng):
    layer = layers.Conv2D(4, 3, padding="same", data_format="channels_first")
    x = rng.standard_normal((2, 3, 6, 5))
    _grads_match(layer, x, lambda tx, w: _conv_reference(
        tx.permute(0, 2, 3, 1), w["kernel"], w["bias"], (1, 1), "same").permute(0, 3, 1, 2))


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_conv1d(rng, padding):
    layer = layers.Conv1D(4, 3, padding=padding, dilation_rate=2 if padding == "causal" else 1)
    x = rng.standard_normal((2, 9, 3))

    def reference(tx, w):
        t = tx.permute(0, 2, 1)
        d = 2 if padding == "causal" else 1
        if padding == "causal":
            t = F.pad(t, (2 * d, 0))
        elif padding == "same":
            t = F.pad(t, _tf_same(9, 3, 1))
        return F.conv1d(t, w["kernel"].permute(2, 1, 0), w["bias"], dilation=d).permute(0, 2, 1)
    out = _grads_match(layer, x, reference)
    assert out.shape[1] == {"valid": 7, "same": 9, "causal": 9}[padding]


@pytest.mark.parametrize("size, kernel, strides, padding, output_padding, expected", [
    (4, 5, 2, "same", None, 8), (3, 3, 2, "valid", None, 7), (3, 1, 2, "valid", None, 6),
    (3, 2, 3, "same", None, 9), (5, 3, 1, "same", None, 5),
    (4, 3, 2, "same", 0, 7), (4, 3, 2, "same", 1, 8), (3, 3, 2, "valid", 1, 8)])
def test_conv2d_transpose_is_the_gradient_of_a_tf_same_conv(rng, size, kernel, strides,
                                                             padding, output_padding, expected):
    """Keras's Conv2DTranspose(x) = d/dz <conv2d(z), x> with conv2d padded as TF pads it
    (output size n * s for 'same', n * s + max(k - s, 0) for 'valid'; with output_padding p,
    (n - 1) * s + k - 2 * pad + p)."""
    layer = layers.Conv2DTranspose(4, kernel, strides=strides, padding=padding,
                                   output_padding=output_padding)
    x = rng.standard_normal((2, size, size, 3))

    def reference(tx, w):
        z = torch.zeros((2, expected, expected, 4), dtype=torch.float64, requires_grad=True)
        y = _conv_reference(z, w["kernel"], None, (strides, strides), padding)
        assert tuple(y.shape) == tuple(tx.shape)
        (grad,) = torch.autograd.grad((y * tx).sum(), z, create_graph=True)
        return grad + w["bias"]
    out = _grads_match(layer, x, reference)
    assert tuple(out.shape) == (2, expected, expected, 4)
    assert tuple(layer.kernel.shape) == (kernel, kernel, 4, 3)


def _pool_reference(x, k, s, padding, kind):
    """NHWC pooling with loops: TF's 'same' windows cover only real values."""
    n, h, w, c = x.shape
    (top, _), (left, _) = (_tf_same(h, k, s), _tf_same(w, k, s)) if padding == "same" \
        else ((0, 0), (0, 0))
    oh = -(-h // s) if padding == "same" else (h - k) // s + 1
    ow = -(-w // s) if padding == "same" else (w - k) // s + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - top, j * s - left
            window = x[:, max(r0, 0):r0 + k, max(c0, 0):c0 + k]
            out[:, i, j] = window.max((1, 2)) if kind == "max" else window.mean((1, 2))
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pooling_2d(rng, kind, padding):
    cls = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
    x = rng.standard_normal((2, 7, 6, 3))
    out = cls(pool_size=3, strides=2, padding=padding)(gd.tensor(x)).numpy()
    np.testing.assert_allclose(out, _pool_reference(x, 3, 2, padding, kind), rtol=1e-6)


def test_pooling_1d_and_global_pooling(rng):
    x = rng.standard_normal((2, 9, 3))
    out = layers.MaxPooling1D(2)(gd.tensor(x)).numpy()
    np.testing.assert_allclose(out, x[:, :8].reshape(2, 4, 2, 3).max(2))
    img = rng.standard_normal((2, 4, 5, 3))
    np.testing.assert_allclose(layers.GlobalAveragePooling2D()(gd.tensor(img)).numpy(),
                               img.mean((1, 2)))
    np.testing.assert_allclose(layers.GlobalMaxPooling2D()(gd.tensor(img)).numpy(),
                               img.max((1, 2)))
    np.testing.assert_allclose(layers.GlobalAveragePooling1D()(gd.tensor(x)).numpy(),
                               x.mean(1))


def test_batch_normalization_keras_momentum_and_epsilon(rng):
    """Training: normalise with the batch's statistics (eps 1e-3); moving = 0.99 * moving +
    0.01 * batch (biased variance). Inference: the moving statistics."""
    layer = layers.BatchNormalization()
    x = rng.standard_normal((6, 3, 4)) * 2 + 1                # channels last: 4
    layer(gd.tensor(x[:1].astype(np.float32)))
    layer.double()
    layer.set_weights([rng.standard_normal(4), rng.standard_normal(4), np.zeros(4), np.ones(4)])
    gamma, beta = layer.gamma.numpy().copy(), layer.beta.numpy().copy()
    layer.train()
    xg = gd.tensor(x, requires_grad=True)
    out = layer(xg)
    mean, var = x.mean((0, 1)), x.var((0, 1))
    np.testing.assert_allclose(out.numpy(), (x - mean) / np.sqrt(var + 1e-3) * gamma + beta,
                               rtol=1e-10)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.01 * mean, rtol=1e-10)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.99 + 0.01 * var, rtol=1e-10)
    # gradients: torch's batch_norm normalises the same way
    tx = torch.tensor(x, requires_grad=True)
    tg, tb = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    expected = F.batch_norm(tx.reshape(-1, 4), None, None, tg, tb, training=True, eps=1e-3)
    w = rng.standard_normal(x.shape)
    (out * gd.tensor(w)).sum().backward()
    (expected.reshape(x.shape) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), tg.grad.numpy(), rtol=1e-8)
    layer.eval()
    moving_mean, moving_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    np.testing.assert_allclose(layer(gd.tensor(x)).numpy(),
                               (x - moving_mean) / np.sqrt(moving_var + 1e-3) * gamma + beta,
                               rtol=1e-10)
    assert layer.count_params() == 16 and len(layer.trainable_weights) == 2
    frozen = layers.BatchNormalization(trainable=False)        # Keras: inference mode
    frozen.train()
    np.testing.assert_allclose(frozen(gd.tensor(x)).numpy(), x / np.sqrt(1 + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), 0)


def test_layer_normalization_epsilon(rng):
    layer = layers.LayerNormalization()
    x = rng.standard_normal((3, 5, 6))
    _grads_match(layer, x, lambda tx, w: F.layer_norm(tx, (6,), w["gamma"], w["beta"],
                                                      eps=1e-3))


def test_leaky_relu_keras_slope_and_activation_layers(rng):
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(layers.LeakyReLU()(gd.tensor(x)).numpy(),
                               np.where(x > 0, x, 0.3 * x))
    np.testing.assert_allclose(layers.LeakyReLU(alpha=0.1)(gd.tensor(x)).numpy(),
                               np.where(x > 0, x, 0.1 * x))
    soft = layers.Activation("softmax")(gd.tensor(x)).numpy()
    np.testing.assert_allclose(soft, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-12)


def test_embedding_uniform_init_and_integer_inputs(rng):
    layer = layers.Embedding(50, 6)
    ids = rng.integers(0, 50, (4, 7))
    out = layer(gd.tensor(ids.astype(np.float32)))             # floats are cast, as Keras
    np.testing.assert_array_equal(out.numpy(), layer.embeddings.numpy()[ids])
    assert np.abs(layer.embeddings.numpy()).max() <= 0.05
    (out * gd.tensor(rng.standard_normal(out.shape).astype(np.float32))).sum().backward()
    assert layer.embeddings.grad.numpy()[np.setdiff1d(np.arange(50), ids)].sum() == 0


def _torch_recurrent(kind, tx, w, units, h0=None, reverse=False):
    """torch's LSTM/GRU/RNN with Keras's weights mapped to PyTorch's layout."""
    kernel, recurrent, bias = w["kernel"], w["recurrent_kernel"], w["bias"]
    if kind == "gru":                                        # (z, r, h) -> (r, z, n)
        order = lambda m: torch.cat([m[..., units:2 * units], m[..., :units],  # noqa: E731
                                     m[..., 2 * units:]], -1)
        kernel, recurrent, bias = order(kernel), order(recurrent), order(bias)
        b_ih, b_hh = bias[0], bias[1]
    else:
        b_ih, b_hh = bias, torch.zeros_like(bias)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        kernel.shape[0], units, batch_first=True).double()
    params = {"weight_ih_l0": kernel.T, "weight_hh_l0": recurrent.T, "bias_ih_l0": b_ih,
              "bias_hh_l0": b_hh}
    x = tx.flip(1) if reverse else tx
    out, state = torch.func.functional_call(module, params, (x,) if h0 is None else (x, h0))
    return out, state


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_recurrent_layers_match_torch(rng, kind, return_sequences):
    cls = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}[kind]
    layer = cls(5, return_sequences=return_sequences, return_state=True)
    x = rng.standard_normal((3, 6, 4))

    def reference(tx, w):
        out, state = _torch_recurrent(kind, tx, w, 5)
        states = [s[0] for s in state] if kind == "lstm" else [state[0]]
        return [out if return_sequences else out[:, -1]] + states
    outs = _grads_match(layer, x, reference)
    assert len(outs) == (3 if kind == "lstm" else 2)
    expected_count = {"lstm": 4 * (4 * 5 + 5 * 5 + 5), "gru": 3 * (4 * 5 + 5 * 5 + 2 * 5),
                      "rnn": 4 * 5 + 5 * 5 + 5}[kind]
    assert layer.count_params() == expected_count


def test_lstm_initial_state_go_backwards_and_forget_bias(rng):
    layer = layers.LSTM(4, go_backwards=True, return_sequences=True)
    x = rng.standard_normal((2, 5, 3))
    h0, c0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    layer(gd.tensor(x[:1].astype(np.float32)))
    bias = layer.bias.numpy()
    assert np.all(bias[4:8] == 1) and np.all(bias[:4] == 0) and np.all(bias[8:] == 0)
    layer.double()
    out = layer(gd.tensor(x), initial_state=[gd.tensor(h0), gd.tensor(c0)])
    w = {name: torch.tensor(p.numpy()) for name, p in layer.named_parameters()}
    expected, _ = _torch_recurrent("lstm", torch.tensor(x), w, 4, h0=(
        torch.tensor(h0)[None], torch.tensor(c0)[None]), reverse=True)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-10)  # processing order


def test_bidirectional_concatenates_the_aligned_backward_pass(rng):
    layer = layers.Bidirectional(layers.GRU(3, return_sequences=True))
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    out = layer(gd.tensor(x)).numpy()
    assert out.shape == (2, 5, 6) and layer.count_params() == 2 * 3 * (4 * 3 + 3 * 3 + 2 * 3)
    fw = layer.forward_layer(gd.tensor(x)).numpy()
    bw = layer.backward_layer(gd.tensor(x)).numpy()[:, ::-1]
    np.testing.assert_allclose(out, np.concatenate([fw, bw], -1))
    encoder = layers.Bidirectional(layers.LSTM(3, return_state=True))
    out, fh, fc, bh, bc = encoder(Input(shape=(None, 4)))
    assert out.shape == (None, 6) and fh.shape == bc.shape == (None, 3)
    values = encoder(gd.tensor(x))
    np.testing.assert_allclose(values[0].numpy(), np.concatenate(
        [values[1].numpy(), values[3].numpy()], -1))


def test_attention_is_softmax_of_dot_scores(rng):
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    out, weights = layers.Attention()([gd.tensor(q), gd.tensor(v)],
                                      return_attention_scores=True)
    scores = q @ v.transpose(0, 2, 1)
    expected_w = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), expected_w, rtol=1e-10)
    np.testing.assert_allclose(out.numpy(), expected_w @ v, rtol=1e-10)
    causal = layers.Attention()([gd.tensor(q), gd.tensor(q)], use_causal_mask=True).numpy()
    np.testing.assert_allclose(causal[:, 0], q[:, 0], rtol=1e-10)   # sees only itself


def test_multi_head_attention_matches_the_einsum_formula(rng):
    layer = layers.MultiHeadAttention(num_heads=2, key_dim=3)
    q, v = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 5, 6))

    def reference(tx, w):
        query = torch.einsum("btd,dhk->bthk", tx, w["query_kernel"]) + w["query_bias"]
        key = torch.einsum("btd,dhk->bthk", tv, w["key_kernel"]) + w["key_bias"]
        value = torch.einsum("btd,dhk->bthk", tv, w["value_kernel"]) + w["value_bias"]
        scores = torch.einsum("bqhk,bshk->bhqs", query / math.sqrt(3), key)
        context = torch.einsum("bhqs,bshk->bqhk", scores.softmax(-1), value)
        return torch.einsum("bqhk,hkd->bqd", context, w["output_kernel"]) + w["output_bias"]
    tv = torch.tensor(v)
    _grads_match(layer, q, reference, extra=(gd.tensor(v),),
                 extra32=(gd.tensor(v.astype(np.float32)),))
    # Keras's count: 3 * (6 * 2 * 3 + 2 * 3) + 2 * 3 * 6 + 6
    assert layer.count_params() == 168


def test_shape_layers(rng):
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(layers.Flatten()(gd.tensor(x)).numpy(), x.reshape(2, 12))
    np.testing.assert_array_equal(layers.Reshape((4, -1))(gd.tensor(x)).numpy(),
                                  x.reshape(2, 4, 3))
    np.testing.assert_array_equal(layers.Permute((2, 1))(gd.tensor(x)).numpy(),
                                  x.transpose(0, 2, 1))
    np.testing.assert_array_equal(layers.RepeatVector(3)(gd.tensor(x[:, 0])).numpy(),
                                  np.repeat(x[:, None, 0], 3, 1))
    np.testing.assert_array_equal(layers.Concatenate()([gd.tensor(x), gd.tensor(x)]).numpy(),
                                  np.concatenate([x, x], -1))
    np.testing.assert_array_equal(layers.Add()([gd.tensor(x), gd.tensor(x)]).numpy(), 2 * x)
    img = rng.standard_normal((1, 2, 3, 2))
    np.testing.assert_array_equal(layers.UpSampling2D((2, 3))(gd.tensor(img)).numpy(),
                                  img.repeat(2, 1).repeat(3, 2))
    time = layers.TimeDistributed(layers.Dense(2))
    out = time(gd.tensor(x))
    np.testing.assert_allclose(out.numpy(), x @ time.layer.kernel.numpy() +
                               time.layer.bias.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot reshape samples of shape"):
        layers.Reshape((5,))(gd.tensor(x))


def test_dropout_is_inverted_and_off_in_inference():
    layer = layers.Dropout(0.5)
    x = gd.ones(1000, 10)
    out = layer(x).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0} and 0.4 < (out == 0).mean() < 0.6
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


def test_dropout_noise_shape_shares_the_draw_along_axes_of_size_one():
    # Keras's noise_shape=(None, 1, features): the same features dropped at every step (it was
    # accepted and ignored)
    out = layers.Dropout(0.5, noise_shape=(None, 1, 6))(gd.ones(400, 5, 6), training=True)
    out = out.numpy()
    assert set(np.unique(out)) <= {0.0, 2.0} and 0.4 < (out == 0).mean() < 0.6
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1], out.shape))
    with pytest.raises(ValueError, match="noise_shape"):
        layers.Dropout(0.5, noise_shape=(None, 2, 6))(gd.ones(4, 5, 6), training=True)


def test_layer_dtype_sets_the_weights_dtype():
    # Keras's Dense(3, dtype="float64") has float64 weights (dtype was accepted and ignored)
    dense = layers.Dense(3, dtype="float64")
    out = dense(gd.randn(2, 4))
    assert dense.kernel.dtype == np.float64 and out.dtype == np.float64
    lstm = layers.LSTM(2, dtype="float64")
    assert lstm(gd.randn(2, 3, 4)).dtype == np.float64
    assert all(w.dtype == np.float64 for w in lstm.get_weights())
    assert layers.Dense(3)(gd.randn(2, 4)).dtype == np.float32
    with pytest.raises(NotImplementedError, match="mixed_float16"):
        layers.Dense(3, dtype="mixed_float16")
    with pytest.raises(TypeError, match="Dense: dtype: unsupported dtype 'complex64'"):
        layers.Dense(3, dtype="complex64")


def test_symbolic_shapes_with_unknown_lengths():
    seq = Input(shape=(None, 8))
    out = layers.Conv1D(4, 3, strides=2, padding="same")(seq)
    assert out.shape == (None, None, 4)
    pooled = layers.GlobalAveragePooling1D()(out)
    assert pooled.shape == (None, 4)
    ids = Input(shape=(None,), dtype="int64")
    assert layers.LSTM(5)(layers.Embedding(10, 3)(ids)).shape == (None, 5)


def test_bad_arguments_name_the_layer():
    with pytest.raises(ValueError, match="Dense: units must be a positive int, got 0"):
        layers.Dense(0)
    with pytest.raises(ValueError, match="Conv2D: padding must be one of"):
        layers.Conv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match="Dropout: rate must be a number in"):
        layers.Dropout(1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        layers.Dense(3, kernel_regulariser="l2")
    with pytest.raises(NotImplementedError, match="recurrent_dropout"):
        layers.GRU(3, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="LSTM: dropout must be in"):
        layers.LSTM(3, dropout=1.0)


def test_wrong_rank_inputs_name_the_layer():
    with pytest.raises(ValueError, match=r"\(Conv2D\): expected inputs with 4 dims .*"
                                         r"\(2, 1, 8, 8, 1\)"):
        layers.Conv2D(3, 3)(gd.zeros(2, 1, 8, 8, 1))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_mask_zero_skips_padding_like_the_unpadded_sequences(rng, kind):
    """Embedding(mask_zero=True) -> recurrent layer: a padded sequence gives the same last
    output and states as the unpadded one (Keras's masking), in Sequential and functional
    models."""
    from gpudl.keras.models import Model, Sequential
    cls = layers.LSTM if kind == "lstm" else layers.GRU
    embedding = layers.Embedding(20, 4, mask_zero=True)
    recurrent = cls(5)
    model = Sequential([embedding, layers.Dropout(0.1), recurrent])
    model.eval()
    ids = rng.integers(1, 20, (3, 6))
    padded = np.concatenate([ids, np.zeros((3, 3), np.int64)], 1)
    padded[1, 4:] = 0                                        # different lengths
    short = gd.tensor(ids)
    out = model(gd.tensor(padded)).numpy()
    expected_0 = recurrent(embedding(short)).numpy()
    np.testing.assert_allclose(out[[0, 2]], expected_0[[0, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], recurrent(embedding(short[1:2, :4])).numpy()[0],
                               rtol=1e-5, atol=1e-6)
    tokens = Input(shape=(None,), dtype="int64")
    sequences = cls(5, return_sequences=True)
    h = sequences(layers.Embedding(20, 4, mask_zero=True)(tokens))
    functional = Model(tokens, layers.TimeDistributed(layers.Dense(2))(h))
    steps = functional(gd.tensor(padded)).numpy()
    np.testing.assert_allclose(steps[0, 6:], np.repeat(steps[0, 5:6], 3, 0), rtol=1e-6)


@pytest.mark.parametrize("which", ["dropout", "recurrent_dropout"])
def test_lstm_dropout_masks_as_keras(rng, which):
    """One mask per sequence: on the inputs (dropout) or on h entering the recurrent matmul
    (recurrent_dropout); the same draws rebuilt here give the reference."""
    from gpudl.nn import functional as gF
    layer = layers.LSTM(4, return_sequences=True, **{which: 0.5})
    x = rng.standard_normal((3, 5, 2))
    layer(gd.tensor(x[:1].astype(np.float32)))
    layer.double()
    w = {name: torch.tensor(p.numpy()) for name, p in layer.named_parameters()}
    gd.manual_seed(7)
    shape = (3, 1, 2) if which == "dropout" else (3, 4)
    mask = gF.dropout(gd.ones(*shape, dtype=gd.float64), 0.5, True).numpy()
    gd.manual_seed(7)
    out = layer(gd.tensor(x)).numpy()
    if which == "dropout":
        expected, _ = _torch_recurrent("lstm", torch.tensor(x * mask), w, 4)
    else:
        cell = torch.nn.LSTMCell(2, 4).double()
        params = {"weight_ih": w["kernel"].T, "weight_hh": w["recurrent_kernel"].T,
                  "bias_ih": w["bias"], "bias_hh": torch.zeros(16, dtype=torch.float64)}
        h = c = torch.zeros(3, 4, dtype=torch.float64)
        steps = []
        for t in range(5):
            h, c = torch.func.functional_call(cell, params, (torch.tensor(x[:, t]),
                                                             (h * torch.tensor(mask), c)))
            steps.append(h)
        expected = torch.stack(steps, 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10)
    layer.eval()
    plain, _ = _torch_recurrent("lstm", torch.tensor(x), w, 4)
    np.testing.assert_allclose(layer(gd.tensor(x)).numpy(), plain.numpy(), rtol=1e-10)


def test_training_argument_sets_the_mode_of_one_call():
    model_layers = [layers.Dense(4), layers.Dropout(0.5)]
    x = gd.ones(200, 3)
    dense, dropout = model_layers
    dense.eval()
    dropout.eval()
    assert dense(x, training=False).shape == (200, 4)          # any layer takes training=
    out = dropout(dense(x), training=True).numpy()
    assert (out == 0).mean() > 0.3 and not dropout.training     # dropped; mode restored
    dropout.train()
    np.testing.assert_array_equal(dropout(dense(x), training=False).numpy(), dense(x).numpy())
    assert dropout.training


def test_gru_reset_before_matches_keras_original_equations(rng):
    layer = layers.GRU(4, reset_after=False, return_sequences=True, return_state=True)
    x = rng.standard_normal((2, 5, 3))

    def reference(tx, w):
        k, rk, b = w["kernel"], w["recurrent_kernel"], w["bias"]
        h, steps = torch.zeros(2, 4, dtype=torch.float64), []
        for t in range(5):
            xz, xr, xh = (tx[:, t] @ k + b).split(4, -1)
            z = torch.sigmoid(xz + h @ rk[:, :4])
            r = torch.sigmoid(xr + h @ rk[:, 4:8])
            h = z * h + (1 - z) * torch.tanh(xh + (r * h) @ rk[:, 8:])
            steps.append(h)
        return [torch.stack(steps, 1), h]
    _grads_match(layer, x, reference)
    assert layer.count_params() == 3 * (3 * 4 + 4 * 4 + 4)


def test_attention_masks_hide_padded_values_and_zero_padded_queries(rng):
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    query_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    out, weights = layers.Attention()([gd.tensor(q), gd.tensor(v)],
                                      mask=[gd.tensor(query_mask), gd.tensor(value_mask)],
                                      return_attention_scores=True)
    scores = np.where(value_mask[:, None], q @ v.transpose(0, 2, 1), -np.inf)
    expected_w = np.exp(scores - scores.max(-1, keepdims=True))
    expected_w /= expected_w.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), expected_w, rtol=1e-10)
    np.testing.assert_allclose(out.numpy(), (expected_w @ v) * query_mask[..., None],
                               rtol=1e-10)


def test_float_inputs_are_autocast_to_the_weights_dtype(rng):
    x = rng.standard_normal((2, 3))                              # float64
    dense = layers.Dense(4)
    assert dense(gd.tensor(x)).dtype == gd.float32
    conv = layers.Conv1D(2, 2)
    assert conv(gd.tensor(rng.standard_normal((1, 5, 3)))).dtype == gd.float32
    dense.double()
    assert dense(gd.tensor(x.astype(np.float32))).dtype == gd.float64
