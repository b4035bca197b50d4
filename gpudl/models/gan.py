"""DCGAN (Radford et al., 2016) generator and discriminator for small square images."""

from .. import nn
from .mlp import check_positive


def _check_image_size(where, image_size):
    check_positive(where, image_size=image_size)
    if image_size % 4:
        raise ValueError(f"{where}: image_size must be a multiple of 4 (two stride-2 layers), "
                         f"got {image_size}")


class DCGANGenerator(nn.Module):
    """Latent vector -> image: Linear + BatchNorm + ReLU to a (2C, s/4, s/4) map, then two
    stride-2 4x4 ``ConvTranspose2d`` layers doubling the size (BatchNorm + ReLU between),
    ``tanh`` out (images in [-1, 1]; ``out_activation='sigmoid'`` for [0, 1]).

    Args:
        latent_dim: size of the input noise vector.
        image_size: output height = width (a multiple of 4: 8 for sklearn digits, 16, 28...).
        channels: output image channels.
        base_channels: C, the width of the last hidden map (the first has 2C).
        out_activation: 'tanh' or 'sigmoid'.

    Shape: (N, latent_dim) -> (N, channels, image_size, image_size).
    """

    def __init__(self, latent_dim, image_size=8, channels=1, base_channels=64,
                 out_activation="tanh"):
        super().__init__()
        check_positive("DCGANGenerator", latent_dim=latent_dim, channels=channels,
                       base_channels=base_channels)
        _check_image_size("DCGANGenerator", image_size)
        if out_activation not in ("tanh", "sigmoid"):
            raise ValueError(f"DCGANGenerator: out_activation must be 'tanh' or 'sigmoid', got "
                             f"{out_activation!r}")
        self.latent_dim = latent_dim
        side, c = image_size // 4, base_channels
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * side * side, bias=False),
            nn.BatchNorm1d(2 * c * side * side), nn.ReLU(),
            nn.Unflatten(1, (2 * c, side, side)))                  # (N, 2C, s/4, s/4)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c), nn.ReLU(),                           # (N, C, s/2, s/2)
            nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1),
            nn.Tanh() if out_activation == "tanh" else nn.Sigmoid())   # (N, channels, s, s)

    def forward(self, z):
        return self.upsample(self.project(z))


class DCGANDiscriminator(nn.Module):
    """Image -> real/fake score: two stride-2 4x4 ``Conv2d`` layers with LeakyReLU(0.2)
    (BatchNorm on the second, none on the input layer, as in DCGAN), then a Linear layer.

    Returns logits (train with ``BCEWithLogitsLoss``, the stable form), or probabilities with
    ``sigmoid=True``.

    Shape: (N, channels, image_size, image_size) -> (N, 1).
    """

    def __init__(self, image_size=8, channels=1, base_channels=64, sigmoid=False):
        super().__init__()
        check_positive("DCGANDiscriminator", channels=channels, base_channels=base_channels)
        _check_image_size("DCGANDiscriminator", image_size)
        side, c = image_size // 4, base_channels
        self.features = nn.Sequential(
            nn.Conv2d(channels, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2))              # (N, 2C, s/4, s/4)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * side * side, 1))
        self.sigmoid = sigmoid

    def forward(self, x):
        logits = self.classifier(self.features(x))
        return logits.sigmoid() if self.sigmoid else logits
