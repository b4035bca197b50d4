"""gpudl.keras saving: .keras files (config + safetensors weights + optimizer state), JSON
configs, get_config/from_config, clone_model, custom objects, and the refusals (HDF5, unsavable
functions, bad names)."""

import json
import zipfile

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import layers, saving


def _data(rng, n=32):
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")


def _classifier():
    return keras.Sequential([keras.Input((6,)),
                             layers.Dense(8, activation="relu",
                                          kernel_regularizer=keras.regularizers.l2(1e-3)),
                             layers.BatchNormalization(),
                             layers.Dense(3, activation="softmax")])


def _continue(model, x, y):
    return model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0).history["loss"]


def test_sequential_round_trip_keeps_predictions_and_optimizer_state(rng, tmp_path):
    x, y = _data(rng)
    model = _classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert set(archive.namelist()) == {"config.json", "metadata.json",
                                           "model.weights.safetensors"}
    loaded = keras.models.load_model(path)
    assert [type(la).__name__ for la in loaded.layers] == \
        [type(la).__name__ for la in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.iterations == model.optimizer.iterations == 8
    # without the saved moments the next steps differ: the comparison below can fail
    fresh = keras.models.load_model(path, compile=False)
    fresh.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    expected = _continue(model, x, y)
    np.testing.assert_allclose(_continue(loaded, x, y), expected, rtol=1e-6)
    assert not np.allclose(_continue(fresh, x, y), expected, rtol=1e-4)


def test_functional_round_trip_with_shared_layers_and_several_outputs(rng, tmp_path):
    a, b = keras.Input((5,), name="a"), keras.Input((4,), name="b")
    shared = layers.Dense(4, activation="tanh")
    left, right = shared(layers.Dense(4)(a)), shared(b)
    merged = layers.concatenate([left, right, left * right - 0.5])
    seq = layers.LSTM(3, return_sequences=True)(layers.Reshape((3, 4))(merged))
    outputs = [layers.Dense(1, name="score")(layers.GlobalAveragePooling1D()(seq)),
               layers.Dense(2, activation="softmax", name="label")(merged)]
    model = keras.Model([a, b], outputs)
    model.compile(optimizer="sgd", loss=["mse", "sparse_categorical_crossentropy"])
    xa, xb = rng.standard_normal((8, 5)), rng.standard_normal((8, 4))
    path = tmp_path / "functional.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    for got, expected in zip(loaded.predict([xa, xb], verbose=0),
                             model.predict([xa, xb], verbose=0)):
        np.testing.assert_array_equal(got, expected)
    assert loaded.output_names == ["score", "label"]
    assert [la.name for la in loaded.layers] == [la.name for la in model.layers]


def test_new_layers_metrics_and_optimizers_survive_a_round_trip(rng, tmp_path):
    x = rng.standard_normal((6, 5, 4)).astype("float32")
    x[0, 3:] = 0
    y = rng.integers(0, 2, (6, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5, 4)), layers.Masking(),
                              layers.RNN(layers.GRUCell(3), return_sequences=True),
                              layers.GroupNormalization(groups=3), layers.PReLU(),
                              layers.GlobalMaxPool1D(), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=0.01),
                  loss=keras.losses.BinaryFocalCrossentropy(gamma=1.0),
                  metrics=[keras.metrics.AUC(num_thresholds=50)])
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "new.keras")
    loaded = keras.models.load_model(tmp_path / "new.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    expected = model.fit(x, y, epochs=1, shuffle=False, verbose=0).history
    got = loaded.fit(x, y, epochs=1, shuffle=False, verbose=0).history
    assert set(got) == set(expected) == {"loss", "auc"}
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)


def test_to_json_and_clone_model_build_new_weights(rng):
    x, _ = _data(rng, 4)
    model = _classifier()
    text = model.to_json()
    assert json.loads(text)["class_name"] == "Sequential"
    for rebuilt in (keras.models.model_from_json(text), keras.models.clone_model(model)):
        assert rebuilt.count_params() == model.count_params()
        assert not np.array_equal(rebuilt.get_weights()[0], model.get_weights()[0])
        rebuilt.set_weights(model.get_weights())
        np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0))
    doubled = keras.models.clone_model(
        model, clone_function=lambda layer: type(layer).from_config(layer.get_config()))
    assert doubled.count_params() == model.count_params()


LAYERS = [lambda: layers.Dense(3, activation="tanh", use_bias=False),
          lambda: layers.Conv2D(4, 3, strides=2, padding="same",
                                kernel_initializer=keras.initializers.HeNormal()),
          lambda: layers.Conv2DTranspose(2, 3, strides=2),
          lambda: layers.LSTM(5, return_sequences=True, dropout=0.1),
          lambda: layers.Bidirectional(layers.GRU(3)),
          lambda: layers.Embedding(10, 4, mask_zero=True),
          lambda: layers.Dropout(0.3, noise_shape=(None, 1, 4)),
          lambda: layers.MultiHeadAttention(2, 4),
          lambda: layers.Normalization(mean=[1.0, 2.0], variance=[1.0, 4.0]),
          lambda: layers.PReLU(shared_axes=[1]), lambda: layers.GroupNormalization(groups=2),
          lambda: layers.RNN(layers.LSTMCell(3), return_sequences=True),
          lambda: layers.DepthwiseConv2D(3, depth_multiplier=2),
          lambda: layers.Dense(2, activation=keras.activations.hard_tanh,
                               activity_regularizer=keras.regularizers.l1(0.1)),
          lambda: layers.Cropping2D(((1, 0), 2)), lambda: layers.CategoryEncoding(4)]


@pytest.mark.parametrize("make", LAYERS, ids=range(len(LAYERS)))
def test_layer_configs_rebuild_the_layer(make):
    layer = make()
    saved = saving.serialize(layer)
    assert saving.serialize(type(layer).from_config(layer.get_config())) == saved
    again = saving.deserialize(json.loads(json.dumps(saved)))         # JSON values only
    assert type(again) is type(layer) and saving.serialize(again) == saved


def test_custom_objects_registered_or_given(rng, tmp_path):
    class Scale(keras.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, inputs):
            return inputs * self.factor

    def double(t):
        return t * 2

    model = keras.Sequential([keras.Input((3,)), Scale(3.0), layers.Lambda(double)])
    with pytest.raises(TypeError, match="double"):
        model.to_json()                                    # an unregistered function
    keras.saving.register_keras_serializable("tests")(double)
    path = tmp_path / "custom.keras"
    model.save(path)
    with pytest.raises(ValueError, match="unknown class 'Scale'"):
        keras.models.load_model(path)
    x = rng.standard_normal((2, 3)).astype("float32")
    loaded = keras.models.load_model(path, custom_objects={"Scale": Scale})
    np.testing.assert_allclose(loaded.predict(x, verbose=0), x * 6, rtol=1e-6)
    with keras.saving.custom_object_scope({"Scale": Scale}):
        assert keras.models.load_model(path).layers[0].factor == 3.0
    lam = keras.Sequential([keras.Input((3,)), layers.Lambda(lambda t: t + 1)])
    with pytest.raises(TypeError, match="<lambda>"):
        lam.save(tmp_path / "lambda.keras")
    assert not (tmp_path / "lambda.keras").exists()


def test_bad_names_and_foreign_files_are_refused(tmp_path):
    model = _classifier()
    with pytest.raises(ValueError, match="h5py"):
        model.save(tmp_path / "model.h5")
    with pytest.raises(ValueError, match="must end in '.keras'"):
        model.save(tmp_path / "model")
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(tmp_path / "m.keras", overwrite=False)
    hdf5 = tmp_path / "keras.weights.h5"
    hdf5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="HDF5"):
        model.load_weights(hdf5)
    with pytest.raises(ValueError, match="HDF5"):
        keras.models.load_model(hdf5)


def test_save_weights_with_a_keras_3_name_writes_safetensors(rng, tmp_path):
    x, _ = _data(rng, 4)
    model, other = _classifier(), _classifier()
    path = tmp_path / "ckpt.weights.h5"
    model.save_weights(path)
    assert gd.load(path)                                          # a safetensors file
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_subclassed_model_with_get_config_saves_and_loads(rng, tmp_path):
    @keras.saving.register_keras_serializable("tests")
    class TwoLayers(keras.Model):
        def __init__(self, hidden=5, **kwargs):
            super().__init__(**kwargs)
            self.hidden = hidden
            self.first, self.second = layers.Dense(hidden, activation="relu"), layers.Dense(2)

        def call(self, inputs):
            return self.second(self.first(inputs))

        def get_config(self):
            return {"hidden": self.hidden, "name": self.name}

    x = rng.standard_normal((4, 3)).astype("float32")
    model = TwoLayers(hidden=6)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x[:, :2], epochs=1, verbose=0)
    model.save(tmp_path / "sub.keras")
    loaded = keras.models.load_model(tmp_path / "sub.keras")
    assert isinstance(loaded, TwoLayers) and loaded.hidden == 6
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(NotImplementedError, match="get_config"):
        keras.Model.get_config(keras.Model())
