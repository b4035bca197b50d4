"""gpudl.nn.functional (``F``): every differentiable op under torch.nn.functional's names.

The maths lives in ``gpudl.ops``; this file only gathers it. Keep it a list of imports.
"""

from ..ops.linear import linear  # noqa: F401

# ------------------------------------------------------------------ activations, softmax
from ..ops.activation import (  # noqa: F401
    elu, gelu, glu, hardtanh, leaky_relu, log_softmax, mish, relu, relu6, sigmoid, silu, softmax,
    softplus, tanh)

# ------------------------------------------------------------------ dropout, normalization, lookup
from ..ops.dropout import dropout  # noqa: F401
from ..ops.normalization import (  # noqa: F401
    batch_norm, cosine_similarity, group_norm, instance_norm, layer_norm, normalize)
from ..ops.padding import pad  # noqa: F401
from ..ops.sparse import embedding, one_hot  # noqa: F401

# ------------------------------------------------------------------ losses
from ..ops.cross_entropy import cross_entropy, nll_loss  # noqa: F401
from ..ops.loss import (  # noqa: F401
    binary_cross_entropy, binary_cross_entropy_with_logits, huber_loss, kl_div, l1_loss, mse_loss,
    smooth_l1_loss)

# ------------------------------------------------------------------ conv, pool, rnn, attention
# (added by their authors, one import line each)
from ..ops.attention import scaled_dot_product_attention  # noqa: F401
from ..ops.conv import conv1d, conv2d, conv_transpose2d, unfold  # noqa: F401
from ..ops.pool import (  # noqa: F401
    adaptive_avg_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d)
from ..ops.resample import interpolate, pixel_shuffle  # noqa: F401

# ------------------------------------------------------------------ session 10: nn breadth
from ..ops.activation import (  # noqa: F401
    celu, hardshrink, hardsigmoid, hardswish, logsigmoid, prelu, rrelu, selu, softmin,
    softshrink, softsign, tanhshrink, threshold)
from ..ops.activation import (  # noqa: F401
    celu_, elu_, hardtanh_, leaky_relu_, relu_, rrelu_, selu_, threshold_)
from ..ops.dropout import alpha_dropout, dropout1d, dropout2d, dropout3d  # noqa: F401
from ..ops.dropout import feature_alpha_dropout  # noqa: F401,E402
from ..ops.normalization import rms_norm  # noqa: F401
from ..ops.distance import pairwise_distance  # noqa: F401
from ..ops.margin_loss import (  # noqa: F401
    cosine_embedding_loss, gaussian_nll_loss, hinge_embedding_loss, margin_ranking_loss,
    multi_margin_loss, multilabel_soft_margin_loss, poisson_nll_loss, soft_margin_loss,
    triplet_margin_loss, triplet_margin_with_distance_loss)
from ..ops.linear import bilinear  # noqa: F401
from ..ops.pool import (  # noqa: F401
    adaptive_avg_pool1d, adaptive_max_pool1d, adaptive_max_pool2d)
from ..ops.embedding_bag import embedding_bag  # noqa: F401
from ..ops.gumbel_softmax import gumbel_softmax  # noqa: F401

# ------------------------------------------------------------------ session 11, nn-utils
from ..ops.ctc_loss import ctc_loss  # noqa: F401
from ..ops.multilabel_margin import multilabel_margin_loss  # noqa: F401
# ------------------------------------------------------------------ session 11: nn-vision
from ..ops.conv import conv3d, conv_transpose1d, conv_transpose3d, fold  # noqa: F401
from ..ops.distance import pdist  # noqa: F401
from ..ops.fractional_pool import (  # noqa: F401
    fractional_max_pool2d, fractional_max_pool2d_with_indices, fractional_max_pool3d,
    fractional_max_pool3d_with_indices)
from ..ops.grid_sample import affine_grid, grid_sample  # noqa: F401
from ..ops.local_response_norm import local_response_norm  # noqa: F401
from ..ops.pool_nd import (  # noqa: F401
    adaptive_avg_pool3d, adaptive_max_pool1d_with_indices, adaptive_max_pool2d_with_indices,
    adaptive_max_pool3d, adaptive_max_pool3d_with_indices, avg_pool3d, lp_pool1d, lp_pool2d,
    lp_pool3d, max_pool1d_with_indices, max_pool2d_with_indices, max_pool3d,
    max_pool3d_with_indices, max_unpool1d, max_unpool2d, max_unpool3d)
from ..ops.resample import (  # noqa: F401
    channel_shuffle, pixel_unshuffle, upsample, upsample_bilinear, upsample_nearest)
from ..out_arg import NN_FUNCTIONAL, wrap_names  # noqa: E402
wrap_names(globals(), NN_FUNCTIONAL, "nn.functional.")    # torch's out= keyword (F.normalize)
del NN_FUNCTIONAL, wrap_names
