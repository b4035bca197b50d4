"""What porting keras.io-style scripts to gpudl.keras needed (tests/test_keras_ports.py runs
them against Keras itself when it is installed); these checks need no Keras."""

import numpy as np
import pytest

import gpudl.keras as keras


def _regression(rng, optimizer):
    x = rng.normal(size=(30, 3)).astype("float32")
    y = (x @ rng.normal(size=(3, 1))).astype("float32")
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model, x, y


def test_learning_rate_scheduler_sets_the_rate_before_each_epoch():
    rng = np.random.default_rng(1)
    model, x, y = _regression(rng, keras.optimizers.SGD(learning_rate=0.1))
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((epoch, self.model.optimizer.learning_rate))

    history = model.fit(x, y, epochs=4, batch_size=10, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5),
        Spy()])
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.1, 0.05, 0.025])
    np.testing.assert_allclose([lr for _, lr in seen], [0.1, 0.1, 0.05, 0.025])
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]


def test_learning_rate_scheduler_takes_a_one_argument_schedule_and_steps_with_it():
    rng = np.random.default_rng(2)
    model, x, y = _regression(rng, "sgd")
    w, b = (v.copy() for v in model.get_weights())
    model.fit(x, y, epochs=1, batch_size=30, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch: 0.3)])
    error = x @ w + b - y                      # one full-batch step of mse at lr 0.3
    expected_w = w - 0.3 * 2 * x.T @ error / len(x)
    np.testing.assert_allclose(model.get_weights()[0], expected_w, rtol=1e-5, atol=1e-6)


def test_learning_rate_scheduler_refuses_a_non_number():
    rng = np.random.default_rng(3)
    model, x, y = _regression(rng, "sgd")
    with pytest.raises(ValueError, match="schedule"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: "fast")])
