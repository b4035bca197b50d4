"""gpudl.keras models: summary() parameter counts equal Keras's (computed from Keras's formulas
and written as numbers), Sequential/functional/subclassed models, and Keras's training API."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import Input, callbacks, layers, losses, optimizers
from gpudl.keras.models import Model, Sequential


def _summary(model):
    lines = []
    model.summary(print_fn=lines.append)
    return "\n".join(lines)


def mnist_cnn():
    return Sequential([Input(shape=(28, 28, 1)),
                       layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
                       layers.MaxPooling2D(pool_size=(2, 2)),
                       layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
                       layers.MaxPooling2D(pool_size=(2, 2)),
                       layers.Flatten(), layers.Dropout(0.5),
                       layers.Dense(10, activation="softmax")])


def stacked_lstm():
    model = Sequential()
    model.add(layers.LSTM(32, return_sequences=True, input_shape=(8, 16)))
    model.add(layers.LSTM(32, return_sequences=True))
    model.add(layers.LSTM(32))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def conv_autoencoder():
    input_img = Input(shape=(28, 28, 1))
    x = layers.Conv2D(16, (3, 3), activation="relu", padding="same")(input_img)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    encoded = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    x = layers.UpSampling2D((2, 2))(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = layers.UpSampling2D((2, 2))(x)
    x = layers.Conv2D(16, (3, 3), activation="relu")(x)
    x = layers.UpSampling2D((2, 2))(x)
    decoded = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return Model(input_img, decoded), encoded


def dense_autoencoder():
    input_img = Input(shape=(784,))
    encoded = layers.Dense(32, activation="relu")(input_img)
    decoded = layers.Dense(784, activation="sigmoid")(encoded)
    return Model(input_img, decoded)


def dcgan_generator():
    model = Sequential()
    model.add(layers.Dense(7 * 7 * 256, use_bias=False, input_shape=(100,)))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Reshape((7, 7, 256)))
    model.add(layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same",
                                     use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False,
                                     activation="tanh"))
    return model


def dcgan_discriminator():
    model = Sequential()
    model.add(layers.Conv2D(64, (5, 5), strides=(2, 2), padding="same",
                            input_shape=[28, 28, 1]))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))
    model.add(layers.Conv2D(128, (5, 5), strides=(2, 2), padding="same"))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))
    model.add(layers.Flatten())
    model.add(layers.Dense(1))
    return model


def seq2seq_attention(enc_tokens=71, dec_tokens=93, latent=256):
    encoder_inputs = Input(shape=(None, enc_tokens))
    encoder_outputs, state_h, state_c = layers.LSTM(latent, return_sequences=True,
                                                    return_state=True)(encoder_inputs)
    decoder_inputs = Input(shape=(None, dec_tokens))
    decoder_outputs, _, _ = layers.LSTM(latent, return_sequences=True, return_state=True)(
        decoder_inputs, initial_state=[state_h, state_c])
    context = layers.Attention()([decoder_outputs, encoder_outputs])
    merged = layers.Concatenate()([decoder_outputs, context])
    outputs = layers.Dense(dec_tokens, activation="softmax")(merged)
    return Model([encoder_inputs, decoder_inputs], outputs)


@pytest.mark.parametrize("build, total, trainable, last_shape", [
    # Conv 3*3*1*32+32=320, 3*3*32*64+64=18,496, Dense 1600*10+10=16,010
    (mnist_cnn, 34_826, 34_826, "(None, 10)"),
    # LSTM 4*(16*32+32*32+32)=6,272, then 4*(32*32+32*32+32)=8,320 twice, Dense 330
    (stacked_lstm, 23_242, 23_242, "(None, 10)"),
    # 784*32+32=25,120 and 32*784+784=25,872
    (dense_autoencoder, 50_992, 50_992, "(None, 784)"),
    # 160 + 1,160 + 584 + 584 + 584 + 1,168 + 145
    (lambda: conv_autoencoder()[0], 4_385, 4_385, "(None, 28, 28, 1)"),
    # Dense 100*12,544 (no bias), BN 4*12,544, deconvs 5*5*256*128, 5*5*128*64, 5*5*64*1, BNs
    # 4*128 and 4*64; the moving statistics (2*(12,544+128+64)) are not trainable
    (dcgan_generator, 2_330_944, 2_305_472, "(None, 28, 28, 1)"),
    # 5*5*1*64+64=1,664; 5*5*64*128+128=204,928; Dense 6,272+1=6,273
    (dcgan_discriminator, 212_865, 212_865, "(None, 1)"),
    # LSTMs 4*(71*256+256*256+256)=335,872 and 4*(93*256+256*256+256)=358,400; Attention 0;
    # Dense 512*93+93=47,709
    (seq2seq_attention, 741_981, 741_981, "(None, None, 93)"),
])
def test_summary_parameter_counts_equal_keras(build, total, trainable, last_shape):
    model = build()
    assert model.count_params() == total
    text = _summary(model)
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {trainable:,}" in text
    assert f"Non-trainable params: {total - trainable:,}" in text
    assert last_shape in text.splitlines()[-6]


def test_conv_autoencoder_shapes_follow_tf_same_pooling():
    model, encoded = conv_autoencoder()
    assert encoded.shape == (None, 4, 4, 8)                    # 7 -> 4 with padding='same'
    out = model.predict(np.random.default_rng(0).random((2, 28, 28, 1)))
    assert out.shape == (2, 28, 28, 1) and (out > 0).all() and (out < 1).all()


def test_sequential_builds_from_the_first_data_and_add_after_build(rng):
    model = Sequential([layers.Dense(8, activation="relu"), layers.Dense(3)])
    with pytest.raises(ValueError, match="not been built"):
        model.count_params()
    model.compile(optimizer="adam", loss="mse")
    x, y = rng.random((20, 5)), rng.random((20, 3))
    model.fit(x, y, epochs=1, verbose=0)
    assert model.count_params() == 5 * 8 + 8 + 8 * 3 + 3
    model.pop()
    model.add(layers.Dense(1))
    assert model.layers[-1].output_shape == (None, 1)
    assert model.predict(x).shape == (20, 1)


def test_weights_io_round_trip(tmp_path, rng):
    model = dcgan_discriminator()
    weights = model.get_weights()
    assert [w.shape for w in weights[:2]] == [(5, 5, 1, 64), (64,)]       # Keras's layouts
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    before = model.predict(x)
    model.save_weights(tmp_path / "d.safetensors")
    other = dcgan_discriminator()
    assert not np.allclose(other.predict(x), before)
    other.set_weights(weights)
    np.testing.assert_allclose(other.predict(x), before, rtol=1e-6)
    third = dcgan_discriminator()
    third.load_weights(tmp_path / "d.safetensors")
    np.testing.assert_allclose(third.predict(x), before, rtol=1e-6)
    with pytest.raises(ValueError, match="expected 6 arrays, got 1"):
        model.set_weights(weights[:1])
    with pytest.raises(ValueError, match=r"weight 0 has shape \(5, 5, 1, 64\)"):
        model.set_weights([w.T for w in weights])


def test_functional_multiple_inputs_and_outputs_train(rng):
    a, b = Input(shape=(4,), name="a"), Input(shape=(3,), name="b")
    shared = layers.Dense(8, activation="tanh")
    h = layers.Concatenate()([shared(a), layers.Dense(8)(b)])
    out1 = layers.Dense(1, name="regression")(h)
    out2 = layers.Dense(3, activation="softmax", name="classes")(h)
    model = Model(inputs=[a, b], outputs=[out1, out2])
    assert model.output_names == ["regression", "classes"]
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01),
                  loss=["mse", "sparse_categorical_crossentropy"], loss_weights=[1.0, 0.5],
                  metrics={"classes": ["accuracy"]})
    xa, xb = rng.standard_normal((64, 4)), rng.standard_normal((64, 3))
    y1 = xa.sum(1, keepdims=True)
    y2 = (xb[:, 0] > 0).astype(np.int64) + (xb[:, 1] > 0)
    history = model.fit([xa, xb], [y1, y2], epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    p1, p2 = model.predict([xa, xb])
    assert p1.shape == (64, 1) and p2.shape == (64, 3)
    expected = np.mean((p1 - y1) ** 2) + 0.5 * np.mean(-np.log(np.clip(
        p2[np.arange(64), y2], 1e-7, 1)))
    loss, _, _, accuracy = model.evaluate([xa, xb], [y1, y2], verbose=0)  # Keras's order
    assert loss == pytest.approx(expected, rel=1e-4)
    assert accuracy == pytest.approx(np.mean(p2.argmax(1) == y2))
    names = model.output_names
    assert set(history.history) == {"loss", "classes_accuracy", f"{names[0]}_loss",
                                    f"{names[1]}_loss"}
    model.compile(loss=["mse", "sparse_categorical_crossentropy"], metrics=["accuracy"])
    logs = model.evaluate([xa, xb], [y1, y2], verbose=0, return_dict=True)
    assert set(logs) == {"loss", "regression_loss", "classes_loss", "regression_accuracy",
                         "classes_accuracy"}
    model.compile(loss={"classes": "sparse_categorical_crossentropy", "regression": "mse"},
                  loss_weights={"classes": 0.5})
    assert model.evaluate([xa, xb], [y1, y2], verbose=0)[0] == pytest.approx(loss, rel=1e-6)
    with pytest.raises(ValueError, match=r"loss misses outputs \['regression'\]"):
        model.compile(loss={"classes": "mse"})
    with pytest.raises(ValueError, match=r"metrics for unknown outputs \['clases'\]"):
        model.compile(loss="mse", metrics={"clases": ["accuracy"]})


def test_subclassed_model_with_call(rng):
    class TwoLayers(Model):
        def __init__(self):
            super().__init__()
            self.hidden = layers.Dense(16, activation="relu")
            self.out = layers.Dense(1)

        def call(self, inputs):
            return self.out(self.hidden(inputs))

    model = TwoLayers()
    model.compile(optimizer=optimizers.Adam(learning_rate=0.02), loss="mse")
    x = rng.standard_normal((128, 2))
    y = (x ** 2).sum(1)
    history = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert model.count_params() == 2 * 16 + 16 + 16 + 1


def test_frozen_discriminator_inside_the_gan_keeps_training_alone(rng):
    """Keras 2's GAN recipe: compile D, freeze it, compile G+D; D.train_on_batch still trains D
    and gan.train_on_batch trains only G."""
    generator = Sequential([layers.Dense(4, input_shape=(2,))])
    discriminator = Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    discriminator.compile(optimizer="sgd", loss="binary_crossentropy")
    discriminator.trainable = False
    gan = Sequential([generator, discriminator])
    gan.compile(optimizer="sgd", loss="binary_crossentropy")
    assert gan.count_params() == 12 + 5 and _summary(gan).count("Trainable params: 12") == 1
    d_before, g_before = discriminator.get_weights(), generator.get_weights()
    gan.train_on_batch(rng.standard_normal((8, 2)), np.ones((8, 1)))
    assert all(np.array_equal(a, b) for a, b in zip(discriminator.get_weights(), d_before))
    assert not np.array_equal(generator.get_weights()[0], g_before[0])
    g_after = generator.get_weights()
    loss = discriminator.train_on_batch(rng.standard_normal((8, 4)), np.zeros((8, 1)))
    assert isinstance(loss, float)
    assert not np.array_equal(discriminator.get_weights()[0], d_before[0])
    assert all(np.array_equal(a, b) for a, b in zip(generator.get_weights(), g_after))


@pytest.mark.parametrize("name, keras_loss, torch_loss", [
    ("binary", losses.BinaryCrossentropy(from_logits=True),
     lambda o, y: gd.nn.functional.binary_cross_entropy_with_logits(o, y)),
    ("categorical", losses.CategoricalCrossentropy(from_logits=True),
     lambda o, y: gd.nn.functional.cross_entropy(o, y.argmax(-1))),
    ("sparse", losses.SparseCategoricalCrossentropy(from_logits=True),
     lambda o, y: gd.nn.functional.cross_entropy(o, y)),
])
def test_from_logits_losses(rng, name, keras_loss, torch_loss):
    logits = gd.tensor(rng.standard_normal((6, 4)))
    labels = rng.integers(0, 4, 6)
    y = {"binary": gd.tensor((rng.random((6, 4)) > 0.5).astype(np.float64)),
         "categorical": gd.tensor(np.eye(4)[labels]), "sparse": gd.tensor(labels)}[name]
    assert keras_loss(y, logits).item() == pytest.approx(torch_loss(logits, y).item(), rel=1e-10)


def test_class_weight_weights_each_sample(rng):
    model = Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    x, y = rng.standard_normal((8, 3)), np.array([0, 1] * 4)
    history = model.fit(x, y, batch_size=8, class_weight={0: 1.0, 1: 3.0}, verbose=0)
    p = model.predict(x)
    per_sample = -np.log(p[np.arange(8), y])
    expected = np.mean(per_sample * np.where(y == 1, 3.0, 1.0))
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"class_weight has no weight for classes \[1\]"):
        model.fit(x, y, class_weight={0: 1.0}, verbose=0)


def test_keras_callbacks(tmp_path, rng):
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]])

    class Recorder(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, logs["loss"]))
            logs["twice_epoch"] = 2 * epoch            # a callback's own log reaches history
            if epoch == 4:
                self.model.stop_training = True

    model = Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse")
    recorder = Recorder()
    plateau = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1,
                                          min_delta=100.0)         # never "improves" enough
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}.safetensors"),
                                           monitor="loss", save_best_only=True)
    history = model.fit(x, y, epochs=20, verbose=0,
                        callbacks=[recorder, plateau, checkpoint, callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 5 and [e for e, _ in recorder.epochs] == list(range(5))
    # the first epoch sets the best; from the second on, each epoch reduces (patience 1)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** 4)
    assert model.optimizer.learning_rate == pytest.approx(0.05 * 0.5 ** 4)
    assert history.history["twice_epoch"] == [0, 2, 4, 6, 8]
    # Keras logs the rate each epoch trained with, before that epoch's reduction
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.05, 0.05, 0.025, 0.0125, 0.00625])
    model.optimizer.learning_rate = 0.01                      # Keras's assignment
    assert model.optimizer.param_groups[0]["lr"] == 0.01
    assert len(checkpoint.saved) == 5
    with pytest.raises(ValueError, match="monitor 'val_loss' is not among"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model.fit(x, y, epochs=30, verbose=0, validation_data=(x, y[::-1]), callbacks=[stopper])
    assert stopper.stopped_epoch is not None


def test_evaluate_train_on_batch_and_metrics(rng):
    model = Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True, jit_compile=False)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['lost'\]"):
        model.compile(optimizer="adam", lost="mse")
    x = rng.standard_normal((10, 4)).astype(np.float64)         # cast to float32, as Keras
    y = np.eye(3)[rng.integers(0, 3, 10)]
    loss, accuracy = model.train_on_batch(x, y)
    p = model.predict(x)
    assert p.dtype == np.float32
    loss, accuracy = model.evaluate(x, y, verbose=0)
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "accuracy"}
    assert logs["accuracy"] == pytest.approx(np.mean(model.predict(x).argmax(1) == y.argmax(1)))


def test_inputs_of_any_numeric_dtype_are_cast_as_keras(rng):
    """uint8 images, float64 and float16 arrays, int32 labels: float32 computation."""
    model = Sequential([layers.Rescaling(1 / 255, input_shape=(4, 4, 1)), layers.Flatten(),
                        layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images = rng.integers(0, 256, (16, 4, 4, 1)).astype(np.uint8)
    labels = rng.integers(0, 3, 16).astype(np.int32)
    model.fit(images, labels, epochs=1, verbose=0)
    outputs = [model.predict(images.astype(dtype)) for dtype in
               (np.uint8, np.float64, np.float16, np.int64)]
    assert all(o.dtype == np.float32 for o in outputs)
    for other in outputs[1:]:
        np.testing.assert_allclose(other, outputs[0], rtol=1e-5)


def test_weight_regularizers_add_to_the_loss(rng):
    from gpudl.keras import regularizers
    model = Sequential([layers.Dense(3, input_shape=(4,), kernel_regularizer=regularizers.l2(0.1),
                                     bias_initializer="ones", bias_regularizer="l1"),
                        layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    kernel = model.layers[0].get_weights()[0]
    expected = np.mean((model.predict(x) - y) ** 2) + 0.1 * (kernel ** 2).sum() + 0.01 * 3
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert model.fit(x, y, batch_size=16, verbose=0).history["loss"][0] == \
        pytest.approx(expected, rel=1e-5)


def test_activity_regularizers_add_their_term_per_sample(rng):
    """Keras 3: the outputs' l2 term divided by the batch size, in the training loss."""
    from gpudl.keras import regularizers
    model = Sequential([layers.Dense(3, input_shape=(4,),
                                     activity_regularizer=regularizers.l2(0.1)),
                        layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    hidden = x.astype(np.float32) @ model.layers[0].get_weights()[0]
    expected = np.mean((model.predict(x) - y) ** 2) + 0.1 * (hidden ** 2).sum() / 16
    assert model.fit(x, y, batch_size=16, verbose=0).history["loss"][0] == \
        pytest.approx(expected, rel=1e-5)


def test_metric_objects_log_under_their_names(rng):
    from gpudl.keras import metrics
    model = Sequential([layers.Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=[metrics.SparseCategoricalAccuracy()])
    x, y = rng.standard_normal((12, 4)), rng.integers(0, 3, 12)
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["sparse_categorical_accuracy"] == pytest.approx(
        np.mean(model.predict(x).argmax(1) == y))
    binary = Sequential([layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    binary.compile(loss="binary_crossentropy", metrics=[metrics.BinaryAccuracy(threshold=0.7),
                                                        metrics.Accuracy(name="exact")])
    yb = (rng.random(12) > 0.5).astype(np.float32)
    expected = np.mean((binary.predict(x)[:, 0] > 0.7) == yb)
    _, accuracy, exact = binary.evaluate(x, yb, verbose=0)
    assert accuracy == pytest.approx(expected)
    assert exact == 0.0                                    # probabilities never equal labels


def test_sample_weight_weighs_each_sample(rng):
    model = Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    x, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    w = rng.random(10)
    errors = (model.predict(x)[:, 0] - y) ** 2
    history = model.fit(x, y, sample_weight=w, batch_size=10, verbose=0,
                        validation_split=0.2)
    assert history.history["loss"][0] == pytest.approx(np.mean((errors * w)[:8]), rel=1e-5)
    assert history.history["val_loss"][0] == pytest.approx(np.mean((errors * w)[8:]),
                                                            rel=1e-5)   # weighted, as Keras
    assert model.evaluate(x, y, sample_weight=w, verbose=0) == \
        pytest.approx(np.mean(errors * w), rel=1e-5)
    assert model.train_on_batch(x, y, sample_weight=w) == \
        pytest.approx(np.mean(errors * w), rel=1e-5)
    both = model.fit(x, (y > 0).astype(np.int64), sample_weight=w, batch_size=10, verbose=0,
                     class_weight={0: 2.0, 1: 1.0}).history["loss"][0]
    errors = (model.predict(x)[:, 0] - (y > 0)) ** 2
    assert both == pytest.approx(np.mean(errors * w * np.where(y > 0, 1.0, 2.0)), rel=1e-5)
    nn_loss = Sequential([layers.Dense(1, input_shape=(3,))])
    nn_loss.compile(loss=gd.nn.MSELoss())
    with pytest.raises(ValueError, match="one value per batch"):
        nn_loss.fit(x, y[:, None], sample_weight=w, verbose=0)


def test_arithmetic_on_keras_tensors_builds_layers(rng):
    """Residual functional code: ``Dense(4)(x) + x``, scalars on either side."""
    inputs = Input(shape=(4,))
    dense = layers.Dense(4)
    outputs = 2.0 * (dense(inputs) + inputs) - 1.0
    model = Model(inputs, -outputs / 4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    kernel, bias = dense.get_weights()
    np.testing.assert_allclose(model.predict(x), -(2 * (x @ kernel + bias + x) - 1) / 4,
                               rtol=1e-5, atol=1e-6)
    assert model.count_params() == 20


def test_padded_steps_do_not_count_in_the_loss(rng):
    """Embedding(mask_zero=True) -> LSTM(return_sequences) -> TimeDistributed(Dense): the loss
    is the mean over real steps only (Keras masks the loss with the output's mask)."""
    model = Sequential([layers.Embedding(10, 3, mask_zero=True),
                        layers.LSTM(4, return_sequences=True),
                        layers.TimeDistributed(layers.Dense(2, activation="softmax"))])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0),
                  loss="sparse_categorical_crossentropy")
    ids = rng.integers(1, 10, (4, 6))
    ids[0, 3:] = 0
    ids[2, 5:] = 0
    labels = rng.integers(0, 2, (4, 6))
    p = model.predict(ids)
    per_step = -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0])
    expected = per_step[ids != 0].mean()
    assert model.evaluate(ids, labels, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert model.fit(ids, labels, batch_size=4, verbose=0).history["loss"][0] == \
        pytest.approx(expected, rel=1e-5)


def test_fit_on_an_iterable_of_batches_builds_the_model(rng):
    from gpudl.data import DataLoader, TensorDataset
    x = rng.standard_normal((32, 3)).astype(np.float32)
    y = x.sum(1, keepdims=True)
    model = Sequential([layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    history = model.fit(DataLoader(TensorDataset(x, y), batch_size=8), epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.count_params() == 4


def test_pyproject_installs_every_gpudl_package():
    """pyproject lists packages explicitly: a non-editable install must carry gpudl.keras."""
    import pathlib
    tomllib = pytest.importorskip("tomllib")                 # Python >= 3.11
    root = pathlib.Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(root).parts)
             for p in (root / "gpudl").rglob("__init__.py") if "kernels" not in p.parts}
    assert found <= listed, sorted(found - listed)
