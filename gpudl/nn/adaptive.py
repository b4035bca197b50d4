"""AdaptiveLogSoftmaxWithLoss: torch's adaptive softmax (Grave et al. 2016), same parameters
(``head``, ``tail.{i}.0``/``tail.{i}.1``) and results."""

from collections import namedtuple

import numpy as np

from .. import backend
from ..autograd import no_grad
from ..functions import cat
from ..ops.activation import log_softmax
from ..tensor import Tensor
from .container import ModuleList, Sequential
from .linear import Linear
from .module import Module

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])


class AdaptiveLogSoftmaxWithLoss(Module):
    """The log-probability of each target under an adaptive softmax, and their mean negative.

    The ``cutoffs[0]`` most frequent classes (the shortlist) are scored by ``head`` with one
    extra output per cluster; the classes of cluster i (between consecutive cutoffs) by
    ``tail[i]``, a projection to ``in_features // div_value**(i+1)`` then to the cluster's size.
    Args as torch's: in_features, n_classes, cutoffs (increasing ints in [1, n_classes - 1]),
    div_value=4.0, head_bias=False, device, dtype.

    Shape: input (N, in_features) with target (N,), or (in_features,) with a 0-d target.
    Returns ``(output, loss)``: the target log-probabilities (N,) and their negated mean.
    """

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False,
                 device=None, dtype=None):
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
                or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):
            raise ValueError("cutoffs should be a sequence of unique, positive integers sorted "
                             "in an increasing order, where each value is between 1 and "
                             f"n_classes-1 (got cutoffs={cutoffs}, n_classes={n_classes})")
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs = [int(c) for c in cutoffs] + [n_classes]
        self.div_value, self.head_bias = div_value, head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        factory = dict(device=device, dtype=dtype)
        self.head = Linear(in_features, self.head_size, bias=head_bias, **factory)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hidden = int(in_features // (div_value ** (i + 1)))
            size = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(Sequential(Linear(in_features, hidden, bias=False, **factory),
                                        Linear(hidden, size, bias=False, **factory)))

    def reset_parameters(self):
        self.head.reset_parameters()
        for projection, output in self.tail:
            projection.reset_parameters()
            output.reset_parameters()

    def _checked(self, input, target):
        if not isinstance(input, Tensor) or not isinstance(target, Tensor):
            raise TypeError("AdaptiveLogSoftmaxWithLoss: input and target must be Tensors, got "
                            f"{type(input).__name__} and {type(target).__name__}")
        input_ndim = {1: 2, 0: 1}.get(target.ndim)
        if input_ndim is None:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if input.ndim != input_ndim:
            raise RuntimeError(f"{target.ndim}D target tensor expects {input_ndim}D input "
                               f"tensors, but found inputs with size {tuple(input.shape)}")
        if target.ndim == 1 and input.shape[0] != target.shape[0]:
            raise RuntimeError("Input and target should have the same size in the batch "
                               f"dimension (got {input.shape[0]} and {target.shape[0]})")
        if target.dtype.kind not in "iu":
            raise TypeError(f"AdaptiveLogSoftmaxWithLoss: target must be integers, got "
                            f"{target.dtype}")

    def forward(self, input, target):
        """Reads the device once on the cuda device (a counted sync): how many targets fall in
        each cluster, which decides the batch size of each tail (torch reads one count per
        cluster)."""
        self._checked(input, target)
        batched = target.ndim > 0
        x = input if batched else input.unsqueeze(0)
        labels = target._data.reshape(-1).astype(np.int64)
        xp = backend.get_array_module(labels)
        # each target's cluster: 0 the shortlist, i the tail i - 1, len(cutoffs) out of range
        cluster = sum((labels >= c).astype(np.int64) for c in self.cutoffs)
        cluster = xp.where(labels < 0, len(self.cutoffs), cluster)
        # targets per cluster (not bincount: CuPy's reads the device for its size)
        every = xp.arange(len(self.cutoffs) + 1)[:, None]
        counts = backend.to_numpy((cluster[None, :] == every).sum(axis=1),
                                  "AdaptiveLogSoftmaxWithLoss (the targets of each cluster)")
        if counts[-1]:
            values = backend.to_numpy(labels, "AdaptiveLogSoftmaxWithLoss (the bad targets)")
            raise RuntimeError(f"Target values should be in [0, {self.n_classes - 1}], but "
                               f"values in range [{values.min()}, {values.max()}] were found. ")
        order = xp.argsort(cluster)                       # the rows, cluster by cluster
        head_index = xp.where(cluster == 0, labels, self.shortlist_size + cluster - 1)
        pieces, start = [], 0
        for i, (low, count) in enumerate(zip([0] + self.cutoffs, counts[:-1].tolist())):
            rows, start = order[start:start + count], start + count
            if count == 0:
                continue
            if i == 0:
                pieces.append(x.new_zeros(count))
                continue
            row_index = Tensor._make(rows, False, None, 0, x.device)
            local = Tensor._make((labels[rows] - low)[:, None], False, None, 0, x.device)
            cluster_log_prob = log_softmax(self.tail[i - 1](x.index_select(0, row_index)), 1)
            pieces.append(cluster_log_prob.gather(1, local).reshape(-1))
        inverse = xp.argsort(order)                       # back from cluster order to rows
        tail_part = cat(pieces).index_select(0, Tensor._make(inverse, False, None, 0, x.device))
        head = log_softmax(self.head(x), 1)
        chosen = Tensor._make(head_index[:, None], False, None, 0, x.device)
        output = head.gather(1, chosen).reshape(-1) + tail_part
        loss = (-output).mean()
        return _ASMoutput(output if batched else output.reshape(()), loss)

    def _full_log_prob(self, x, head_output):
        head = log_softmax(head_output, 1)
        parts = [head[:, :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster = log_softmax(self.tail[i](x), 1)
            parts.append(cluster + head[:, self.shortlist_size + i:self.shortlist_size + i + 1])
        return cat(parts, 1)

    def log_prob(self, input):
        """Log-probabilities of every class: (N, n_classes), or (n_classes,) unbatched."""
        x = input if input.ndim > 1 else input.unsqueeze(0)
        out = self._full_log_prob(x, self.head(x))
        return out if input.ndim > 1 else out.squeeze(0)

    def predict(self, input):
        """The most likely class of each row: (N,), or 0-d unbatched. Reads the device once
        (a counted sync, as torch's): whether every row's winner is in the shortlist, which
        spares the tails."""
        x = input if input.ndim > 1 else input.unsqueeze(0)
        with no_grad():
            head_output = self.head(x)
            best = head_output.argmax(1)
            if bool((best >= self.shortlist_size).any()):
                # a shortlist winner of the head is also the winner over every class
                best = self._full_log_prob(x, head_output).argmax(1)
        return best if input.ndim > 1 else best.squeeze(0)
