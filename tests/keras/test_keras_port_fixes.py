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


def _keras_steps(name, w, grads, lr, eps=1e-7, rho=0.9, momentum=0.0, centered=False,
                 betas=(0.9, 0.999), initial_accumulator_value=0.1):
    """Keras 3's update rules, written out in float64."""
    w, first, second = w.astype(np.float64), np.zeros_like(w, np.float64), \
        np.zeros_like(w, np.float64)
    mean_grad, buffer = np.zeros_like(first), np.zeros_like(first)
    if name == "adagrad":
        second += initial_accumulator_value
    for t, g in enumerate(grads, start=1):
        if name == "adam":
            first += (g - first) * (1 - betas[0])
            second += (g * g - second) * (1 - betas[1])
            alpha = lr * np.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
            w -= first * alpha / (np.sqrt(second) + eps)
        elif name == "rmsprop":
            second = rho * second + (1 - rho) * g * g
            mean_grad = rho * mean_grad + (1 - rho) * g
            step = lr * g / np.sqrt(second - (mean_grad ** 2 if centered else 0) + eps)
            buffer = momentum * buffer + step
            w -= buffer if momentum else step
        else:
            second += g * g
            w -= lr * g / np.sqrt(second + eps)
    return w


@pytest.mark.parametrize("name, options", [
    ("adam", {}), ("adam", {"beta_2": 0.99}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}),
    ("rmsprop", {"centered": True}), ("adagrad", {}),
    ("adagrad", {"initial_accumulator_value": 0.0})])
def test_optimizers_put_epsilon_where_keras_does(name, options):
    """Gradients of order 1e-5 (v below epsilon), where PyTorch's placement differs."""
    import gpudl as gd
    rng = np.random.default_rng(4)
    start = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") * 1e-5 for _ in range(4)]
    param = gd.tensor(start.copy(), requires_grad=True)
    kind = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
            "adagrad": keras.optimizers.Adagrad}[name]
    optimizer = kind(learning_rate=0.01, **options).build([param])
    for g in grads:
        param.grad = gd.tensor(g)
        optimizer.step()
    renamed = {"beta_2": ("betas", (0.9, options.get("beta_2")))}
    expected = _keras_steps(name, start, grads, 0.01,
                            **dict(renamed[k] if k in renamed else (k, v)
                                   for k, v in options.items()))
    np.testing.assert_allclose(param.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_model_checkpoint_files_load_with_load_weights(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = np.concatenate([x[:30, :1] * 2, rng.normal(size=(10, 1)) * 3]).astype("float32")

    def build():
        return keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(4),
                                 keras.layers.Dense(1)])
    model = build()
    model.compile(keras.optimizers.SGD(learning_rate=0.1), "mse")
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.get_weights())

    path = str(tmp_path / "best.weights.h5")
    history = model.fit(x, y, epochs=6, batch_size=10, validation_split=0.25, shuffle=False,
                        verbose=0, callbacks=[Snapshot(), keras.callbacks.ModelCheckpoint(
                            path, save_best_only=True, save_weights_only=True)])
    best = snapshots[int(np.argmin(history.history["val_loss"]))]
    again = build()
    again.load_weights(path)
    for loaded, expected in zip(again.get_weights(), best):
        np.testing.assert_array_equal(loaded, expected)


def test_set_random_seed_repeats_initial_weights_and_numpy_draws():
    def draw():
        keras.utils.set_random_seed(7)
        layer = keras.layers.Dense(3)
        layer.build((None, 4))
        return layer.get_weights()[0], np.random.rand(3)
    (w1, n1), (w2, n2) = draw(), draw()
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(n1, n2)
    assert np.abs(w1).sum() > 0
    with pytest.raises(TypeError, match="set_random_seed"):
        keras.utils.set_random_seed(1.5)


def test_csv_logger_and_lambda_callback(tmp_path):
    rng = np.random.default_rng(6)
    model, x, y = _regression(rng, "sgd")
    calls = []
    path = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, batch_size=10, validation_split=0.2, verbose=0,
                        callbacks=[keras.callbacks.CSVLogger(path), keras.callbacks.LambdaCallback(
                            on_epoch_begin=lambda epoch, logs: calls.append(("begin", epoch)),
                            on_epoch_end=lambda epoch, logs: calls.append(("end", epoch)),
                            on_train_batch_end=lambda batch, logs: calls.append(("batch", batch)))])
    batches = [("batch", b) for b in range(3)]
    assert calls == [step for epoch in range(3) for step in
                     [("begin", epoch)] + batches + [("end", epoch)]]
    rows = path.read_text().splitlines()
    assert rows[0] == "epoch,loss,val_loss"
    values = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    np.testing.assert_array_equal(values[:, 0], [0, 1, 2])
    np.testing.assert_allclose(values[:, 1], history.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(values[:, 2], history.history["val_loss"], rtol=1e-12)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.CSVLogger(path, append=True)])
    appended = path.read_text().splitlines()
    assert len(appended) == 5 and appended[4].startswith("0,") and appended[4].endswith(",NA")
    with pytest.raises(NotImplementedError, match="on_predict_end"):
        keras.callbacks.LambdaCallback(on_predict_end=print)


def _two_outputs(rng):
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax", name="kind")(hidden),
                                 keras.layers.Dense(1, name="size")(hidden)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss_weights=[1.0, 0.5],
                  loss=["sparse_categorical_crossentropy", "mse"])
    x = rng.normal(size=(30, 4)).astype("float32")
    return model, x, [rng.integers(0, 3, size=30), rng.normal(size=(30, 1)).astype("float32")]


def test_models_with_several_outputs_log_each_output_loss():
    rng = np.random.default_rng(7)
    model, x, (kind, size) = _two_outputs(rng)
    weights = rng.uniform(0.2, 2.0, size=30)
    probabilities, predicted_size = (np.float64(p) for p in model.predict(x, verbose=0))
    kind_losses = -np.log(probabilities[np.arange(30), kind])
    size_losses = (predicted_size - size)[:, 0] ** 2
    logs = model.evaluate(x, [kind, size], sample_weight=weights, batch_size=10,
                          return_dict=True, verbose=0)
    assert list(logs) == ["loss", "kind_loss", "size_loss"]
    np.testing.assert_allclose(logs["kind_loss"], np.mean(weights * kind_losses), rtol=1e-5)
    np.testing.assert_allclose(logs["size_loss"], np.mean(weights * size_losses), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["kind_loss"] + 0.5 * logs["size_loss"],
                               rtol=1e-5)
    history = model.fit(x, [kind, size], epochs=1, verbose=0, validation_split=0.2)
    assert sorted(history.history) == ["kind_loss", "loss", "size_loss", "val_kind_loss",
                                       "val_loss", "val_size_loss"]


def test_validation_is_sample_weighted_as_in_keras():
    """validation_split takes its share of sample_weight (Keras's rule); validation_data may
    carry weights as a third element."""
    rng = np.random.default_rng(8)
    model, x, (kind, size) = _two_outputs(rng)
    weights = rng.uniform(0.2, 2.0, size=30).astype("float32")
    expected = model.evaluate(x[24:], [kind[24:], size[24:]], sample_weight=weights[24:],
                              return_dict=True, verbose=0)       # lr 0: fit changes nothing
    split = model.fit(x, [kind, size], sample_weight=weights, validation_split=0.2, epochs=1,
                      verbose=0).history
    given = model.fit(x[:24], [kind[:24], size[:24]], epochs=1, verbose=0, validation_data=(
        x[24:], [kind[24:], size[24:]], weights[24:])).history
    for history in (split, given):
        for key in expected:
            np.testing.assert_allclose(history["val_" + key], [expected[key]], rtol=1e-6)


def test_learning_rate_schedules_give_keras_values():
    decay = keras.optimizers.schedules
    exponential = decay.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    assert exponential(0) == 0.1 and exponential(4) == pytest.approx(0.025)
    assert exponential(3) == pytest.approx(0.1 * 0.5 ** 1.5)
    assert decay.ExponentialDecay(0.1, 2, 0.5, staircase=True)(3) == pytest.approx(0.05)
    piecewise = decay.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [piecewise(s) for s in (0, 2, 3, 5, 6)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    cosine = decay.CosineDecay(1.0, decay_steps=4, alpha=0.2)
    assert [cosine(s) for s in (0, 2, 4, 8)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    assert decay.InverseTimeDecay(1.0, 2, 1.0)(4) == pytest.approx(1 / 3)
    assert decay.InverseTimeDecay(1.0, 2, 1.0, staircase=True)(3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="values needs one more"):
        decay.PiecewiseConstantDecay([2, 5], [1.0, 0.5])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_with_a_schedule_steps_as_keras(nesterov):
    """Keras keeps lr inside the momentum buffer (m = momentum * m - lr * g), so with a
    changing rate it differs from PyTorch's buffer of gradients."""
    import gpudl as gd
    rng = np.random.default_rng(9)
    start = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") for _ in range(5)]
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    param = gd.tensor(start.copy(), requires_grad=True)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9,
                                     nesterov=nesterov).build([param])
    w, m = start.astype(np.float64), np.zeros(5)
    for step, g in enumerate(grads):
        param.grad = gd.tensor(g)
        optimizer.step()
        lr = 0.1 * 0.5 ** step
        m = 0.9 * m - lr * g
        w += 0.9 * m - lr * g if nesterov else m
    np.testing.assert_allclose(param.numpy(), w, rtol=1e-6, atol=1e-7)


def test_history_optimizer_and_model_attributes_scripts_read():
    rng = np.random.default_rng(10)
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)])
    model.compile(keras.optimizers.Adam(), loss="mse")
    assert model.optimizer.iterations == 0
    x = rng.normal(size=(22, 3)).astype("float32")
    history = model.fit(x, [x[:, :2], x[:, :1]], epochs=2, batch_size=8, verbose=0)
    assert history.params == {"verbose": 0, "epochs": 2, "steps": 3}
    assert history.model is model and history.epoch == [0, 1]
    assert model.optimizer.iterations == 6
    assert model.input_shape == (None, 3) and model.output_shape == [(None, 2), (None, 1)]
    sequential = keras.Sequential([keras.Input(shape=(4, 2)), keras.layers.Flatten()])
    assert sequential.input_shape == (None, 4, 2) and sequential.output_shape == (None, 8)


def test_a_scheduled_learning_rate_cannot_be_set():
    rng = np.random.default_rng(11)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    model, x, y = _regression(rng, keras.optimizers.SGD(learning_rate=schedule))
    before = model.get_weights()
    with pytest.raises(TypeError, match="LearningRateScheduler.*ExponentialDecay schedule"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr)])
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)                # refused before any update
    with pytest.raises(TypeError, match="cannot be set"):
        model.optimizer.learning_rate = 0.5
    with pytest.raises(TypeError, match="ReduceLROnPlateau"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[
            keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9)])


def test_normalization_layer_adapts_and_normalizes():
    rng = np.random.default_rng(12)
    x = (rng.normal(size=(50, 3)) * [1.0, 10.0, 0.01] + [0.0, 5.0, 1.0]).astype("float32")
    layer = keras.layers.Normalization()
    layer.adapt([x[:20], x[20:]])                      # batches, as Keras takes them
    mean, variance = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    np.testing.assert_allclose(layer.get_weights()[0], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.get_weights()[1], variance, rtol=1e-5)
    np.testing.assert_allclose(layer(x[:4]).numpy(), (x[:4] - mean) / np.sqrt(variance),
                               rtol=1e-4, atol=1e-4)      # float32 x - mean, std 0.01
    inverse = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 9.0, 0.0],
                                         invert=True)
    np.testing.assert_allclose(inverse(x[:2]).numpy(),
                               [1.0, 2.0, 3.0] + x[:2] * [2.0, 3.0, 1e-7], rtol=1e-6)
    whole = keras.layers.Normalization(axis=None)
    whole.adapt(x)
    np.testing.assert_allclose(whole(x[:2]).numpy(), (x[:2] - x.mean()) / x.std(), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="both mean and variance"):
        keras.layers.Normalization(mean=1.0)
