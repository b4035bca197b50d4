"""gpudl.keras: Keras's namespace on gpudl's Modules, kernels and training loop.

Replacing ``tensorflow.keras`` / ``tf.keras`` / ``keras`` by ``gpudl.keras`` in a script's imports
is the port::

    from gpudl.keras import layers, models, optimizers, losses, callbacks, Input
    from gpudl.keras.models import Sequential, Model
    from gpudl.keras.layers import Dense, Conv2D, LSTM

Layers are gpudl Modules (Keras's names, defaults and weight layouts, channels-last data),
models are trained by gpudl.train's loop, and weights are saved as safetensors. The functions
``compile``/``fit``/``evaluate``/``predict`` also train any plain gpudl Module Keras-style.
"""

from . import (activations, backend, callbacks, initializers, layers, losses, metrics, models,
               ops, optimizers, random, regularizers, saving, utils)
from .engine import Input, KerasTensor, Layer, clear_session
from .models import Model, Sequential
from .training import compile, evaluate, fit, predict, train_on_batch  # noqa: A004


__all__ = ["activations", "callbacks", "initializers", "layers", "losses", "metrics", "models",
           "optimizers", "regularizers", "utils", "Input", "KerasTensor", "Layer", "Model",
           "Sequential", "compile", "evaluate", "fit", "predict", "train_on_batch", "backend",
           "ops", "random", "saving"]
