"""Keras scripts ported by their imports: each script below is written against the ``keras``
namespace, in keras.io's style, and run twice: with Keras 3 (torch backend) and with
``gpudl.keras``. The gpudl model starts from the Keras model's initial weights (get_weights /
set_weights: the layouts must agree), sees the same data unshuffled, and must give the same
per-epoch history, final weights, evaluate and predict numbers (float32 tolerances).

Keras is an oracle here, not a dependency: without it the module is skipped.
"""

import numpy as np
import pytest

from keras_oracle import import_keras

real_keras = import_keras()
import gpudl.keras as gpudl_keras  # noqa: E402

RTOL, ATOL = 2e-4, 2e-5


def _rng():
    return np.random.default_rng(0)


def _start(model, init):
    """The model's initial weights: its own (Keras), or Keras's copied in (gpudl)."""
    if init is not None:
        model.set_weights(init)
    return model.get_weights()


def _results(model, start, history, x, y):
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(x, y, verbose=0), predict=model.predict(x[:4], verbose=0))


# -- the scripts: each takes the keras module and the initial weights (None: its own) --------

def mlp_classifier(keras, init):
    """Sequential MLP, compile/fit(validation_split)/evaluate/predict, accuracy."""
    rng = _rng()
    x = rng.normal(size=(120, 10)).astype("float32")
    y = (x[:, :3].sum(1) > 0).astype("int64") + (x[:, 3] > 1).astype("int64")
    model = keras.Sequential([
        keras.Input(shape=(10,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    start = _start(model, init)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, validation_split=0.25, batch_size=16, epochs=4, shuffle=False,
                        verbose=0)
    scores = model.evaluate(x[:40], y[:40], verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=scores, predict=model.predict(x[:7], verbose=0))


def functional_two_inputs(keras, init):
    """Functional API: two inputs, Concatenate, a regression head; SGD with Nesterov."""
    rng = _rng()
    a = rng.normal(size=(64, 5)).astype("float32")
    b = rng.normal(size=(64, 3)).astype("float32")
    y = (a[:, :1] * 0.5 - b[:, 1:2] + 0.1).astype("float32")
    in_a, in_b = keras.Input(shape=(5,)), keras.Input(shape=(3,))
    ha = keras.layers.Dense(8, activation="relu")(in_a)
    hb = keras.layers.Dense(4, activation="sigmoid")(in_b)
    merged = keras.layers.Concatenate()([ha, hb])
    out = keras.layers.Dense(1)(merged)
    model = keras.Model(inputs=[in_a, in_b], outputs=out)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9,
                                                 nesterov=True),
                  loss="mse", metrics=["mae"])
    history = model.fit([a, b], y, validation_split=0.25, batch_size=8, epochs=3,
                        shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate([a, b], y, verbose=0),
                predict=model.predict([a[:5], b[:5]], verbose=0))


def cnn(keras, init):
    """Conv2D/MaxPooling2D/BatchNormalization/Flatten/Dropout on channels-last images."""
    rng = _rng()
    x = rng.normal(size=(48, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype("int64")
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Conv2D(4, (3, 3), activation="relu", padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(6, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.0),        # a random mask cannot be compared; the layer can
        keras.layers.Dense(2, activation="softmax"),
    ])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, validation_split=0.25, batch_size=12, epochs=3, shuffle=False,
                        verbose=0)
    return _results(model, start, history, x, y)


def recurrent(keras, init):
    """LSTM(return_sequences) -> Bidirectional(GRU) -> SimpleRNN; Adagrad."""
    rng = _rng()
    x = rng.normal(size=(40, 6, 3)).astype("float32")
    y = x[:, :, 0].cumsum(1)[:, -1:].astype("float32")
    model = keras.Sequential([
        keras.Input(shape=(6, 3)),
        keras.layers.LSTM(5, return_sequences=True),
        keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True)),
        keras.layers.SimpleRNN(3),
        keras.layers.Dense(1),
    ])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=0.1), loss="huber")
    history = model.fit(x, y, validation_split=0.2, batch_size=8, epochs=3, shuffle=False,
                        verbose=0)
    return _results(model, start, history, x, y)


def text_classifier(keras, init):
    """Embedding + GlobalAveragePooling1D, binary_crossentropy on a sigmoid output."""
    rng = _rng()
    x = rng.integers(1, 20, size=(64, 7)).astype("int64")
    y = (np.isin(x, [3, 5, 7]).sum(1) > 1).astype("float32")
    model = keras.Sequential([
        keras.Input(shape=(7,), dtype="int64"),
        keras.layers.Embedding(20, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
                  loss=keras.losses.BinaryCrossentropy(), metrics=["accuracy"])
    history = model.fit(x, y, validation_split=0.25, batch_size=16, epochs=3, shuffle=False,
                        verbose=0)
    return _results(model, start, history, x, y)


def autoencoder(keras, init):
    """A dense autoencoder: encoder and decoder Models, the autoencoder trained on x -> x."""
    rng = _rng()
    x = rng.uniform(size=(60, 12)).astype("float32")
    inputs = keras.Input(shape=(12,))
    code = keras.layers.Dense(3, activation="relu")(keras.layers.Dense(8, activation="relu")(
        inputs))
    encoder = keras.Model(inputs, code)
    code_in = keras.Input(shape=(3,))
    decoded = keras.layers.Dense(12, activation="sigmoid")(
        keras.layers.Dense(8, activation="relu")(code_in))
    decoder = keras.Model(code_in, decoded)
    model = keras.Model(inputs, decoder(encoder(inputs)))
    start = _start(model, init)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(x, x, validation_split=0.2, batch_size=12, epochs=3, shuffle=False,
                        verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(x, x, verbose=0),
                predict=encoder.predict(x[:4], verbose=0))


def callbacks(keras, init, tmp_path):
    """EarlyStopping(restore_best_weights), ModelCheckpoint (read back by load_weights),
    ReduceLROnPlateau, LearningRateScheduler, CSVLogger, LambdaCallback; the History's keys
    and values."""
    rng = _rng()
    x = rng.normal(size=(50, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], "float32"))[:, None]
    y[-10:] += rng.normal(size=(10, 1)).astype("float32") * 3     # a noisy validation split
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(6, activation="relu"),
                              keras.layers.Dense(1)])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    checkpoint, log = str(tmp_path / "best.weights.h5"), tmp_path / "log.csv"
    begins = []
    history = model.fit(x, y, validation_split=0.2, batch_size=10, epochs=12, shuffle=False,
                        verbose=0, callbacks=[
                            keras.callbacks.CSVLogger(log),
                            keras.callbacks.LambdaCallback(
                                on_epoch_begin=lambda epoch, logs: begins.append(epoch)),
                            keras.callbacks.LearningRateScheduler(
                                lambda epoch, lr: lr if epoch < 2 else lr * 0.8),
                            keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5,
                                                              patience=1, min_delta=0.5),
                            keras.callbacks.ModelCheckpoint(checkpoint, save_best_only=True,
                                                            save_weights_only=True),
                            keras.callbacks.EarlyStopping(patience=2,
                                                          restore_best_weights=True)])
    restored = model.get_weights()
    model.load_weights(checkpoint)
    rows = [row.split(",") for row in log.read_text().splitlines()]
    return dict(init=start, history=history.history, weights=restored,
                checkpoint=model.get_weights(), epochs=history.epoch, begins=begins,
                evaluate=model.evaluate(x, y, verbose=0), log_header=rows[0],
                log=np.array(rows[1:], dtype=float))


def optimizers(keras, init, name):
    """One small regression per optimizer, with Keras's default epsilons; learning-rate
    schedules."""
    rng = _rng()
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x ** 2 @ np.array([0.3, -0.2, 0.1, 0.5], "float32"))[:, None] * 1e-2
    decay = keras.optimizers.schedules
    choice = {"sgd": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.5),
              "sgd_nesterov_decay": lambda: keras.optimizers.SGD(
                  learning_rate=decay.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),
                  momentum=0.9, nesterov=True),
              "adam_cosine": lambda: keras.optimizers.Adam(
                  learning_rate=decay.CosineDecay(0.02, decay_steps=10, alpha=0.1)),
              "rmsprop_piecewise": lambda: keras.optimizers.RMSprop(
                  learning_rate=decay.PiecewiseConstantDecay([4, 9], [0.01, 0.005, 0.001])),
              "adagrad_inverse_time": lambda: keras.optimizers.Adagrad(
                  learning_rate=decay.InverseTimeDecay(0.1, 4, 1.0, staircase=True)),
              "adam": lambda: keras.optimizers.Adam(learning_rate=0.01),
              "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate=0.01),
              "adagrad": lambda: keras.optimizers.Adagrad(learning_rate=0.1)}[name]
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(5, activation="tanh"),
                              keras.layers.Dense(1)])
    start = _start(model, init)
    model.compile(optimizer=choice(), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights())


def weighted_losses(keras, init, loss):
    """Losses by string and object; sample_weight and class_weight in fit."""
    rng = _rng()
    x = rng.normal(size=(40, 6)).astype("float32")
    y = np.argmax(x[:, :3], 1).astype("int64")
    logits = loss == "sparse_logits"
    model = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation=None if logits else "softmax")])
    start = _start(model, init)
    weights = rng.uniform(0.2, 2.0, size=40).astype("float32")
    if logits:
        model.compile(optimizer="sgd", metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0,
                            class_weight={0: 1.0, 1: 2.0, 2: 0.5})
    else:
        onehot = np.eye(3, dtype="float32")[y]
        model.compile(optimizer="sgd", loss=loss)
        history = model.fit(x, onehot, batch_size=10, epochs=3, shuffle=False, verbose=0,
                            sample_weight=weights)
    return dict(init=start, history=history.history, weights=model.get_weights())


def save_and_load(keras, init, tmp_path):
    """save_weights / load_weights into a second build of the model; get/set_weights."""
    rng = _rng()
    x = rng.normal(size=(20, 3)).astype("float32")

    def build():
        return keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(4,
                                 activation="relu"), keras.layers.Dense(2)])
    model = build()
    start = _start(model, init)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x[:, :2], epochs=2, batch_size=5, shuffle=False, verbose=0)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    again = build()
    again.load_weights(path)
    copied = build()
    copied.set_weights(model.get_weights())
    return dict(init=start, weights=again.get_weights(),
                predict=again.predict(x, verbose=0), copied=copied.predict(x, verbose=0))


def conv1d_categorical(keras, init):
    """Conv1D/GlobalMaxPooling1D on one-hot targets (to_categorical), validation_data,
    metric objects, evaluate(return_dict=True), train_on_batch and predict_on_batch; History's
    params and epoch, the optimizer's iterations, the model's shapes."""
    rng = _rng()
    x = rng.normal(size=(48, 10, 2)).astype("float32")
    labels = (x[:, :, 0].max(1) > 1.8).astype("int64") + (x[:, :, 1].mean(1) > 0.2)
    y = keras.utils.to_categorical(labels, 3)
    model = keras.Sequential([
        keras.Input(shape=(10, 2)),
        keras.layers.Conv1D(6, 3, activation="relu", padding="causal"),
        keras.layers.Conv1D(4, 2, strides=2),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.02, amsgrad=True),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=[keras.metrics.CategoricalAccuracy()])
    history = model.fit(x[:36], y[:36], validation_data=(x[36:], y[36:]), batch_size=9,
                        epochs=3, shuffle=False, verbose=0)
    on_batch = model.train_on_batch(x[:8], y[:8])
    return dict(init=start, history=history.history, weights=model.get_weights(),
                params=history.params, epochs=history.epoch,
                iterations=int(model.optimizer.iterations),
                shapes=[model.input_shape, model.output_shape, model.count_params()],
                on_batch=on_batch, evaluate=model.evaluate(x, y, return_dict=True, verbose=0),
                predict=model.predict_on_batch(x[:5]))


def subclassed(keras, init):
    """A subclassed Model (layers in __init__, call), trained with MAE."""
    class Residual(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(6, activation="relu")
            self.back = keras.layers.Dense(4)
            self.head = keras.layers.Dense(1)

        def call(self, inputs):
            return self.head(inputs + self.back(self.hidden(inputs)))

    rng = _rng()
    x = rng.normal(size=(40, 4)).astype("float32")
    y = np.abs(x).sum(1, keepdims=True).astype("float32")
    model = Residual()
    model(x[:2])                                    # builds the weights
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.5,
                                                     centered=True), loss="mae")
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                predict=model.predict(x[:4], verbose=0))


def two_outputs(keras, init):
    """Functional model with two named outputs: losses, loss_weights and metrics by output
    name, sample weights; the per-output losses Keras logs."""
    rng = _rng()
    x = rng.normal(size=(40, 5)).astype("float32")
    kind = (x[:, 0] > 0).astype("int64")
    size = x[:, 1:2] * 2
    inputs = keras.Input(shape=(5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    kind_out = keras.layers.Dense(2, activation="softmax", name="kind")(hidden)
    size_out = keras.layers.Dense(1, name="size")(hidden)
    model = keras.Model(inputs, [kind_out, size_out])
    start = _start(model, init)
    model.compile(optimizer="adam", loss={"kind": "sparse_categorical_crossentropy",
                                          "size": "mse"},
                  loss_weights={"kind": 1.0, "size": 0.5}, metrics={"kind": ["accuracy"]})
    weights = rng.uniform(0.5, 1.5, size=40).astype("float32")
    history = model.fit(x, [kind, size], batch_size=10, epochs=3, shuffle=False, verbose=0,
                        validation_split=0.25, sample_weight=weights)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                predict=model.predict(x[:3], verbose=0),
                evaluate=model.evaluate(x, [kind, size], verbose=0, return_dict=True))


def masked_lstm(keras, init):
    """Embedding(mask_zero=True) padded sequences into an LSTM: padded steps are skipped."""
    rng = _rng()
    lengths = rng.integers(2, 8, size=32)
    x = np.zeros((32, 8), "int64")
    for row, n in zip(x, lengths):
        row[:n] = rng.integers(1, 12, size=n)
    y = (lengths > 4).astype("float32")
    model = keras.Sequential([
        keras.Input(shape=(8,), dtype="int64"),
        keras.layers.Embedding(12, 4, mask_zero=True),
        keras.layers.LSTM(5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    start = _start(model, init)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                predict=model.predict(x[:4], verbose=0))


def transformer_block(keras, init):
    """keras.io's transformer block: MultiHeadAttention, residuals, LayerNormalization."""
    rng = _rng()
    x = rng.normal(size=(24, 6, 8)).astype("float32")
    y = (x[:, :, 0].sum(1) > 0).astype("int64")
    inputs = keras.Input(shape=(6, 8))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    h = keras.layers.LayerNormalization(epsilon=1e-6)(inputs + attended)
    ffn = keras.layers.Dense(8)(keras.layers.Dense(16, activation="relu")(h))
    h = keras.layers.LayerNormalization(epsilon=1e-6)(h + ffn)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, out)
    start = _start(model, init)
    # Not Adam: the key projection's bias gets a gradient that is rounding noise only (softmax
    # ignores a shift shared by all keys), which Adam scales up to full steps.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                predict=model.predict(x[:3], verbose=0))


def normalized_regression(keras, init):
    """The "basic regression" tutorial: a Normalization layer adapted to the features, then
    Dense layers; mean_absolute_error loss, mse metric."""
    rng = _rng()
    x = (rng.normal(size=(60, 4)) * [1.0, 20.0, 0.1, 3.0] + [0.0, 100.0, -2.0, 5.0]).astype(
        "float32")
    y = (x @ np.array([0.5, 0.05, 10.0, -1.0]) + 3.0).astype("float32")
    normalizer = keras.layers.Normalization(axis=-1)
    normalizer.adapt(x[:45])
    adapted = normalizer.get_weights()
    model = keras.Sequential([keras.Input(shape=(4,)), normalizer,
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05),
                  loss="mean_absolute_error", metrics=["mse"])
    history = model.fit(x, y, validation_split=0.25, batch_size=15, epochs=4, shuffle=False,
                        verbose=0)
    return dict(_results(model, start, history, x, y), adapted=adapted)


# -- the comparison -----------------------------------------------------------------------

def _close(ours, theirs, where):
    if isinstance(theirs, str):
        assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"
    elif isinstance(theirs, dict):
        assert sorted(ours) == sorted(theirs), f"{where}: keys {sorted(ours)} vs {sorted(theirs)}"
        for key in theirs:
            _close(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), f"{where}: {len(ours)} values vs {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _close(a, b, f"{where}[{i}]")
    elif theirs is None:
        assert ours is None, f"{where}: {ours!r} vs None"
    else:
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} vs {theirs.shape}"
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=where)


def _port(script, *args):
    expected = script(real_keras, None, *args)
    got = script(gpudl_keras, expected["init"], *args)
    _close(got, expected, script.__name__)


@pytest.mark.parametrize("script", [mlp_classifier, functional_two_inputs, cnn, recurrent,
                                    text_classifier, autoencoder, conv1d_categorical,
                                    subclassed, two_outputs, masked_lstm, transformer_block,
                                    normalized_regression])
def test_script_ports(script):
    _port(script)


def test_callbacks_port(tmp_path):
    _port(callbacks, tmp_path)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad", "sgd_nesterov_decay",
                                  "adam_cosine", "rmsprop_piecewise", "adagrad_inverse_time"])
def test_optimizer_ports(name):
    _port(optimizers, name)


@pytest.mark.parametrize("loss", ["sparse_logits", "binary_crossentropy", "mse",
                                  "categorical_crossentropy", "huber"])
def test_loss_ports(loss):
    _port(weighted_losses, loss)


def test_save_and_load_ports(tmp_path):
    _port(save_and_load, tmp_path)
