"""Autoencoders on flattened inputs: a plain ``Autoencoder`` and a variational ``VAE``."""

import math
import numbers

from .. import nn
from ..autograd import no_grad
from ..creation import randn, randn_like
from ..nn import functional as F
from .mlp import MLP, check_positive


def _as_shape(input_shape, where):
    shape = (input_shape,) if isinstance(input_shape, numbers.Integral) else tuple(input_shape)
    check_positive(where, **{f"input_shape[{i}]": s for i, s in enumerate(shape)})
    return shape


class Autoencoder(nn.Module):
    """An MLP encoder to a small code and an MLP decoder back (mirror-image hidden layers).

    The decoder returns logits: train with ``BCEWithLogitsLoss`` on inputs in [0, 1] (and use
    ``sigmoid`` of the output as the reconstruction) or with ``MSELoss`` on other data.

    Args:
        input_shape: shape of one sample, e.g. ``(1, 8, 8)``, or its number of features.
        hidden: encoder hidden sizes (the decoder uses them reversed).
        latent_dim: size of the code.
        activation: as for ``MLP``.

    Shape: (N, *input_shape) -> (N, *input_shape); ``encode``: -> (N, latent_dim).
    """

    _outputs_per_latent = 1          # encoder outputs per code value (2 for a VAE: mu, logvar)

    def __init__(self, input_shape, hidden=(128,), latent_dim=16, activation="relu"):
        super().__init__()
        self.input_shape = _as_shape(input_shape, "Autoencoder")
        features = math.prod(self.input_shape)
        hidden = (hidden,) if isinstance(hidden, numbers.Integral) else tuple(hidden)
        self.encoder = MLP(features, hidden, self._outputs_per_latent * latent_dim, activation)
        self.decoder = MLP(latent_dim, hidden[::-1], features, activation)

    def encode(self, x):
        return self.encoder(x.flatten(1))                          # (N, latent_dim)

    def decode(self, z):
        return self.decoder(z).reshape(z.shape[0], *self.input_shape)   # (N, *input_shape)

    def forward(self, x):
        return self.decode(self.encode(x))


class VAE(Autoencoder):
    """A variational autoencoder (Kingma and Welling, 2014) with MLP encoder and decoder.

    The encoder outputs the mean and log-variance of a diagonal Gaussian ``q(z|x)``; a code is
    drawn with the reparameterisation trick ``z = mu + exp(logvar / 2) * eps``, eps ~ N(0, I),
    so gradients flow through the sampling (in eval mode ``z = mu``). The decoder returns
    Bernoulli logits for each input value (inputs in [0, 1]).

    ``forward(x)`` -> ``(recon_logits, mu, logvar)``; ``loss(x, recon_logits, mu, logvar)`` ->
    ``(total, reconstruction, kl)``, each summed over a sample's values and averaged over the
    batch (the negative evidence lower bound when ``beta`` is 1); ``sample(n)`` -> decoded
    probabilities for ``n`` codes drawn from the prior.

    Args: as ``Autoencoder``; ``beta`` weighs the KL term in ``loss``.
    """

    _outputs_per_latent = 2

    def __init__(self, input_shape, hidden=(256,), latent_dim=8, activation="relu", beta=1.0):
        super().__init__(input_shape, hidden, latent_dim, activation)
        self.latent_dim, self.beta = latent_dim, beta

    def encode(self, x):
        """(mu, logvar), each (N, latent_dim)."""
        return self.encoder(x.flatten(1)).chunk(2, dim=1)

    def reparameterize(self, mu, logvar):
        if not self.training:
            return mu
        return mu + (logvar * 0.5).exp() * randn_like(mu)

    def forward(self, x):
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def loss(self, x, recon_logits, mu, logvar):
        """(total, reconstruction, kl): per-sample sums averaged over the batch."""
        n = x.shape[0]
        reconstruction = F.binary_cross_entropy_with_logits(recon_logits, x,
                                                            reduction="sum") / n
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum() / n
        return reconstruction + self.beta * kl, reconstruction, kl

    def sample(self, n, device=None):
        """``n`` new samples: sigmoid(decode(z)) for z ~ N(0, I), shape (n, *input_shape)."""
        with no_grad():
            z = randn(n, self.latent_dim, device=device)
            return self.decode(z).sigmoid()
