"""CosineSimilarity and PairwiseDistance: stateless layers over ``F.cosine_similarity`` and
``F.pairwise_distance``."""

from ..ops.distance import pairwise_distance
from ..ops.normalization import cosine_similarity
from .module import Module


class CosineSimilarity(Module):
    """Cosine similarity of two inputs along ``dim``, each norm clamped to at least ``eps``."""

    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return cosine_similarity(x1, x2, self.dim, self.eps)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"


class PairwiseDistance(Module):
    """||x1 - x2 + eps||_p over the last dim (``norm`` is p, as torch names it)."""

    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1, x2):
        return pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
