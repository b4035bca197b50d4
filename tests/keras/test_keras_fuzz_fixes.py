"""Regressions from the differential fuzz of gpudl.keras against Keras 3 (session 23): each
case is checked against an independent float64 NumPy reference, so no Keras is needed."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.keras as keras
from gpudl.keras import layers


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- layers called on NumPy arrays (Keras converts them; gpudl raised AttributeError) ----------

@pytest.mark.parametrize("make, x", [
    (lambda: layers.Conv1D(2, 3), np.ones((2, 5, 3))),
    (lambda: layers.MaxPooling2D(2), np.ones((1, 4, 4, 2))),
    (lambda: layers.LSTM(3), np.ones((2, 4, 2), np.float32)),
    (lambda: layers.BatchNormalization(), np.ones((3, 4)))])
def test_layers_take_numpy_inputs_as_float32_tensors(rng, make, x):
    x = (x * rng.standard_normal(x.shape)).astype(x.dtype)
    layer = make()
    out = layer(x)
    assert out.dtype == gd.float32
    np.testing.assert_allclose(out.numpy(), layer(gd.tensor(x.astype(np.float32))).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_embedding_and_merge_layers_take_numpy_inputs(rng):
    ids = rng.integers(0, 5, (2, 3))
    embedding = layers.Embedding(5, 4, mask_zero=True)
    np.testing.assert_array_equal(embedding(ids).numpy(), embedding.embeddings.numpy()[ids])
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    np.testing.assert_allclose(layers.Maximum()([a, b]).numpy(), np.maximum(a, b), rtol=1e-6)
    np.testing.assert_allclose(layers.Concatenate()([a, b]).numpy(),
                               np.concatenate([a, b], 1), rtol=1e-6)


# -- attention masks: Keras's -1e9, never NaN --------------------------------------------------

def test_attention_with_every_key_masked_attends_uniformly(rng):
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 4))
    value_mask = np.array([[True, False], [False, False]])
    out, weights = layers.Attention()([q, v], mask=[None, value_mask],
                                      return_attention_scores=True)
    scores = (q @ v.transpose(0, 2, 1)).astype(np.float32)
    hidden = scores - np.float32(1e9)              # float32, as the layer: the scores vanish
    expected = _softmax(np.where(value_mask[:, None, :], scores, hidden).astype(np.float64))
    np.testing.assert_allclose(weights.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(weights.numpy()[1], 0.5)          # row of sample 1: uniform
    np.testing.assert_allclose(out.numpy(), expected @ v, rtol=1e-5, atol=1e-6)


def test_attention_causal_and_value_masks_combine(rng):
    q, v = rng.standard_normal((1, 3, 2)), rng.standard_normal((1, 3, 2))
    value_mask = np.array([[False, True, True]])
    weights = layers.Attention()([q, v], mask=[None, value_mask], use_causal_mask=True,
                                 return_attention_scores=True)[1].numpy()
    keep = value_mask[:, None, :] & np.tril(np.ones((3, 3), bool))
    scores = (q @ v.transpose(0, 2, 1)).astype(np.float32)
    hidden = scores - np.float32(1e9)
    expected = _softmax(np.where(keep, scores, hidden).astype(np.float64))   # query 0: uniform
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert not np.isnan(weights).any()


def test_multi_head_attention_query_with_every_key_masked_gets_zero_weights(rng):
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 4))
    mask = np.ones((2, 3, 2), bool)
    mask[0, 1] = False
    mha = layers.MultiHeadAttention(2, 3)
    mha(q, v)
    mha.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                     for w in mha.get_weights()])
    out, weights = mha(q, v, attention_mask=mask, return_attention_scores=True)
    out, weights = out.numpy(), weights.numpy()
    p = {f"{name}_{kind}": getattr(mha, f"{name}_{kind}").numpy().astype(np.float64)
         for name in ("query", "key", "value", "output") for kind in ("kernel", "bias")}

    def project(x, name):
        return np.einsum("ntd,dhs->nhts", x, p[f"{name}_kernel"]) + \
            p[f"{name}_bias"][None, :, None, :]
    scores = project(q, "query") / np.sqrt(3) @ project(v, "key").transpose(0, 1, 3, 2)
    keep = mask[:, None]
    expected = np.where(keep, _softmax(np.where(keep, scores, -1e9)), 0.0)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    context = expected @ project(v, "value")                       # (n, h, t, vdim)
    ref = np.einsum("nhtv,hvo->nto", context, p["output_kernel"]) + p["output_bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0, 1], p["output_bias"], rtol=1e-6)


# -- GroupNormalization ----------------------------------------------------------------------------

def test_group_normalization_groups_minus_one_is_per_channel(rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    out = layers.GroupNormalization(groups=-1, epsilon=1e-3)(x).numpy()
    mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)


def test_group_normalization_with_one_value_per_group_gives_beta(rng):
    layer = layers.GroupNormalization(groups=4, beta_initializer="random_normal")
    x = gd.tensor(rng.standard_normal((1, 4)).astype(np.float32), requires_grad=True)
    out = layer(x)
    np.testing.assert_allclose(out.numpy(), layer.beta.numpy()[None], rtol=1e-6)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)              # x - mean(x) is 0


# -- fit: validation_split ----------------------------------------------------------------------

@pytest.mark.parametrize("n, split", [(11, 0.5), (9, 0.25), (7, 0.2)])
def test_validation_split_keeps_floor_of_the_training_fraction(rng, n, split):
    x = rng.standard_normal((n, 2)).astype(np.float32)
    y = rng.standard_normal((n, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    history = model.fit(x, y, validation_split=split, batch_size=n, epochs=1, shuffle=False,
                        verbose=0).history
    cut = int(np.floor(n * (1 - split)))                          # Keras's split point
    p = model.predict(x, verbose=0).astype(np.float64)
    np.testing.assert_allclose(history["loss"][0], np.mean((p[:cut] - y[:cut]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"][0], np.mean((p[cut:] - y[cut:]) ** 2),
                               rtol=1e-5)


def test_validation_split_leaving_no_training_sample_is_refused():
    model = keras.Sequential([keras.Input((1,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(np.ones((1, 1)), np.ones((1, 1)), validation_split=0.5, verbose=0)


# -- metrics ---------------------------------------------------------------------------------------

def _auc_reference(y, p, num_thresholds=200):
    """Keras's ROC AUC (interpolation) in float64, predictions clipped to [0, 1]."""
    p = np.clip(p.ravel(), 0, 1)
    y = y.ravel() != 0
    t = np.array([-1e-7] + [(i + 1) / (num_thresholds - 1)
                            for i in range(num_thresholds - 2)] + [1 + 1e-7])
    pos = p[None] > t[:, None]
    tp, fp = (pos & y).sum(1), (pos & ~y).sum(1)
    tpr, fpr = tp / max(y.sum(), 1), fp / max((~y).sum(), 1)
    return ((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum()


def test_auc_clips_scores_outside_zero_one(rng):
    y = rng.integers(0, 2, (40, 1)).astype(np.float32)
    s = (2 * y - 1 + 1.5 * rng.standard_normal((40, 1))).astype(np.float32)   # logits
    metric = keras.metrics.AUC()
    metric.update_state(y, s)
    np.testing.assert_allclose(float(metric.result()), _auc_reference(y, s), rtol=1e-6)


def _three_column_model(rng):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse",
                  metrics=["binary_accuracy", "categorical_accuracy", "mae", "accuracy",
                           keras.metrics.AUC(name="auc")])
    return model


def test_compile_accuracy_names_are_kerass_functions(rng):
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = rng.integers(0, 2, (12, 3)).astype(np.float32)
    model = _three_column_model(rng)
    got = model.evaluate(x, y, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0).astype(np.float64)
    np.testing.assert_allclose(got["binary_accuracy"], np.mean((p > 0.5) == y), rtol=1e-6)
    argmax_hits = np.mean(p.argmax(1) == y.argmax(1))
    np.testing.assert_allclose(got["categorical_accuracy"], argmax_hits, rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"], argmax_hits, rtol=1e-6)


def test_compile_metrics_ignore_sample_weights_the_loss_does_not(rng):
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = rng.integers(0, 2, (12, 3)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, 12).astype(np.float32)
    model = _three_column_model(rng)
    got = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0).astype(np.float64)
    np.testing.assert_allclose(got["loss"], np.mean(((p - y) ** 2).mean(1) * w), rtol=1e-5)
    np.testing.assert_allclose(got["mae"], np.abs(p - y).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["binary_accuracy"], np.mean((p > 0.5) == y), rtol=1e-6)
    np.testing.assert_allclose(got["auc"], _auc_reference(y, p), rtol=1e-5)


def test_class_weight_weighs_training_batches_not_validation(rng):
    x = rng.standard_normal((10, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 10)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.5}
    model = keras.Sequential([keras.Input((3,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss="sparse_categorical_crossentropy")
    history = model.fit(x, labels, class_weight=class_weight, validation_split=0.4,
                        batch_size=10, epochs=1, shuffle=False, verbose=0).history
    p = model.predict(x, verbose=0).astype(np.float64)
    nll = -np.log(p[np.arange(10), labels])
    w = np.array([class_weight[c] for c in labels])
    np.testing.assert_allclose(history["loss"][0], np.mean(nll[:6] * w[:6]), rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"][0], np.mean(nll[6:]), rtol=1e-5)


def test_sgd_nesterov_without_momentum_is_plain_sgd(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.standard_normal((6, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), layers.Dense(1)])
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, nesterov=True), loss="mse")
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    residual = 2 * (x @ kernel + bias - y) / 6                   # d mse / d output
    np.testing.assert_allclose(model.get_weights()[0], kernel - 0.1 * x.T @ residual,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], bias - 0.1 * residual.sum(0),
                               rtol=1e-5, atol=1e-6)


# -- losses called on NumPy arrays (Keras converts them; gpudl raised AttributeError) ----------

def test_loss_objects_take_numpy_arrays(rng):
    y = rng.integers(0, 2, (5, 3)).astype(np.float32)
    z = rng.standard_normal((5, 3))                                  # float64 logits
    w = rng.uniform(0.0, 2.0, 5)
    got = keras.losses.BinaryCrossentropy(from_logits=True)(y, z, sample_weight=w)
    per_value = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(float(got), np.mean(per_value.mean(1) * w), rtol=1e-5)
    labels = rng.integers(0, 3, 5)
    got = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, z)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(float(got), -log_p[np.arange(5), labels].mean(), rtol=1e-5)
    got = keras.losses.Huber(delta=0.5)(y, z)
    d = np.abs(z - y)
    huber = np.where(d <= 0.5, 0.5 * d ** 2, 0.5 * d - 0.125)
    np.testing.assert_allclose(float(got), huber.mean(), rtol=1e-5)


# -- callbacks ----------------------------------------------------------------------------------

def test_reduce_lr_on_plateau_logs_the_schedules_next_rate(rng):
    """Keras logs ``optimizer.learning_rate`` after the epoch: schedule(iterations), the rate
    of the next update."""
    x = rng.standard_normal((6, 2)).astype(np.float32)
    y = rng.standard_normal((6, 1)).astype(np.float32)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2, 4], [0.05, 0.025, 0.0125])
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    history = model.fit(x, y, batch_size=6, epochs=5, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=100)]).history
    # one update per epoch: after epoch e (from 1) the iterations are e
    np.testing.assert_allclose(history["learning_rate"], [0.05, 0.05, 0.025, 0.025, 0.0125])


def test_reduce_lr_on_plateau_leaves_a_schedule_already_at_min_lr(rng):
    """Keras refuses to set a schedule's rate only when it would change it: at or below
    ``min_lr`` the plateau changes nothing (gpudl raised TypeError)."""
    x = rng.standard_normal((6, 2)).astype(np.float32)
    y = rng.standard_normal((6, 1)).astype(np.float32)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.003, 1, 0.1)
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    history = model.fit(x, y, batch_size=6, epochs=3, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0,
                                          min_lr=0.001)]).history
    np.testing.assert_allclose(history["learning_rate"], [3e-4, 3e-5, 3e-6], rtol=1e-5)


# -- masks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", ["functional", "sequential"])
def test_global_average_pooling1d_averages_the_unmasked_steps(rng, build):
    ids = np.array([[1, 2, 0, 0], [3, 0, 1, 0], [0, 0, 0, 0]])
    table = rng.standard_normal((4, 3)).astype(np.float32)
    if build == "functional":
        inputs = keras.Input((4,), dtype="int32")
        hidden = layers.Dropout(0.0)(layers.Embedding(4, 3, mask_zero=True)(inputs))
        model = keras.Model(inputs, layers.GlobalAveragePooling1D()(hidden))
    else:
        model = keras.Sequential([keras.Input((4,), dtype="int32"),
                                  layers.Embedding(4, 3, mask_zero=True),
                                  layers.GlobalAveragePooling1D()])
    model.set_weights([table])
    got = model.predict(ids, verbose=0)
    keep = (ids != 0)[..., None]
    expected = (table[ids] * keep).sum(1) / np.maximum(keep.sum(1), 1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)   # all masked: 0


def test_multi_head_attention_in_a_model_uses_the_inputs_masks(rng):
    """Keras's MHA takes the query's and value's masks (here Embedding(mask_zero=True)) as an
    attention mask; the model ignored them."""
    ids = np.array([[1, 2, 0], [3, 0, 0]])
    inputs = keras.Input((3,), dtype="int32")
    embedded = layers.Embedding(4, 4, mask_zero=True)(inputs)
    mha = layers.MultiHeadAttention(2, 2)
    model = keras.Model(inputs, mha(embedded, embedded))
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    got = model.predict(ids, verbose=0)
    keep = ids != 0
    x = model.get_weights()[0][ids]
    expected = mha(x, x, attention_mask=keep[:, :, None] & keep[:, None, :]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1, 1:], np.broadcast_to(mha.output_bias.numpy(), (2, 4)),
                               rtol=1e-5, atol=1e-6)            # masked queries: the bias


def _masked_simple_rnn(x, keep, kernel, recurrent, bias, backwards=False):
    """float64 SimpleRNN over the kept steps (the state skips masked ones); outputs per step,
    zero where masked."""
    n, t, _ = x.shape
    h = np.zeros((n, kernel.shape[1]))
    out = np.zeros((n, t, kernel.shape[1]))
    for step in (range(t - 1, -1, -1) if backwards else range(t)):
        new = np.tanh(x[:, step] @ kernel + h @ recurrent + bias)
        k = keep[:, step, None]
        h = np.where(k, new, h)
        out[:, step] = np.where(k, new, 0.0)
    return out


def test_bidirectional_zeroes_both_directions_at_masked_steps(rng):
    x = rng.standard_normal((2, 4, 2)).astype(np.float32)
    x[0, 2:] = 0
    x[1, 1] = 0
    inputs = keras.Input((4, 2))
    outputs = layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True))(
        layers.Masking()(inputs))
    model = keras.Model(inputs, outputs)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    keep = (x != 0).any(-1)
    w = [v.astype(np.float64) for v in weights]
    expected = np.concatenate([_masked_simple_rnn(x, keep, *w[:3]),
                               _masked_simple_rnn(x, keep, *w[3:], backwards=True)], -1)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_compile_metrics_skip_the_outputs_masked_steps(rng):
    """Keras's mean metrics ('mae', 'accuracy', ...) weigh by the output's mask, as the loss."""
    ids = np.array([[1, 2, 0, 0], [3, 1, 2, 0], [2, 0, 0, 0]])
    y = rng.standard_normal((3, 4, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((4,), dtype="int32"),
                              layers.Embedding(4, 3, mask_zero=True), layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae", "mse"])
    got = model.evaluate(ids, y, verbose=0, return_dict=True)
    p = model.predict(ids, verbose=0).astype(np.float64)
    keep = ids != 0
    np.testing.assert_allclose(got["mae"], np.abs(p - y)[keep].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["mse"], ((p - y) ** 2)[keep].mean(), rtol=1e-5)
    np.testing.assert_allclose(got["loss"], ((p - y) ** 2)[keep].mean(), rtol=1e-5)
