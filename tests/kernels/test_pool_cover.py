"""The CUDA pooling kernels' host-side numbers (kernels/pool_cuda.py): the backward's cover tables
(``_cover``/``_steps``: for each input cell, the windows covering it) against brute-force
enumeration of every window's cells, and the magic numbers that split flat indices without a
division. Pure NumPy: runs on any machine."""

import itertools

import numpy as np
import pytest

from gpudl.kernels import pool as K
from gpudl.kernels import pool_cuda


def brute(size, k, s, p, d, out):
    """{cell: [(o, i), ...]} in increasing o."""
    cover = {h: [] for h in range(size)}
    for o, i in itertools.product(range(out), range(k)):
        h = o * s - p + i * d
        if 0 <= h < size:
            cover[h].append((o, i))
    return cover


@pytest.mark.parametrize("size, k, s, p, d, ceil_mode", [
    (7, 2, 2, 0, 1, False), (7, 2, 2, 0, 1, True), (13, 3, 2, 1, 1, False),
    (12, 3, 1, 1, 2, True), (16, 2, 3, 1, 3, False), (9, 4, 2, 2, 2, True),
    (5, 5, 1, 2, 1, False), (11, 3, 4, 1, 2, True), (1, 1, 1, 0, 1, False),
])
def test_cover_matches_brute_force(size, k, s, p, d, ceil_mode):
    out = K.pool_output_size(size, k, s, p, d, ceil_mode)
    table = K._axis_windows(out, size, k, s, p, d)
    cover, most, exact = pool_cuda._cover(table, size, d)
    step_o, step_i = pool_cuda._steps(s, d)
    want = brute(size, k, s, p, d, out)
    for h in range(size):
        o0, n, i0 = cover[:, h]
        assert [(o0 + m * step_o, i0 - m * step_i) for m in range(n)] == want[h], h
    assert most == max(len(v) for v in want.values())
    assert exact == all(len(v) == 1 for v in want.values())


@pytest.mark.parametrize("size, out", [(6, 3), (7, 3), (3, 5), (5, 1), (4, 4)])
def test_cover_of_adaptive_bins(size, out):
    rows, _ = K._bins((1, 1, size, size), (out, out))
    cover, most, exact = pool_cuda._cover(rows, size, 1)
    for h in range(size):
        bins = [o for o in range(out) if (o * size) // out <= h < -(-(o + 1) * size // out)]
        assert list(range(cover[0, h], cover[0, h] + cover[1, h])) == bins
    assert exact == (size % out == 0)


def test_magic_split_is_exact():
    for d in (1, 2, 3, 7, 49, 3136, 12345, 2**20 + 1, 2**31 - 1):
        m, s = pool_cuda._magic(d)
        for t in (0, 1, d - 1, d, d + 1, 2**31 - 1, (2**31 - 1) // d * d - 1):
            if t >= 0:
                assert (t * m) >> s == t // d and t * m < 2**63
