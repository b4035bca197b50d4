"""Keras's optimizers by name or object (``Adam(learning_rate=1e-3)``), built on gpudl.optim
when ``compile`` hands them the model's trainable weights. Keras's defaults: Adam and RMSprop
``epsilon=1e-7``, RMSprop ``rho=0.9``, SGD ``learning_rate=0.01``.

Keras's Adam adds epsilon to sqrt(v) before bias correction and PyTorch's (gpudl's) after; the
two differ by a factor sqrt(1 - beta_2^t) on epsilon only. Keras's RMSprop and Adagrad divide by
sqrt(v + epsilon), PyTorch's (gpudl's) by sqrt(v) + epsilon: the steps agree while v is well
above epsilon (1e-7) and are larger here when it is not (gradients of order 1e-4 and below).
"""

from .. import optim


# Keras's base-optimizer options gpudl does not implement, with Keras's defaults: given another
# value they are refused, never ignored. ``name`` and ``jit_compile`` change no number.
_UNSUPPORTED = {"clipnorm": None, "clipvalue": None, "global_clipnorm": None, "use_ema": False,
                "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                "loss_scale_factor": None, "gradient_accumulation_steps": None}
_HARMLESS = ("name", "jit_compile")


class Optimizer:
    """A Keras optimizer description; ``build(params)`` gives the gpudl optimizer.

    ``weight_decay`` is Keras's, decoupled (``w -= learning_rate * weight_decay * w`` before each
    step): AdamW's rule in gpudl.optim, and for SGD without momentum the same numbers as torch's
    L2 form; where gpudl has no decoupled form (SGD with momentum, RMSprop, Adagrad) it is refused.
    """

    def __init__(self, learning_rate, keras_options, **options):
        where = type(self).__name__
        for key, value in keras_options.items():
            if key in _HARMLESS:
                continue
            if key not in _UNSUPPORTED:
                raise TypeError(f"{where}: unexpected argument {key!r}")
            if value != _UNSUPPORTED[key]:
                raise NotImplementedError(f"{where}: {key}={value!r} is not supported (clip "
                                          "gradients with gpudl.nn.utils.clip_grad_norm_ in a "
                                          "gpudl.train loop instead)" if "clip" in key else
                                          f"{where}: {key}={value!r} is not supported")
        self.learning_rate = float(learning_rate)
        self.options = options
        self.built = None

    def build(self, params):
        self.built = self.make(list(params))
        return self.built


def _no_decoupled_decay(where, weight_decay):
    if weight_decay:
        raise NotImplementedError(f"{where}: Keras's weight_decay is decoupled (w -= lr * "
                                  f"weight_decay * w), which gpudl's {where} does not have; got "
                                  f"weight_decay={weight_decay!r}")


class Adam(Optimizer):
    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, **kwargs):
        super().__init__(learning_rate, kwargs, betas=(beta_1, beta_2), eps=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay or 0.0,
                         decoupled_weight_decay=True)

    def make(self, params):
        return optim.Adam(params, lr=self.learning_rate, **self.options)


class AdamW(Optimizer):
    def __init__(self, learning_rate=1e-3, weight_decay=4e-3, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, kwargs, betas=(beta_1, beta_2), eps=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay)

    def make(self, params):
        return optim.AdamW(params, lr=self.learning_rate, **self.options)


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 **kwargs):
        if momentum:
            _no_decoupled_decay("SGD with momentum", weight_decay)
        super().__init__(learning_rate, kwargs, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay or 0.0)

    def make(self, params):
        return optim.SGD(params, lr=self.learning_rate, **self.options)


class RMSprop(Optimizer):
    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, **kwargs):
        _no_decoupled_decay("RMSprop", weight_decay)
        super().__init__(learning_rate, kwargs, alpha=rho, momentum=momentum, eps=epsilon,
                         centered=centered)

    def make(self, params):
        return optim.RMSprop(params, lr=self.learning_rate, **self.options)


class Adagrad(Optimizer):
    def __init__(self, learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, **kwargs):
        _no_decoupled_decay("Adagrad", weight_decay)
        super().__init__(learning_rate, kwargs,
                         initial_accumulator_value=initial_accumulator_value, eps=epsilon)

    def make(self, params):
        return optim.Adagrad(params, lr=self.learning_rate, **self.options)


ALL = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad}


def named(name):
    """The Keras optimizer class called ``name`` (case-insensitive)."""
    if name.lower() not in ALL:
        raise ValueError(f"compile: unknown optimizer {name!r}; expected one of {sorted(ALL)} "
                         "or an optimizer object")
    return ALL[name.lower()]


def get(identifier, params):
    """A gpudl optimizer over ``params`` from a Keras name, a Keras optimizer object, or an
    already built gpudl.optim optimizer (used as is)."""
    if isinstance(identifier, optim.Optimizer):
        return identifier
    if isinstance(identifier, str):
        identifier = named(identifier)()
    if not isinstance(identifier, Optimizer):
        raise TypeError(f"compile: optimizer must be a name or an optimizer object (gpudl.keras."
                        f"optimizers or gpudl.optim), got {type(identifier).__name__}")
    return identifier.build(params)
