"""kernels/numba_call_types.py: numba-cuda's call typing remembered per (function, argument
types) gives the same PTX as typing every call afresh, with most calls answered from the memo;
a call that fails to type fails every time, and numba's CPU compiler is left alone."""

import numpy as np
import pytest
from numba import cuda, float32, njit

from comparable_ptx import ptx_of
from gpudl import backend
from gpudl.kernels import launch, numba_call_types  # noqa: F401  (launch applies the memo)

pytestmark = pytest.mark.skipif(backend.SIMULATOR, reason="the simulator compiles nothing")


@cuda.jit(device=True, inline="always")
def _blend(a, b, weight):
    return a * weight + b * (float32(1) - weight)


@cuda.jit
def _many_calls(a, out, weight):
    """The same operators on the same types, many times (an inlined helper, unrolled steps)."""
    i = cuda.grid(1)
    if i < out.size:
        total = float32(0)
        for j in range(4):
            total += _blend(a[(i + j) % a.size], a[(i + 2 * j) % a.size], weight)
            total = max(total, _blend(total, a[i], weight))
        out[i] = total + _blend(a[i], out[i], weight)


SIGNATURE = "void(float32[::1], float32[::1], float32)"


def _ptx():
    return ptx_of(_many_calls, SIGNATURE)


def test_applied_where_kernels_compile():
    assert numba_call_types.applied()
    numba_call_types.apply()           # a second call changes nothing
    assert numba_call_types.applied()


def test_same_ptx_as_typing_every_call_afresh(monkeypatch):
    from numba.core.types.functions import BaseFunction
    before = dict(numba_call_types.STATS)
    ours = _ptx()
    hits = numba_call_types.STATS["hits"] - before["hits"]
    misses = numba_call_types.STATS["misses"] - before["misses"]
    assert hits > misses > 0                     # most calls typed before, in this compile
    monkeypatch.setattr(BaseFunction, "get_call_type", BaseFunction.get_call_type.wrapped)
    assert not numba_call_types.applied()
    theirs = _ptx()
    assert ours == theirs and "fma.rn.f32" in ours


def test_a_call_that_fails_to_type_fails_every_time():
    @cuda.jit
    def bad(out):
        out[0] = max(out, 1.0)         # max of an array and a number: no signature

    messages = []
    for _ in range(2):
        with pytest.raises(Exception, match="max") as info:
            cuda.compile_ptx(bad.py_func, "void(float32[::1])", cc=(9, 0))
        messages.append(type(info.value).__name__)
    assert messages[0] == messages[1] == "TypingError"


def test_numbas_cpu_compiler_types_without_the_memo():
    before = dict(numba_call_types.STATS)

    @njit
    def blend(a, weight):
        return a * weight + a[::-1] * (1 - weight)
    np.testing.assert_allclose(blend(np.arange(3.0), 0.25), [1.5, 1.0, 0.5])
    assert numba_call_types.STATS == before
