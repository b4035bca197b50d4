"""``torch.nn.utils.clip_grad``: the gradient clipping of gpudl.nn.utils under torch's module
path (``from torch.nn.utils.clip_grad import clip_grad_norm_`` ports unchanged)."""

from . import (clip_grad_norm, clip_grad_norm_, clip_grad_value_,  # noqa: F401
               clip_grads_with_norm_, get_total_norm)
