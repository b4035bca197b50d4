"""Sunspots: a stacked LSTM forecasts next year's sunspot number; beats persistence on 1969-2008."""

import numpy as np

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader, TensorDataset, load_sunspots, sliding_windows
from gpudl.models import LSTMRegressor
from gpudl.train import EarlyStopping, fit

from ._common import EpochBar, output_path, parse_args

WINDOW = 12           # years of history fed to the LSTM (a bit more than one solar cycle)
TEST_YEARS = 40       # the last 40 years (1969-2008) are held out for the final test
VAL_YEARS = 30        # the 30 years before them pick the epoch to keep (early stopping)


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train on windows ending before 1939, stop early on 1939-1968, forecast 1969-2008.

    Returns a dict with the held-out MSE of the LSTM and of the persistence forecast (next year
    = this year), both in squared sunspot numbers, the best epoch, the training loss of the
    first and last epoch, and the path of the forecast plot.
    """
    gd.manual_seed(seed)
    years, values = load_sunspots(as_tensors=False)
    train_part = values[:-TEST_YEARS - VAL_YEARS]
    mean, std = train_part.mean(), train_part.std()
    inputs, targets = sliding_windows((values - mean) / std, WINDOW)     # (N, 12, 1), (N, 1)
    inputs, targets = gd.tensor(inputs), gd.tensor(targets)
    val_start = len(inputs) - TEST_YEARS - VAL_YEARS
    test_start = len(inputs) - TEST_YEARS
    train = TensorDataset(inputs[:val_start], targets[:val_start])
    val = TensorDataset(inputs[val_start:test_start], targets[val_start:test_start])

    model = LSTMRegressor(input_size=1, hidden_size=32, num_layers=2, output_size=1)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    epochs = epochs or (30 if fast else 200)
    stopper = EarlyStopping(monitor="val_loss", patience=25, restore_best_weights=True)
    history = fit(model, nn.MSELoss(), optimizer, DataLoader(train, batch_size=32, shuffle=True),
                  epochs, val_loader=DataLoader(val, batch_size=VAL_YEARS), verbose=False,
                  callbacks=[stopper, EpochBar(epochs, "sunspots", not progress)])

    model.eval()
    with gd.no_grad():
        forecast = model(inputs[test_start:]).numpy()[:, 0] * std + mean
    truth = values[-TEST_YEARS:]
    persistence = values[-TEST_YEARS - 1:-1]
    result = {"test_mse": float(np.mean((forecast - truth) ** 2)),
              "persistence_mse": float(np.mean((persistence - truth) ** 2)),
              "best_epoch": stopper.best_epoch + 1,
              "first_loss": history["loss"][0], "final_loss": history["loss"][-1]}
    result["png"] = _plot(years[-TEST_YEARS:], truth, forecast, persistence,
                          output_path(out, "sunspots_forecast.png"))
    return result


def _plot(years, truth, forecast, persistence, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(years, truth, "k-o", markersize=3, label="observed")
    ax.plot(years, forecast, "-", label="LSTM one-step forecast")
    ax.plot(years, persistence, ":", label="persistence (last year)")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def main(argv=None):
    args = parse_args("sunspots", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"kept the weights of epoch {r['best_epoch']} (best on 1939-1968)")
    print(f"held-out MSE {TEST_YEARS} years: LSTM {r['test_mse']:.1f}, persistence "
          f"{r['persistence_mse']:.1f} (ratio {r['test_mse'] / r['persistence_mse']:.2f})")
    print(f"forecast plot: {r['png']}")
    return 0 if r["test_mse"] < r["persistence_mse"] else 1
