"""DCGAN: a generator learns to draw 8x8 digits by fooling a convolutional discriminator."""

import numpy as np
from tqdm.auto import trange

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader, TensorDataset, load_digits
from gpudl.models import DCGANDiscriminator, DCGANGenerator

from ._common import output_path, parse_args, save_image_grid

LATENT = 16


def train_step(generator, discriminator, opt_g, opt_d, real, noise):
    """One step of each: the discriminator tells ``real`` from the generator's fakes of
    ``noise`` (detached: G is not updated there), then the generator makes the discriminator
    call its fakes real. Returns the two losses (device values: nothing is read back)."""
    bce = nn.functional.binary_cross_entropy_with_logits
    n = real.shape[0]
    ones, zeros = gd.ones(n, 1, device=real.device), gd.zeros(n, 1, device=real.device)
    fake = generator(noise)
    d_loss = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
    _descend(opt_d, d_loss)
    g_loss = bce(discriminator(fake), ones)
    _descend(opt_g, g_loss)
    return d_loss, g_loss


def _descend(optimizer, loss):
    """One step of ``optimizer`` down the gradient of ``loss`` (its parameters' alone)."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def train(generator, discriminator, images, epochs, progress, lr=1e-3):
    """Alternate a discriminator step (real -> 1, fake -> 0) and a generator step (fake -> 1).

    Returns per-epoch means of the two losses: {'d_loss': [...], 'g_loss': [...]}.
    """
    opt_d = optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    loader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True, drop_last=True)
    history = {"d_loss": [], "g_loss": []}
    for _ in (bar := trange(epochs, desc="dcgan", unit="epoch", disable=not progress)):
        d_total = g_total = 0.0
        for (real,) in loader:
            noise = gd.randn(real.shape[0], LATENT, device=real.device)
            d_loss, g_loss = train_step(generator, discriminator, opt_g, opt_d, real, noise)
            # summed on the device, read once per epoch (.item() would sync a GPU every step)
            d_total, g_total = d_total + d_loss.detach(), g_total + g_loss.detach()
        history["d_loss"].append(d_total.item() / len(loader))
        history["g_loss"].append(g_total.item() / len(loader))
        bar.set_postfix(d_loss=f"{history['d_loss'][-1]:.3f}",
                        g_loss=f"{history['g_loss'][-1]:.3f}", refresh=False)
    return history


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train on all 1797 digits scaled to [-1, 1], then judge 500 generated digits.

    Returns the loss history, ``two_sample_accuracy`` (how well a logistic regression tells the
    fakes from 500 real digits, cross-validated: 0.5 = indistinguishable, 1.0 = obviously
    fake; uniform noise scores 1.0), ``digits_drawn`` (how many of the 10 digits a classifier
    trained on real digits reads in at least 3% of the fakes: 10 = no mode collapse) and the
    path of the PNG grid of 40 fakes; also the squared error between the mean fake and the mean
    real digit, before and after training.
    """
    gd.manual_seed(seed)
    images, labels = load_digits(as_tensors=False)                 # (1797, 1, 8, 8) in [0, 1]
    generator = DCGANGenerator(LATENT, image_size=8, base_channels=32)
    discriminator = DCGANDiscriminator(image_size=8, base_channels=32)
    z = gd.randn(500, LATENT)
    untrained = generate(generator, z)
    history = train(generator, discriminator, gd.tensor(images * 2 - 1),
                    epochs or (3 if fast else 60), progress)
    fakes = generate(generator, z)
    png = save_image_grid(fakes[:40, 0].reshape(4, 10, 8, 8),
                          output_path(out, "dcgan_samples.png"))
    mean_image = images.mean(axis=0)
    return {**history, **judge(images, labels, fakes, seed), "png": png,
            "mean_image_mse_untrained": float(np.mean((untrained.mean(0) - mean_image) ** 2)),
            "mean_image_mse": float(np.mean((fakes.mean(0) - mean_image) ** 2))}


def generate(generator, z):
    """Images in [0, 1] from codes ``z``, in eval mode (BatchNorm uses its running stats)."""
    generator.eval()
    with gd.no_grad():
        images = (generator(z).numpy() + 1) / 2
    generator.train()
    return images


def judge(images, labels, fakes, seed):
    """Two-sample accuracy and digit coverage of ``fakes`` (see ``run``), with scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    real = images.reshape(len(images), -1)                          # (1797, 64)
    fakes = fakes.reshape(len(fakes), -1)
    chosen = np.random.default_rng(seed).choice(len(real), len(fakes), replace=False)
    both = np.concatenate([real[chosen], fakes])
    is_fake = np.repeat([0, 1], len(fakes))
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), both, is_fake, cv=5).mean()
    digits = LogisticRegression(max_iter=2000).fit(real, labels).predict(fakes)
    shares = np.bincount(digits, minlength=10) / len(fakes)
    return {"two_sample_accuracy": float(accuracy), "digits_drawn": int((shares >= 0.03).sum())}


def main(argv=None):
    args = parse_args("dcgan", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"final losses: discriminator {r['d_loss'][-1]:.3f}, generator {r['g_loss'][-1]:.3f}; "
          f"mean-image error {r['mean_image_mse_untrained']:.4f} -> {r['mean_image_mse']:.4f}")
    print(f"fakes told from real digits with accuracy {r['two_sample_accuracy']:.2f} (0.5: "
          f"indistinguishable, noise: 1.0); digits drawn: {r['digits_drawn']} of 10")
    print(f"generated digits: {r['png']}")
    return 0
