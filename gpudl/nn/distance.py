"""CosineSimilarity: a stateless layer over ``F.cosine_similarity``."""

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
