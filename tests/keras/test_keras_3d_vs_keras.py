"""gpudl.keras's 3-D layers against Keras 3 itself (torch backend) with the same weights;
skipped without Keras (test_keras_3d.py checks the same layers against torch and NumPy)."""

import numpy as np
import pytest

from keras_oracle import import_keras

real_keras = import_keras()
import gpudl as gd  # noqa: E402
from gpudl.keras import layers  # noqa: E402

CASES = [
    ("Conv3D", (4, (3, 2, 3)), {"strides": (2, 1, 2), "padding": "same"}),
    ("Conv3D", (4, 2), {"padding": "valid", "dilation_rate": (2, 1, 1), "groups": 2,
                        "activation": "relu"}),
    ("Conv3D", (3, 2), {"padding": "same", "data_format": "channels_first"}),
    ("Conv3DTranspose", (3, (3, 2, 2)), {"strides": (2, 2, 1), "padding": "same"}),
    ("Conv3DTranspose", (3, 3), {"strides": 2, "padding": "valid"}),
    ("Conv3DTranspose", (3, (3, 3, 2)), {"strides": 2, "padding": "same",
                                         "output_padding": (1, 0, 1)}),
    ("MaxPooling3D", ((3, 2, 2),), {"strides": (2, 1, 2), "padding": "same"}),
    # symmetric 'same' padding only: where it is uneven Keras's torch backend pads average
    # pooling by replicating edge values, while gpudl (as TensorFlow) averages the real values
    ("AveragePooling3D", ((3, 2, 1),), {"strides": 2, "padding": "same"}),
    ("AveragePooling3D", (2,), {}),
    ("UpSampling3D", ((2, 1, 3),), {}),
    ("ZeroPadding3D", (((1, 0), 2, (0, 3)),), {}),
    ("Cropping3D", (((1, 0), 1, (0, 2)),), {}),
    ("GlobalMaxPooling3D", (), {"keepdims": True}),
    ("GlobalAveragePooling3D", (), {}),
]


@pytest.mark.parametrize("name, args, kwargs", CASES)
def test_3d_layer_matches_keras(name, args, kwargs):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 4, 4)).astype(np.float32)
    theirs_layer = getattr(real_keras.layers, name)(*args, **kwargs)
    theirs = np.asarray(theirs_layer(x).detach().cpu())
    ours_layer = getattr(layers, name)(*args, **kwargs)
    ours_layer(gd.tensor(x))
    weights = [np.asarray(w) for w in theirs_layer.get_weights()]
    assert [w.shape for w in weights] == [tuple(w.shape) for w in ours_layer.get_weights()]
    ours_layer.set_weights(weights)
    np.testing.assert_allclose(ours_layer(gd.tensor(x)).numpy(), theirs, rtol=2e-5, atol=2e-5)
