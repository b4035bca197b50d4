"""Keras's image preprocessing and augmentation layers over (N, H, W, C) or single (H, W, C)
images (channels_last, the default; ``data_format='channels_first'`` takes (N, C, H, W)).

Deterministic: Resizing, CenterCrop. Random, applied in training only (a fresh layer is in
training mode, as Keras 3's image layers are when called bare; ``training=False``,
``predict`` and ``evaluate`` give the images unchanged): RandomCrop, RandomRotation,
RandomZoom, RandomTranslation, RandomContrast, RandomBrightness. Each random layer draws one
transformation per image (RandomCrop: one offset per batch, as Keras) from its
``SeedGenerator``, so an int ``seed`` repeats the sequence. The numbers are gpudl's generator's,
not Keras's.

Geometric layers map each output pixel to an input position with Keras's affine matrices
(pixel centres at integers, rotation and zoom about ``((W - 1) / 2, (H - 1) / 2)``) and sample
with ``F.grid_sample``; Keras's ``fill_mode`` 'reflect' (d c b a | a b c d), 'nearest' and
'constant' (``fill_value``) are grid_sample's 'reflection', 'border' and zeros shifted by the
fill value; 'wrap' is refused.
"""

import math
import numbers

from ... import creation, functions
from ...nn import functional as F
from .. import random as keras_random
from ..engine import Layer
from .convolutional import _from_nchw, _to_nchw
from .core import check_positive_int

INTERPOLATIONS = ("bilinear", "nearest")
FILL_MODES = {"reflect": "reflection", "nearest": "border", "constant": "zeros"}


def _check_choice(where, name, value, choices):
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _factor_range(where, name, factor, low, high):
    """Keras's factor argument: a number f gives (max(-|f|, low), |f|), a pair its sorted
    values; every value within [low, high]."""
    if isinstance(factor, (tuple, list)) and len(factor) == 2 and \
            all(isinstance(f, numbers.Real) for f in factor):
        lower, upper = sorted(float(f) for f in factor)
    elif isinstance(factor, numbers.Real) and not isinstance(factor, bool) and \
            low <= factor <= high:
        lower, upper = max(-abs(float(factor)), low), abs(float(factor))
    else:
        raise ValueError(f"{where}: {name} must be a number or a pair of numbers in "
                         f"[{low}, {high}], got {factor!r}")
    if lower < low or upper > high:
        raise ValueError(f"{where}: {name} must lie in [{low}, {high}], got {factor!r}")
    return lower, upper


def _as_batch(layer, inputs):
    """(channels-first float batch, a function giving the result the inputs' layout)."""
    if inputs.ndim not in (3, 4):
        raise ValueError(f"{layer.name} ({type(layer).__name__}): expected images with 3 or 4 "
                         f"dims, got shape {tuple(inputs.shape)}")
    images = inputs if inputs.is_floating_point() else inputs.float()
    single = inputs.ndim == 3
    images = _to_nchw(images[None] if single else images, layer.data_format)

    def restore(batch):
        batch = _from_nchw(batch, layer.data_format)
        return batch[0] if single else batch
    return images, restore


def _training(layer, training):
    return layer.training if training is None else training


def aspect_crop_box(height, width, target_height, target_width):
    """Keras's centred crop of an (height, width) image to the target's aspect ratio:
    (top, left, crop_height, crop_width)."""
    crop_height = max(min(height, int(float(width * target_height) / target_width)), 1)
    crop_width = max(min(width, int(float(height * target_width) / target_height)), 1)
    return (int(float(height - crop_height) / 2), int(float(width - crop_width) / 2),
            crop_height, crop_width)


def resize(images, height, width, interpolation="bilinear"):
    """Resize an NCHW batch as Keras's torch backend: bilinear with half-pixel centres, or
    'nearest' taking input pixel ``floor((i + 0.5) * n / size)`` (torch's 'nearest-exact')."""
    if interpolation == "bilinear":
        return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    for axis, size in ((2, height), (3, width)):
        n = images.shape[axis]
        index = (creation.arange(size, device=images.device).double() + 0.5) * (n / size)
        images = images.index_select(axis, index.floor().long().clamp(max=n - 1))
    return images


def _check_size(where, height, width):
    check_positive_int(where, height=height, width=width)
    return int(height), int(width)


class Resizing(Layer):
    """Resize images to (height, width): ``interpolation`` 'bilinear' or 'nearest';
    ``crop_to_aspect_ratio`` first crops the centre to the target's aspect ratio,
    ``pad_to_aspect_ratio`` pads both sides with ``fill_value`` instead."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False,
                 pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0,
                 antialias=False, data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = "Resizing"
        self.height, self.width = _check_size(where, height, width)
        if interpolation in ("bicubic", "lanczos3", "lanczos5", "area", "gaussian",
                             "lanczos", "mitchellcubic") or antialias:
            raise NotImplementedError(f"{where}: interpolation={interpolation!r}, "
                                      f"antialias={antialias!r} is not supported (bilinear "
                                      "or nearest, antialias=False)")
        self.interpolation = _check_choice(where, "interpolation", interpolation,
                                           INTERPOLATIONS)
        if crop_to_aspect_ratio and pad_to_aspect_ratio:
            raise ValueError(f"{where}: only one of crop_to_aspect_ratio and "
                             "pad_to_aspect_ratio can be True")
        _check_choice(where, "fill_mode", fill_mode, ("constant",))
        self.crop_to_aspect_ratio, self.pad_to_aspect_ratio = crop_to_aspect_ratio, \
            pad_to_aspect_ratio
        self.fill_value, self.antialias = float(fill_value), antialias
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        images, restore = _as_batch(self, inputs)
        height, width = images.shape[2:]
        if self.crop_to_aspect_ratio:
            top, left, crop_height, crop_width = aspect_crop_box(height, width, self.height,
                                                                 self.width)
            images = images[:, :, top:top + crop_height, left:left + crop_width]
        elif self.pad_to_aspect_ratio:
            # Keras pads each side by half of the difference, rounded down
            top = int(float(max(height, int(float(width * self.height) / self.width)) -
                            height) / 2)
            left = int(float(max(width, int(float(height * self.width) / self.height)) -
                             width) / 2)
            images = F.pad(images, (left, left, top, top), value=self.fill_value)
        return restore(resize(images, self.height, self.width, self.interpolation))


class CenterCrop(Layer):
    """The central (height, width) window; an image smaller than that along either axis is
    centre-cropped to the target's aspect ratio and resized (bilinear), as Keras."""

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = _check_size("CenterCrop", height, width)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        images, restore = _as_batch(self, inputs)
        height, width = images.shape[2:]
        if height >= self.height and width >= self.width:
            top, left = (height - self.height) // 2, (width - self.width) // 2
            return restore(images[:, :, top:top + self.height, left:left + self.width])
        top, left, crop_height, crop_width = aspect_crop_box(height, width, self.height,
                                                             self.width)
        images = images[:, :, top:top + crop_height, left:left + crop_width]
        return restore(resize(images, self.height, self.width))


class _RandomImageLayer(Layer):
    """Random in training, the identity otherwise; ``seed`` starts a SeedGenerator."""

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.seed, self.data_format = seed, data_format or "channels_last"
        self.seed_generator = keras_random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not _training(self, training):
            return inputs
        images, restore = _as_batch(self, inputs)
        return restore(self.augment(images))

    def draw(self, n, lower, upper, like):
        """n values from U[lower, upper) on ``like``'s device, scaled in its dtype (so a
        fixed range, lower == upper, gives exactly that value)."""
        unit = keras_random.uniform((n,), seed=self.seed_generator)
        return unit.to(like.device).to(like.dtype) * (upper - lower) + lower


class RandomCrop(_RandomImageLayer):
    """In training, a (height, width) window at one random offset for the whole batch; an
    input not larger than that along both axes is centre-cropped to the target's aspect ratio
    and resized instead. Unchanged in inference (what Keras 3.15 does, its docstring says it
    centre-crops)."""

    def __init__(self, height, width, seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.height, self.width = _check_size("RandomCrop", height, width)

    def augment(self, images):
        height, width = images.shape[2:]
        if height > self.height and width > self.width:
            offsets = keras_random.uniform((2,), seed=self.seed_generator).numpy()
            top = int(offsets[0] * (height - self.height + 1))
            left = int(offsets[1] * (width - self.width + 1))
        else:
            top, left = aspect_crop_box(height, width, self.height, self.width)[:2]
        images = images[:, :, top:top + self.height, left:left + self.width]
        if tuple(images.shape[2:]) != (self.height, self.width):
            images = resize(images, self.height, self.width)
        return images


class _AffineLayer(_RandomImageLayer):
    """An image layer sampling each output pixel at an affine map of its position."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0,
                 data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        where = type(self).__name__
        if fill_mode == "wrap":
            raise NotImplementedError(f"{where}: fill_mode='wrap' is not supported")
        self.fill_mode = _check_choice(where, "fill_mode", fill_mode, FILL_MODES)
        self.interpolation = _check_choice(where, "interpolation", interpolation,
                                           INTERPOLATIONS)
        self.fill_value = float(fill_value)

    def augment(self, images):
        n, _, height, width = images.shape
        (a0, a1, a2), (b0, b1, b2) = self.matrix(n, height, width, images)
        rows = creation.arange(height, device=images.device).to(images.dtype)[:, None]
        cols = creation.arange(width, device=images.device).to(images.dtype)[None, :]

        def per_image(v):
            return v.reshape(n, 1, 1)
        x = per_image(a0) * cols + per_image(a1) * rows + per_image(a2)     # (n, H, W)
        y = per_image(b0) * cols + per_image(b1) * rows + per_image(b2)
        # pixel centre p -> grid_sample's (2p + 1) / size - 1 (align_corners=False)
        grid = functions.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
        shift = self.fill_value if self.fill_mode == "constant" else 0.0
        sampled = F.grid_sample(images - shift, grid, mode=self.interpolation,
                                padding_mode=FILL_MODES[self.fill_mode], align_corners=False)
        return sampled + shift


def _about_centre(a0, a1, b0, b1, height, width):
    """The offsets that keep ``((W - 1) / 2, (H - 1) / 2)`` fixed under [[a0, a1], [b0, b1]]."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return (a0, a1, cx - cx * a0 - cy * a1), (b0, b1, cy - cx * b0 - cy * b1)


class RandomRotation(_AffineLayer):
    """In training, rotate each image by an angle drawn from ``factor`` * 360 degrees
    (``factor`` f: [-f, f]; a pair: that range) about its centre."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.factor = _factor_range("RandomRotation", "factor", factor, -1.0, 1.0)

    def matrix(self, n, height, width, like):
        angle = self.draw(n, self.factor[0] * 2 * math.pi, self.factor[1] * 2 * math.pi, like)
        cos, sin = angle.cos(), angle.sin()
        return _about_centre(cos, -sin, sin, cos, height, width)


class RandomZoom(_AffineLayer):
    """In training, scale each image's sampling grid by ``1 + z``, z drawn from
    ``height_factor`` (positive: zoom out, negative: zoom in) and ``width_factor`` (None: the
    same draw, keeping the aspect ratio), about the image centre."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect",
                 interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.height_factor = _factor_range("RandomZoom", "height_factor", height_factor,
                                           -1.0, 1.0)
        self.width_factor = None if width_factor is None else _factor_range(
            "RandomZoom", "width_factor", width_factor, -1.0, 1.0)
        if min(self.height_factor + (self.width_factor or (0, 0))) <= -1:
            raise ValueError(f"RandomZoom: factors must be > -1, got {height_factor!r}, "
                             f"{width_factor!r}")

    def matrix(self, n, height, width, like):
        height_zoom = self.draw(n, 1 + self.height_factor[0], 1 + self.height_factor[1], like)
        width_zoom = height_zoom if self.width_factor is None else self.draw(
            n, 1 + self.width_factor[0], 1 + self.width_factor[1], like)
        zero = height_zoom * 0
        return _about_centre(width_zoom, zero, zero, height_zoom, height, width)


class RandomTranslation(_AffineLayer):
    """In training, shift each image by fractions of its height and width drawn from
    ``height_factor`` and ``width_factor`` (positive: down / right)."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect",
                 interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, data_format, **kwargs)
        self.height_factor = _factor_range("RandomTranslation", "height_factor",
                                           height_factor, -1.0, 1.0)
        self.width_factor = _factor_range("RandomTranslation", "width_factor", width_factor,
                                          -1.0, 1.0)

    def matrix(self, n, height, width, like):
        down = self.draw(n, *self.height_factor, like) * height
        right = self.draw(n, *self.width_factor, like) * width
        one, zero = down * 0 + 1, down * 0
        return (one, zero, -right), (zero, one, -down)


def _value_range(where, value_range):
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2 or \
            not value_range[0] < value_range[1]:
        raise ValueError(f"{where}: value_range must be (low, high) with low < high, got "
                         f"{value_range!r}")
    return float(value_range[0]), float(value_range[1])


class RandomContrast(_RandomImageLayer):
    """In training, ``(x - mean) * c + mean`` per image and channel (mean over H and W),
    ``c`` drawn from ``[1 - lower, 1 + upper]`` where ``factor`` in [0, 1] gives
    (lower, upper) as Keras (a number f: (0, f)); clipped to ``value_range``."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = _factor_range("RandomContrast", "factor", factor, 0.0, 1.0)
        self.value_range = _value_range("RandomContrast", value_range)

    def augment(self, images):
        contrast = self.draw(images.shape[0], 1 - self.factor[0], 1 + self.factor[1],
                             images).reshape(-1, 1, 1, 1)
        mean = images.mean(dim=(2, 3), keepdim=True)
        return ((images - mean) * contrast + mean).clamp(*self.value_range)


class RandomBrightness(_RandomImageLayer):
    """In training, add ``d * (high - low)`` to each image, ``d`` drawn from ``factor``
    (a number f: [-f, f]; a pair: that range, within [-1, 1]); clipped to ``value_range``."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = _factor_range("RandomBrightness", "factor", factor, -1.0, 1.0)
        self.value_range = _value_range("RandomBrightness", value_range)

    def augment(self, images):
        low, high = self.value_range
        delta = self.draw(images.shape[0], *self.factor, images).reshape(-1, 1, 1, 1)
        return (images + delta * (high - low)).clamp(low, high)
