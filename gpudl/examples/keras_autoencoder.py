"""Keras autoencoder: the Keras blog's functional convolutional autoencoder on 8x8 digits."""

import numpy as np

import gpudl as gd
from gpudl import keras
from gpudl.data import load_digits
from gpudl.keras import layers

from ._common import output_path, parse_args, save_image_grid

N_TEST = 297            # the last 297 of the 1797 digits are held out


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train on 1500 digits (input = target), rebuild the held-out ones.

    Returns a dict with the held-out mean squared error, that of the mean training image, the
    first and last training loss and the PNG's path.
    """
    gd.manual_seed(seed)
    images, _ = load_digits(as_tensors=False)                      # in [0, 1]
    x = images.reshape(-1, 8, 8, 1).astype("float32")
    x_train, x_test = x[:-N_TEST], x[-N_TEST:]

    # --- the Keras blog's listing ("Building Autoencoders in Keras"), sized for 8x8 images
    input_img = keras.Input(shape=(8, 8, 1))
    h = layers.Conv2D(16, (3, 3), activation="relu", padding="same")(input_img)
    h = layers.MaxPooling2D((2, 2), padding="same")(h)
    h = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(h)
    encoded = layers.MaxPooling2D((2, 2), padding="same")(h)       # (2, 2, 8): 32 numbers
    h = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    h = layers.UpSampling2D((2, 2))(h)
    h = layers.Conv2D(16, (3, 3), activation="relu", padding="same")(h)
    h = layers.UpSampling2D((2, 2))(h)
    decoded = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(h)
    autoencoder = keras.Model(input_img, decoded)
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    epochs = epochs or (8 if fast else 25)
    history = autoencoder.fit(x_train, x_train, epochs=epochs, batch_size=64, shuffle=True,
                              validation_data=(x_test, x_test), verbose=progress)
    decoded_imgs = autoencoder.predict(x_test)
    # ---
    png = save_image_grid([x_test[:12, :, :, 0], decoded_imgs[:12, :, :, 0]],
                          output_path(out, "keras_autoencoder_reconstructions.png"),
                          titles=["held-out", "rebuilt"])
    return {"test_mse": float(np.mean((decoded_imgs - x_test) ** 2)),
            "mean_image_mse": float(np.mean((x_train.mean(axis=0) - x_test) ** 2)),
            "first_loss": history.history["loss"][0], "final_loss": history.history["loss"][-1],
            "png": png}


def main(argv=None):
    args = parse_args("keras_autoencoder", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"held-out reconstruction MSE {r['test_mse']:.4f} (mean image: "
          f"{r['mean_image_mse']:.4f})")
    print(f"reconstructions: {r['png']}")
    return 0
