"""torch.randperm's two shuffles, driven by given random draws (for DistributedSampler). A Python
loop takes ~1 s per million indices; compiled, a data set of hundreds of millions shuffles in
seconds. ``draws`` are uint64: the modulo stays unsigned (numba turns uint64 % int64 into a
float)."""

import numba
import numpy as np


@numba.njit(cache=True)
def fisher_yates(order, draws, start):
    """Swap ``order[i]`` with ``order[i + draws[k] % (n - i)]`` for i = start + k, in order."""
    n = order.shape[0]
    for k in range(draws.shape[0]):
        i = start + k
        j = i + np.int64(draws[k] % np.uint64(n - i))
        order[i], order[j] = order[j], order[i]


@numba.njit(cache=True)
def inside_out(order, draws, start):
    """The "inside-out" Fisher-Yates: for i = start + k, z = draws[k] % (i + 1);
    ``order[i] = order[z]`` then ``order[z] = i``."""
    for k in range(draws.shape[0]):
        i = start + k
        z = np.int64(draws[k] % np.uint64(i + 1))
        order[i] = order[z]
        order[z] = i
