"""Keras CNN: the Keras MNIST convnet listing on 8x8 digits, only the imports changed."""

import numpy as np

import gpudl as gd
from gpudl import keras
from gpudl.data import load_digits
from gpudl.keras import layers

from ._common import parse_args

NUM_CLASSES = 10
INPUT_SHAPE = (8, 8, 1)


def run(fast=False, seed=0, out=None, progress=True, epochs=None):
    """Train the Keras listing's convnet on 80% of the digits, test on the rest.

    Returns a dict with the held-out loss and accuracy, the first and last training loss and
    the model's parameter count.
    """
    gd.manual_seed(seed)
    images, labels = load_digits(as_tensors=False)
    order = np.random.default_rng(seed).permutation(len(labels))
    x = images[order].reshape(-1, 8, 8, 1)                       # channels last, as Keras
    y = keras.utils.to_categorical(labels[order], NUM_CLASSES)
    x_train, y_train, x_test, y_test = x[360:], y[360:], x[:360], y[:360]

    # --- the Keras listing (keras.io "Simple MNIST convnet"), as written there
    model = keras.Sequential([
        keras.Input(shape=INPUT_SHAPE),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu", padding="same"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu", padding="same"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ])
    if progress:
        model.summary()
    batch_size, epochs = 128, epochs or (4 if fast else 30)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        validation_split=0.1, verbose=progress)
    score = model.evaluate(x_test, y_test, verbose=0)
    # ---
    return {"test_loss": score[0], "test_accuracy": score[1],
            "first_loss": history.history["loss"][0], "final_loss": history.history["loss"][-1],
            "params": model.count_params()}


def main(argv=None):
    args = parse_args("keras_cnn", argv, __doc__)
    r = run(fast=args.fast, seed=args.seed, out=args.out, progress=not args.quiet)
    print(f"Test loss: {r['test_loss']:.4f}")
    print(f"Test accuracy: {r['test_accuracy']:.4f} (target >= 0.95)")
    return 0 if r["test_accuracy"] >= 0.95 else 1
