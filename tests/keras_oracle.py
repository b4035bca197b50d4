"""Keras 3 as a test oracle: imported with the torch backend, or the calling test module is
skipped (Keras is not a gpudl dependency; CI runs without it)."""

import os
import sys

import pytest

NO_KERAS = "Keras 3 (the oracle these tests compare against) is not installed"


def import_keras():
    """The real ``keras`` module, or a module-level skip."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason=NO_KERAS)
    if not hasattr(keras, "Sequential"):     # tests/keras/ seen as a namespace package
        del sys.modules["keras"]
        pytest.skip(NO_KERAS, allow_module_level=True)
    return keras
