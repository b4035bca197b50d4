"""``gd.cuda.amp``: torch.cuda.amp's older names, deprecated in torch (a FutureWarning naming
the current spelling) and still common in tutorials: ``autocast(...)`` is
``gd.autocast("cuda", ...)`` and ``GradScaler(...)`` is ``gd.amp.GradScaler("cuda", ...)``."""

import warnings

from .amp import GradScaler as _GradScaler
from .amp import autocast as _autocast


def _deprecated(name, instead):
    warnings.warn(f"gd.cuda.amp.{name}(args...) is deprecated (as torch.cuda.amp.{name}); use "
                  f"{instead} instead", FutureWarning, stacklevel=3)


class autocast(_autocast):
    """``gd.autocast("cuda", dtype, enabled, cache_enabled)`` under torch.cuda.amp's name."""

    def __init__(self, enabled=True, dtype=None, cache_enabled=None):
        _deprecated("autocast", "gd.amp.autocast('cuda', args...)")
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(_GradScaler):
    """``gd.amp.GradScaler("cuda", ...)`` under torch.cuda.amp's name."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        _deprecated("GradScaler", "gd.amp.GradScaler('cuda', args...)")
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                         enabled)
