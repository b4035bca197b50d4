"""Keras's learning-rate schedules (``keras.optimizers.schedules``): ``learning_rate=`` of a
Keras optimizer may be one; before each update the rate becomes ``schedule(step)``, ``step``
counting the updates made so far (0 for the first), as Keras's optimizers do."""

import math
import numbers

from .serialization import Configurable


class LearningRateSchedule(Configurable):
    """Base class: a subclass defines ``__call__(self, step)`` -> the learning rate."""

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must define __call__(self, step)")


class _StepDecay(LearningRateSchedule):
    """A decay driven by ``step / decay_steps`` (floored with ``staircase=True``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name=None):
        _positive(type(self).__name__, decay_steps=decay_steps)
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.decay_rate, self.staircase = decay_rate, staircase
        self.name = name or type(self).__name__

    def progress(self, step):
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p


class ExponentialDecay(_StepDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``."""

    def __call__(self, step):
        return self.initial_learning_rate * self.decay_rate ** self.progress(step)


class InverseTimeDecay(_StepDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``."""

    def __call__(self, step):
        return self.initial_learning_rate / (1 + self.decay_rate * self.progress(step))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` for steps up to and including ``boundaries[i]``, ``values[-1]`` after the
    last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstantDecay: values needs one more element than "
                             f"boundaries ({len(boundaries)}), got {len(values)}")
        self.boundaries, self.values, self.name = list(boundaries), list(values), name

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]


class PolynomialDecay(LearningRateSchedule):
    """``(initial_learning_rate - end_learning_rate) * (1 - s / decay_steps) ** power +
    end_learning_rate`` with ``s = min(step, decay_steps)``; with ``cycle=True`` ``s = step``
    and ``decay_steps`` is multiplied by ``ceil(step / decay_steps)`` (1 at step 0)."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0,
                 cycle=False, name="PolynomialDecay"):
        _positive("PolynomialDecay", decay_steps=decay_steps)
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.end_learning_rate, self.power, self.cycle = end_learning_rate, power, cycle
        self.name = name

    def __call__(self, step):
        decay_steps = self.decay_steps
        if self.cycle:
            decay_steps = decay_steps * (1 if step == 0 else math.ceil(step / decay_steps))
        else:
            step = min(step, decay_steps)
        return (self.initial_learning_rate - self.end_learning_rate) * \
            (1 - step / decay_steps) ** self.power + self.end_learning_rate


class CosineDecay(LearningRateSchedule):
    """``lr0 * ((1 - alpha) * (1 + cos(pi * s / decay_steps)) / 2 + alpha)`` with
    ``s = min(step, decay_steps)`` and ``lr0 = initial_learning_rate``.

    With ``warmup_target`` (Keras's linear warm-up): for ``step < warmup_steps`` the rate is
    ``initial_learning_rate + (warmup_target - initial_learning_rate) * step / warmup_steps``,
    then the decay above from ``lr0 = warmup_target`` at ``s = min(step, warmup_steps +
    decay_steps) - warmup_steps``. Without it ``warmup_steps`` is ignored, as in Keras."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        _positive("CosineDecay", decay_steps=decay_steps)
        if warmup_target is not None and (isinstance(warmup_steps, bool) or not isinstance(
                warmup_steps, numbers.Real) or warmup_steps < 0):
            raise ValueError(f"CosineDecay: warmup_steps must be a number >= 0, got "
                             f"{warmup_steps!r}")
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.alpha, self.name = alpha, name
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps

    def __call__(self, step):
        start = self.initial_learning_rate
        if self.warmup_target is not None:
            step = min(step, self.decay_steps + self.warmup_steps)
            if step < self.warmup_steps:
                return (self.warmup_target - start) * (step / self.warmup_steps) + start
            step, start = step - self.warmup_steps, self.warmup_target
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, self.decay_steps) / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)


class CosineDecayRestarts(LearningRateSchedule):
    """SGDR: cosine decays from ``initial_learning_rate`` to ``alpha`` times it, restarted
    after ``first_decay_steps``; period ``i`` lasts ``t_mul ** i`` times longer and starts at
    ``m_mul ** i`` times the rate: with ``f = step / first_decay_steps``, ``i = floor(f)`` and
    ``f -= i`` (``t_mul == 1``) or ``i = floor(log(1 - f (1 - t_mul)) / log(t_mul))`` and
    ``f = (f - (1 - t_mul ** i) / (1 - t_mul)) / t_mul ** i``; the rate is
    ``initial_learning_rate * ((1 - alpha) * m_mul ** i * (1 + cos(pi f)) / 2 + alpha)``."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0,
                 alpha=0.0, name="SGDRDecay"):
        _positive("CosineDecayRestarts", first_decay_steps=first_decay_steps, t_mul=t_mul)
        self.initial_learning_rate, self.first_decay_steps = initial_learning_rate, \
            first_decay_steps
        self.t_mul, self.m_mul, self.alpha, self.name = t_mul, m_mul, alpha, name

    def __call__(self, step):
        fraction, t_mul = step / self.first_decay_steps, self.t_mul
        if t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            left = 1.0 - fraction * (1.0 - t_mul)
            if left <= 0:                  # t_mul < 1: the periods sum to a finite length
                raise ValueError(f"CosineDecayRestarts: with t_mul={t_mul} < 1 the periods "
                                 f"end after {self.first_decay_steps / (1 - t_mul):g} steps; "
                                 f"got step {step} (Keras's rate is NaN there)")
            restart = math.floor(math.log(left) / math.log(t_mul))
            fraction = (fraction - (1.0 - t_mul ** restart) / (1.0 - t_mul)) / t_mul ** restart
        cosine = 0.5 * self.m_mul ** restart * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)


def _positive(owner, **values):
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}: {name} must be positive, got {value!r}")


def serialize(learning_rate_schedule):
    """Keras's ``schedules.serialize``: ``{"module", "class_name", "config"}``."""
    from .serialization import serialize as serialize_object
    return serialize_object(learning_rate_schedule, "serialize")


def deserialize(config, custom_objects=None):
    """Keras's ``schedules.deserialize``: the schedule ``serialize`` described."""
    from .serialization import deserialize as deserialize_object
    schedule = deserialize_object(config, custom_objects)
    if not isinstance(schedule, LearningRateSchedule):
        raise ValueError(f"schedules.deserialize: expected a LearningRateSchedule config, got "
                         f"{config!r:.80}")
    return schedule
