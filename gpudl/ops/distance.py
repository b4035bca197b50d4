"""F.pairwise_distance: the p-norm of x1 - x2 (+ eps) over the last dim, as torch."""

from ..tensor import Tensor


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p over the last dim (x1 and x2 broadcast); ``eps`` keeps the norm's
    gradient finite where x1 == x2."""
    from ..linalg import vector_norm
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise TypeError(f"pairwise_distance: x1 and x2 must be Tensors, got "
                        f"{type(x1).__name__} and {type(x2).__name__}")
    if x1.ndim == 0 and x2.ndim == 0:
        raise ValueError("pairwise_distance: x1 and x2 must have at least one dimension")
    return vector_norm(x1 - x2 + eps, p, -1, keepdim)
