"""``gpudl.utils.data`` is ``gpudl.data``, so ``torch.utils.data`` imports port unchanged."""

import sys

from .. import data

sys.modules[__name__ + ".data"] = data
