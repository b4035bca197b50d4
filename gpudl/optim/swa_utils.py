"""Weight averaging, as torch.optim.swa_utils: AveragedModel keeps a running (SWA) or
exponential (EMA) average of a model's parameters; SWALR anneals each group's learning rate to
its swa_lr; update_bn recomputes BatchNorm's running statistics for the averaged weights."""

import copy
import math
import numbers

from .. import autograd, creation, dtypes, functions
from ..nn.module import Module
from ..nn.normalization import _BatchNorm
from .lr_scheduler import LRScheduler


def get_ema_avg_fn(decay=0.999):
    """avg_fn of an exponential moving average: decay * averaged + (1 - decay) * current."""
    _check_decay("get_ema_avg_fn", decay)

    def ema_update(averaged, current, num_averaged):
        return decay * averaged + (1 - decay) * current
    return ema_update


def get_ema_multi_avg_fn(decay=0.999):
    """multi_avg_fn of an exponential moving average, in place on the averaged tensors."""
    _check_decay("get_ema_multi_avg_fn", decay)

    def ema_update(averaged_list, current_list, num_averaged):
        for averaged, current in zip(averaged_list, current_list):
            averaged.copy_(averaged * decay + current * (1 - decay))
    return ema_update


def get_swa_avg_fn():
    """avg_fn of the equal-weight average of every model seen: the mean of n + 1 values."""
    def swa_update(averaged, current, num_averaged):
        return averaged + (current - averaged) / (num_averaged + 1)
    return swa_update


def get_swa_multi_avg_fn():
    """multi_avg_fn of the equal-weight average, in place on the averaged tensors."""
    swa_update = get_swa_avg_fn()

    def swa_update_all(averaged_list, current_list, num_averaged):
        for averaged, current in zip(averaged_list, current_list):
            averaged.copy_(swa_update(averaged, current, num_averaged))
    return swa_update_all


def _check_decay(caller, decay):
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"{caller}: decay must be in [0, 1], got {decay}")


class AveragedModel(Module):
    """A deep copy of ``model`` whose parameters (and buffers, with use_buffers=True) become the
    average of those of every model passed to update_parameters: an equal-weight average by
    default, or what avg_fn(averaged, current, num_averaged) / multi_avg_fn return."""

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("AveragedModel: pass avg_fn or multi_avg_fn, not both")
        self.module = copy.deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", creation.tensor(0, dtype=dtypes.int64, device=device))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _averaged_tensors(self, model):
        if self.use_buffers:
            return [*model.parameters(), *model.buffers()]
        return list(model.parameters())

    def update_parameters(self, model):
        averaged = [t.detach() for t in self._averaged_tensors(self.module)]
        current = [t.detach().to(a.device) for t, a in
                   zip(self._averaged_tensors(model), averaged)]
        # the first update copies; chosen on the device (torch reads n_averaged here), so an
        # EMA updated every training step reads nothing
        first = self.n_averaged == 0
        with autograd.no_grad():
            if self.avg_fn is not None:
                for a, c in zip(averaged, current):
                    a.copy_(functions.where(first, c, self.avg_fn(a, c, self.n_averaged)))
            else:
                (self.multi_avg_fn or get_swa_multi_avg_fn())(averaged, current,
                                                              self.n_averaged)
                for a, c in zip(averaged, current):
                    a.copy_(functions.where(first, c, a))
            if not self.use_buffers:        # keep the copy's buffers those of the model
                for mine, theirs in zip(self.module.buffers(), model.buffers()):
                    mine.copy_(theirs.detach().to(mine.device))
        self.n_averaged += 1


def update_bn(loader, model, device=None):
    """One pass over ``loader`` in train mode to recompute every BatchNorm's running statistics
    as the plain average over the pass (momentum=None); the model's mode and momenta return."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = {}
    for norm in norms:
        norm.reset_running_stats()
        momenta[norm] = norm.momentum
        norm.momentum = None
    was_training = model.training
    model.train()
    with autograd.no_grad():
        for batch in loader:
            if isinstance(batch, (list, tuple)):
                batch = batch[0]
            model(batch if device is None else batch.to(device))
    for norm, momentum in momenta.items():
        norm.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneals each group's learning rate from its value to swa_lr over anneal_epochs steps
    ("cos" or "linear"), then holds it at swa_lr."""

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos",
                 last_epoch=-1):
        groups = optimizer.param_groups
        swa_lrs = list(swa_lr) if isinstance(swa_lr, (list, tuple)) else [swa_lr] * len(groups)
        if len(swa_lrs) != len(groups):
            raise ValueError(f"SWALR: swa_lr has {len(swa_lrs)} values, expected one per "
                             f"param group ({len(groups)})")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"SWALR: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        if (isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, numbers.Integral)
                or anneal_epochs < 0):
            raise ValueError(f"SWALR: anneal_epochs must be an int >= 0, got {anneal_epochs!r}")
        for group, value in zip(groups, swa_lrs):
            group["swa_lr"] = value
        self.anneal_epochs, self.anneal_strategy = anneal_epochs, anneal_strategy
        super().__init__(optimizer, last_epoch)

    def _anneal(self, t):
        return t if self.anneal_strategy == "linear" else (1 - math.cos(math.pi * t)) / 2

    def get_lr(self):
        # Each step recovers the rate the annealing started from (the previous step's mix
        # undone), then mixes it with swa_lr at this step's weight.
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        span = max(1, self.anneal_epochs)
        previous = self._anneal(max(0, min(1, (step - 1) / span)))
        weight = self._anneal(max(0, min(1, step / span)))
        lrs = []
        for group in self.optimizer.param_groups:
            lr, swa_lr = group["lr"], group["swa_lr"]
            start = swa_lr if previous == 1 else (lr - previous * swa_lr) / (1 - previous)
            lrs.append(swa_lr * weight + start * (1 - weight))
        return lrs
