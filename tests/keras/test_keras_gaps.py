"""The Keras gaps a user coming from Keras 3 hits in the first hour, closed in session 24:
optimizer clipping, the learning-rate schedules, fit's initial_epoch / steps_per_epoch / dict
inputs, EarlyStopping's start_from_epoch and baseline, ModelCheckpoint's whole-model ``.keras``
file, compile's weighted_metrics, MultiHeadAttention's attention_axes and summary's sizes.

Expected values come from float64 NumPy re-implementations of Keras's formulas written here,
or are worked out by hand from Keras 3's rules; Keras itself is not needed (the same features
are compared with Keras in test_keras_gaps_vs_keras.py when it is installed).
"""

import math
import random
import warnings

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import callbacks, layers, optimizers
from gpudl.keras.optimizers import schedules


# -- optimizer clipping ----------------------------------------------------------------------

def _clipped(kind, value, grads):
    """Keras's ``_clip_gradients`` in float64 NumPy."""
    if kind == "clipvalue":
        return [np.clip(g, -value, value) for g in grads]
    if kind == "clipnorm":
        return [g * value / max(np.sqrt((g * g).sum()), value) for g in grads]
    norm = np.sqrt(sum((g * g).sum() for g in grads))
    return [g * value * min(1 / norm, 1 / value) for g in grads]


@pytest.mark.parametrize("kind, value", [("clipnorm", 0.7), ("clipvalue", 0.3),
                                         ("global_clipnorm", 1.1)])
def test_sgd_steps_with_clipped_gradients(rng, kind, value):
    shapes = [(3, 4), (4,), (2, 2)]
    start = [rng.standard_normal(s) for s in shapes]
    params = [gd.tensor(w.astype(np.float32), requires_grad=True) for w in start]
    optimizer = optimizers.SGD(learning_rate=0.1, **{kind: value}).build(params)
    expected = [w.copy() for w in start]
    for step in range(3):
        # one small gradient (left alone by clipnorm) beside large ones
        grads = [rng.standard_normal(s) * (0.05 if i == 2 else 2.0) for i, s in enumerate(shapes)]
        for p, g in zip(params, grads):
            p.grad = gd.tensor(g.astype(np.float32))
        optimizer.step()
        expected = [w - 0.1 * g for w, g in zip(expected, _clipped(kind, value, grads))]
        for p, w in zip(params, expected):
            np.testing.assert_allclose(p.numpy(), w, rtol=1e-5, atol=1e-6)


def test_adam_clips_before_its_update_and_global_clipnorm_of_inf_gives_nan(rng):
    g = rng.standard_normal(5) * 10
    p = gd.tensor(np.zeros(5, np.float32), requires_grad=True)
    optimizer = optimizers.Adam(learning_rate=0.01, global_clipnorm=1.0).build([p])
    p.grad = gd.tensor(g.astype(np.float32))
    optimizer.step()
    clipped = g / np.linalg.norm(g)
    m, v = 0.1 * clipped, 0.001 * clipped ** 2
    step = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(p.numpy(), -step, rtol=1e-5, atol=1e-7)
    q = gd.tensor(np.zeros(2, np.float32), requires_grad=True)
    optimizer = optimizers.SGD(global_clipnorm=1.0).build([q])
    q.grad = gd.tensor(np.array([np.inf, 1.0], np.float32))
    optimizer.step()
    assert np.isnan(q.numpy()).all()            # Keras: a non-finite norm makes every step NaN


def test_clipping_arguments_are_checked():
    with pytest.raises(ValueError, match="only one of clipnorm, clipvalue and global_clipnorm"):
        optimizers.Adam(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match=r"clipvalue must be a number >= 0 \(or None\), got -1"):
        optimizers.SGD(clipvalue=-1)
    with pytest.raises(ValueError, match="clipnorm must be a number >= 0 .* got '1'"):
        optimizers.RMSprop(clipnorm="1")
    p = gd.tensor(np.zeros(2, np.float32), requires_grad=True)
    optimizer = optimizers.SGD(learning_rate=1.0, clipnorm=0).build([p])    # Keras: 0 is off
    p.grad = gd.tensor(np.array([30.0, -40.0], np.float32))
    optimizer.step()
    np.testing.assert_allclose(p.numpy(), [-30.0, 40.0])
    config = optimizers.Adam(clipnorm=2.0).get_config()
    assert config["clipnorm"] == 2.0 and optimizers.Adam.from_config(config).clipping == \
        ("clipnorm", 2.0)


@pytest.mark.parametrize("frequency", [None, 3])
def test_moving_averages_of_the_weights(rng, frequency):
    w = rng.standard_normal(4)
    p = gd.tensor(w.astype(np.float32), requires_grad=True)
    optimizer = optimizers.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.7,
                               ema_overwrite_frequency=frequency).build([p])
    average = None
    for step in range(7):
        g = rng.standard_normal(4)
        p.grad = gd.tensor(g.astype(np.float32))
        optimizer.step()
        w = w - 0.1 * g
        average = w.copy() if step == 0 else 0.7 * average + 0.3 * w
        if frequency and (step + 1) % frequency == 0:
            w = average.copy()                       # Keras writes the averages in
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-5, atol=1e-6)
    optimizers.finalize(optimizer)                   # what fit does when it ends
    np.testing.assert_allclose(p.numpy(), average, rtol=1e-5, atol=1e-6)


def test_moving_average_arguments_are_checked():
    with pytest.raises(ValueError, match=r"ema_momentum must be in \[0, 1\], got 1.5"):
        optimizers.Adam(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="ema_overwrite_frequency must be an int >= 1 or None, "
                                         "got 0"):
        optimizers.Adam(use_ema=True, ema_overwrite_frequency=0)
    optimizers.Adam(ema_momentum=7)                  # Keras checks them only with use_ema
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps must be an int >= 2 "
                                         r"\(or None\), got 1"):
        optimizers.Adam(gradient_accumulation_steps=1)
    with pytest.raises(NotImplementedError, match="loss_scale_factor=64 is not supported"):
        optimizers.SGD(loss_scale_factor=64)


def test_gradient_accumulation_updates_with_the_mean_every_n_steps(rng):
    w = rng.standard_normal(5)
    p = gd.tensor(w.astype(np.float32), requires_grad=True)
    schedule = schedules.ExponentialDecay(0.2, decay_steps=2, decay_rate=0.5)
    optimizer = optimizers.SGD(learning_rate=schedule, gradient_accumulation_steps=3,
                               clipvalue=0.4).build([p])
    total = np.zeros(5)
    for step in range(9):
        g = rng.standard_normal(5)
        p.grad = gd.tensor(g.astype(np.float32))
        optimizer.step()
        total += g
        if (step + 1) % 3 == 0:            # the mean, clipped, at the rate of this step count
            w = w - 0.2 * 0.5 ** (step / 2) * np.clip(total / 3, -0.4, 0.4)
            total[:] = 0
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-5, atol=1e-6)
    assert optimizer.iterations == 9                # steps; Keras's iterations count updates
    model = keras.Sequential([keras.Input(shape=(2,)), layers.Dense(1)])
    model.compile(optimizer=optimizers.Adam(gradient_accumulation_steps=2), loss="mse")
    x = rng.standard_normal((10, 2)).astype(np.float32)
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0)
    assert model.optimizer.iterations == 2          # 5 steps, 2 updates


# -- learning-rate schedules -----------------------------------------------------------------

def _polynomial(step, lr0, steps, end, power, cycle):
    if cycle:
        steps = steps * (1 if step == 0 else math.ceil(step / steps))
    else:
        step = min(step, steps)
    return (lr0 - end) * (1 - step / steps) ** power + end


def _cosine(step, lr0, steps, alpha, target=None, warmup=0):
    if target is not None:
        step = min(step, steps + warmup)
        if step < warmup:
            return lr0 + (target - lr0) * step / warmup
        step, lr0 = step - warmup, target
    step = min(step, steps)
    return lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / steps)) + alpha)


def _restarts(step, lr0, first, t_mul, m_mul, alpha):
    """SGDR by walking the periods (not Keras's closed form)."""
    start, length, i = 0.0, float(first), 0
    while step >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    fraction = (step - start) / length
    return lr0 * ((1 - alpha) * m_mul ** i * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)


@pytest.mark.parametrize("make, reference", [
    (lambda: schedules.PolynomialDecay(0.1, 7, end_learning_rate=0.01, power=0.5),
     lambda s: _polynomial(s, 0.1, 7, 0.01, 0.5, False)),
    (lambda: schedules.PolynomialDecay(0.1, 5, power=2.0, cycle=True),
     lambda s: _polynomial(s, 0.1, 5, 0.0001, 2.0, True)),
    (lambda: schedules.CosineDecay(0.0, 10, alpha=0.1, warmup_target=0.1, warmup_steps=4),
     lambda s: _cosine(s, 0.0, 10, 0.1, 0.1, 4)),
    (lambda: schedules.CosineDecay(0.05, 6, warmup_target=0.2, warmup_steps=0),
     lambda s: _cosine(s, 0.05, 6, 0.0, 0.2, 0)),
    (lambda: schedules.CosineDecay(0.05, 6, warmup_steps=3),     # Keras: no target, no warmup
     lambda s: _cosine(s, 0.05, 6, 0.0)),
    (lambda: schedules.CosineDecayRestarts(0.1, 4),
     lambda s: _restarts(s, 0.1, 4, 2.0, 1.0, 0.0)),
    (lambda: schedules.CosineDecayRestarts(0.1, 3, t_mul=1.0, m_mul=0.5, alpha=0.2),
     lambda s: _restarts(s, 0.1, 3, 1.0, 0.5, 0.2)),
    (lambda: schedules.CosineDecayRestarts(0.1, 3, t_mul=1.5, m_mul=0.8, alpha=0.1),
     lambda s: _restarts(s, 0.1, 3, 1.5, 0.8, 0.1)),
])
def test_schedules_follow_keras_formulas(make, reference):
    schedule = make()
    for step in range(60):
        assert schedule(step) == pytest.approx(reference(step), rel=1e-9, abs=1e-12), step
    assert type(schedule).from_config(schedule.get_config())(17) == schedule(17)


def test_a_schedule_drives_each_sgd_update(rng):
    schedule = schedules.PolynomialDecay(0.2, 3, end_learning_rate=0.02, power=1.5)
    w0 = rng.standard_normal(4)
    p = gd.tensor(w0.astype(np.float32), requires_grad=True)
    optimizer = optimizers.SGD(learning_rate=schedule).build([p])
    expected = w0.copy()
    for step in range(6):
        g = rng.standard_normal(4)
        p.grad = gd.tensor(g.astype(np.float32))
        optimizer.step()
        expected -= _polynomial(step, 0.2, 3, 0.02, 1.5, False) * g
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_model_optimizer_learning_rate_is_the_next_updates_and_schedules_serialize(rng):
    schedule = schedules.CosineDecayRestarts(0.1, 2, t_mul=1.5, m_mul=0.5)
    model = keras.Sequential([keras.Input(shape=(2,)), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=schedule), loss="mse")
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    x = rng.standard_normal((10, 2)).astype(np.float32)
    model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0)           # 6 updates
    assert model.optimizer.iterations == 6
    assert model.optimizer.learning_rate == pytest.approx(_restarts(6, 0.1, 2, 1.5, 0.5, 0.0))
    config = schedules.serialize(schedule)
    assert config["class_name"] == "CosineDecayRestarts"
    assert schedules.deserialize(config)(5) == schedule(5)
    with pytest.raises(ValueError, match="expected a LearningRateSchedule config"):
        schedules.deserialize(keras.saving.serialize(keras.losses.MeanSquaredError()))


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="PolynomialDecay: decay_steps must be positive, got 0"):
        schedules.PolynomialDecay(0.1, 0)
    with pytest.raises(ValueError, match="first_decay_steps must be positive, got -2"):
        schedules.CosineDecayRestarts(0.1, -2)
    with pytest.raises(ValueError, match="warmup_steps must be a number >= 0, got -1"):
        schedules.CosineDecay(0.1, 10, warmup_target=0.2, warmup_steps=-1)
    shrinking = schedules.CosineDecayRestarts(0.1, 2, t_mul=0.5)
    assert shrinking(3) == pytest.approx(_restarts(3, 0.1, 2, 0.5, 1.0, 0.0))
    with pytest.raises(ValueError, match="periods end after 4 steps; got step 5"):
        shrinking(5)


# -- fit: initial_epoch, steps_per_epoch, dict inputs ------------------------------------------

def _frozen_regression(rng, n=40):
    """A Dense model trained with learning rate 0: each batch's loss is known in advance."""
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = rng.standard_normal((n, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    per_sample = ((x @ kernel + bias - y) ** 2)[:, 0]
    return model, x, y, per_sample


def _running(values, sizes):
    """Keras's batch logs: the running mean of the batch losses, weighted by batch size."""
    values, sizes = np.asarray(values, np.float64), np.asarray(sizes, np.float64)
    return np.cumsum(values * sizes) / np.cumsum(sizes)


class _Batches(callbacks.Callback):
    """Records each epoch's batch logs["loss"] (Keras's running mean of the epoch so far)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append((epoch, []))

    def on_train_batch_end(self, batch, logs=None):
        self.seen[-1][1].append(logs["loss"])


def test_steps_per_epoch_continues_across_epochs_as_keras(rng):
    model, x, y, per_sample = _frozen_regression(rng)
    batch_losses = [per_sample[i:i + 8].mean() for i in range(0, 40, 8)]       # 5 batches
    recorder = _Batches()
    with pytest.warns(UserWarning, match="ran out of data before the steps asked for"):
        history = model.fit(x, y, batch_size=8, epochs=5, initial_epoch=1, steps_per_epoch=3,
                            shuffle=False, verbose=0, callbacks=[recorder])
    # epoch 1 takes batches 0-2, epoch 2 the last two (the data ran out), epoch 3 starts again
    assert history.epoch == [1, 2, 3, 4] and [e for e, _ in recorder.seen] == [1, 2, 3, 4]
    expected = [batch_losses[0:3], batch_losses[3:5], batch_losses[0:3], batch_losses[3:5]]
    for (_, got), want in zip(recorder.seen, expected):
        np.testing.assert_allclose(got, _running(want, [8] * len(want)), rtol=1e-5)
    np.testing.assert_allclose(history.history["loss"], [np.mean(per_sample[:24]),
                                                         np.mean(per_sample[24:])] * 2,
                               rtol=1e-5)
    assert history.params["steps"] == 3


def test_steps_per_epoch_without_batch_size_splits_the_data(rng):
    model, x, y, per_sample = _frozen_regression(rng, n=10)
    recorder = _Batches()
    model.fit(x, y, epochs=1, steps_per_epoch=3, shuffle=False, verbose=0, callbacks=[recorder])
    # Keras: batch_size = ceil(10 / 3) = 4 -> batches of 4, 4, 2
    np.testing.assert_allclose(recorder.seen[0][1], _running(
        [per_sample[:4].mean(), per_sample[4:8].mean(), per_sample[8:].mean()], [4, 4, 2]),
        rtol=1e-5)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int or None, got 0"):
        model.fit(x, y, steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch must be a non-negative int, got -1"):
        model.fit(x, y, initial_epoch=-1, verbose=0)
    assert model.fit(x, y, epochs=2, initial_epoch=2, verbose=0).epoch == []


def test_generators_of_numpy_batches_with_steps_as_keras(rng):
    model, x, y, per_sample = _frozen_regression(rng, n=30)
    weights = rng.uniform(0.5, 2.0, 30)

    def endless(size, weighted=False):
        while True:
            for i in range(0, 30, size):
                batch = (x[i:i + size], y[i:i + size])
                yield batch + (weights[i:i + size].astype(np.float32),) if weighted else batch
    recorder = _Batches()
    history = model.fit(endless(7, weighted=True), steps_per_epoch=3, epochs=2, verbose=0,
                        callbacks=[recorder], validation_data=endless(4), validation_steps=3)
    # training: the generator runs on (batches 0-2, then 3, 4 (of 2 samples) and 0 again)
    starts = [[0, 7, 14], [21, 28, 0]]
    for (_, got), firsts in zip(recorder.seen, starts):
        want = [(per_sample[i:i + 7] * weights[i:i + 7]).mean() for i in firsts]
        np.testing.assert_allclose(got, _running(want, [len(per_sample[i:i + 7])
                                                        for i in firsts]), rtol=1e-5)
    # validation: Keras replays a generator's first two batches at each pass, then goes on:
    # epoch 0 sees samples 0-11, epoch 1 samples 0-7 and 12-15
    val = [np.mean(per_sample[:12]), np.mean(np.r_[per_sample[:8], per_sample[12:16]])]
    np.testing.assert_allclose(history.history["val_loss"], val, rtol=1e-5)
    # evaluate(steps=) on arrays without batch_size: batches of ceil(30 / 4) = 8
    assert model.evaluate(x, y, steps=4, verbose=0) == pytest.approx(per_sample.mean(), rel=1e-5)
    with pytest.warns(UserWarning, match="ran out of data"):
        assert model.evaluate(x, y, batch_size=10, steps=5, verbose=0) == \
            pytest.approx(per_sample.mean(), rel=1e-5)
    assert model.evaluate(x, y, batch_size=10, steps=2, verbose=0) == \
        pytest.approx(per_sample[:20].mean(), rel=1e-5)
    with pytest.raises(ValueError, match=r"each batch must be \(x, y\) or \(x, y, "
                                         r"sample_weight\), got tuple of 4"):
        model.fit((b + b for b in endless(5)), steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match="validation_steps must be a positive int or None"):
        model.fit(x, y, validation_data=(x, y), validation_steps=0, verbose=0)


def test_a_subclassed_model_built_on_a_generators_first_batch_still_trains_on_it(rng):
    x = rng.standard_normal((12, 3)).astype(np.float32)
    y = rng.standard_normal((12, 1)).astype(np.float32)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(1)

        def call(self, inputs):
            return self.dense(inputs)

    def batches():
        for i in range(0, 12, 4):
            yield x[i:i + 4], y[i:i + 4]
    model = Net()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    recorder = _Batches()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # the data must not run out
        model.fit(batches(), epochs=1, steps_per_epoch=3, verbose=0, callbacks=[recorder])
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    per_sample = ((x @ kernel + bias - y) ** 2)[:, 0]
    np.testing.assert_allclose(recorder.seen[0][1],
                               _running(per_sample.reshape(3, 4).mean(1), [4] * 3), rtol=1e-5)


def test_a_py_dataset_may_give_sample_weights(rng):
    model, x, y, per_sample = _frozen_regression(rng, n=12)
    weights = rng.uniform(0.5, 2.0, 12)

    class Weighted(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            rows = slice(4 * index, 4 * index + 4)
            return x[rows], y[rows], weights[rows].astype(np.float32)
    history = model.fit(Weighted(), epochs=1, verbose=0)
    # Keras's weighted loss: the mean over each batch of weight * loss, averaged over batches
    assert history.history["loss"][0] == pytest.approx((per_sample * weights).mean(), rel=1e-5)
    # shuffle=True (fit's default) reads the batches in an order Python's random draws anew
    # each epoch, as Keras's PyDatasetAdapter
    recorder = _Batches()
    random.seed(5)
    orders = []
    for _ in range(3):
        orders.append(list(range(3)))
        random.shuffle(orders[-1])
    random.seed(5)
    model.fit(Weighted(), epochs=3, verbose=0, callbacks=[recorder])
    batch_losses = [(per_sample * weights)[4 * i:4 * i + 4].mean() for i in range(3)]
    for (_, got), order in zip(recorder.seen, orders):
        np.testing.assert_allclose(got, _running([batch_losses[i] for i in order], [4] * 3),
                                   rtol=1e-5)
    assert len({tuple(order) for order in orders}) > 1

    class Bad(Weighted):
        def __getitem__(self, index):
            return x[:4]
    with pytest.raises(ValueError, match=r"Bad\[\d\]: each batch must be \(x, y\) or \(x, y, "
                                         r"sample_weight\), got ndarray"):
        model.fit(Bad(), verbose=0)


def test_validation_freq_validates_the_chosen_epochs(rng, tmp_path):
    model, x, y, per_sample = _frozen_regression(rng, n=16)
    stopper = callbacks.EarlyStopping(patience=5)
    log = tmp_path / "log.csv"
    with pytest.warns(UserWarning, match="'val_loss' is not in this epoch's logs"):
        history = model.fit(x, y, epochs=5, verbose=0, validation_data=(x[:6], y[:6]),
                            validation_freq=2, callbacks=[stopper, callbacks.CSVLogger(log)])
    assert len(history.history["loss"]) == 5
    np.testing.assert_allclose(history.history["val_loss"], [per_sample[:6].mean()] * 2,
                               rtol=1e-5)                                   # epochs 2 and 4
    rows = [line.split(",") for line in log.read_text().splitlines()]
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [row[2] == "NA" for row in rows[1:]] == [True, False, True, False, True]
    assert stopper.best_epoch == 1
    history = model.fit(x, y, epochs=4, verbose=0, validation_data=(x[:6], y[:6]),
                        validation_freq=[1, 4, 9])
    assert len(history.history["val_loss"]) == 2
    for bad in (0, "2", [1.5]):
        with pytest.raises(ValueError, match="validation_freq must be a positive int or a list "
                                             "of epochs, got"):
            model.fit(x, y, verbose=0, validation_data=(x, y), validation_freq=bad)


def _two_inputs(as_dict):
    a, b = keras.Input(shape=(3,), name="alpha"), keras.Input(shape=(2,), name="beta")
    joined = layers.Concatenate()([a, b])
    return keras.Model({"alpha": a, "beta": b} if as_dict else [a, b], layers.Dense(1)(joined))


@pytest.mark.parametrize("as_dict", [False, True])
def test_dict_inputs_are_matched_by_name(rng, as_dict):
    model = _two_inputs(as_dict)
    xa = rng.standard_normal((12, 3)).astype(np.float32)
    xb = rng.standard_normal((12, 2)).astype(np.float32)
    y = rng.standard_normal((12, 1)).astype(np.float32)
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    expected = np.concatenate([xa, xb], 1) @ kernel + bias
    inputs = {"beta": xb, "unused": y, "alpha": xa}          # Keras ignores other keys
    np.testing.assert_allclose(model.predict(inputs, batch_size=5, verbose=0), expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model({"beta": gd.tensor(xb), "alpha": gd.tensor(xa)}).numpy(),
                               expected, rtol=1e-5, atol=1e-6)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse", metrics=["mae"])
    scores = model.evaluate(inputs, y, verbose=0, return_dict=True)
    assert scores["loss"] == pytest.approx(np.mean((expected - y) ** 2), rel=1e-5)
    assert scores["mae"] == pytest.approx(np.mean(np.abs(expected - y)), rel=1e-5)
    history = model.fit(inputs, y, epochs=1, verbose=0, validation_data=(inputs, y))
    assert history.history["val_loss"][0] == pytest.approx(scores["loss"], rel=1e-5)
    with pytest.raises(ValueError, match=r"x is a dict without the model's input names "
                                         r"\['alpha'\]; expected the keys \['alpha', 'beta'\]"):
        model.predict({"beta": xb}, verbose=0)


# -- callbacks -------------------------------------------------------------------------------

def _drive(stopper, values, model=None):
    """Feed ``values`` as val_loss epoch by epoch (as fit does); the epochs run."""
    model = model or layers.Dense(1)
    stopper.on_train_begin(model)
    run = []
    for epoch, value in enumerate(values):
        run.append(epoch)
        if stopper.on_epoch_end(epoch, {"val_loss": value}, model):
            break
    stopper.on_train_end(model)
    return run


@pytest.mark.parametrize("options, values, epochs, best", [
    # worked out by hand from Keras 3's EarlyStopping.on_epoch_end
    (dict(patience=2), [5, 4, 4.5, 4.2, 3, 3.5], [0, 1, 2, 3], 1),
    (dict(patience=0), [5, 4, 4.5, 3], [0, 1, 2], 1),
    (dict(patience=1, min_delta=0.5), [5, 4.7, 3], [0, 1], 0),
    (dict(patience=2, start_from_epoch=3), [5, 6, 7, 4.2, 3, 3.5, 3.6, 1], [0, 1, 2, 3, 4, 5, 6],
     4),
    # an improvement that misses the baseline keeps counting, without a stop check that epoch
    (dict(patience=1, baseline=3.2), [5, 4, 4.5, 1], [0, 1, 2], 1),
    (dict(patience=1, baseline=4.5), [5, 4, 4.2, 3], [0, 1, 2], 1),
])
def test_early_stopping_counts_as_keras_3(options, values, epochs, best):
    stopper = callbacks.EarlyStopping(**options)
    assert _drive(stopper, values) == epochs
    assert stopper.best_epoch == best
    assert stopper.stopped_epoch == (epochs[-1] if len(epochs) < len(values) else 0)


def test_early_stopping_restores_the_best_watched_epoch():
    model = layers.Dense(1)
    model(gd.zeros(1, 2))

    class Marked(callbacks.EarlyStopping):
        def on_epoch_end(self, epoch, logs, model):
            model.set_weights([np.full((2, 1), epoch, np.float32), np.zeros(1, np.float32)])
            return super().on_epoch_end(epoch, logs, model)
    stopper = Marked(patience=2, start_from_epoch=2, restore_best_weights=True)
    # epoch 0 has the lowest value but is not watched; the best watched one is epoch 3
    assert _drive(stopper, [0.1, 9, 5, 4, 4.5, 4.4], model) == [0, 1, 2, 3, 4, 5]
    assert model.get_weights()[0][0, 0] == 3
    with pytest.raises(ValueError, match="start_from_epoch must be an int >= 0, got -1"):
        callbacks.EarlyStopping(start_from_epoch=-1)
    with pytest.raises(ValueError, match="baseline must be a number or None, got 'low'"):
        callbacks.EarlyStopping(baseline="low")


def test_tensorboard_is_refused_naming_what_to_use():
    with pytest.raises(NotImplementedError, match="writes no TensorBoard event files; log the "
                                                  "epochs with keras.callbacks.CSVLogger"):
        callbacks.TensorBoard(log_dir="./logs")


def test_model_checkpoint_keeps_the_best_whole_model(rng, tmp_path):
    x = rng.standard_normal((24, 3)).astype(np.float32)
    y = rng.standard_normal((24, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(4, activation="tanh"),
                              layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    snapshots = []
    remember = callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    path = str(tmp_path / "best.keras")
    history = model.fit(x, y, batch_size=6, epochs=6, shuffle=False, verbose=0,
                        validation_data=(x[:8], -y[:8]), callbacks=[
                            callbacks.ModelCheckpoint(path, save_best_only=True), remember])
    best = int(np.argmin(history.history["val_loss"]))
    reloaded = keras.models.load_model(path)              # a whole model, compiled
    for got, want in zip(reloaded.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(got, want)
    assert reloaded.optimizer is not None
    model.load_weights(path)                              # Keras 3 reads a .keras file's too
    for got, want in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(got, want)
    threshold = callbacks.ModelCheckpoint(str(tmp_path / "never.keras"), save_best_only=True,
                                          initial_value_threshold=-1.0)
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[threshold])
    assert threshold.saved == []                         # no mse beats -1


def test_model_checkpoint_every_n_batches(rng, tmp_path):
    model, x, y, per_sample = _frozen_regression(rng, n=40)          # 5 batches of 8
    path = str(tmp_path / "ck-{epoch}-{batch}-{loss:.4f}.weights.h5")
    checkpoint = callbacks.ModelCheckpoint(path, save_freq=3, monitor="loss",
                                           save_best_only=True, save_weights_only=True)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[checkpoint])
    # global batches 3, 6, 9, 12, 15: (epoch 1, batch 3), (2, 1), (2, 4), (3, 2), (3, 5); the
    # logs' loss is the epoch's running mean, so a save needs it lower than the best before
    batch = [per_sample[i:i + 8].mean() for i in range(0, 40, 8)]
    running = {(e, b): np.mean(batch[:b]) for e in (1, 2, 3) for b in range(1, 6)}
    best, expected = math.inf, []
    for key in [(1, 3), (2, 1), (2, 4), (3, 2), (3, 5)]:
        if running[key] < best:
            best = running[key]
            expected.append(f"ck-{key[0]}-{key[1]}-{running[key]:.4f}.weights.h5")
    assert [p.rsplit("/", 1)[-1] for p in checkpoint.saved] == expected
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or a positive int, got 0"):
        callbacks.ModelCheckpoint(path, save_freq=0)
    with pytest.raises(ValueError, match="path field 'val_loss' is not among the logged"):
        model.fit(x, y, verbose=0, validation_data=(x, y), callbacks=[
            callbacks.ModelCheckpoint(str(tmp_path / "{val_loss}.keras"), save_freq=2)])


# -- compile(weighted_metrics=...) -------------------------------------------------------------

def test_weighted_metrics_weigh_by_sample_and_class_weights(rng):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    model = keras.Sequential([keras.Input(shape=(4,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), metrics=["accuracy"],
                  loss="sparse_categorical_crossentropy",
                  weighted_metrics=["accuracy",
                                    lambda y_true, y_pred: gd.tensor(y_pred.numpy()[:, 0])])
    kernel, bias = (w.astype(np.float64) for w in model.get_weights())
    logits = x @ kernel + bias
    scores = np.exp(logits - logits.max(1, keepdims=True))
    scores /= scores.sum(1, keepdims=True)
    correct = (scores.argmax(1) == labels).astype(np.float64)
    weights = rng.uniform(0.1, 3.0, 30)
    history = model.fit(x, labels, batch_size=7, epochs=1, shuffle=False, verbose=0,
                        sample_weight=weights.astype(np.float32),
                        validation_data=(x[:10], labels[:10]))

    def mean(values, w):
        return (values * w).sum() / w.sum()
    logs = {k: v[0] for k, v in history.history.items()}
    names = ["loss", "accuracy", "weighted_accuracy", "<lambda>"]
    assert sorted(logs) == sorted(names + ["val_" + k for k in names])
    assert logs["accuracy"] == pytest.approx(correct.mean())
    assert logs["weighted_accuracy"] == pytest.approx(mean(correct, weights), rel=1e-6)
    assert logs["<lambda>"] == pytest.approx(mean(scores[:, 0], weights), rel=1e-5)
    assert logs["val_weighted_accuracy"] == pytest.approx(correct[:10].mean())   # unweighted
    class_weight = {0: 0.5, 1: 2.0, 2: 4.0}
    history = model.fit(x, labels, batch_size=7, epochs=1, shuffle=False, verbose=0,
                        class_weight=class_weight, validation_data=(x[:10], labels[:10]))
    by_class = np.array([class_weight[c] for c in labels])
    assert history.history["weighted_accuracy"][0] == pytest.approx(mean(correct, by_class))
    assert history.history["val_weighted_accuracy"][0] == pytest.approx(correct[:10].mean())
    scores_dict = model.evaluate(x, labels, sample_weight=weights.astype(np.float32),
                                 verbose=0, return_dict=True)
    assert scores_dict["weighted_accuracy"] == pytest.approx(mean(correct, weights), rel=1e-6)
    assert scores_dict["accuracy"] == pytest.approx(correct.mean())


def test_weighted_metrics_arguments_are_checked():
    model = keras.Sequential([keras.Input(shape=(2,)), layers.Dense(1)])
    with pytest.raises(TypeError, match=r"weighted_metrics must be a list, tuple or dict \(by "
                                        r"output name\) of metrics, got str"):
        model.compile(loss="mse", weighted_metrics="mae")
    with pytest.raises(ValueError, match="weighted_metrics as a dict needs a model with several"):
        model.compile(loss="mse", weighted_metrics={"dense": ["mae"]})
    with pytest.raises(ValueError, match="unknown weighted metric 'maae'; expected one of "):
        model.compile(loss="mse", weighted_metrics=["maae"])
    model.compile(loss="mse", weighted_metrics=["poisson"])       # a metric object's name
    assert isinstance(model._compiled.metrics[0].metric, keras.metrics.Poisson)
    model.compile(loss="mse", weighted_metrics=["mse"], metrics=["mse"])
    assert [m.__name__ for m in model._compiled.metrics] == ["mse", "weighted_mse"]


def test_weighted_metrics_of_a_two_output_model(rng):
    x = rng.standard_normal((20, 3)).astype(np.float32)
    y = [rng.standard_normal((20, 1)).astype(np.float32) for _ in range(2)]
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, [layers.Dense(1, name="amount")(inputs),
                                 layers.Dense(1, name="level")(inputs)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse",
                  metrics={"amount": ["mae"]}, weighted_metrics=[["mae"], ["mae", "mse"]])
    weights = rng.uniform(0.1, 2.0, 20)
    logs = model.evaluate(x, {"level": y[1], "amount": y[0]}, verbose=0, return_dict=True,
                          sample_weight=weights.astype(np.float32))
    kernel_a, bias_a, kernel_l, bias_l = (w.astype(np.float64) for w in model.get_weights())
    errors = [(x @ kernel_a + bias_a - y[0])[:, 0], (x @ kernel_l + bias_l - y[1])[:, 0]]

    def mean(values):
        return (values * weights).sum() / weights.sum()
    assert sorted(logs) == ["amount_loss", "amount_mae", "amount_weighted_mae", "level_loss",
                            "level_mae", "level_mse", "loss"]
    assert logs["amount_mae"] == pytest.approx(np.abs(errors[0]).mean(), rel=1e-5)
    assert logs["amount_weighted_mae"] == pytest.approx(mean(np.abs(errors[0])), rel=1e-5)
    assert logs["level_mae"] == pytest.approx(mean(np.abs(errors[1])), rel=1e-5)
    assert logs["level_mse"] == pytest.approx(mean(errors[1] ** 2), rel=1e-5)


def _log_sigmoid(z):
    return -np.logaddexp(0, -z)


LOSS_METRIC_REFERENCES = [
    ("MeanSquaredError", {}, lambda t, p: ((p - t) ** 2).mean(1)),
    ("MeanAbsoluteError", {}, lambda t, p: np.abs(p - t).mean(1)),
    ("Hinge", {}, lambda t, p: np.maximum(1 - (2 * t - 1) * p, 0).mean(1)),
    ("BinaryCrossentropy", dict(from_logits=True, label_smoothing=0.2),
     lambda t, p: -((t * 0.8 + 0.1) * _log_sigmoid(p) +
                    (1 - (t * 0.8 + 0.1)) * _log_sigmoid(-p)).mean(1)),
    ("SparseCategoricalCrossentropy", dict(from_logits=True),
     lambda t, p: np.log(np.exp(p).sum(1)) - p[np.arange(len(p)), t]),
]


@pytest.mark.parametrize("name, options, reference", LOSS_METRIC_REFERENCES)
def test_loss_metric_classes_are_weighted_means_of_the_losses(rng, name, options, reference):
    metric = getattr(keras.metrics, name)(**options)
    values, weights = [], []
    for _ in range(2):
        scores = rng.standard_normal((5, 3))
        if name.startswith("Sparse"):
            truth = rng.integers(0, 3, 5)
        else:
            truth = rng.integers(0, 2, (5, 3)).astype(np.float64)
        w = rng.uniform(0.1, 2.0, 5)
        metric.update_state(truth, scores.astype(np.float32), sample_weight=w)
        values.append(reference(truth, scores))
        weights.append(w)
    values, weights = np.concatenate(values), np.concatenate(weights)
    assert float(metric.result()) == pytest.approx((values * weights).sum() / weights.sum(),
                                                   rel=1e-5)
    assert metric.name == {"MeanSquaredError": "mean_squared_error", "Hinge": "hinge",
                           "MeanAbsoluteError": "mean_absolute_error",
                           "BinaryCrossentropy": "binary_crossentropy",
                           "SparseCategoricalCrossentropy":
                               "sparse_categorical_crossentropy"}[name]
    assert type(metric).from_config(metric.get_config()).get_config() == metric.get_config()


def test_loss_metric_names_in_compile_and_refusals(rng):
    x = rng.standard_normal((12, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse",
                  metrics=["binary_crossentropy", keras.metrics.Poisson(name="p")])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    p = np.clip(model.predict(x, verbose=0).astype(np.float64), 1e-7, 1 - 1e-7)
    assert sorted(logs) == ["binary_crossentropy", "loss", "p"]
    assert logs["binary_crossentropy"] == pytest.approx(
        -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(), rel=1e-4)
    assert logs["p"] == pytest.approx((p - y * np.log(p + 1e-7)).mean(), rel=1e-4)
    with pytest.raises(NotImplementedError, match="ignore_class is not supported, got "
                                                  "ignore_class=0"):
        keras.metrics.SparseCategoricalCrossentropy(ignore_class=0)
    with pytest.raises(TypeError, match=r"MeanSquaredError: unexpected argument\(s\) "
                                        r"\['from_logits'\]"):
        keras.metrics.MeanSquaredError(from_logits=True)


# -- MultiHeadAttention(attention_axes=...) ----------------------------------------------------

def _softmax(scores, axes):
    shifted = np.exp(scores - scores.max(axis=axes, keepdims=True))
    return shifted / shifted.sum(axis=axes, keepdims=True)


# einsum strings for inputs (a, b, c, features): projections add heads h and size k/v
REFERENCE = {(1,): ("axbhk,aybhk->abhxy", (-1,), "abhxy,aybhv->axbhv"),
             (2,): ("abxhk,abyhk->abhxy", (-1,), "abhxy,abyhv->abxhv"),
             (1, 2): ("axyhk,azwhk->ahxyzw", (-2, -1), "ahxyzw,azwhv->axyhv")}


@pytest.mark.parametrize("axes", [None, (1,), (2,), -2, (1, 2)])
def test_multi_head_attention_over_chosen_axes(rng, axes):
    query = rng.standard_normal((2, 3, 4, 5))
    value = rng.standard_normal((2, 3, 4, 6))
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2, attention_axes=axes)
    mha(gd.tensor(query.astype(np.float32)), gd.tensor(value.astype(np.float32)))
    w = [rng.standard_normal(t.shape) * 0.5 for t in mha.get_weights()]
    mha.set_weights([t.astype(np.float32) for t in w])
    key_axes = {None: (1, 2), -2: (2,)}.get(axes, axes)
    scores_eq, softmax_axes, combine_eq = REFERENCE[tuple(key_axes)]
    q = np.einsum("abcd,dhk->abchk", query, w[0]) + w[1]
    k = np.einsum("abcd,dhk->abchk", value, w[2]) + w[3]
    v = np.einsum("abcd,dhk->abchk", value, w[4]) + w[5]
    weights = _softmax(np.einsum(scores_eq, q / math.sqrt(3), k), softmax_axes)
    expected = np.einsum("abchv,hvo->abco", np.einsum(combine_eq, weights, v), w[6]) + w[7]
    got, got_weights = mha(gd.tensor(query.astype(np.float32)),
                           gd.tensor(value.astype(np.float32)), return_attention_scores=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_weights.numpy(), weights, rtol=1e-4, atol=1e-6)


def test_multi_head_attention_axes_with_a_mask_and_in_a_model(rng):
    query = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    keep = rng.uniform(size=(2, 4, 4)) > 0.4                # (batch, query steps, key steps)
    keep[0, 1] = False                                      # a query that sees no key
    mha = layers.MultiHeadAttention(num_heads=1, key_dim=2, attention_axes=(2,))
    _, weights = mha(gd.tensor(query), gd.tensor(query), attention_mask=gd.tensor(keep),
                     return_attention_scores=True)
    weights = weights.numpy()                               # (a, b, h, x, y)
    assert weights.shape == (2, 3, 1, 4, 4)
    hidden = np.broadcast_to(~keep[:, None, None], weights.shape)
    assert (weights[hidden] == 0).all()                     # Keras's Softmax zeroes them
    sums = weights.sum(-1)
    np.testing.assert_allclose(sums[0, :, :, 1], 0.0)
    np.testing.assert_allclose(np.delete(sums, 1, axis=3)[1:], 1.0, rtol=1e-5)
    inputs = keras.Input(shape=(3, 4, 5))
    outputs = layers.MultiHeadAttention(2, 3, attention_axes=(1,))(inputs, inputs)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 3, 4, 5)
    assert model.predict(query, verbose=0).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"attention_axes must be None, an int or a non-empty "
                                         r"list/tuple of ints, got 'rows'"):
        layers.MultiHeadAttention(1, 2, attention_axes="rows")
    bad = layers.MultiHeadAttention(1, 2, attention_axes=(3,))
    with pytest.raises(ValueError, match=r"attention_axes=\(3,\) must name distinct axes "
                                         r"between the batch and the features of inputs of "
                                         r"rank 4"):
        bad(gd.tensor(query), gd.tensor(query))


# -- summary ---------------------------------------------------------------------------------

def test_summary_gives_keras_totals_and_memory_sizes():
    inputs = keras.Input(shape=(8, 8, 3))
    hidden = layers.BatchNormalization()(layers.Conv2D(4, 3, activation="relu")(inputs))
    hidden = layers.Flatten()(layers.MaxPooling2D()(hidden))
    model = keras.Model(inputs, layers.Dense(5, activation="softmax")(hidden))
    lines = []
    model.summary(print_fn=lines.append)
    # Conv2D 3*3*3*4 + 4 = 112, BatchNormalization 4 * 4 = 16 (8 moving statistics), Dense
    # (3*3*4) * 5 + 5 = 185: 313 float32 weights = 1252 bytes, 305 trainable = 1220 bytes
    assert [line for line in lines if "params:" in line] == [
        "Total params: 313 (1.22 KB)", "Trainable params: 305 (1.19 KB)",
        "Non-trainable params: 8 (32.00 B)"]


def test_warnings_are_not_errors_here():
    # steps_per_epoch's "ran out of data" is a warning, as in Keras, never an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = keras.Sequential([keras.Input(shape=(1,)), layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        x = np.ones((8, 1), np.float32)
        model.fit(x, x, batch_size=4, epochs=2, steps_per_epoch=2, verbose=0)
