"""Embedding: a lookup table of ``num_embeddings`` vectors of size ``embedding_dim``."""

from .. import creation, dtypes
from ..autograd import no_grad
from ..ops._util import is_int
from ..ops.embedding_bag import embedding_bag
from ..ops.sparse import embedding
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


class Embedding(Module):
    """Rows of ``weight`` (num_embeddings, embedding_dim), initialised N(0, 1), picked by integer
    indices: (*) -> (*, embedding_dim). Row ``padding_idx`` starts at zero and gets no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        num_embeddings, embedding_dim, padding_idx = _checked_table(
            "Embedding", num_embeddings, embedding_dim, padding_idx)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        _set_table_weight(self, "Embedding", _weight, _freeze, device, dtype)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        return text

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding holding a copy of the 2-D ``embeddings`` (Tensor or array); ``freeze``
        keeps it out of training (requires_grad False)."""
        weight = embeddings.detach().clone() if isinstance(embeddings, Tensor) else \
            creation.tensor(embeddings)
        if weight.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape "
                             f"{weight.shape}")
        rows, cols = weight.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=weight, _freeze=freeze)


class EmbeddingBag(Module):
    """Sums, means or maxima (``mode``) of bags of rows of ``weight`` (num_embeddings,
    embedding_dim), initialised N(0, 1): ``input`` (bags, length) holds one bag a row, or a 1-D
    ``input`` with ``offsets`` (each bag's start) holds bags of any length; the output is
    (bags, embedding_dim). Entries equal to ``padding_idx`` are left out of their bag (see
    ``gpudl.ops.embedding_bag``)."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, mode="mean", sparse=False, _weight=None,
                 include_last_offset=False, padding_idx=None, device=None, dtype=None):
        super().__init__()
        num_embeddings, embedding_dim, padding_idx = _checked_table(
            "EmbeddingBag", num_embeddings, embedding_dim, padding_idx)
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"EmbeddingBag: mode must be 'sum', 'mean' or 'max', got {mode!r}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.mode = mode
        self.sparse = sparse
        self.include_last_offset = include_last_offset
        self.padding_idx = padding_idx
        _set_table_weight(self, "EmbeddingBag", _weight, False, device, dtype)

    reset_parameters = Embedding.reset_parameters

    def forward(self, input, offsets=None, per_sample_weights=None):
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type,
                             self.scale_grad_by_freq, self.mode, self.sparse,
                             per_sample_weights, self.include_last_offset, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


def _checked_table(cls_name, num_embeddings, embedding_dim, padding_idx):
    """(num_embeddings, embedding_dim, padding_idx) checked, padding_idx made non-negative."""
    for name, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
        if not is_int(n) or n < 0:
            raise ValueError(f"{cls_name}: {name} must be a non-negative int, got {n!r}")
    num_embeddings, embedding_dim = int(num_embeddings), int(embedding_dim)
    if padding_idx is not None:
        if not is_int(padding_idx):
            raise TypeError(f"{cls_name}: padding_idx must be an int or None, got "
                            f"{padding_idx!r}")
        padding_idx = int(padding_idx)
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"{cls_name}: padding_idx must be within [{-num_embeddings}, "
                             f"{num_embeddings - 1}], got {padding_idx}")
        padding_idx %= num_embeddings
    return num_embeddings, embedding_dim, padding_idx


def _set_table_weight(module, cls_name, _weight, freeze, device, dtype):
    """``module.weight``, an embedding table: ``_weight`` if given, else initialised by the
    module's reset_parameters."""
    shape = (module.num_embeddings, module.embedding_dim)
    if _weight is not None:
        if tuple(_weight.shape) != shape:
            raise ValueError(f"{cls_name}: _weight has shape {tuple(_weight.shape)}, expected "
                             f"{shape}")
        module.weight = Parameter(_weight, requires_grad=not freeze)
        return
    dtype = dtypes.as_dtype(dtype, cls_name) or dtypes.DEFAULT_FLOAT
    module.weight = Parameter(creation.empty(*shape, dtype=dtype, device=device),
                              requires_grad=not freeze)
    module.reset_parameters()
