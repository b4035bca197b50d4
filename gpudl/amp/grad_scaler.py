"""``gd.amp.GradScaler``: dynamic loss scaling, with ``torch.amp.GradScaler``'s API and rules.

float16 gradients underflow to zero below 6e-8; multiplying the loss by a large scale before
backward keeps them representable. ``step`` divides the gradients by the scale again
(``unscale_``), skips the optimizer step when any of them is inf or NaN (the scale was too large),
and ``update`` halves the scale after such a step, or doubles it after ``growth_interval``
steps in a row without one.

The scale, the growth tracker and the inf flag stay on the device: the gradients are checked
there (on the GPU in one multi-tensor launch per dtype, gpudl/multi_tensor.py; else one
reduction per gradient, summed into one flag), each value as it was before unscaling (torch's
rule), and the only read back is that flag, in ``step``, which must decide whether to call the
optimizer (counted as a host sync).
"""

import warnings

from .. import backend, dtypes, inplace
from .. import multi_tensor

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


# torch's non-finite check and unscale: each element checked as it was, then multiplied; a
# thread that meets an inf/NaN sets the flag (every writer writes the same 1)
_UNSCALE = multi_tensor.Update(
    "gpudl_mt_unscale", (), ("grad",), "",
    ("if (!isfinite(grad)) *found_inf = 1.0f;", "grad = grad * inv_scale;"),
    pointers=(("float32", "found_inf"), ("float32", "inv_scale_of")),
    prologue=("const T inv_scale = (T)*inv_scale_of;",))


class GradScaler:
    """Scale the loss, unscale the gradients, skip non-finite steps, adapt the scale.

    Args:
        device: ``'cuda'`` or ``'cpu'`` (the device of the gradients it will see).
        init_scale: the first scale.
        growth_factor: the scale's multiplier after ``growth_interval`` clean steps.
        backoff_factor: its multiplier after a step with an inf/NaN gradient.
        growth_interval: clean steps in a row before the scale grows.
        enabled: False makes every method a pass-through (``scale`` returns its input).

    Usage, as torch::

        scaler = gd.amp.GradScaler()
        with gd.autocast("cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)        # unscales, then steps unless a gradient is inf/NaN
        scaler.update()
    """

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0,
                 backoff_factor=0.5, growth_interval=2000, enabled=True):
        self._device = str(device).split(":")[0]
        if self._device not in ("cuda", "cpu"):
            raise ValueError(f"GradScaler: device must be 'cuda' or 'cpu', got {device!r}")
        self._enabled = bool(enabled)
        if self._enabled and self._device == "cuda" and not backend.cuda_available():
            warnings.warn("GradScaler: the cuda device is not available in this process; "
                          "disabling the scaler", UserWarning, stacklevel=2)
            self._enabled = False
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor!r}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got "
                             f"{backoff_factor!r}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
                or growth_interval <= 0:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got "
                             f"{growth_interval!r}")
        self._init_scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._init_growth_tracker = 0
        self._scale = None            # 0-d float32 device array, made on first use
        self._growth_tracker = None   # 0-d int32 device array
        self._per_optimizer = {}      # id(optimizer) -> {"stage", "found_inf"}

    # ----------------------------------------------------------------- scaling
    def _lazy_init(self, xp):
        if self._scale is None:
            self._scale = xp.full((), self._init_scale, dtype=dtypes.float32)
            self._growth_tracker = xp.full((), self._init_growth_tracker, dtype=dtypes.int32)

    def scale(self, outputs):
        """``outputs`` (a Tensor, or lists/tuples of them) multiplied by the scale."""
        if not self._enabled:
            return outputs
        from ..tensor import Tensor
        if isinstance(outputs, Tensor):
            self._lazy_init(backend.get_array_module(outputs._data))
            # a float32 copy (an update before backward must not change the product's
            # gradient), unrounded in a float16/bfloat16 product as torch's
            factor = Tensor._make(self._scale.astype(dtypes.float32), False, None, 0,
                                  outputs._device)
            return outputs * factor
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise ValueError(f"GradScaler.scale: outputs must be a Tensor or an iterable of "
                         f"Tensors, got {type(outputs).__name__}")

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer),
                                              {"stage": _READY, "found_inf": None})

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale, in place, and record whether any is
        inf/NaN. At most once per optimizer between two ``update`` calls (``step`` calls it
        when it was not)."""
        if not self._enabled:
            return
        _check_scaled(self, "unscale_")
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        for g in grads:
            if g.dtype == dtypes.float16:
                raise ValueError("Attempting to unscale FP16 gradients.")
            inplace.refuse_overlap(g, "GradScaler.unscale_")   # as torch: an expanded gradient
        if not grads:         # as torch: nothing checked, so step and update refuse
            state["found_inf"] = None
            state["stage"] = _UNSCALED
            return
        grads = [g._data for g in grads]
        xp = backend.get_array_module(self._scale)
        # an array (NumPy makes 0-d results scalars), whose address the batched launch takes
        inv_scale = xp.asarray((1.0 / self._scale.astype(dtypes.float64)).astype(dtypes.float32))
        found = xp.zeros((), dtypes.float32)
        batched, rest = {}, []
        on_device = backend.is_device_array(self._scale)    # where the flag and inv_scale are
        for g in grads:               # float32/float64 contiguous on the device: batched
            (batched.setdefault(g.dtype, []) if on_device and multi_tensor.batchable(g)
             else rest).append(g)
        for same_dtype in batched.values():     # one launch per dtype, not ~6 per gradient
            multi_tensor.launch(_UNSCALE, [(g, found, inv_scale) for g in same_dtype], ())
        for g in rest:
            found = found + (~xp.isfinite(g).all())
            # strided gradients too, no copy back; a bfloat16 one gets its float32 product
            # rounded, as the assignment it replaces did
            xp.multiply(g, inv_scale, out=g, casting="unsafe")
        state["found_inf"] = found
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step(*args, **kwargs)`` unless a gradient is inf/NaN (then None);
        unscales first if ``unscale_`` was not called."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is "
                               "enabled.")
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise RuntimeError("No inf checks were recorded for this optimizer (none of its "
                               "parameters has a gradient: did scaler.scale(loss).backward() "
                               "reach them?)")
        # a read by design (the host decides whether to step): counted, and reporting any
        # device-side check queued before it, as every read does
        found = backend.host_value(state["found_inf"], "GradScaler.step")
        result = optimizer.step(*args, **kwargs) if not found else None
        state["stage"] = _STEPPED
        return result

    def update(self, new_scale=None):
        """Set the scale for the next iteration: ``new_scale`` (a float or a one-element
        float32 Tensor), or backoff after a skipped step / growth after ``growth_interval``
        clean ones. Resets the per-optimizer bookkeeping."""
        if not self._enabled:
            return
        _check_scaled(self, "update")
        if new_scale is not None:
            self._scale[...] = _new_scale_value(new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer.values()
                     if s["found_inf"] is not None]
            if not found:
                raise RuntimeError("No inf checks were recorded prior to update.")
            self._update_scale(sum(found[1:], found[0]))
        self._per_optimizer = {}

    def _update_scale(self, found_inf):
        """torch's _amp_update_scale_, on the device: no value is read back."""
        xp = backend.get_array_module(self._scale)
        skipped = found_inf > 0
        grown = self._growth_tracker + 1
        grow = (~skipped) & (grown == self._growth_interval)
        # the product in float64, rounded once to float32, as torch's kernel (a double factor)
        factor = xp.where(skipped, dtypes.float64.type(self._backoff_factor),
                          xp.where(grow, dtypes.float64.type(self._growth_factor),
                                   dtypes.float64.type(1.0)))
        scaled = (self._scale.astype(dtypes.float64) * factor).astype(dtypes.float32)
        # growth that would overflow the scale to inf is skipped, as torch
        self._scale[...] = xp.where(grow & ~xp.isfinite(scaled), self._scale, scaled)
        self._growth_tracker[...] = xp.where(skipped | grow, 0, grown).astype(dtypes.int32)

    # ----------------------------------------------------------------- accessors
    def get_scale(self):
        """The current scale as a Python float (1.0 when disabled); reads the device."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(backend.to_numpy(self._scale))

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self):
        if self._growth_tracker is None:
            return self._init_growth_tracker
        return int(backend.to_numpy(self._growth_tracker))

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        """``{scale, growth_factor, backoff_factor, growth_interval, _growth_tracker}`` (empty
        when disabled), as torch."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale[...] = self._init_scale
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker[...] = self._init_growth_tracker


def _check_scaled(scaler, what):
    if scaler._scale is None:
        raise RuntimeError(f"GradScaler.{what}: no scale yet; call scaler.scale(loss) earlier "
                           "in the iteration")


def _new_scale_value(new_scale):
    from ..tensor import Tensor
    if isinstance(new_scale, (int, float)) and not isinstance(new_scale, bool):
        return float(new_scale)
    if isinstance(new_scale, Tensor) and new_scale.numel() == 1 \
            and new_scale.dtype == dtypes.float32 and not new_scale.requires_grad:
        return new_scale._data.reshape(())
    raise ValueError("new_scale should be a float or a 1-element gpudl float32 Tensor with "
                     "requires_grad=False.")
