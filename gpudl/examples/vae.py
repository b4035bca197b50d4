"""VAE: a variational autoencoder on 8x8 digits; rebuilds held-out digits and draws new ones."""

import numpy as np
from tqdm.auto import trange

import gpudl as gd
from gpudl import optim
from gpudl.data import DataLoader, TensorDataset, load_digits
from gpudl.models import VAE

from ._common import output_path, parse_args, save_image_grid

N_TEST = 297            # the last 297 of the 1797 digits are held out


def train(model, images, epochs, lr, progress):
    """The training loop written out: forward, the VAE's loss, backward, step.

    Returns the mean loss (negative ELBO per image) of each epoch.
    """
    optimizer = optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True)
    losses = []
    for _ in (bar := trange(epochs, desc="vae", unit="epoch", disable=not progress)):
        total = 0.0
        for (x,) in loader:
            optimizer.zero_grad()
            loss, _, kl = model.loss(x, *model(x))               # (total, reconstruction, kl)
            loss.backward()
            optimizer.step()
            total = total + loss.detach() * x.shape[0]         # read once per epoch, below
        losses.append(total.item() / len(images))
        bar.set_postfix(loss=f"{losses[-1]:.2f}", kl=f"{kl.item():.2f}", refresh=False)
    return losses


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train on 1500 digits; returns a dict with the held-out negative ELBO, its reconstruction
    and KL parts, the same loss for "every pixel is as bright as in the mean training digit"
    (no code at all), the training loss of the first and last epoch, and the two PNGs' paths."""
    gd.manual_seed(seed)
    images, _ = load_digits(as_tensors=False)                      # (1797, 1, 8, 8) in [0, 1]
    train_images, test = gd.tensor(images[:-N_TEST]), gd.tensor(images[-N_TEST:])

    model = VAE((1, 8, 8), hidden=(256, 128), latent_dim=4)
    losses = train(model, train_images, epochs or (10 if fast else 150), 2e-3, progress)

    model.eval()                                                   # z = mu: no sampling noise
    with gd.no_grad():
        logits, mu, logvar = model(test)
        loss, reconstruction, kl = model.loss(test, logits, mu, logvar)
        rebuilt = logits.sigmoid().numpy()
    samples = model.sample(40).numpy()                             # decoded z ~ N(0, I)
    truth = images[-N_TEST:]
    mean = images[:-N_TEST].mean(axis=0).clip(1e-6, 1 - 1e-6)      # some pixels are always 0
    mean_image_loss = -(truth * np.log(mean) + (1 - truth) * np.log(1 - mean)).sum((1, 2, 3))
    reconstructions_png = save_image_grid([truth[:12, 0], rebuilt[:12, 0]],
                                          output_path(out, "vae_reconstructions.png"),
                                          titles=["held-out", "rebuilt"])
    samples_png = save_image_grid(samples[:, 0].reshape(4, 10, 8, 8),
                                  output_path(out, "vae_samples.png"))
    return {"test_loss": loss.item(), "test_reconstruction": reconstruction.item(),
            "test_kl": kl.item(), "mean_image_loss": float(mean_image_loss.mean()),
            "first_loss": losses[0], "final_loss": losses[-1],
            "reconstructions_png": reconstructions_png, "samples_png": samples_png}


def main(argv=None):
    args = parse_args("vae", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"held-out negative ELBO {r['test_loss']:.2f} nats per image = reconstruction "
          f"{r['test_reconstruction']:.2f} + KL {r['test_kl']:.2f} (mean image: "
          f"{r['mean_image_loss']:.2f})")
    print(f"reconstructions: {r['reconstructions_png']}\nsamples: {r['samples_png']}")
    return 0
