"""Host arrays kept across calls, for the buffers a kernel needs again at the next call's shapes.

A training loop calls a layer with the same shapes every step. Fresh NumPy buffers of a megabyte
or more then cost page faults on every call: glibc hands the freed top of its heap back to the
kernel and the next call faults it in again (an LSTM(64->128), batch 16, T 32 step took ~670
minor faults, about a quarter of its time, run alone in a process). This module keeps the arrays
it handed out and hands one out again once nothing else references it: no view, no saved tensor,
no gradient (the reference count says so), so reuse can never alias a live array.

Kept at most ``MAX_BYTES`` in all (what does not fit is allocated fresh and not kept); ``clear``
drops everything. Device (CuPy) arrays are allocated as before: CuPy pools them already.
"""

import sys
import threading

import numpy as np

MAX_BYTES = 256 << 20

_lock = threading.Lock()
_kept = {}                  # (shape, dtype) -> arrays handed out before
_bytes = [0]


def _references(arrays):
    return [sys.getrefcount(a) for a in arrays]


# what _references reports for an object only its list holds (calibrated here, as what the
# interpreter counts differs between Python versions)
_UNREFERENCED = _references([object()])[0]


def empty(xp, shape, dtype):
    """An uninitialised C-contiguous array, like ``xp.empty(shape, dtype)``; for NumPy, one kept
    from an earlier call when nothing references it any more."""
    if xp is not np:
        return xp.empty(shape, dtype)
    key = (tuple(shape), np.dtype(dtype))
    with _lock:
        arrays = _kept.setdefault(key, [])
        for i, count in enumerate(_references(arrays)):
            if count == _UNREFERENCED:
                return arrays[i]
        array = np.empty(key[0], key[1])
        if _bytes[0] + array.nbytes <= MAX_BYTES or _drop_unreferenced(array.nbytes):
            _kept.setdefault(key, []).append(array)     # the drop may have removed the list
            _bytes[0] += array.nbytes
        return array


def _drop_unreferenced(needed):
    """Forget kept arrays nobody references until ``needed`` more bytes fit; True if they do."""
    for key in list(_kept):
        arrays = _kept[key]
        unused = [i for i, count in enumerate(_references(arrays)) if count == _UNREFERENCED]
        for i in reversed(unused):
            _bytes[0] -= arrays.pop(i).nbytes
        if not arrays:
            del _kept[key]
        if _bytes[0] + needed <= MAX_BYTES:
            return True
    return False


def clear():
    """Forget every kept array (arrays still in use stay valid; they are just not reused)."""
    with _lock:
        _kept.clear()
        _bytes[0] = 0


def kept_bytes():
    """Bytes of the arrays kept for reuse."""
    return _bytes[0]
