"""Shared test set-up: a fixed seed per test and the tests folder importable (oracle.py)."""

import numpy as np
import pytest

import gpudl as gd


@pytest.fixture(autouse=True)
def _seed():
    gd.manual_seed(0)
    yield


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: fresh inputs per test, reproducible."""
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2 ** 32))
