"""Keras's optimizers by name or object (``Adam(learning_rate=1e-3)``), built on gpudl.optim
when ``compile`` hands them the model's trainable weights. Keras's defaults: Adam and RMSprop
``epsilon=1e-7``, RMSprop ``rho=0.9``, SGD ``learning_rate=0.01``.

Epsilon is where Keras puts it, which is not where PyTorch (gpudl.optim) does: Keras's Adam adds
it to sqrt(v) before the bias correction (PyTorch's after), Keras's RMSprop and Adagrad divide by
sqrt(v + epsilon) (PyTorch's by sqrt(v) + epsilon). The steps differ where v is not well above
epsilon (gradients of order 1e-4 and below, or a unit that gets none for a while), so the
optimizers built here follow Keras's formulas. So does SGD's momentum (Keras keeps the learning
rate inside the buffer), which matters when the rate changes: ``learning_rate`` may be a
``schedules`` object (``ExponentialDecay``, ...), evaluated before each update.
"""

import numbers

import numpy as np

from .. import backend, optim
from ..optim.optimizer import new_state_buffer
from . import optimizer_rules as rules
from . import schedules
from .serialization import Configurable


# Keras's base-optimizer options gpudl does not implement, with Keras's defaults: given another
# value they are refused, never ignored. ``name`` and ``jit_compile`` change no number.
_UNSUPPORTED = {"loss_scale_factor": None}
_EMA = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None}
_HARMLESS = ("name", "jit_compile")
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


class Optimizer(Configurable):
    """A Keras optimizer description; ``build(params)`` gives the gpudl optimizer.

    ``learning_rate`` is a float or a ``schedules.LearningRateSchedule`` (evaluated before each
    update at ``iterations``, the number of updates made).

    ``clipnorm`` (each gradient scaled to an L2 norm of at most this), ``global_clipnorm`` (all
    gradients scaled together to a joint L2 norm of at most this) or ``clipvalue`` (each element
    clamped to [-clipvalue, clipvalue]): at most one, applied to the gradients before each
    update with Keras's formulas (``g * c / max(|g|, c)``; ``g * c * min(1 / |G|, 1 / c)``, NaN
    when the joint norm is not finite); None or 0 (Keras's off) clips nothing.

    ``use_ema``: after each update the optimizer keeps ``average = m * average + (1 - m) * w``
    (``m = ema_momentum``; the first update copies ``w``), writes the averages into the
    weights every ``ema_overwrite_frequency`` updates, and ``fit`` writes them in when it ends
    (Keras's ``finalize_variable_values``). The averages are not saved with the model.

    ``gradient_accumulation_steps=N``: the gradients of N steps are summed and every N-th step
    updates with their mean (clipped then); ``iterations`` counts updates (steps // N) as
    Keras's does, while a schedule is evaluated at the step count, and the moving averages
    follow Keras's counting (steps // N).

    ``weight_decay`` is Keras's, decoupled (``w -= learning_rate * weight_decay * w`` before each
    step): AdamW's rule in gpudl.optim, and for SGD without momentum the same numbers as torch's
    L2 form; where gpudl has no decoupled form (SGD with momentum, RMSprop, Adagrad) it is refused.
    """

    def __init__(self, learning_rate, keras_options, **options):
        where = type(self).__name__
        for key, value in keras_options.items():
            if key in _HARMLESS or key in _CLIPPING or key in _EMA or \
                    key == "gradient_accumulation_steps":
                continue
            if key not in _UNSUPPORTED:
                raise TypeError(f"{where}: unexpected argument {key!r}")
            if value != _UNSUPPORTED[key]:
                raise NotImplementedError(f"{where}: {key}={value!r} is not supported")
        self.clipping = _clipping(where, keras_options)
        self.ema = _ema(where, {**_EMA, **{k: v for k, v in keras_options.items() if k in _EMA}})
        self.accumulation = _accumulation(where, keras_options.get("gradient_accumulation_steps"))
        self.schedule = learning_rate if isinstance(
            learning_rate, schedules.LearningRateSchedule) else None
        self.learning_rate = float(learning_rate(0) if self.schedule else learning_rate)
        self.options = options
        self.built = None

    @property
    def iterations(self):
        """The number of updates made (Keras's ``optimizer.iterations``: with gradient
        accumulation, steps // gradient_accumulation_steps)."""
        return 0 if self.built is None else \
            self.built.iterations // (self.accumulation or 1)

    def build(self, params):
        """The gpudl optimizer over ``params``; its ``step`` also counts ``iterations`` and,
        with a schedule, first sets the learning rate to ``schedule(iterations)``."""
        built = self.built = self.make(list(params))
        built.iterations, built.learning_rate_schedule, step = 0, self.schedule, built.step

        built.accumulation_steps = self.accumulation

        def counted_step(closure=None):
            accumulation, index = self.accumulation, built.iterations
            if accumulation:
                if (index + 1) % accumulation:            # not an update: only accumulate
                    built.iterations += 1
                    _accumulate(built)
                    if self.ema is not None:
                        _moving_averages(built, index // accumulation, *self.ema)
                    return None
                _accumulated_mean(built, accumulation)
            if self.clipping is not None:
                _clip_gradients(built, *self.clipping)
            if self.schedule is not None:
                learning_rate = float(self.schedule(built.iterations))
                for group in built.param_groups:
                    group["lr"] = learning_rate
            built.iterations += 1
            result = step(closure)
            if self.ema is not None:
                _moving_averages(built, index // (accumulation or 1), *self.ema)
            return result
        built.step = counted_step
        return built


def _accumulation(where, steps):
    """``gradient_accumulation_steps`` checked as Keras checks it (None: no accumulation)."""
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f"{where}: gradient_accumulation_steps must be an int >= 2 (or None), "
                         f"got {steps!r}")
    return int(steps)


def _accumulate(optimizer):
    """Add this step's gradients to the optimizer's accumulators (zeros at first)."""
    accumulators = optimizer.__dict__.setdefault("accumulated_gradients", {})
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p._grad is not None:
                if id(p) in accumulators:
                    accumulators[id(p)] += p._grad._data
                else:
                    accumulators[id(p)] = p._grad._data.copy()


def _accumulated_mean(optimizer, steps):
    """On an update step: each gradient becomes ``(g + accumulated) / steps`` (Keras's), and
    the accumulators restart from zero."""
    accumulators = optimizer.__dict__.get("accumulated_gradients", {})
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p._grad is not None:
                total = accumulators.get(id(p))
                grad = p._grad._data
                grad[...] = (grad if total is None else grad + total) / steps
    optimizer.accumulated_gradients = {}


def _ema(where, options):
    """``(momentum, overwrite_frequency)`` with ``use_ema`` (None without), checked as Keras
    checks them."""
    if not options["use_ema"]:
        return None
    momentum, frequency = options["ema_momentum"], options["ema_overwrite_frequency"]
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or \
            not 0 <= momentum <= 1:
        raise ValueError(f"{where}: ema_momentum must be in [0, 1], got {momentum!r}")
    if frequency is not None and (isinstance(frequency, bool) or not isinstance(
            frequency, numbers.Integral) or frequency < 1):
        raise ValueError(f"{where}: ema_overwrite_frequency must be an int >= 1 or None, got "
                         f"{frequency!r}")
    return float(momentum), frequency


def _moving_averages(optimizer, index, momentum, frequency):
    """Keras's ``_update_model_variables_moving_average`` after update ``index`` (0 for the
    first: the averages start as the weights), then the overwrite every ``frequency``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if index == 0 or getattr(optimizer, "ema_averages", None) is None:
        optimizer.ema_averages = [p._data.copy() for p in params]
    else:
        for p, average in zip(params, optimizer.ema_averages):
            average *= momentum
            average += (1 - momentum) * p._data
    if frequency and (index + 1) % frequency == 0:
        finalize(optimizer)


def finalize(optimizer):
    """Keras's ``finalize_variable_values``: with ``use_ema``, the weights become their moving
    averages (fit calls it when it ends); otherwise nothing."""
    averages = getattr(optimizer, "ema_averages", None)
    if averages is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p, average in zip(params, averages):
            p._data[...] = average


def _clipping(where, options):
    """``(kind, value)`` of the one clipping option given (None: none), checked as Keras does
    (at most one) and refusing what Keras would silently ignore (a negative or non-number)."""
    given = {k: options[k] for k in _CLIPPING if options.get(k) is not None}
    if len(given) > 1:
        raise ValueError(f"{where}: only one of clipnorm, clipvalue and global_clipnorm can be "
                         f"set, got {', '.join(f'{k}={v!r}' for k, v in given.items())}")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{where}: {key} must be a number >= 0 (or None), got {value!r}")
        if value > 0:                             # Keras: 0 clips nothing
            return key, float(value)
    return None


def _clip_gradients(optimizer, kind, value):
    """Keras's ``_clip_gradients`` on the gradients ``optimizer.step`` is about to use, in
    place and on their device (nothing read back)."""
    grads = [p._grad._data for group in optimizer.param_groups for p in group["params"]
             if p._grad is not None]
    if not grads:
        return
    xp = backend.get_array_module(grads[0])
    if kind == "clipvalue":
        for g in grads:
            xp.clip(g, -value, value, out=g)
    elif kind == "clipnorm":                      # each weight's gradient on its own
        for g in grads:
            g[...] = g * value / xp.maximum(xp.sqrt((g * g).sum()), value)
    else:                                         # global_clipnorm: all together
        norm = xp.sqrt(sum((g * g).sum() for g in grads))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = value * xp.minimum(1.0 / norm, 1.0 / value) + (norm - norm)
        for g in grads:
            g *= scale.astype(g.dtype)


def check_settable(optimizer, where):
    """Refuse to set the learning rate of an optimizer that follows a schedule (Keras's rule:
    the schedule would overwrite it at the next update)."""
    schedule = getattr(optimizer, "learning_rate_schedule", None)
    if schedule is not None:
        raise TypeError(f"{where}: the optimizer's learning_rate is a {type(schedule).__name__} "
                        "schedule, so it cannot be set")


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
        return _KerasAdam(params, lr=self.learning_rate, **self.options)


class AdamW(Optimizer):
    def __init__(self, learning_rate=1e-3, weight_decay=4e-3, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, kwargs, betas=(beta_1, beta_2), eps=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay)

    def make(self, params):
        return _KerasAdam(params, lr=self.learning_rate, decoupled_weight_decay=True,
                         **self.options)


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 **kwargs):
        if momentum:
            _no_decoupled_decay("SGD with momentum", weight_decay)
        # Keras's Nesterov step with momentum 0 is plain SGD (torch's refuses nesterov there)
        super().__init__(learning_rate, kwargs, momentum=momentum,
                         nesterov=bool(nesterov and momentum), weight_decay=weight_decay or 0.0)

    def make(self, params):
        return _KerasSGD(params, lr=self.learning_rate, **self.options)


class RMSprop(Optimizer):
    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, **kwargs):
        _no_decoupled_decay("RMSprop", weight_decay)
        super().__init__(learning_rate, kwargs, alpha=rho, momentum=momentum, eps=epsilon,
                         centered=centered)

    def make(self, params):
        return _KerasRMSprop(params, lr=self.learning_rate, **self.options)


class Adagrad(Optimizer):
    def __init__(self, learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, **kwargs):
        _no_decoupled_decay("Adagrad", weight_decay)
        super().__init__(learning_rate, kwargs,
                         initial_accumulator_value=initial_accumulator_value, eps=epsilon)

    def make(self, params):
        return _KerasAdagrad(params, lr=self.learning_rate, **self.options)


class _KerasSGD(optim.SGD):
    """Keras's momentum: ``m = momentum * m - lr * g``, ``p += m`` (Nesterov: ``p += momentum *
    m - lr * g``): the learning rate enters the buffer, so a changing rate (a schedule) steps
    as in Keras. PyTorch's buffer holds gradients only; without momentum the two agree."""

    def _init_state(self, param, group):
        return {"velocity": new_state_buffer(param)} if group["momentum"] else {}

    def _update(self, param, grad, state, group):
        momentum = group["momentum"]
        if not momentum:
            return super()._update(param, grad, state, group)
        velocity = state["velocity"]._data
        velocity *= momentum
        velocity -= group["lr"] * grad
        param += momentum * velocity - group["lr"] * grad if group["nesterov"] else velocity


class _KerasAdam(optim.Adam):
    """gpudl's Adam with Keras's epsilon: ``p -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m /
    (sqrt(v) + eps)``, which is PyTorch's rule with eps divided by sqrt(1 - beta_2^t)."""

    def _update(self, param, grad, state, group):
        keras_eps = group["eps"]
        group["eps"] = keras_eps / (1 - group["betas"][1] ** (state["step"] + 1)) ** 0.5
        try:
            super()._update(param, grad, state, group)
        finally:
            group["eps"] = keras_eps


class _KerasRMSprop(optim.RMSprop):
    """Keras's RMSprop: ``v = rho * v + (1 - rho) * g^2``, ``step = lr * g / sqrt(v + eps)``
    (centered: ``sqrt(v - mean_g^2 + eps)``); with momentum ``b = momentum * b + step`` and
    ``p -= b``, else ``p -= step``."""

    def _update(self, param, grad, state, group):
        state["step"] += 1
        rho, momentum = group["alpha"], group["momentum"]
        square_avg = state["square_avg"]._data
        square_avg *= rho
        square_avg += (1 - rho) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]._data
            grad_avg *= rho
            grad_avg += (1 - rho) * grad
            denominator = square_avg - grad_avg * grad_avg + group["eps"]
        else:
            denominator = square_avg + group["eps"]
        step = group["lr"] * grad / backend.get_array_module(param).sqrt(denominator)
        if momentum > 0:
            buffer = state["momentum_buffer"]._data
            buffer *= momentum
            buffer += step
            step = buffer
        param -= step


class _KerasAdagrad(optim.Adagrad):
    """Keras's Adagrad: ``s += g^2``, ``p -= lr * g / sqrt(s + eps)`` (s starts at
    ``initial_accumulator_value``)."""

    def _update(self, param, grad, state, group):
        state["step"] += 1
        state_sum = state["sum"]._data
        state_sum += grad * grad
        param -= group["lr"] * grad / backend.get_array_module(param).sqrt(state_sum + group["eps"])


class _RuleOptimizer(Optimizer):
    """A Keras optimizer whose update is one of gpudl.keras.optimizer_rules."""

    rule = None

    def __init__(self, learning_rate, weight_decay, kwargs, **options):
        super().__init__(learning_rate, kwargs, weight_decay=weight_decay or 0.0, **options)

    def make(self, params):
        return type(self).rule(params, lr=self.learning_rate, **self.options)


class _AdamFamily(_RuleOptimizer):
    """Adam's arguments and Keras's defaults."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None, **kwargs):
        super().__init__(learning_rate, weight_decay, kwargs, betas=(beta_1, beta_2),
                         eps=epsilon)


class Adamax(_AdamFamily):
    """Keras's Adamax (Adam with the infinity norm); see optimizer_rules.KerasAdamax."""

    rule = rules.KerasAdamax


class Nadam(_AdamFamily):
    """Keras's Nadam (Adam with Nesterov momentum); see optimizer_rules.KerasNadam."""

    rule = rules.KerasNadam


class Adadelta(_RuleOptimizer):
    """Keras's Adadelta (``learning_rate=1e-3``, ``rho=0.95``); see
    optimizer_rules.KerasAdadelta."""

    rule = rules.KerasAdadelta

    def __init__(self, learning_rate=1e-3, rho=0.95, epsilon=1e-7, weight_decay=None,
                 **kwargs):
        super().__init__(learning_rate, weight_decay, kwargs, rho=rho, eps=epsilon)


class Lion(_RuleOptimizer):
    """Keras's Lion (sign of interpolated momentum); see optimizer_rules.KerasLion."""

    rule = rules.KerasLion

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.99, weight_decay=None,
                 **kwargs):
        if not 0 < beta_1 <= 1:
            raise ValueError(f"Lion: beta_1 must be in (0, 1], got {beta_1!r}")
        super().__init__(learning_rate, weight_decay, kwargs, betas=(beta_1, beta_2))


class Lamb(_AdamFamily):
    """Keras's Lamb (Adam scaled by a per-weight trust ratio); see optimizer_rules.KerasLamb."""

    rule = rules.KerasLamb


ALL = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad,
       "adamax": Adamax, "nadam": Nadam, "adadelta": Adadelta, "lion": Lion, "lamb": Lamb}


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


# branch keras-2: Ftrl
class Ftrl(_RuleOptimizer):
    """Keras's Ftrl (follow the regularized leader, with L1/L2/shrinkage terms); see
    optimizer_rules.KerasFtrl."""

    rule = rules.KerasFtrl

    def __init__(self, learning_rate=1e-3, learning_rate_power=-0.5,
                 initial_accumulator_value=0.1, l1_regularization_strength=0.0,
                 l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0,
                 beta=0.0, weight_decay=None, **kwargs):
        if learning_rate_power > 0:
            raise ValueError(f"Ftrl: learning_rate_power must be <= 0, got "
                             f"{learning_rate_power!r}")
        for name, value in (("initial_accumulator_value", initial_accumulator_value),
                            ("l1_regularization_strength", l1_regularization_strength),
                            ("l2_regularization_strength", l2_regularization_strength),
                            ("l2_shrinkage_regularization_strength",
                             l2_shrinkage_regularization_strength)):
            if value < 0:
                raise ValueError(f"Ftrl: {name} must be >= 0, got {value!r}")
        super().__init__(learning_rate, weight_decay, kwargs,
                         learning_rate_power=learning_rate_power,
                         initial_accumulator_value=initial_accumulator_value,
                         l1=l1_regularization_strength, l2=l2_regularization_strength,
                         l2_shrinkage=l2_shrinkage_regularization_strength, beta=beta)


ALL["ftrl"] = Ftrl
