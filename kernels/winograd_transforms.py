"""The tile transforms of Winograd F(2x2, 3x3) as CUDA device functions, shared by the unfused
(conv_winograd_cuda) and fused (conv_winograd_fused_cuda) kernels. The matrices are
kernels/conv_winograd.py's: B^T d B takes a 4x4 input patch to its 16 positions, A^T M A takes
16 positions to a 2x2 output tile, A gY A^T (the adjoint of the latter) a 2x2 block of output
gradient to 16 positions. Each one-dimensional transform is a handful of additions; the
two-dimensional ones apply it to the columns, then to the rows of the result."""

from numba import cuda, uint64


@cuda.jit(device=True, inline="always")
def bt(d0, d1, d2, d3):
    """B^T d for one column (or row) of a patch."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@cuda.jit(device=True, inline="always")
def at(m0, m1, m2, m3):
    """A^T m for one column (or row) of four positions."""
    return m0 + m1 + m2, m1 - m2 - m3


@cuda.jit(device=True, inline="always")
def ag(g0, g1):
    """A g for one column (or row) of two: the adjoint of ``at``."""
    return g0, g0 + g1, g0 - g1, -g1


@cuda.jit(device=True, inline="always")
def store4(a, first, step, e):
    """The four values of ``e`` into ``a`` at first, first + step, first + 2 step, first + 3
    step (non-negative). The offsets are a 64-bit base plus multiples of ``step``: for a
    constant step the stores take them as immediate offsets (a 32-bit sum could wrap, so each
    would cost an address register)."""
    base = uint64(first)
    a[base] = e[0]
    a[base + uint64(step)] = e[1]
    a[base + uint64(2 * step)] = e[2]
    a[base + uint64(3 * step)] = e[3]


@cuda.jit(device=True, inline="always")
def store_bt_rows(a, first, step, c0, c1, c2, c3):
    """B^T d B into ``a``, position 4r + j at first + (4r + j) step, from the columns of B^T d
    (``c<j>`` = B^T of the patch's column j, rows 0..3): row r of the result is B^T of row r
    of those."""
    base = uint64(first)
    store4(a, base, step, bt(c0[0], c1[0], c2[0], c3[0]))
    store4(a, base + uint64(4 * step), step, bt(c0[1], c1[1], c2[1], c3[1]))
    store4(a, base + uint64(8 * step), step, bt(c0[2], c1[2], c2[2], c3[2]))
    store4(a, base + uint64(12 * step), step, bt(c0[3], c1[3], c2[3], c3[3]))


@cuda.jit(device=True, inline="always")
def store_ag_rows(a, first, step, q0, q1):
    """A gY A^T into ``a``, position 4r + j at first + (4r + j) step, from the columns of A gY
    (``q<j>`` = A of gY's column j, rows 0..3)."""
    base = uint64(first)
    store4(a, base, step, ag(q0[0], q1[0]))
    store4(a, base + uint64(4 * step), step, ag(q0[1], q1[1]))
    store4(a, base + uint64(8 * step), step, ag(q0[2], q1[2]))
    store4(a, base + uint64(12 * step), step, ag(q0[3], q1[3]))


@cuda.jit(device=True, inline="always")
def store_output_tile(y, row, Wo, right, below, r0, r1, b):
    """A^T M A + b into y's 2x2 output tile at flat offset ``row`` (its lower row at row + Wo)
    from the rows of A^T M (``r0``, ``r1``: 4 values each), the outputs past the right
    (``right`` False) or lower (``below`` False) edge left out."""
    y00, y01 = at(r0[0], r0[1], r0[2], r0[3])
    y10, y11 = at(r1[0], r1[1], r1[2], r1[3])
    base = uint64(row)
    y[base] = y00 + b
    if right:
        y[base + uint64(1)] = y01 + b
    if below:
        y[base + uint64(Wo)] = y10 + b
        if right:
            y[base + uint64(Wo + 1)] = y11 + b
