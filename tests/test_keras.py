"""Keras-style compile / fit / evaluate / predict (gpudl.keras and Sequential's methods)."""

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
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:1400], onehot[:1400], batch_size=32, epochs=12,
                        validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 12
    loss, accuracy = model.evaluate(x[1400:], onehot[1400:])
    assert accuracy >= 0.9                        # 397 held-out digits; 0.95 typical
    probabilities = model.predict(x[1400:], batch_size=64)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (397, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    assert np.mean(probabilities.argmax(1) == y[1400:]) == pytest.approx(accuracy)
    assert model.evaluate(x[1400:], onehot[1400:], return_dict=True)["loss"] == \
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
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], target[:1400], epochs=8, verbose=0)
    assert model.evaluate(x[1400:], target[1400:])[1] >= 0.85


def test_mse_regression_and_a_float_result_without_metrics(rng):
    x = rng.standard_normal((256, 3)).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.5]], np.float32)
    y = x @ w + 0.3
    model = nn.Sequential(nn.Linear(3, 1))
    model.compile(optimizer=optim.Adam(model.parameters(), lr=0.05), loss="mse")
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    loss = model.evaluate(x, y)
    assert isinstance(loss, float) and loss < 1e-3
    np.testing.assert_allclose(model[0].weight.numpy().T, w, atol=0.02)


def test_validation_split_takes_the_last_samples(rng):
    x = rng.standard_normal((40, 2)).astype(np.float32)
    y = rng.standard_normal((40, 1)).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 1))
    model.compile(optimizer="sgd", loss="mae")
    history = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert history["val_loss"][0] == pytest.approx(model.evaluate(x[30:], y[30:]), rel=1e-6)
    with pytest.raises(ValueError, match="leaves no validation samples"):
        model.fit(x[:3], y[:3], validation_split=0.2, verbose=0)


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
    loss = keras.LOSSES[kind](gd.tensor(p), gd.tensor(y))
    assert loss.item() == pytest.approx(_keras_reference(kind, p, y), rel=1e-10)
    inside = np.clip(p, 0.05, 0.95)                     # away from the clip for finite differences
    gradcheck(lambda t: keras.LOSSES[kind](t, gd.tensor(y)),
              [gd.tensor(inside, requires_grad=True)])


def test_errors(rng):
    model = nn.Sequential(nn.Linear(2, 1))
    x = rng.standard_normal((4, 2)).astype(np.float32)
    with pytest.raises(RuntimeError, match="not compiled"):
        model.fit(x, x[:, :1], verbose=0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        model.compile(optimizer="lion")
    with pytest.raises(TypeError, match="optimizer must be a name or a gpudl.optim optimizer"):
        model.compile(optimizer=3)
    with pytest.raises(ValueError, match="unknown metric"):
        model.compile(metrics=["auc"])
    model.compile(loss="mse")
    with pytest.raises(ValueError, match=r"same first size.*\(4, 2\).*\(3, 1\)"):
        model.fit(x, x[:3, :1], verbose=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.fit(x, x[:, :1], batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="x must be a Tensor or an array"):
        model.predict("data")
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        model.fit(x, x[:, :1], validation_data=(x,), verbose=0)
