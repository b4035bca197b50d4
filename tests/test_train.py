"""gpudl.train: a real training run on digits, validation, callbacks, schedulers, plotting."""

import sys

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as nn
import gpudl.optim as optim
from gpudl import train
from gpudl.data import DataLoader, TensorDataset, load_digits
from gpudl.train import Callback, EarlyStopping, ModelCheckpoint, fit, plot_history

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    """A fixed random 1400 / 397 train / held-out split of the 1797 digits."""
    x, y = load_digits(as_tensors=False)
    order = np.random.default_rng(0).permutation(len(y))
    train_idx, test_idx = order[:1400], order[1400:]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _loaders(digits, batch_size=32):
    (xt, yt), (xv, yv) = digits
    return (DataLoader(TensorDataset(xt, yt), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(xv, yv), batch_size=128))


def test_mlp_on_digits_reaches_95_percent_held_out(digits):
    """10 epochs of Adam (under a second here): held-out accuracy >= 0.95 (0.98 typical)."""
    model = _mlp()
    loader, val = _loaders(digits)
    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2), loader,
                  epochs=10, val_loader=val, metrics=["accuracy", "f1"], verbose=False)
    assert set(history) == {"loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1"}
    assert history.epoch == list(range(10)) and all(len(v) == 10 for v in history.values())
    assert history["loss"][-1] < history["loss"][0] / 5
    x_test, y_test = digits[1]
    model.eval()
    with gd.no_grad():
        predicted = model(gd.tensor(x_test)).numpy().argmax(1)
    held_out = np.mean(predicted == y_test)                 # computed independently of fit
    assert held_out >= 0.95
    assert history["val_accuracy"][-1] == pytest.approx(held_out)


class Recorder(nn.Module):
    """Wraps a model; records the training flag and grad mode seen by each forward call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, gd.is_grad_enabled()))
        return self.inner(x)


def test_train_and_eval_modes_and_no_grad_in_validation(digits):
    model = Recorder(_mlp())
    loader, val = _loaders(digits, batch_size=200)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), loader, epochs=2,
        val_loader=val, verbose=False)
    per_epoch = len(loader) + len(val)
    assert len(model.seen) == 2 * per_epoch
    for epoch in range(2):
        seen = model.seen[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert seen[:len(loader)] == [(True, True)] * len(loader)
        assert seen[len(loader):] == [(False, False)] * len(val)


@pytest.mark.parametrize("verbose, reads_per_epoch", [(False, 1), (True, 25 // 10 + 1)])
def test_loss_is_read_from_the_device_only_every_few_batches(monkeypatch, verbose,
                                                            reads_per_epoch):
    reads = []
    real = train._Running.logs
    monkeypatch.setattr(train._Running, "logs", lambda self, where: reads.append(1) or real(self, where))
    x = np.random.default_rng(0).standard_normal((25, 3)).astype(np.float32)
    model = nn.Linear(3, 1)
    fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.01),
        DataLoader(TensorDataset(x, x[:, :1]), batch_size=1), epochs=2, verbose=verbose)
    assert len(reads) == 2 * reads_per_epoch


def test_running_loss_is_the_sample_weighted_mean(rng):
    x = rng.standard_normal((10, 2)).astype(np.float32)
    y = rng.standard_normal((10, 1)).astype(np.float32)
    model = nn.Linear(2, 1)
    logs = train.evaluate(model, nn.MSELoss(), DataLoader(TensorDataset(x, y), batch_size=4))
    with gd.no_grad():
        expected = np.mean((model(gd.tensor(x)).numpy() - y) ** 2)  # batches of 4, 4, 2
    assert logs["loss"] == pytest.approx(expected, rel=1e-6)


def _fake_logs(callback, values, key="val_loss"):
    """Feed a sequence of logged values; returns the epoch at which it asked to stop."""
    callback.on_train_begin(None)
    for epoch, v in enumerate(values):
        if callback.on_epoch_end(epoch, {key: v}, None):
            return epoch
    return None


def test_early_stopping_counts_patience_like_keras():
    assert _fake_logs(EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.91, 0.8]) == 3
    assert _fake_logs(EarlyStopping(patience=0), [1.0, 0.9, 0.95]) == 2
    assert _fake_logs(EarlyStopping(patience=1), [1.0, 0.9, 0.8, 0.7]) is None
    assert _fake_logs(EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.92]) == 1
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)       # auto mode: max
    assert _fake_logs(stopper, [0.5, 0.7, 0.6], "val_accuracy") == 2
    assert stopper.best_epoch == 1 and stopper.stopped_epoch == 2


def test_early_stopping_restores_the_best_weights(digits):
    """Validation labels are shuffled, so val_loss soon rises while training goes on."""
    (xt, yt), (xv, yv) = digits
    wrong = np.random.default_rng(1).permutation(yv)
    loader = DataLoader(TensorDataset(xt, yt), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(xv, wrong), batch_size=128)
    model = _mlp()
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    history = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2), loader,
                  epochs=30, val_loader=val, callbacks=[stopper], verbose=False)
    assert stopper.stopped_epoch is not None and stopper.stopped_epoch < 29
    assert len(history["loss"]) == stopper.stopped_epoch + 1 == stopper.best_epoch + 3
    best = min(history["val_loss"])
    assert history["val_loss"][stopper.best_epoch] == best
    assert best < history["val_loss"][-1]
    final = train.evaluate(model, nn.CrossEntropyLoss(), val)["loss"]
    assert final == pytest.approx(best, rel=1e-6)           # the model holds the best weights


def test_model_checkpoint_saves_on_improvement(tmp_path, rng):
    x = rng.standard_normal((32, 3)).astype(np.float32)
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(x, x @ np.ones((3, 1), np.float32)), batch_size=8)
    every = ModelCheckpoint(tmp_path / "every-{epoch:02d}.safetensors", monitor="loss")
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss", save_best_only=True)
    history = fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.05), loader, epochs=3,
                  callbacks=[every, best], verbose=False)
    assert [p.rsplit("/", 1)[-1] for p in every.saved] == \
        ["every-01.safetensors", "every-02.safetensors", "every-03.safetensors"]
    assert len(best.saved) == 3 and history["loss"] == sorted(history["loss"], reverse=True)
    saved = gd.load(tmp_path / "every-03.safetensors")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(saved[key].numpy(), value.numpy())


def test_callback_errors_name_the_problem(rng):
    x = rng.standard_normal((4, 2)).astype(np.float32)
    model = nn.Linear(2, 2)
    loader = DataLoader(TensorDataset(x, x), batch_size=2)
    run = lambda **kw: fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1),  # noqa
                           loader, verbose=False, **kw)
    with pytest.raises(ValueError, match=r"monitor 'val_loss' is not among .*\['loss'\]"):
        run(epochs=1, callbacks=[EarlyStopping()])
    with pytest.raises(TypeError, match="Callback objects"):
        run(epochs=1, callbacks=[print])
    with pytest.raises(ValueError, match="epochs must be a non-negative int"):
        run(epochs=-1)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        run(epochs=1, metrics=["auc"])
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping(mode="lower")
    with pytest.raises(TypeError, match="one-element Tensor"):
        fit(model, lambda out, y: (out - y) ** 2, optim.SGD(model.parameters(), lr=0.1), loader,
            epochs=1, verbose=False)
    with pytest.raises(TypeError, match=r"tuple \(inputs..., target\)"):
        fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), [gd.ones(2)], epochs=1,
            verbose=False)


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs, model):
        return epoch + 1 >= self.epochs


def test_schedulers_step_per_epoch_and_lr_is_logged(rng):
    x = rng.standard_normal((8, 2)).astype(np.float32)
    loader = DataLoader(TensorDataset(x, x), batch_size=4)
    model = nn.Linear(2, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, nn.MSELoss(), opt, loader, epochs=5, verbose=False,
                  scheduler=optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
                  callbacks=[StopAfter(4)])
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.05, 0.025])
    opt = optim.SGD(model.parameters(), lr=0.1)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, threshold=10.0,
                                                   threshold_mode="abs")
    history = fit(model, nn.MSELoss(), opt, loader, epochs=3, val_loader=loader, verbose=False,
                  scheduler=plateau)
    assert plateau.best == history["val_loss"][0]           # it was given val_loss
    assert history["lr"] == pytest.approx([0.1, 0.01, 0.001])


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = {"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6], "accuracy": [0.5, 0.8, 0.9]}
    path = plot_history(history, tmp_path / "history.png")
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history({}, tmp_path / "empty.png")


def test_plot_history_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="plot_history needs matplotlib"):
        plot_history({"loss": [1.0]}, tmp_path / "x.png")


# --- reliability (issue 11): empty data, NaN guard, modes restored, monitors checked early ---

def _tiny(rng, n=8):
    x = rng.standard_normal((n, 2)).astype(np.float32)
    return DataLoader(TensorDataset(x, x[:, :1]), batch_size=4)


def _empty():
    return DataLoader(TensorDataset(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32)),
                      batch_size=4)


def test_empty_data_is_an_error_not_loss_zero(rng):
    model = nn.Linear(2, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="evaluate: the data yielded no batch"):
        train.evaluate(model, nn.MSELoss(), _empty())
    with pytest.raises(ValueError, match="fit: the training data yielded no batch"):
        fit(model, nn.MSELoss(), opt, _empty(), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="fit: the validation data yielded no batch"):
        fit(model, nn.MSELoss(), opt, _tiny(rng), epochs=1, val_loader=_empty(), verbose=False)
    for verbose in (False, True):                  # the progress bar's reads too
        with pytest.raises(ValueError, match="yielded no batch"):
            fit(model, nn.MSELoss(), opt, [], epochs=1, verbose=verbose)


class NaNAfter:
    """An MSE loss that turns NaN from call ``k`` on; counts its calls."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, out, y):
        self.calls += 1
        loss = ((out - y) ** 2).mean()
        return loss * float("nan") if self.calls > self.k else loss


def test_fit_stops_with_a_warning_when_the_loss_becomes_nan(rng):
    model = nn.Linear(2, 1)
    loss_fn = NaNAfter(3)                            # 2 batches per epoch: NaN in epoch 2
    with pytest.warns(RuntimeWarning, match=r"training loss is nan in epoch 2; training stopped"):
        history = fit(model, loss_fn, optim.SGD(model.parameters(), lr=0.1), _tiny(rng),
                      epochs=10, verbose=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"][0])
    assert np.isnan(history["loss"][1]) and loss_fn.calls == 4


def test_terminate_on_nan_stops_at_the_first_bad_batch(rng):
    model = nn.Linear(2, 1)
    loss_fn = NaNAfter(2)
    stopper = train.TerminateOnNaN()
    with pytest.warns(RuntimeWarning, match="TerminateOnNaN: batch 2: invalid loss nan"):
        history = fit(model, loss_fn, optim.SGD(model.parameters(), lr=0.1),
                      _tiny(rng, n=40), epochs=10, callbacks=[stopper], verbose=False)
    assert loss_fn.calls == 3 and stopper.stopped_batch == 2     # not the 10 batches
    assert len(history["loss"]) == 1 and np.isnan(history["loss"][0])


def test_model_checkpoint_never_saves_non_finite_weights(tmp_path, rng):
    model = nn.Linear(2, 1)
    path = tmp_path / "last.safetensors"
    fit(model, nn.MSELoss(), optim.SGD(model.parameters(), lr=0.1), _tiny(rng), epochs=1,
        callbacks=[ModelCheckpoint(path, monitor="loss")], verbose=False)
    good = path.read_bytes()
    checkpoint = ModelCheckpoint(path, monitor="loss")
    with pytest.warns(RuntimeWarning):               # the NaN loss, and the skipped save
        fit(model, lambda out, y: ((out - y) ** 2).mean() * float("nan"),
            optim.SGD(model.parameters(), lr=0.1), _tiny(rng), epochs=3,
            callbacks=[checkpoint], verbose=False)
    assert not np.isfinite(model.weight.numpy()).all()
    assert checkpoint.saved == [] and path.read_bytes() == good


def test_a_monitor_fit_will_not_log_fails_before_training(tmp_path, rng):
    model = Recorder(nn.Linear(2, 1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    for callback, message in [
            (ModelCheckpoint(tmp_path / "m.safetensors", monitor="val_accuracy",
                             save_best_only=True), "monitor 'val_accuracy' is not among"),
            (ModelCheckpoint(tmp_path / "m-{val_f1:.2f}.safetensors"), "path field 'val_f1'"),
            (EarlyStopping(monitor="val_loss"), "monitor 'val_loss'")]:
        with pytest.raises(ValueError, match=message):
            fit(model, nn.MSELoss(), opt, _tiny(rng), epochs=2, callbacks=[callback],
                verbose=False)
    assert model.seen == []                          # refused before the first batch
    fit(model, nn.MSELoss(), opt, _tiny(rng), epochs=1, val_loader=_tiny(rng), verbose=False,
        callbacks=[ModelCheckpoint(tmp_path / "m-{epoch}-{val_loss:.2f}.safetensors")])


class Failing(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluate_restores_the_mode_after_an_exception(rng, start_training):
    model = Failing().train(start_training)
    with pytest.raises(RuntimeError, match="boom"):
        train.evaluate(model, nn.MSELoss(), _tiny(rng))
    assert model.training is start_training


def test_single_column_accuracy_thresholds_at_one_half(rng):
    """Scores (N, 1) beside labels (N,): the arg-max of one column would always be class 0."""
    scores = rng.random((50, 1)).astype(np.float32)
    labels = (scores[:, 0] + 0.2 * rng.standard_normal(50) > 0.5).astype(np.int64)
    model = nn.Identity()
    logs = train.evaluate(model, lambda out, y: out.sum() * 0, DataLoader(
        TensorDataset(scores, labels), batch_size=16), metrics=["accuracy"])
    expected = np.mean((scores[:, 0] > 0.5) == labels)
    assert expected > 0.7 and logs["accuracy"] == pytest.approx(expected)
