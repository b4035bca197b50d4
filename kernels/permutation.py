"""The swap loop of a Fisher-Yates shuffle driven by given random draws (torch.randperm's, for
DistributedSampler): position i swaps with i + draw % (n - i). A Python loop takes ~1 s per
million indices; compiled, a data set of hundreds of millions shuffles in seconds."""

import numba
import numpy as np


@numba.njit(cache=True)
def fisher_yates(order, draws, start):
    """Swap ``order[i]`` with ``order[i + draws[k] % (n - i)]`` for i = start + k, in order.

    ``draws``: uint64 (the modulo stays unsigned: numba would turn uint64 % int64 into a float).
    """
    n = order.shape[0]
    for k in range(draws.shape[0]):
        i = start + k
        j = i + np.int64(draws[k] % np.uint64(n - i))
        order[i], order[j] = order[j], order[i]
