"""The Keras gaps closed in session 24 against Keras 3 itself (torch backend): the same
script runs with Keras and with gpudl.keras from Keras's initial weights, on the same data
unshuffled, and must give the same histories, weights and results (float32 tolerances):
optimizer clipping, the learning-rate schedules, fit's initial_epoch / steps_per_epoch / dict
inputs, EarlyStopping's start_from_epoch / baseline / restore_best_weights, ModelCheckpoint's
best ``.keras`` file, compile's weighted_metrics, MultiHeadAttention's attention_axes and a
first-hour tour (summary, evaluate(return_dict), predict(batch_size), to_categorical, save and
load_model, layer get/set_weights).

Keras is an oracle here, not a dependency: without it the module is skipped (the same features
are checked against independent references in test_keras_gaps.py).
"""

import warnings

import numpy as np
import pytest

from keras_oracle import import_keras

real_keras = import_keras()
from test_keras_ports import _port, _start  # noqa: E402


def _rng():
    return np.random.default_rng(24)


def _regression(n=48, features=4):
    rng = _rng()
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)).astype("float32") * 3 + 1).astype("float32")
    return x, y


def _mlp(keras, features=4):
    return keras.Sequential([keras.Input(shape=(features,)),
                             keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)])


# -- the scripts: each takes the keras module and the initial weights (None: its own) --------

def clipping(keras, init, option, optimizer):
    """clipnorm / clipvalue / global_clipnorm with large gradients (every step clipped)."""
    x, y = _regression()
    model = _mlp(keras)
    start = _start(model, init)
    value = {"clipnorm": 0.3, "clipvalue": 0.05, "global_clipnorm": 0.5}[option]
    make = {"sgd": lambda **kw: keras.optimizers.SGD(learning_rate=0.05, momentum=0.5, **kw),
            "adam": lambda **kw: keras.optimizers.Adam(learning_rate=0.01, **kw)}[optimizer]
    model.compile(optimizer=make(**{option: value}), loss="mse")
    history = model.fit(x, y * 10, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights())


def moving_averages(keras, init, optimizer, frequency):
    """use_ema: the averages written in every ``frequency`` updates and when fit ends; two
    fits in a row, evaluate on the averaged weights."""
    x, y = _regression()
    model = _mlp(keras)
    start = _start(model, init)
    make = {"sgd": lambda **kw: keras.optimizers.SGD(learning_rate=0.05, momentum=0.5, **kw),
            "adam": lambda **kw: keras.optimizers.Adam(learning_rate=0.02, **kw)}[optimizer]
    model.compile(optimizer=make(use_ema=True, ema_momentum=0.8,
                                 ema_overwrite_frequency=frequency), loss="mse")
    first = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    after_first = model.get_weights()
    second = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return dict(init=start, first=first.history, second=second.history,
                after_first=after_first, weights=model.get_weights(),
                evaluate=model.evaluate(x, y, verbose=0))


def accumulation(keras, init, variant):
    """gradient_accumulation_steps: the mean of 3 steps' gradients every 3rd step, with
    clipping, decoupled weight decay, a schedule (at the step count), moving averages (Keras's
    update counting); the optimizer's iterations (updates) after fit."""
    x, y = _regression()
    model = _mlp(keras)
    start = _start(model, init)
    decay = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.7)
    make = {"sgd": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.5,
                                                gradient_accumulation_steps=3, clipnorm=0.5),
            "adamw": lambda: keras.optimizers.AdamW(learning_rate=decay, weight_decay=0.1,
                                                    gradient_accumulation_steps=3),
            "adam_ema": lambda: keras.optimizers.Adam(learning_rate=0.02, use_ema=True,
                                                      ema_momentum=0.6,
                                                      ema_overwrite_frequency=2,
                                                      gradient_accumulation_steps=2)}[variant]
    model.compile(optimizer=make(), loss="mse")
    history = model.fit(x, y * 5, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                iterations=int(model.optimizer.iterations))


SCHEDULES = {
    "polynomial": lambda s: s.PolynomialDecay(0.05, decay_steps=7, end_learning_rate=0.005,
                                              power=0.5),
    "polynomial_cycle": lambda s: s.PolynomialDecay(0.05, decay_steps=4, power=2.0, cycle=True),
    "cosine_warmup": lambda s: s.CosineDecay(0.0, decay_steps=8, alpha=0.1, warmup_target=0.05,
                                             warmup_steps=5),
    "cosine_restarts": lambda s: s.CosineDecayRestarts(0.05, first_decay_steps=3, t_mul=1.5,
                                                       m_mul=0.7, alpha=0.1),
    "exponential": lambda s: s.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.6),
    "inverse_time": lambda s: s.InverseTimeDecay(0.05, decay_steps=3, decay_rate=0.5),
    "piecewise": lambda s: s.PiecewiseConstantDecay([5, 11], [0.05, 0.02, 0.005]),
}


def schedules(keras, init, name):
    """A schedule as SGD-with-momentum's learning rate over 18 updates."""
    x, y = _regression()
    model = _mlp(keras)
    start = _start(model, init)
    rate = SCHEDULES[name](keras.optimizers.schedules)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=rate, momentum=0.8), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    rebuilt = keras.optimizers.schedules.deserialize(real_keras.optimizers.schedules.serialize(
        SCHEDULES[name](real_keras.optimizers.schedules)))       # Keras's config read back
    return dict(init=start, history=history.history, weights=model.get_weights(),
                rates=[float(rate(step)) for step in range(30)],
                rebuilt=[float(rebuilt(step)) for step in range(30)],
                next_rate=float(model.optimizer.learning_rate))


def resume_steps_and_dicts(keras, init):
    """A two-input functional model fed dicts (keys in another order than the inputs), dict
    targets, steps_per_epoch that runs out of data, initial_epoch, validation_batch_size;
    evaluate(return_dict=True), predict(batch_size=)."""
    rng = _rng()
    xa = rng.normal(size=(40, 3)).astype("float32")
    xb = rng.normal(size=(40, 2)).astype("float32")
    y = (xa.sum(1, keepdims=True) - 2 * xb[:, :1]).astype("float32")
    a, b = keras.Input(shape=(3,), name="alpha"), keras.Input(shape=(2,), name="beta")
    hidden = keras.layers.Dense(5, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], keras.layers.Dense(1, name="score")(hidden))
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    inputs = {"beta": xb, "alpha": xa}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # "your input ran out of data"
        first = model.fit(inputs, y, batch_size=8, epochs=4, initial_epoch=1,
                          steps_per_epoch=3, shuffle=False, verbose=0,
                          validation_data=({"alpha": xa[:10], "beta": xb[:10]}, y[:10]),
                          validation_batch_size=4)
        second = model.fit(inputs, y, epochs=2, steps_per_epoch=3, shuffle=False, verbose=0)
    return dict(init=start, first=first.history, first_epochs=first.epoch,
                second=second.history, weights=model.get_weights(),
                evaluate=model.evaluate(inputs, y, verbose=0, return_dict=True),
                predict=model.predict(inputs, batch_size=7, verbose=0))


def _noisy_validation(keras, init, n, n_val, noise, rate, momentum):
    """Regression data, validation targets (the first ``n_val`` samples') with noise, and an
    MLP compiled with SGD with momentum: (x, y, y_val, model, initial weights)."""
    x, y = _regression(n)
    y_val = y[:n_val] + _rng().normal(size=(n_val, 1)).astype("float32") * noise
    model = _mlp(keras)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=rate, momentum=momentum),
                  loss="mse")
    return x, y, y_val, model, start


def early_stopping(keras, init, variant):
    """EarlyStopping's start_from_epoch, baseline, patience and restore_best_weights on a
    noisy validation set (Keras 3's counting)."""
    x, y, y_val, model, start = _noisy_validation(keras, init, 60, 20, 4.0, 0.03, 0.8)
    options = {"start": dict(patience=1, start_from_epoch=3, restore_best_weights=True),
               "baseline": dict(patience=2, baseline=1.0, restore_best_weights=True),
               "patience0": dict(patience=0, min_delta=0.01),
               "restore": dict(patience=2, restore_best_weights=True)}[variant]
    stopper = keras.callbacks.EarlyStopping(**options)
    history = model.fit(x, y, batch_size=12, epochs=14, shuffle=False, verbose=0,
                        validation_data=(x[:20], y_val), callbacks=[stopper])
    return dict(init=start, history=history.history, epochs=history.epoch,
                stopped=stopper.stopped_epoch, best=stopper.best_epoch,
                weights=model.get_weights())


def checkpoint_and_reload(keras, init, tmp_path):
    """ModelCheckpoint(save_best_only) writing the whole model to .keras, read back with
    load_model; model.save / load_model round trip (compiled, same predictions and
    evaluate); a layer's get_weights / set_weights."""
    x, y = _regression(40)
    model = _mlp(keras)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02, momentum=0.5), loss="mse",
                  metrics=["mae"])
    best = str(tmp_path / "best.keras")
    y_val = y[:16][::-1].copy()                   # a validation loss that turns up
    history = model.fit(x, y, batch_size=8, epochs=8, shuffle=False, verbose=0,
                        validation_data=(x[:16], y_val),
                        callbacks=[keras.callbacks.ModelCheckpoint(best, save_best_only=True)])
    best_epoch = int(np.argmin(history.history["val_loss"]))
    reloaded = keras.models.load_model(best)
    model.save(str(tmp_path / "last.keras"))
    last = keras.models.load_model(str(tmp_path / "last.keras"))
    layer = last.layers[0]
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 0.5, bias + 1.0])
    last_evaluate = model.evaluate(x, y, verbose=0)
    model.load_weights(best)                              # a .keras file's weights
    return dict(init=start, history=history.history, best_epoch=best_epoch,
                best_predict=reloaded.predict(x[:5], verbose=0),
                best_loaded=model.predict(x[:5], verbose=0), last_evaluate=last_evaluate,
                reloaded_evaluate=keras.models.load_model(
                    str(tmp_path / "last.keras")).evaluate(x, y, verbose=0),
                changed=last.predict(x[:5], verbose=0), layer=layer.get_weights())


def weighted_metrics(keras, init, weighting):
    """compile(weighted_metrics=...) beside the same names in metrics: sample_weight in fit,
    validation_data's weights, class_weight, evaluate's sample_weight."""
    rng = _rng()
    x = rng.normal(size=(40, 5)).astype("float32")
    labels = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 0.8).astype("int64")
    model = keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(6, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2), metrics=["accuracy"],
                  loss="sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy", keras.metrics.SparseCategoricalAccuracy(name="sca"),
                                    keras.losses.sparse_categorical_crossentropy])
    weights = rng.uniform(0.1, 3.0, size=40).astype("float32")
    extra = {"sample": dict(sample_weight=weights,
                            validation_data=(x[:12], labels[:12], weights[:12])),
             "class": dict(class_weight={0: 0.5, 1: 2.0, 2: 4.0},
                           validation_data=(x[:12], labels[:12]))}[weighting]
    history = model.fit(x, labels, batch_size=8, epochs=3, shuffle=False, verbose=0, **extra)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(x, labels, sample_weight=weights, verbose=0,
                                        return_dict=True))


def two_outputs_by_name(keras, init, form):
    """A two-output model given dict inputs, dict losses and loss weights by output name,
    metrics and weighted_metrics (one list per output, or a dict), sample_weight."""
    rng = _rng()
    x = rng.normal(size=(36, 4)).astype("float32")
    y_reg = (x[:, :1] * 2 - x[:, 1:2]).astype("float32")
    y_cls = (x[:, 2] > 0).astype("float32")[:, None]
    inputs = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(1, name="amount")(hidden),
                                 keras.layers.Dense(1, activation="sigmoid", name="flag")(hidden)])
    start = _start(model, init)
    weighted = {"list": [["mae"], ["mae", "binary_accuracy"]],
                "dict": {"flag": ["binary_accuracy", "mse"]}, "dict_targets": None}[form]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05),
                  loss={"flag": "binary_crossentropy", "amount": "mse"},
                  loss_weights={"amount": 0.5, "flag": 2.0},
                  metrics={"amount": ["mae"], "flag": ["mse"]}, weighted_metrics=weighted)
    weights = rng.uniform(0.2, 2.0, size=36).astype("float32")
    if form == "dict_targets":    # Keras 3.15 fails on dict targets with a sample_weight
        targets, weights = {"flag": y_cls, "amount": y_reg}, None
    else:
        targets = [y_reg, y_cls]
    history = model.fit({"features": x}, targets, batch_size=9, epochs=2, shuffle=False,
                        verbose=0, sample_weight=weights)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(x, targets, sample_weight=weights, verbose=0,
                                        return_dict=True))


def generators(keras, init, validation_steps):
    """Keras 2's recipe: fit on an endless Python generator with steps_per_epoch, validation
    on another with validation_steps (Keras 3 replays a generator's first two batches at each
    pass); evaluate(steps=) on arrays without a batch_size and on a generator."""
    x, y = _regression(30)

    def endless(x, y, size):
        while True:
            for i in range(0, len(x), size):
                yield x[i:i + size], y[i:i + size]
    model = _mlp(keras, 4)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse",
                  metrics=["mae"])
    batch_losses = []                        # Keras's batch logs: the epoch's running mean
    history = model.fit(endless(x, y, 7), steps_per_epoch=3, epochs=3, verbose=0,
                        validation_data=endless(x[:10], y[:10] + 1, 3),
                        validation_steps=validation_steps, callbacks=[
                            keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs:
                                                           batch_losses.append(logs["loss"]))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluated = model.evaluate(x, y, steps=4, verbose=0, return_dict=True)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                batch_losses=batch_losses, evaluate=evaluated, evaluate_generator=model.evaluate(
                    endless(x, y * 2, 5), steps=3, verbose=0, return_dict=True))


def weighted_py_dataset(keras, init):
    """A PyDataset giving (x, y, sample_weight) batches, with a compiled weighted metric
    (shuffle=False: Keras's shuffled batch order comes from Python's random after draws of its
    own)."""
    x, y = _regression(30)
    weights = _rng().uniform(0.2, 2.0, size=30).astype("float32")

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return 4

        def __getitem__(self, index):
            rows = slice(8 * index, 8 * index + 8)
            return x[rows], y[rows], weights[rows]
    model = _mlp(keras)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse",
                  weighted_metrics=["mae"])
    history = model.fit(Batches(), epochs=3, verbose=0, shuffle=False)
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(Batches(), verbose=0, return_dict=True))


def validation_freq(keras, init, tmp_path, freq):
    """fit(validation_freq=...) with callbacks watching val_loss (skipped, with a warning, on
    the epochs without validation; ModelCheckpoint saves there) and a CSVLogger (NA there)."""
    x, y, y_val, model, start = _noisy_validation(keras, init, 36, 12, 3.0, 0.05, 0.8)
    log = tmp_path / "log.csv"
    best = str(tmp_path / "best.weights.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=9, epochs=9, shuffle=False, verbose=0,
                            validation_data=(x[:12], y_val), validation_freq=freq, callbacks=[
                                keras.callbacks.CSVLogger(log),
                                keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=0),
                                keras.callbacks.ModelCheckpoint(best, save_best_only=True,
                                                                save_weights_only=True),
                                keras.callbacks.EarlyStopping(patience=1)])
    rows = [row.split(",") for row in log.read_text().splitlines()]
    last = model.get_weights()
    model.load_weights(best)
    return dict(init=start, history=history.history, epochs=history.epoch, weights=last,
                checkpoint=model.get_weights(), log_header=rows[0],
                log=[[float("nan") if v == "NA" else float(v) for v in row] for row in rows[1:]])


def batch_checkpoints(keras, init, tmp_path, best_only):
    """ModelCheckpoint(save_freq=3) over epochs of 5 batches: the files written (epoch and
    batch in the name), each one's weights; with save_best_only on the batch logs' loss."""
    x, y = _regression(40)
    model = _mlp(keras)
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.03), loss="mse")
    folder = tmp_path / f"{keras.__name__}-{best_only}"
    folder.mkdir()
    path = str(folder / "ck-{epoch:02d}-{batch:02d}-{loss:.2f}.weights.h5")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(path, monitor="loss", save_freq=3,
                                        save_best_only=best_only, save_weights_only=True)])
    saved = {}
    for file in sorted(folder.iterdir()):
        model.load_weights(str(file))
        saved[file.name] = model.get_weights()
    return dict(init=start, saved=saved)


# -- the tests ------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("option", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_clipping_ports(option, optimizer):
    _port(clipping, option, optimizer)


@pytest.mark.parametrize("optimizer, frequency", [("sgd", None), ("sgd", 4), ("adam", 5)])
def test_moving_average_ports(optimizer, frequency):
    _port(moving_averages, optimizer, frequency)


@pytest.mark.parametrize("variant", ["sgd", "adamw", "adam_ema"])
def test_gradient_accumulation_ports(variant):
    _port(accumulation, variant)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_ports(name):
    _port(schedules, name)


def test_resume_steps_and_dict_inputs_port():
    _port(resume_steps_and_dicts)


@pytest.mark.parametrize("freq", [2, [1, 4, 5, 6]])
def test_validation_freq_port(tmp_path, freq):
    _port(validation_freq, tmp_path, freq)


@pytest.mark.parametrize("best_only", [False, True])
def test_batch_checkpoints_port(tmp_path, best_only):
    _port(batch_checkpoints, tmp_path, best_only)


def test_weighted_py_dataset_port():
    _port(weighted_py_dataset)


@pytest.mark.parametrize("validation_steps", [2, 3])
def test_generators_with_steps_port(validation_steps):
    _port(generators, validation_steps)


@pytest.mark.parametrize("variant", ["start", "baseline", "patience0", "restore"])
def test_early_stopping_ports(variant):
    _port(early_stopping, variant)


def test_checkpoint_and_reload_port(tmp_path):
    _port(checkpoint_and_reload, tmp_path)


@pytest.mark.parametrize("weighting", ["sample", "class"])
def test_weighted_metrics_ports(weighting):
    _port(weighted_metrics, weighting)


@pytest.mark.parametrize("form", ["list", "dict", "dict_targets"])
def test_two_outputs_by_name_ports(form):
    _port(two_outputs_by_name, form)


@pytest.mark.parametrize("shape, axes, masked", [
    ((2, 3, 4, 6), None, False), ((2, 3, 4, 6), (1,), False), ((2, 3, 4, 6), (2,), True),
    ((2, 3, 4, 6), -2, True), ((2, 2, 3, 2, 5), (1, 3), True), ((3, 5, 6), (1,), True)])
def test_multi_head_attention_axes_matches_keras(shape, axes, masked):
    """MultiHeadAttention(attention_axes=...) on inputs of rank 3 to 5 with Keras's weights:
    the output and the attention scores (Keras's layout), with an attention_mask."""
    import gpudl as gd
    from gpudl import keras as gk
    rng = _rng()
    query = rng.normal(size=shape).astype("float32")
    value = rng.normal(size=shape[:-1] + (4,)).astype("float32")
    theirs = real_keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2,
                                                  attention_axes=axes)
    ours = gk.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2,
                                        attention_axes=axes)
    kwargs, ours_kwargs = {}, {}
    if masked:                   # (batch, query attention axes, key attention axes)
        attended = ours._axes(len(shape))
        mask = rng.uniform(size=(shape[0],) + tuple(shape[a] for a in attended) * 2) > 0.3
        kwargs, ours_kwargs = dict(attention_mask=mask), dict(attention_mask=gd.tensor(mask))
    out, scores = theirs(query, value, return_attention_scores=True, **kwargs)
    ours(gd.tensor(query), gd.tensor(value), **ours_kwargs)                 # builds
    ours.set_weights([w.numpy() if hasattr(w, "numpy") else np.asarray(w)
                      for w in theirs.get_weights()])
    got, got_scores = ours(gd.tensor(query), gd.tensor(value), return_attention_scores=True,
                           **ours_kwargs)
    expected = [np.asarray(t.detach().cpu()) for t in (out, scores)]
    assert tuple(got_scores.shape) == expected[1].shape
    np.testing.assert_allclose(got.numpy(), expected[0], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got_scores.numpy(), expected[1], rtol=2e-5, atol=2e-6)


def _summary_totals(keras):
    inputs = keras.Input(shape=(8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Flatten()(keras.layers.MaxPooling2D()(hidden))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(hidden))
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return [row.strip() for line in lines for row in line.splitlines() if "params:" in row]


def test_first_hour_tour_matches_keras():
    """summary's totals (counts and Keras's memory sizes, non-trainable BatchNormalization
    statistics included) and to_categorical."""
    from gpudl import keras as gk
    assert _summary_totals(gk) == _summary_totals(real_keras)
    for labels, classes in (([0, 2, 1, 2], 4), (np.array([[1], [0], [3]]), None),
                            (np.array([[0, 1], [2, 1]]), 3)):
        np.testing.assert_array_equal(gk.utils.to_categorical(labels, classes),
                                      real_keras.utils.to_categorical(labels, classes))


LOSS_METRICS = [("MeanSquaredError", {}), ("MeanAbsoluteError", {}),
                ("MeanAbsolutePercentageError", {}), ("MeanSquaredLogarithmicError", {}),
                ("LogCoshError", {}), ("KLDivergence", {}), ("Poisson", {}), ("Hinge", {}),
                ("SquaredHinge", {}), ("CategoricalHinge", {}), ("BinaryCrossentropy", {}),
                ("BinaryCrossentropy", dict(from_logits=True, label_smoothing=0.1)),
                ("CategoricalCrossentropy", dict(label_smoothing=0.2)),
                ("CategoricalCrossentropy", dict(from_logits=True)),
                ("SparseCategoricalCrossentropy", dict(from_logits=True))]


@pytest.mark.parametrize("name, options", LOSS_METRICS)
def test_loss_metric_classes_match_keras(name, options):
    """The losses as metric classes: two weighted updates, the result and the config."""
    from gpudl import keras as gk
    rng = _rng()
    sparse = name.startswith("Sparse")
    results = []
    for keras in (real_keras, gk):
        metric = getattr(keras.metrics, name)(**options)
        for _ in range(2):
            scores = rng.uniform(0.05, 1.0, size=(6, 4)).astype("float32")
            if not options.get("from_logits"):
                scores /= scores.sum(1, keepdims=True)
            labels = rng.integers(0, 4, 6)
            y_true = labels if sparse else np.eye(4, dtype="float32")[labels]
            metric.update_state(y_true, scores, sample_weight=rng.uniform(0.1, 2, 6))
        results.append((float(np.asarray(metric.result())), metric.name))
        rng = _rng()                                     # the same data for gpudl
    assert results[1][1] == results[0][1]
    assert results[1][0] == pytest.approx(results[0][0], rel=2e-5, abs=1e-6)


def loss_metrics_in_compile(keras, init):
    """Metric objects and names of the losses in compile's metrics (unweighted) beside the
    loss, with class weights in fit."""
    rng = _rng()
    x = rng.normal(size=(30, 4)).astype("float32")
    y = (x[:, :1] + x[:, 1:2] > 0).astype("float32")
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryCrossentropy(from_logits=True),
                           keras.metrics.MeanSquaredError(name="mse_of_logits"), "hinge"])
    history = model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0,
                        class_weight={0: 1.0, 1: 3.0}, validation_data=(x[:9], y[:9]))
    return dict(init=start, history=history.history, weights=model.get_weights())


def test_loss_metrics_in_compile_port():
    _port(loss_metrics_in_compile)


def weighted_metric_names(keras, init):
    """Metric names beyond the accuracies in weighted_metrics ('auc', 'binary_crossentropy',
    'poisson'): fit with class weights, evaluate with sample weights."""
    rng = _rng()
    x = rng.random((30, 3)).astype("float32")
    y = (x[:, :1] + 0.3 * x[:, 1:2] > 0.6).astype("float32")
    model = keras.Sequential([keras.Input(shape=(3,)),
                              keras.layers.Dense(1, activation="sigmoid")])
    start = _start(model, init)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.3), loss="binary_crossentropy",
                  weighted_metrics=["auc", "binary_crossentropy", "poisson"])
    history = model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0,
                        class_weight={0: 0.5, 1: 2.5})
    return dict(init=start, history=history.history, weights=model.get_weights(),
                evaluate=model.evaluate(x, y, sample_weight=rng.random(30).astype("float32"),
                                        verbose=0, return_dict=True))


def test_weighted_metric_names_port():
    _port(weighted_metric_names)
