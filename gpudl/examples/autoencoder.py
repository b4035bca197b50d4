"""Autoencoder: an MLP squeezes 8x8 digits through an 8-number code and rebuilds them."""

import numpy as np

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader, TensorDataset, load_digits
from gpudl.models import Autoencoder
from gpudl.train import fit

from ._common import EpochBar, output_path, parse_args, save_image_grid

N_TEST = 297            # the last 297 of the 1797 digits are held out


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train on 1500 digits (input = target), rebuild the held-out ones.

    Returns a dict with the held-out mean squared error of the reconstructions, that of the
    mean training image (the best a model that ignores its input can do), and the PNG's path.
    """
    gd.manual_seed(seed)
    images, _ = load_digits(as_tensors=False)                      # (1797, 1, 8, 8) in [0, 1]
    train, test = gd.tensor(images[:-N_TEST]), gd.tensor(images[-N_TEST:])

    model = Autoencoder((1, 8, 8), hidden=(128,), latent_dim=8)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    epochs = epochs or (8 if fast else 60)
    history = fit(model, nn.BCEWithLogitsLoss(), optimizer,
                  DataLoader(TensorDataset(train, train), batch_size=64, shuffle=True), epochs,
                  verbose=False, callbacks=[EpochBar(epochs, "autoencoder", not progress)])

    model.eval()
    with gd.no_grad():
        rebuilt = model(test).sigmoid().numpy()
    truth = images[-N_TEST:]
    png = save_image_grid([truth[:12, 0], rebuilt[:12, 0]],
                          output_path(out, "autoencoder_reconstructions.png"),
                          titles=["held-out", "rebuilt"])
    return {"test_mse": float(np.mean((rebuilt - truth) ** 2)),
            "mean_image_mse": float(np.mean((images[:-N_TEST].mean(axis=0) - truth) ** 2)),
            "first_loss": history["loss"][0], "final_loss": history["loss"][-1], "png": png}


def main(argv=None):
    args = parse_args("autoencoder", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"held-out reconstruction MSE {r['test_mse']:.4f} (mean image: "
          f"{r['mean_image_mse']:.4f})")
    print(f"reconstructions: {r['png']}")
    return 0
