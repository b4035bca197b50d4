"""gpudl.keras's image preprocessing layers against Keras 3 itself (torch backend): the
deterministic layers, the random ones at fixed factors (lower == upper, so no draw matters) in
training, and every one in inference. Skipped without Keras (test_keras_image_preprocessing.py
checks the same layers against torch, NumPy and SciPy)."""

import numpy as np
import pytest

from keras_oracle import import_keras

real_keras = import_keras()
import gpudl as gd  # noqa: E402
from gpudl.keras import layers  # noqa: E402

CASES = [
    ("Resizing", (5, 7), {}), ("Resizing", (14, 20), {}),
    ("Resizing", (5, 7), {"interpolation": "nearest"}),
    ("Resizing", (16, 9), {"interpolation": "nearest"}),
    ("Resizing", (6, 6), {"crop_to_aspect_ratio": True}),
    ("Resizing", (6, 6), {"pad_to_aspect_ratio": True, "fill_value": 3.0}),
    ("Resizing", (5, 7), {"data_format": "channels_first"}),
    ("CenterCrop", (5, 7), {}), ("CenterCrop", (11, 7), {}), ("CenterCrop", (4, 14), {}),
    ("RandomRotation", ((0.1, 0.1),), {}),
    ("RandomRotation", ((-0.3, -0.3),), {"fill_mode": "constant", "fill_value": 7.0}),
    ("RandomRotation", ((0.2, 0.2),), {"fill_mode": "nearest", "interpolation": "nearest"}),
    ("RandomZoom", ((0.3, 0.3),), {}),
    ("RandomZoom", ((-0.4, -0.4), (0.2, 0.2)), {"fill_mode": "constant"}),
    ("RandomTranslation", ((0.2, 0.2), (-0.3, -0.3)), {}),
    ("RandomTranslation", ((-0.25, -0.25), (0.1, 0.1)), {"fill_mode": "nearest"}),
    ("RandomBrightness", ((0.2, 0.2),), {}),
    ("RandomBrightness", ((-0.1, -0.1),), {"value_range": (0, 1)}),
    ("RandomContrast", (0.0,), {}),
    ("RandomCrop", (12, 6), {}),              # larger than the input: aspect crop + resize
]


@pytest.mark.parametrize("name, args, kwargs", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_image_layer_matches_keras(name, args, kwargs, training):
    x = np.random.default_rng(0).uniform(0, 255, (2, 9, 12, 3)).astype(np.float32)
    if kwargs.get("data_format") == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    theirs = np.asarray(getattr(real_keras.layers, name)(*args, **kwargs)(x, training=training))
    ours = getattr(layers, name)(*args, **kwargs)(gd.tensor(x), training=training).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)    # values up to 255
