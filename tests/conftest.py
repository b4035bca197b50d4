"""Shared test set-up: a fixed seed per test and the tests folder importable (oracle.py)."""

import zlib

import numpy as np
import pytest

import gpudl as gd


@pytest.fixture(autouse=True)
def _seed():
    gd.manual_seed(0)
    yield


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's id: different inputs per test, the same on every
    run (crc32, not hash(): string hashes change with PYTHONHASHSEED)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
