"""Keras-style compile / fit / evaluate / predict over plain gpudl Modules (gpudl.keras's
functions), and Keras's loss and metric semantics."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as nn
import gpudl.optim as optim
from gpudl import keras
from gpudl.data import load_digits
from gpudl.testing import gradcheck

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(as_tensors=False)
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


def _softmax_mlp(out=10, head=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, out),
                         head or nn.Softmax(dim=1))


def test_keras_tutorial_script_on_digits(digits):
    """The Keras tutorial's shape: Softmax output, one-hot targets, categorical_crossentropy."""
    x, y = digits
    onehot = np.eye(10, dtype=np.float32)[y]
    model = _softmax_mlp()
    keras.compile(model, optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = keras.fit(model, x[:1400], onehot[:1400], batch_size=32, epochs=12,
                        validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 12
    loss, accuracy = keras.evaluate(model, x[1400:], onehot[1400:])
    assert accuracy >= 0.9                        # 397 held-out digits; 0.95 typical
    probabilities = keras.predict(model, x[1400:], batch_size=64)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (397, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    assert np.mean(probabilities.argmax(1) == y[1400:]) == pytest.approx(accuracy)
    assert keras.evaluate(model, x[1400:], onehot[1400:], return_dict=True)["loss"] == \
        pytest.approx(loss)


def test_sparse_labels_and_an_optimizer_object(digits):
    x, y = digits
    model = _softmax_mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    keras.compile(model, optimizer=opt, loss="sparse_categorical_crossentropy",
                  metrics="accuracy")
    keras.fit(model, gd.tensor(x[:1400]), gd.tensor(y[:1400]), epochs=5, verbose=0)
    assert keras.evaluate(model, x[1400:], y[1400:])[1] >= 0.9


def test_binary_crossentropy_with_a_sigmoid_output(digits):
    x, y = digits
    target = (y >= 5).astype(np.float32)[:, None]           # (N, 1)
    model = _softmax_mlp(out=1, head=nn.Sigmoid())
    keras.compile(model, optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    keras.fit(model, x[:1400], target[:1400], epochs=8, verbose=0)
    assert keras.evaluate(model, x[1400:], target[1400:])[1] >= 0.85


def test_mse_regression_and_a_float_result_without_metrics(rng):
    x = rng.standard_normal((256, 3)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]], np.float32)
    y = x @ w + 0.3
    model = nn.Sequential(nn.Linear(3, 1))
    keras.compile(model, optimizer=optim.Adam(model.parameters(), lr=0.05), loss="mse")
    keras.fit(model, x, y, epochs=40, batch_size=32, verbose=0)
    loss = keras.evaluate(model, x, y)
    assert isinstance(loss, float) and loss < 1e-3
    np.testing.assert_allclose(model[0].weight.numpy().T, w, atol=0.02)


@pytest.mark.parametrize("target_shape", [(64,), (64, 1)])
def test_regression_metrics_by_keras_names(target_shape, rng):
    # metrics=['mae'] is the Keras regression idiom; targets (N,) beside outputs (N, 1)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = rng.standard_normal(target_shape).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 1))
    keras.compile(model, loss="mse", metrics=["mae", "mean_squared_error", "mse"])
    logs = keras.evaluate(model, x, y, batch_size=10, return_dict=True)
    error = model(gd.tensor(x)).numpy().astype(np.float64).ravel() - y.ravel()
    assert list(logs) == ["loss", "mae", "mean_squared_error", "mse"]
    np.testing.assert_allclose(logs["mae"], np.abs(error).mean(), rtol=1e-6)
    np.testing.assert_allclose(logs["mse"], (error ** 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(logs["mean_squared_error"], logs["loss"], rtol=1e-6)
    history = keras.fit(model, x, y, epochs=1, validation_split=0.25, verbose=0)
    assert {"mae", "val_mae"} <= set(history.history)


def test_keras_weight_decay_is_decoupled_and_unsupported_options_are_refused(rng):
    # Keras applies w -= lr * weight_decay * w before every optimizer's step
    w0 = rng.standard_normal(4).astype(np.float32)
    g = rng.standard_normal(4).astype(np.float32)
    for make, grad in ((lambda: keras.optimizers.Adam(learning_rate=0.1, weight_decay=0.5),
                        np.zeros(4, np.float32)),        # no gradient: only the decay moves w
                       (lambda: keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.5), g)):
        p = gd.tensor(w0.copy(), requires_grad=True)
        opt = make().build([p])
        p.grad = gd.tensor(grad)
        opt.step()
        np.testing.assert_allclose(p.numpy(), w0 - 0.1 * 0.5 * w0 - 0.1 * grad, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="loss_scale_factor=128 is not supported"):
        keras.optimizers.Adam(loss_scale_factor=128)
    with pytest.raises(NotImplementedError, match="weight_decay is decoupled"):
        keras.optimizers.SGD(momentum=0.9, weight_decay=0.01)
    with pytest.raises(NotImplementedError, match="RMSprop: Keras's weight_decay"):
        keras.optimizers.RMSprop(weight_decay=0.01)
    with pytest.raises(TypeError, match="unexpected argument 'beta1'"):
        keras.optimizers.Adam(beta1=0.8)
    keras.optimizers.Adam(name="adam", clipnorm=None, use_ema=False)      # Keras's defaults


def test_validation_split_takes_the_last_samples(rng):
    x = rng.standard_normal((40, 2)).astype(np.float32)
    y = rng.standard_normal((40, 1)).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 1))
    keras.compile(model, optimizer="sgd", loss="mae")
    history = keras.fit(model, x, y, epochs=1, validation_split=0.25, verbose=0)
    assert history["val_loss"][0] == pytest.approx(keras.evaluate(model, x[30:], y[30:]), rel=1e-6)
    # Keras's split point floor(n * (1 - split)): 3 samples at 0.2 train on 2, validate on 1
    history = keras.fit(model, x[:3], y[:3], epochs=1, validation_split=0.2, verbose=0)
    assert history["val_loss"][0] == pytest.approx(keras.evaluate(model, x[2:3], y[2:3]),
                                                   rel=1e-6)
    with pytest.raises(ValueError, match="leaves 0 training and 1 validation samples"):
        keras.fit(model, x[:1], y[:1], validation_split=0.2, verbose=0)


def _keras_reference(kind, p, y):
    """The Keras formulas in float64 NumPy (clip to [1e-7, 1 - 1e-7])."""
    if kind == "binary_crossentropy":
        q = np.clip(p, 1e-7, 1 - 1e-7)
        return np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))
    q = np.clip(p / p.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    if kind == "sparse_categorical_crossentropy":
        y = np.eye(p.shape[1])[y]
    return np.mean(-(y * np.log(q)).sum(1))


@pytest.mark.parametrize("kind", ["categorical_crossentropy", "sparse_categorical_crossentropy",
                                  "binary_crossentropy"])
def test_keras_losses_values_and_gradients(rng, kind):
    logits = rng.standard_normal((5, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p[0, 1] = 0.0                                       # exercise the clipping
    labels = rng.integers(0, 4, 5)
    y = {"categorical_crossentropy": np.eye(4)[labels],
         "sparse_categorical_crossentropy": labels,
         "binary_crossentropy": (rng.random((5, 4)) > 0.5).astype(np.float64)}[kind]
    loss = keras.losses.get(kind)(gd.tensor(y), gd.tensor(p))
    assert loss.item() == pytest.approx(_keras_reference(kind, p, y), rel=1e-10)
    inside = np.clip(p, 0.05, 0.95)                     # away from the clip for finite differences
    gradcheck(lambda t: keras.losses.get(kind)(gd.tensor(y), t),
              [gd.tensor(inside, requires_grad=True)])


def test_errors(rng):
    model = nn.Sequential(nn.Linear(2, 1))
    x = rng.standard_normal((4, 2)).astype(np.float32)
    with pytest.raises(RuntimeError, match="not compiled"):
        keras.fit(model, x, x[:, :1], verbose=0)
    with pytest.raises(ValueError, match="unknown loss 'hinge_loss'"):
        keras.compile(model, loss="hinge_loss")
    with pytest.raises(ValueError, match="unknown optimizer 'no_such_optimizer'"):
        keras.compile(model, optimizer="no_such_optimizer", loss="mse")
    with pytest.raises(TypeError, match="optimizer must be a name or an optimizer object"):
        keras.compile(model, optimizer=3, loss="mse")
    with pytest.raises(ValueError, match="unknown metric"):
        keras.compile(model, loss="mse", metrics=["roc"])
    with pytest.raises(ValueError, match="give a loss"):
        keras.compile(model)
    keras.compile(model, loss="mse")
    with pytest.raises(ValueError, match=r"same first size.*\(4, 2\).*\(3, 1\)"):
        keras.fit(model, x, x[:3, :1], verbose=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        keras.fit(model, x, x[:, :1], batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="x must be a Tensor or an array"):
        keras.predict(model, "data")
    with pytest.raises(ValueError, match=r"validation_data must be \(x_val, y_val\)"):
        keras.fit(model, x, x[:, :1], validation_data=(x,), verbose=0)


# --- Keras's shapes (issue 11): single columns, sequences, modes, verbose ---

def _keras_bce(p, y):
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _keras_cce_last_axis(p, onehot):
    """Keras's categorical_crossentropy: classes on the last axis, the mean over all others."""
    q = np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    return np.mean(-(onehot * np.log(q)).sum(-1))


def test_binary_crossentropy_reshapes_labels_to_a_single_column(rng):
    p = rng.uniform(0.05, 0.95, (6, 1))
    y = (rng.random(6) > 0.5).astype(np.float64)             # (N,), not (N, 1)
    expected = _keras_bce(p[:, 0], y)
    assert keras.losses.BinaryCrossentropy()(gd.tensor(y), gd.tensor(p)).item() == \
        pytest.approx(expected, rel=1e-10)
    assert keras.losses.MeanSquaredError()(gd.tensor(y), gd.tensor(p)).item() == \
        pytest.approx(np.mean((p[:, 0] - y) ** 2), rel=1e-10)


def test_sequence_losses_reduce_over_the_last_axis(rng):
    p = rng.uniform(0.05, 1.0, (3, 5, 4))                      # (N, T, C)
    labels = rng.integers(0, 4, (3, 5))
    onehot = np.eye(4)[labels]
    expected = _keras_cce_last_axis(p, onehot)
    losses = keras.losses
    assert losses.CategoricalCrossentropy()(gd.tensor(onehot), gd.tensor(p)).item() == \
        pytest.approx(expected, rel=1e-10)
    per_step = losses.categorical_crossentropy(gd.tensor(onehot), gd.tensor(p))   # (N, T)
    assert per_step.shape == (3, 5)
    assert losses.SparseCategoricalCrossentropy()(gd.tensor(labels), gd.tensor(p)).item() == \
        pytest.approx(expected, rel=1e-10)
    assert losses.SparseCategoricalCrossentropy()(
        gd.tensor(labels[..., None]), gd.tensor(p)).item() == pytest.approx(expected, rel=1e-10)


def test_single_sigmoid_column_with_flat_labels_trains_and_scores_like_keras(digits):
    x, y = digits
    target = (y >= 5).astype(np.float32)                      # (N,) beside (N, 1) outputs
    model = _softmax_mlp(out=1, head=nn.Sigmoid())
    keras.compile(model, optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    keras.fit(model, x[:1400], target[:1400], epochs=4, verbose=0)
    loss, accuracy = keras.evaluate(model, x[1400:], target[1400:], verbose=0)
    p = keras.predict(model, x[1400:])
    assert p.shape == (397, 1)
    assert accuracy == pytest.approx(np.mean((p[:, 0] > 0.5) == target[1400:]))
    assert accuracy >= 0.85
    assert loss == pytest.approx(_keras_bce(p[:, 0].astype(np.float64), target[1400:]), rel=1e-4)


def test_sequence_accuracy_takes_the_last_axis(rng):
    p = rng.random((4, 6, 3)).astype(np.float32)              # (N, T, C), T > C
    labels = rng.integers(0, 3, (4, 6))
    model = nn.Sequential(nn.Linear(3, 3))
    with gd.no_grad():
        model[0].weight.copy_(gd.eye(3))
        model[0].bias.zero_()
    keras.compile(model, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = keras.evaluate(model, p, labels, verbose=0)
    assert accuracy == pytest.approx(np.mean(p.argmax(-1) == labels))


def test_predict_restores_the_mode_after_an_exception():
    class Failing(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")
    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        keras.predict(model, np.zeros((2, 2), np.float32))
    assert model.training


def test_empty_inputs_are_an_error():
    model = nn.Sequential(nn.Linear(2, 1))
    keras.compile(model, loss="mse")
    empty = np.zeros((0, 2), np.float32)
    with pytest.raises(ValueError, match="yielded no batch"):
        keras.evaluate(model, empty, empty[:, :1], verbose=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        keras.fit(model, empty, empty[:, :1], verbose=0)
