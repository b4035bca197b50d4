"""``gpudl.utils.data`` is ``gpudl.data`` and ``gpudl.utils.checkpoint`` is
``gpudl.activation_checkpoint``, so ``torch.utils`` imports port unchanged."""

import sys

from .. import activation_checkpoint as checkpoint, data

sys.modules[__name__ + ".data"] = data
sys.modules[__name__ + ".checkpoint"] = checkpoint
