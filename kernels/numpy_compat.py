"""NumPy names that numba-cuda still refers to after NumPy removed them.

numba-cuda 0.30 registers an overload for ``np.row_stack`` while it builds its typing context
(``numba/cuda/np/arrayobj.py``, at the first kernel compilation). NumPy 2.5 removed
``row_stack`` (deprecated since 2.0 as an alias of ``vstack``), so with NumPy 2.5 every
``cuda.jit`` compilation failed with ``AttributeError: module 'numpy' has no attribute
'row_stack'`` (seen on the first GPU run: numpy 2.5.2, numba-cuda's image of 2026-11).
``apply()`` puts the alias back where it is missing; nothing else changes, and with an older
NumPy it does nothing.
"""

import numpy as np


def apply():
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
