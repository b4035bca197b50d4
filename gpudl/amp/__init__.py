"""``gd.amp``: mixed precision as ``torch.amp``: ``autocast`` and ``GradScaler``."""

from .autocast_mode import (autocast, clear_autocast_cache, get_autocast_dtype,  # noqa: F401
                            is_autocast_available, is_autocast_cache_enabled,
                            is_autocast_enabled)
from .grad_scaler import GradScaler  # noqa: F401
