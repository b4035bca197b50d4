"""Learning-rate schedulers with torch.optim.lr_scheduler's names, formulas and stepping.

Each scheduler sets ``group["lr"]`` of its optimizer's groups when constructed (epoch 0) and at
every ``step()``; call ``step()`` after ``optimizer.step()``, once per epoch (or per batch).
The recursive (chainable) formulas are torch's, so the learning rates match it step by step.
A learning rate given as a 0-d Tensor (capturable optimizers) is written in place, on its device,
so a captured CUDA graph that reads it sees the new value; nothing is read back.
"""

import bisect
import functools
import math
import numbers
import types
import warnings
import weakref
from collections import Counter

from ..autograd import recorded
from ..tensor import Tensor
from .optimizer import Optimizer


def _copy(lr):
    """A learning rate that does not alias the group's (a Tensor lr is written in place)."""
    return lr.detach().clone() if isinstance(lr, Tensor) else lr


def _set_lr(group, lr):
    """Set ``group["lr"]``: in place on the device when it is a Tensor, as torch's fill_."""
    current = group["lr"]
    if isinstance(current, Tensor):
        current._data[...] = lr._data if isinstance(lr, Tensor) else lr
    else:
        group["lr"] = lr


class LRScheduler:
    """Base class: subclasses define ``get_lr()``, the learning rates at ``self.last_epoch``."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", _copy(group["lr"]))
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: param_groups[{i}] has no 'initial_lr' "
                               f"to resume from (last_epoch={last_epoch}); load the "
                               "optimizer's state dict first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        _note_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self):
        """The constructor's step (epoch 0); SequentialLR repeats it when a scheduler starts."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        raise NotImplementedError

    def _current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    # Whether get_lr() reads a per-group list fixed at construction (base_lrs, lr_lambdas):
    # a group added to the optimizer since has no entry, so a step is refused (torch raises
    # from a strict zip; the others scale every group's current lr and go on).
    _rates_per_group = False

    def _check_group_count(self, epoch=None):
        """Refuse a step while the optimizer has more or fewer groups than the per-group lists
        the schedule reads (the closed form of ``step(epoch)`` reads base_lrs too)."""
        needs_lists = self._rates_per_group or (epoch is not None
                                                and hasattr(self, "_closed_form_lr"))
        groups = len(self.optimizer.param_groups)
        if needs_lists and groups != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}.step: expected the {len(self.base_lrs)} "
                             f"param groups the scheduler was made for, got {groups} (a group "
                             "added after the scheduler has no base lr; make the scheduler "
                             "after add_param_group)")

    @recorded("refused")
    def step(self, epoch=None):
        """Advance one epoch and set every group's learning rate. ``step(epoch)``, deprecated in
        torch (which warns too), jumps to ``epoch``: the closed-form rate where the schedule has
        one, as torch."""
        self._check_group_count(epoch)
        if self._step_count == 1:
            _warn_if_the_optimizer_has_not_stepped(self.optimizer)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(f"{type(self).__name__}.step(epoch) is deprecated (as in torch): call "
                          "step() once per epoch", UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        """Set the learning rates of the next epoch, or of ``epoch`` (closed form if any)."""
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = epoch
            lrs = self._closed_form_lr() if hasattr(self, "_closed_form_lr") else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            _set_lr(group, lr)
        self._last_lr = [_copy(lr) for lr in self._current_lrs()]

    def get_last_lr(self):
        """The learning rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute except the optimizer (plain numbers and lists)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


def _note_optimizer_steps(optimizer):
    """Wrap ``optimizer.step`` (once per optimizer) to record that it ran, so that a scheduler's
    first step can warn, as torch, when it comes before any optimizer step."""
    original = optimizer.step
    if getattr(original, "_notes_steps", False):
        return
    owner = weakref.ref(optimizer)               # the wrapper holds no reference to it
    if isinstance(original, types.MethodType) and original.__self__ is optimizer:
        unbound = original.__func__

        def original(*args, **kwargs):
            return unbound(owner(), *args, **kwargs)
        functools.update_wrapper(original, unbound)
    # else a function set on the instance (gpudl.keras's counting step): wrapped as it is

    @functools.wraps(original)
    def step(*args, **kwargs):
        owner()._stepped_since_scheduling = True
        return original(*args, **kwargs)

    step._notes_steps = True
    optimizer.step = step


def _warn_if_the_optimizer_has_not_stepped(optimizer):
    if not getattr(optimizer.step, "_notes_steps", False):
        warnings.warn("optimizer.step was replaced after the learning-rate scheduler was made: "
                      "make sure to call optimizer.step() before scheduler.step()",
                      UserWarning, stacklevel=4)
    elif not getattr(optimizer, "_stepped_since_scheduling", False):
        warnings.warn("scheduler.step() was called before optimizer.step(): call "
                      "optimizer.step() first, or the schedule's first learning rate is skipped "
                      "(as torch warns)", UserWarning, stacklevel=4)


def _check_positive_int(name, what, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: {what} must be a positive int, got {value!r}")


class LambdaLR(LRScheduler):
    """``lr = initial_lr * lr_lambda(epoch)``; one function, or a list with one per group."""

    _rates_per_group = True

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        name = type(self).__name__
        groups = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ValueError(f"{name}: expected {groups} lr_lambdas (one per parameter "
                                 f"group), got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * groups
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"{name}: lr_lambda must be callable, got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self):
        """As torch: functions are not saved, callable objects' attributes are."""
        state = {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__)
                               for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        for fn, saved in zip(self.lr_lambdas, state_dict.pop("lr_lambdas", [])):
            if saved is not None:
                fn.__dict__.update(saved)
        super().load_state_dict(state_dict)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if isinstance(step_size, float) and step_size.is_integer():
            step_size = int(step_size)   # torch takes 1.0 (its text-classification tutorial's)
        _check_positive_int("StepLR", "step_size", step_size)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size)
                for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each epoch listed in ``milestones``."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = dict(Counter(int(m) for m in milestones))
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = self.milestones.get(self.last_epoch, 0)
        if not hits:
            return self._current_lrs()
        return [lr * self.gamma ** hits for lr in self._current_lrs()]

    def _closed_form_lr(self):
        passed = sum(n for m, n in self.milestones.items() if m <= self.last_epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)      # keys become strings in a saved JSON
        self.milestones = {int(k): v for k, v in self.milestones.items()}


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial learning rate to ``eta_min`` over ``T_max`` epochs
    (and back up over the next ``T_max``), with torch's recursive update."""

    _rates_per_group = True

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:
            return [eta_min + (base - eta_min) * (1 + math.cos(t * math.pi / T)) / 2
                    for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base in zip(self._current_lrs(), self.base_lrs)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (lr - eta_min) + eta_min for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a metric has not improved for ``patience``
    epochs: ``step(metric)`` once per epoch, e.g. with the validation loss.

    Args:
        mode: 'min' (lower is better) or 'max'.
        threshold, threshold_mode: an improvement must beat the best by ``threshold``, relative
            ('rel': ``best * (1 - threshold)`` in min mode) or absolute ('abs').
        cooldown: epochs to wait after a reduction before counting bad epochs again.
        min_lr: a floor, one number or one per group; eps: smaller changes are skipped.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != groups:
                raise ValueError(f"ReduceLROnPlateau: expected {groups} min_lrs, got "
                                 f"{len(min_lr)}")
            self.min_lrs, self.default_min_lr = list(min_lr), None
        else:
            self.min_lrs, self.default_min_lr = [min_lr] * groups, min_lr
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.eps = cooldown, eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def step(self, metrics, epoch=None):
        """Record this epoch's ``metrics`` (a number or one-element tensor: a cuda tensor is
        read, a counted sync, as in torch; once per epoch). ``epoch``, deprecated in torch
        (which warns too), sets the epoch count."""
        current = float(metrics)
        self._match_min_lrs_to_groups()
        if epoch is not None:
            warnings.warn("ReduceLROnPlateau.step(metrics, epoch) is deprecated (as in torch): "
                          "call step(metrics) once per epoch", UserWarning, stacklevel=2)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0          # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                new_lr = max(group["lr"] * self.factor, min_lr)
                if group["lr"] - new_lr > self.eps:
                    _set_lr(group, new_lr)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [_copy(lr) for lr in self._current_lrs()]

    def _match_min_lrs_to_groups(self):
        """A group added since construction takes the one min_lr given; with one per group
        given, the step is refused (as torch) until ``min_lrs`` is set to match."""
        groups = len(self.optimizer.param_groups)
        if groups == len(self.min_lrs):
            return
        if self.default_min_lr is None:
            raise RuntimeError(f"ReduceLROnPlateau.step: expected {len(self.min_lrs)} param "
                               f"groups (one per min_lr given), got {groups}: a group was "
                               "added to the optimizer; set min_lrs to one per group")
        self.min_lrs = [self.default_min_lr] * groups

    def _is_better(self, value):
        if self.mode == "min":
            bound = self.best * (1 - self.threshold) if self.threshold_mode == "rel" \
                else self.best - self.threshold
            return value < bound
        bound = self.best * (1 + self.threshold) if self.threshold_mode == "rel" \
            else self.best + self.threshold
        return value > bound


# ----------------------------------------------------------------- torch's other schedulers
def _per_group(name, what, optimizer, value):
    """``value`` as one entry per parameter group: a list or tuple of that length, or one
    value repeated."""
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(f"{name}: {what} must have one entry per parameter group "
                             f"({groups}), got {len(value)}")
        return [_copy(v) for v in value]
    return [_copy(value)] * groups


def _check_optimizer(name, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{name}: expected an Optimizer, got {type(optimizer).__name__}")


def _check_factor(name, what, value, low_open=False):
    """Raise unless 0 <= value <= 1 (0 < value with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not ((value > 0 if low_open else value >= 0) and value <= 1):
        raise ValueError(f"{name}: {what} must be a number in {'(0' if low_open else '[0'}, 1], "
                         f"got {value!r}")


class MultiplicativeLR(LambdaLR):
    """Multiply each group's learning rate by ``lr_lambda(epoch)`` every epoch (one function,
    or one per group)."""

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * fn(self.last_epoch) for fn, lr in zip(self.lr_lambdas, self._current_lrs())]


class ConstantLR(LRScheduler):
    """Multiply the learning rate by ``factor`` for the first ``total_iters`` epochs."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        _check_factor("ConstantLR", "factor", factor)
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._current_lrs()]
        if self.last_epoch != self.total_iters:
            return self._current_lrs()
        return [lr * (1.0 / self.factor) for lr in self._current_lrs()]

    def _closed_form_lr(self):
        return [base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` epochs (torch's recursive update)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        _check_factor("LinearLR", "start_factor", start_factor, low_open=True)
        _check_factor("LinearLR", "end_factor", end_factor)
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        change = self.end_factor - self.start_factor
        scale = 1.0 + change / (self.total_iters * self.start_factor
                                + (self.last_epoch - 1) * change)
        return [lr * scale for lr in self._current_lrs()]

    def _closed_form_lr(self):
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * (self.start_factor + (self.end_factor - self.start_factor) * done)
                for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Decay the learning rate as ``(1 - epoch / total_iters) ** power`` until ``total_iters``."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        _check_positive_int("PolynomialLR", "total_iters", total_iters)
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        t, total = self.last_epoch, self.total_iters
        decay = ((1.0 - t / total) / (1.0 - (t - 1) / total)) ** self.power
        return [lr * decay for lr in self._current_lrs()]

    def _closed_form_lr(self):
        left = 1.0 - min(self.total_iters, self.last_epoch) / self.total_iters
        return [base * left ** self.power for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from the initial learning rate to ``eta_min`` over ``T_0`` epochs, then
    restarting, each period ``T_mult`` times the last (SGDR). ``step(epoch)`` may take a
    fractional epoch (e.g. ``epoch + batch / batches``), without a warning, as torch."""

    _rates_per_group = True

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        name = "CosineAnnealingWarmRestarts"
        _check_positive_int(name, "T_0", T_0)
        if isinstance(T_mult, bool) or not isinstance(T_mult, numbers.Integral) or T_mult < 1:
            raise ValueError(f"{name}: T_mult must be an int >= 1, got {T_mult!r}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, numbers.Real):
            raise ValueError(f"{name}: eta_min must be a number, got {eta_min!r}")
        self.T_0, self.T_i, self.T_mult, self.eta_min = T_0, T_0, T_mult, eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.eta_min + (base - self.eta_min)
                * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2 for base in self.base_lrs]

    @recorded("refused")
    def step(self, epoch=None):
        self._check_group_count()
        self._step_count += 1
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur, self.T_i = self.T_cur % self.T_i, self.T_i * self.T_mult
        elif epoch < 0:
            raise ValueError(f"CosineAnnealingWarmRestarts.step: epoch must be >= 0, got "
                             f"{epoch!r}")
        elif epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:       # the restart whose period holds epoch: sum of T_0 * T_mult**k, k < n
                n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult ** n
        else:
            self.T_i, self.T_cur = self.T_0, epoch
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            _set_lr(group, lr)
        self._last_lr = [_copy(lr) for lr in self._current_lrs()]


def _set_momentum(group, use_beta1, momentum):
    """Set SGD's ``momentum`` or Adam's ``beta1`` (momentum cycling)."""
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _momentum_cycling(name, optimizer, base_momentum, max_momentum):
    """Whether the optimizer cycles beta1 (else momentum), and the per-group base and max
    momentums (checked; nothing is set yet)."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(f"{name}: cycle_momentum=True needs an optimizer with a momentum or "
                         f"betas option, got {type(optimizer).__name__} (pass "
                         "cycle_momentum=False)")
    return ("betas" in optimizer.defaults,
            _per_group(name, "base_momentum", optimizer, base_momentum),
            _per_group(name, "max_momentum", optimizer, max_momentum))


def _start_momentum(optimizer, use_beta1, bases, maxima):
    """A fresh start: every group at its max momentum, recording both bounds."""
    for group, base, top in zip(optimizer.param_groups, bases, maxima):
        _set_momentum(group, use_beta1, top)
        group["max_momentum"], group["base_momentum"] = top, base


class CyclicLR(LRScheduler):
    """Cycle the learning rate between ``base_lr`` and ``max_lr`` (one per group or one for
    all): up over ``step_size_up`` steps, down over ``step_size_down`` (default the same), with
    amplitude scaled per cycle ('triangular': 1, 'triangular2': halved each cycle) or per step
    ('exp_range': ``gamma ** step``), or by ``scale_fn`` (of the cycle or of the step, as
    ``scale_mode`` says). With ``cycle_momentum`` the momentum (beta1 for Adam-like optimizers)
    cycles the opposite way between ``max_momentum`` and ``base_momentum``. Step it per batch."""

    _rates_per_group = True

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        name = "CyclicLR"
        _check_optimizer(name, optimizer)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"{name}: mode must be 'triangular', 'triangular2' or 'exp_range' "
                             f"(or pass scale_fn), got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"{name}: scale_mode must be 'cycle' or 'iterations', got "
                             f"{scale_mode!r}")
        for what, size in (("step_size_up", step_size_up), ("step_size_down", step_size_down)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Real)
                                     or size <= 0):
                raise ValueError(f"{name}: {what} must be a positive number, got {size!r}")
        self.optimizer = optimizer
        base_lrs = _per_group(name, "base_lr", optimizer, base_lr)
        self.max_lrs = _per_group(name, "max_lr", optimizer, max_lr)
        if cycle_momentum:
            self.use_beta1, self.base_momentums, self.max_momentums = _momentum_cycling(
                name, optimizer, base_momentum, max_momentum)
        if last_epoch == -1:                    # every argument checked: now set the groups
            for group, lr in zip(optimizer.param_groups, base_lrs):
                _set_lr(group, lr)
            if cycle_momentum:
                _start_momentum(optimizer, self.use_beta1, self.base_momentums,
                                self.max_momentums)
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        self.mode, self.gamma = mode, gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self):
        """The built-in modes fix scale_mode, as torch does."""
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x):
        """The amplitude's scale at cycle (or step) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * scale_factor * scale
               for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for group, base, top in zip(self.optimizer.param_groups, self.base_momentums,
                                        self.max_momentums):
                _set_momentum(group, self.use_beta1, top - (top - base) * scale_factor * scale)
        return lrs

    def state_dict(self):
        """As torch: scale_fn is saved only as a callable object's attributes."""
        state = super().state_dict()
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None if fn is None or isinstance(fn, types.FunctionType) \
            else dict(fn.__dict__)
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("_scale_fn_custom", None)
        super().load_state_dict(state_dict)
        if saved is not None:
            self._scale_fn_custom.__dict__.update(saved)
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    """The 1cycle policy over ``total_steps`` (or ``epochs * steps_per_epoch``) steps: the
    learning rate rises from ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of the
    steps, then anneals ('cos' or 'linear') to ``initial_lr / final_div_factor``
    (``three_phase``: back to the initial rate first, then down). With ``cycle_momentum`` the
    momentum (beta1) moves the opposite way between ``max_momentum`` and ``base_momentum``.
    Step it per batch; stepping past ``total_steps`` raises."""

    _rates_per_group = True

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        name = "OneCycleLR"
        _check_optimizer(name, optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            _check_positive_int(name, "total_steps", total_steps)
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            _check_positive_int(name, "epochs", epochs)
            _check_positive_int(name, "steps_per_epoch", steps_per_epoch)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(f"{name}: pass total_steps, or epochs and steps_per_epoch")
        if isinstance(pct_start, bool) or not isinstance(pct_start, float) \
                or not 0 <= pct_start <= 1:
            raise ValueError(f"{name}: pct_start must be a float in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        warmup_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                       "base_momentum", "max_momentum"),
                _phase(self.total_steps - 1, "initial_lr", "min_lr", "max_momentum",
                       "max_momentum")]
        else:
            self._schedule_phases = [
                _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(self.total_steps - 1, "max_lr", "min_lr", "base_momentum",
                       "max_momentum")]
        max_lrs = _per_group(name, "max_lr", optimizer, max_lr)
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1, bases, maxima = _momentum_cycling(name, optimizer, base_momentum,
                                                              max_momentum)
        if last_epoch == -1:                    # every argument checked: now set the groups
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if cycle_momentum:
                _start_momentum(optimizer, self.use_beta1, bases, maxima)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, more than total_steps="
                             f"{self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        _set_momentum(group, self.use_beta1, self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start_step = end_step
        return lrs


def _phase(end_step, start_lr, end_lr, start_momentum, end_momentum):
    """One phase of OneCycleLR: where it ends and the group keys it goes between."""
    return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr,
            "start_momentum": start_momentum, "end_momentum": end_momentum}


def _check_schedulers(name, optimizer, schedulers):
    if not isinstance(schedulers, (list, tuple)) or not schedulers:
        raise ValueError(f"{name}: expected a non-empty list of schedulers, got "
                         f"{schedulers!r}")
    for i, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"{name}: schedulers[{i}] must be an LRScheduler, got "
                            f"{type(scheduler).__name__}")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(f"{name}: schedulers[{i}] is a ReduceLROnPlateau, whose step "
                             "needs a metric; it cannot be chained")
        if scheduler.optimizer is not optimizer:
            raise ValueError(f"{name}: schedulers[{i}] ({type(scheduler).__name__}) steps "
                             "another optimizer; all must step the same one")


class _Composite(LRScheduler):
    """A scheduler made of others (``self._schedulers``), whose states its state dict holds."""

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop("_schedulers")
        self.__dict__.update(state_dict)
        for scheduler, state in zip(self._schedulers, saved):
            scheduler.load_state_dict(state)


class SequentialLR(_Composite):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at its
    epoch 0) until ``milestones[1]``, and so on."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        name = "SequentialLR"
        _check_optimizer(name, optimizer)
        _check_schedulers(name, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{name}: expected {len(schedulers) - 1} milestones (one fewer "
                             f"than the schedulers), got {len(milestones)}")
        self._schedulers, self._milestones = list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:     # undo the schedulers' constructor steps
            _set_lr(group, group["initial_lr"])
        for scheduler in self._schedulers:
            _undo_step(scheduler)
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @recorded("refused")
    def step(self):
        epoch = self.last_epoch + 1
        i = bisect.bisect_right(self._milestones, epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == epoch:
            scheduler._check_group_count(epoch=0)
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self.last_epoch = epoch
        self._last_lr = scheduler.get_last_lr()


def _undo_step(scheduler):
    """Take back a constructor's step (the epoch count only) of a scheduler, or of each one a
    composite holds (as torch, whose composite's own count stays)."""
    if isinstance(scheduler, _Composite):
        for inner in scheduler._schedulers:
            _undo_step(inner)
    else:
        scheduler.last_epoch -= 1


class ChainedScheduler(_Composite):
    """Step every scheduler of ``schedulers`` at each ``step()``, in order (their changes
    compose)."""

    def __init__(self, schedulers, optimizer=None):
        name = "ChainedScheduler"
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError(f"{name}: expected a non-empty list of schedulers, got "
                             f"{schedulers!r}")
        optimizer = optimizer or getattr(schedulers[0], "optimizer", None)
        _check_schedulers(name, optimizer, schedulers)
        self._schedulers, self.optimizer = list(schedulers), optimizer
        self._last_lr = [_copy(lr) for lr in self._current_lrs()]

    @recorded("refused")
    def step(self):
        for scheduler in self._schedulers:     # refuse before any scheduler has stepped
            scheduler._check_group_count()
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = [_copy(lr) for lr in self._current_lrs()]
