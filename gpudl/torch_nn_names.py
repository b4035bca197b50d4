"""torch's top-level names for the nn functions that ported scripts call as ``torch.*``
(``torch.conv2d``, ``torch.max_pool2d``, ``torch.batch_norm``, ...). Most are the functional ops
themselves; the few whose torch signature differs from ``torch.nn.functional``'s (the norms'
positional order and cudnn flag, ``embedding``'s weight first, ``dropout``'s ``train``,
``adaptive_max_pool1d`` returning indices) are thin wrappers with torch's signature."""

from .ops.conv import (conv1d, conv2d, conv3d, conv_transpose1d,  # noqa: F401
                       conv_transpose2d, conv_transpose3d, convolution)
from .ops.distance import pdist  # noqa: F401
from .ops.dropout import dropout as _dropout
from .ops.normalization import (batch_norm as _batch_norm, group_norm as _group_norm,
                                instance_norm as _instance_norm, layer_norm as _layer_norm)
from .ops.pool import adaptive_avg_pool1d, avg_pool1d, max_pool1d, max_pool2d  # noqa: F401
from .ops.pool_nd import (adaptive_max_pool1d_with_indices, max_pool1d_with_indices,  # noqa: F401
                          max_pool3d)
from .ops.resample import channel_shuffle, pixel_shuffle, pixel_unshuffle  # noqa: F401
from .ops.sparse import embedding as _embedding


def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
               cudnn_enabled=True):
    """``torch.batch_norm``: F.batch_norm with torch's positional order (weight and bias
    first); ``cudnn_enabled`` is accepted and ignored."""
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum,
                  eps, cudnn_enabled=True):
    """``torch.instance_norm``: F.instance_norm with torch's positional order."""
    return _instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                          momentum, eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    """``torch.layer_norm``: F.layer_norm (``cudnn_enable`` accepted and ignored)."""
    return _layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    """``torch.group_norm``: F.group_norm (``cudnn_enabled`` accepted and ignored)."""
    return _group_norm(input, num_groups, weight, bias, eps)


def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """``torch.embedding``: rows of ``weight`` at ``indices`` (weight first; a negative
    ``padding_idx`` means none, as torch's)."""
    return _embedding(indices, weight, None if padding_idx < 0 else padding_idx,
                      scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


def dropout(input, p, train):
    """``torch.dropout``: F.dropout with ``train`` in place of ``training``."""
    return _dropout(input, p, training=train)


def adaptive_max_pool1d(input, output_size):
    """``torch.adaptive_max_pool1d``: (values, indices), as torch's returns both."""
    return adaptive_max_pool1d_with_indices(input, output_size)


# ----------------------------------------------------------------- session 26: losses, distances
def _top_level(name, params):
    """torch.<name>: F.<name> under torch's top-level signature (``params``, its positional
    order) whose ``reduction`` is an int (0 'none', 1 'mean', 2 'sum') or a string, 'none' when
    not given (torch's top-level default, unlike F's 'mean'); the names after a "*" are
    keyword-only."""
    positional = params[:params.index("*")] if "*" in params else params

    def call(*args, **kwargs):
        from .nn import functional
        if len(args) > len(positional):
            raise TypeError(f"{name}() takes at most {len(positional)} positional arguments but "
                            f"{len(args)} were given")
        for key, value in zip(positional, args):
            if key in kwargs:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            kwargs[key] = value
        if "reduction" in params:
            kwargs.setdefault("reduction", 0)   # torch's top-level losses reduce nothing unless told
        reduction = kwargs.get("reduction")
        if isinstance(reduction, int) and not isinstance(reduction, bool):
            if reduction not in (0, 1, 2):
                raise ValueError(f"{name}: reduction must be 0 (none), 1 (mean) or 2 (sum), got "
                                 f"{reduction}")
            kwargs["reduction"] = ("none", "mean", "sum")[reduction]
        return getattr(functional, name)(**kwargs)
    call.__name__ = name
    call.__doc__ = (f"``torch.{name}({', '.join(params)})``: gpudl.nn.functional.{name}, "
                    "``reduction`` also as torch's int (0 none, 1 mean, 2 sum).")
    return call


_SIGNATURES = {
    "kl_div": ("input", "target", "reduction", "*", "log_target"),
    "hinge_embedding_loss": ("input", "target", "margin", "reduction"),
    "margin_ranking_loss": ("input1", "input2", "target", "margin", "reduction"),
    "triplet_margin_loss": ("anchor", "positive", "negative", "margin", "p", "eps", "swap",
                            "reduction"),
    "poisson_nll_loss": ("input", "target", "log_input", "full", "eps", "reduction"),
    "cosine_embedding_loss": ("input1", "input2", "target", "margin", "reduction"),
    "binary_cross_entropy_with_logits": ("input", "target", "weight", "pos_weight", "reduction"),
    "cosine_similarity": ("x1", "x2", "dim", "eps"),
    "pairwise_distance": ("x1", "x2", "p", "eps", "keepdim"),
    "rms_norm": ("input", "normalized_shape", "weight", "eps"),
    "bilinear": ("input1", "input2", "weight", "bias"),
}
for _name, _params in _SIGNATURES.items():
    globals()[_name] = _top_level(_name, _params)
del _name, _params
