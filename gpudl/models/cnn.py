"""Convolutional classifiers: LeNet and a small ResNet built from ``BasicBlock``s."""

import numbers

from .. import nn
from .mlp import check_positive


class LeNet(nn.Module):
    """A LeNet-style CNN: two (conv + ReLU + 2x2 max-pool) blocks, then three dense layers.

    The convolutions are 5x5 for images of 16 pixels or more (LeNet-5 on 28x28 MNIST) and 3x3
    for smaller ones (8x8 digits), padded to keep the size; each pool halves it.

    Args:
        num_classes: number of output scores (logits; use CrossEntropyLoss).
        in_channels: image channels.
        image_size: height = width of the input, a multiple of 4.
        channels: output channels of the two convolutions.
        hidden: sizes of the two hidden dense layers.
        dropout: dropout before each dense layer.

    Shape: (N, in_channels, image_size, image_size) -> (N, num_classes).
    """

    def __init__(self, num_classes=10, in_channels=1, image_size=28, channels=(6, 16),
                 hidden=(120, 84), dropout=0.0):
        super().__init__()
        check_positive("LeNet", num_classes=num_classes, in_channels=in_channels,
                       image_size=image_size)
        if image_size % 4:
            raise ValueError(f"LeNet: image_size must be a multiple of 4 (two 2x2 poolings), "
                             f"got {image_size}")
        k = 5 if image_size >= 16 else 3
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * side * side, hidden[0]), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
            nn.Linear(hidden[1], num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))                  # (N, num_classes)


class BasicBlock(nn.Module):
    """ResNet's basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The convolutions are 3x3; the first one has ``stride``. When the stride or the channel count
    changes, the shortcut is a strided 1x1 convolution + BatchNorm (``downsample``), else x.

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        check_positive("BasicBlock", in_channels=in_channels, out_channels=out_channels,
                       stride=stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return (out + shortcut).relu()


class SmallResNet(nn.Module):
    """A small ResNet: 3x3 stem, stages of ``BasicBlock``s (each stage after the first halves
    the size and widens), global average pooling, a Linear classifier.

    Args:
        num_classes: number of output scores (logits).
        in_channels: image channels.
        widths: channels of each stage.
        blocks_per_stage: BasicBlocks in each stage.

    Shape: (N, in_channels, H, W) -> (N, num_classes), any H, W.
    """

    def __init__(self, num_classes=10, in_channels=1, widths=(16, 32, 64), blocks_per_stage=1):
        super().__init__()
        if isinstance(widths, numbers.Integral) or not widths:
            raise ValueError(f"SmallResNet: widths must be a non-empty sequence, got {widths!r}")
        check_positive("SmallResNet", num_classes=num_classes, in_channels=in_channels,
                       blocks_per_stage=blocks_per_stage,
                       **{f"widths[{i}]": w for i, w in enumerate(widths)})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, previous = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(previous, width, stride))
                previous = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x):
        h = self.pool(self.layers(self.stem(x)))                   # (N, C, 1, 1)
        return self.fc(h.flatten(1))
