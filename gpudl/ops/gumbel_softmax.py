"""gumbel_softmax: a differentiable sample of a categorical distribution given by logits."""

from .. import creation, dtypes
from ..tensor import Tensor
from ..torch_names import finfo


def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
    """``softmax((logits + g) / tau)`` over ``dim`` with standard Gumbel noise ``g`` from
    gpudl's generator (torch.nn.functional.gumbel_softmax; ``eps`` is unused, as in torch).
    With ``hard`` the forward gives the one-hot of the sample's argmax and the backward the soft
    sample's gradient (straight-through)."""
    if not isinstance(logits, Tensor) or not dtypes.is_floating(logits.dtype):
        raise TypeError(f"gumbel_softmax: logits must be a floating point Tensor, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if not tau > 0:
        raise ValueError(f"gumbel_softmax: tau must be positive, got {tau!r}")
    uniform = creation.rand(*logits.shape, dtype=logits.dtype, device=logits.device)
    tiny = finfo(logits.dtype).tiny                     # log(0) would give -inf noise
    gumbels = -(-uniform.clamp_min(tiny).log()).log()
    y_soft = ((logits + gumbels) / tau).softmax(dim)
    if not hard:
        return y_soft
    index = y_soft.argmax(dim, keepdim=True)
    y_hard = creation.zeros_like(logits).scatter(dim, index, 1.0)
    return y_hard - y_soft.detach() + y_soft
