"""Keras's CategoryEncoding (integer category ids as one-hot, multi-hot or count vectors) and
RandomFlip (image augmentation in training)."""

import numbers

from ...autograd import no_grad
from .. import ops
from .. import random as keras_random
from ..engine import Layer

OUTPUT_MODES = ("one_hot", "multi_hot", "count")


class CategoryEncoding(Layer):
    """Integer ids in ``[0, num_tokens)`` -> float vectors of ``num_tokens``: ``one_hot``
    (one id per sample; a trailing axis of size 1 is dropped), ``multi_hot`` (1 for each id in
    the last axis) or ``count`` (how often each occurs; ``count_weights=`` sums weights
    instead). Ids outside the range raise ValueError (one host read per call)."""

    accepts_integers = True

    def __init__(self, num_tokens=None, output_mode="multi_hot", sparse=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, numbers.Integral) or \
                num_tokens < 1:
            raise ValueError(f"CategoryEncoding: num_tokens must be a positive int, got "
                             f"{num_tokens!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"CategoryEncoding: output_mode must be one of {OUTPUT_MODES}, "
                             f"got {output_mode!r}")
        if sparse:
            raise NotImplementedError("CategoryEncoding: sparse=True is not supported")
        self.num_tokens, self.output_mode = int(num_tokens), output_mode

    def call(self, inputs, count_weights=None):
        if count_weights is not None and self.output_mode != "count":
            raise ValueError(f"{self.name}: count_weights is only used with output_mode="
                             f"'count', not {self.output_mode!r}")
        ids = inputs.long()
        with no_grad():
            low, high = int(ids.min().item()), int(ids.max().item())
        if ids.numel() and (low < 0 or high >= self.num_tokens):
            raise ValueError(f"{self.name}: ids must be in [0, {self.num_tokens}), got values "
                             f"in [{low}, {high}]")
        ids = ids.reshape(1) if ids.ndim == 0 else ids
        if self.output_mode == "one_hot":
            if ids.ndim > 1 and ids.shape[-1] == 1:
                ids = ids.reshape(ids.shape[:-1])
            return ops.one_hot(ids, self.num_tokens)
        ids = ids.reshape(-1, 1) if ids.ndim == 1 else ids
        encoded = ops.one_hot(ids, self.num_tokens)                  # (..., ids, tokens)
        if self.output_mode == "multi_hot":
            return encoded.amax(dim=-2)
        if count_weights is not None:
            weights = ops.convert_to_tensor(count_weights).astype(encoded.dtype)
            encoded = encoded * weights.reshape(tuple(ids.shape) + (1,))
        return encoded.sum(dim=-2)


FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


class RandomFlip(Layer):
    """In training, flip each image (N, H, W, C) left-right ('horizontal'), upside down
    ('vertical') or both (one draw per image for both, as Keras 3) with probability 1/2;
    unchanged in inference. A single image (H, W, C) is one draw."""

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in FLIP_MODES:
            raise ValueError(f"RandomFlip: mode must be one of {FLIP_MODES}, got {mode!r}")
        self.mode, self.data_format = mode, data_format or "channels_last"
        self.seed_generator = keras_random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        training = self.training if training is None else training
        if not training:
            return inputs
        images = inputs[None] if inputs.ndim == 3 else inputs
        flips = keras_random.uniform((images.shape[0], 1, 1, 1), seed=self.seed_generator) <= 0.5
        width, height = (-2, -3) if self.data_format == "channels_last" else (-1, -2)
        for axis, mode in ((width, "horizontal"), (height, "vertical")):
            if mode in self.mode:
                images = ops.where(flips, images.flip((axis,)), images)
        return images[0] if inputs.ndim == 3 else images
