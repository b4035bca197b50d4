"""Slicing's joined gradients (gpudl.sliced_gradient) on the cuda device of the strict simulator:
the pieces' buffer is made and written with the device module (CuPy's on a GPU), against torch
on the CPU; the cases of tests/test_sliced_gradient.py."""

import numpy as np
import pytest

from gpudl import backend
from test_sliced_gradient import CASES, _both

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIM_DEVICE_ARRAYS,
                                 reason="the strict simulator's cuda device: "
                                 "NUMBA_ENABLE_CUDASIM=1 with GPUDL_DEVICE=cuda")]


@pytest.mark.parametrize("name", CASES)
def test_pieces_on_the_device_against_torch(rng, name):
    build, shape = CASES[name]
    leaves = _both(rng, build, shape)
    assert all(backend.get_array_module(x.grad._data) is not np for x in leaves)
