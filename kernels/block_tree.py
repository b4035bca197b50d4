"""A block-wide reduction through shared memory for Numba-CUDA kernels (no shuffles: Numba's
simulator has none), in the same order on every run."""

from numba import cuda


def make_tree(threads):
    """tree(red, v, tid, take_max): the reduction over the block's ``threads`` threads (a power
    of two) of their values v: a sum, or with ``take_max`` a maximum that NaN wins; ``red`` is a
    shared array of ``threads`` values; every thread gets the result."""

    @cuda.jit(device=True, inline="always")
    def tree(red, v, tid, take_max):
        red[tid] = v
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                a, b = red[tid], red[tid + step]
                if take_max:
                    red[tid] = a if (a > b or a != a) else b
                else:
                    red[tid] = a + b
            cuda.syncthreads()
            step //= 2
        out = red[0]
        cuda.syncthreads()              # red is written again by the next reduction
        return out
    return tree
