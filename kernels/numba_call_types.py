"""numba-cuda's typing of a call, remembered for the same function and argument types.

Type inference types every call expression of a kernel (an operator, an intrinsic, a math
function) by trying each of the function's typing templates in turn (``BaseFunction.
get_call_type``), and the inlined helpers of a tensor-core attention kernel make ~11,000 such
calls, 89% of them the same function on the same argument types again (int32 + int32, a shared
array's getitem, ...). Typing is a pure function of (function type, typing context, target,
argument types): the templates of a function type are part of its identity (numba builds a new
type when more are registered), and literal arguments are types of their own. ``apply()`` wraps
``get_call_type`` for CUDA typing contexts with a memo of the signature it found and of the
implementation key it recorded (``_impl_keys``, which lowering reads), put back on every hit.
A call that fails to type is not remembered: it fails again in full, with numba's message.
Numba's CPU compiler (gpudl's @njit kernels) goes through numba's own method, untouched.

The PTX of every kernel of ``python -m gpudl.kernels --check`` is the same byte for byte with
and without it (benchmarks/RESULTS.md, "Session 23"); tests/kernels/test_numba_call_types.py
compares a compile's PTX and counts the hits.
"""

_MEMO = {}          # (function type, context, target, argument types, keywords) -> (sig, impl key)
STATS = {"hits": 0, "misses": 0}


def _layout():
    """(numba's BaseFunction, the CUDA typing context class, get_local_target), or None where
    they are not where numba 0.6x / numba-cuda 0.30 have them."""
    try:
        from numba.core.target_extension import get_local_target
        from numba.core.types.functions import BaseFunction
        from numba.cuda.target import CUDATypingContext
    except ImportError:
        return None
    if not hasattr(BaseFunction, "get_call_type"):
        return None
    return BaseFunction, CUDATypingContext, get_local_target


def _remembering(get_call_type, cuda_context, get_local_target):
    def get_call_type_remembered(self, context, args, kws):
        if not isinstance(context, cuda_context):
            return get_call_type(self, context, args, kws)
        try:
            key = (self, context, get_local_target(context), tuple(args),
                   tuple(sorted(kws.items())))
            hash(key)
        except TypeError:                      # an unhashable argument type: type it afresh
            return get_call_type(self, context, args, kws)
        known = _MEMO.get(key)
        if known is not None:
            STATS["hits"] += 1
            sig, impl_key = known
            self._impl_keys[sig.args] = impl_key
            return sig
        STATS["misses"] += 1
        sig = get_call_type(self, context, args, kws)      # raises for a call that fails
        _MEMO[key] = sig, self._impl_keys[sig.args]
        return sig
    get_call_type_remembered.wrapped = get_call_type
    return get_call_type_remembered


def apply():
    """Install the memo in numba's ``BaseFunction.get_call_type``, once; on a numba laid out
    otherwise do nothing (``applied()`` says so, and a test fails)."""
    layout = _layout()
    if layout is None or applied():
        return
    base, cuda_context, get_local_target = layout
    base.get_call_type = _remembering(base.get_call_type, cuda_context, get_local_target)


def applied():
    """Whether ``apply()`` has installed the memo in this process."""
    layout = _layout()
    return layout is not None and hasattr(layout[0].get_call_type, "wrapped")
