"""The dropout generator's states as the simulator makes them (a Python-int twin of Numba's
initialiser, which the simulator would run as Python on NumPy scalars) against Numba's own
initialiser compiled for the CPU: the same states, so the simulator tests draw what a GPU
draws from the same seed."""

import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import dropout_cuda


@pytest.mark.skipif(backend.SIMULATOR, reason="Numba's initialiser is Python under the simulator")
@pytest.mark.parametrize("seed", [0, 1, 20260, 2**63 + 12345, 2**64 - 1])
def test_python_states_are_numbas(seed):
    from numba.cuda.random import init_xoroshiro128p_states_cpu, xoroshiro128p_dtype
    n = 7
    want = np.empty(n, xoroshiro128p_dtype)
    init_xoroshiro128p_states_cpu(want, np.uint64(seed), np.uint64(0))
    got = np.array(dropout_cuda._python_states(n, seed), dtype=np.uint64)
    np.testing.assert_array_equal(got, want.view(np.uint64).reshape(n, 2))
    assert len(set(map(tuple, got.tolist()))) == n          # every state its own


def test_one_state_is_splitmix64_of_the_seed():
    (s0, s1), = dropout_cuda._python_states(1, 0)
    assert s0 == s1 == 0xE220A8397B1DCDAF          # SplitMix64's first output for seed 0
