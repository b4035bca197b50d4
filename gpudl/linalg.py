"""``gd.linalg.vector_norm`` and ``gd.einsum``: argument handling over the Functions of
gpudl.ops.linalg (VectorNorm, Einsum)."""

from .amp.autocast_mode import cast_inputs, state as _autocast
from .dtypes import LOW_PRECISION, is_floating
from . import backend, dtypes
from .tensor import Tensor
from .ops import linalg
from .ops._util import normalize_axes


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.vector_norm: the ``ord``-norm of ``x`` over ``dim`` (all dims by default)."""
    if _autocast.active:
        (x,) = cast_inputs("vector_norm", x)
    if not isinstance(x, Tensor):
        raise TypeError(f"vector_norm: input must be a Tensor, got {type(x).__name__}")
    if isinstance(ord, str) or isinstance(ord, bool):
        raise ValueError(f"vector_norm: ord must be a number, got {ord!r}")
    if not is_floating(x.dtype):
        raise TypeError(f"vector_norm: expected a floating point tensor, got {x.dtype}")
    if dtype is not None:
        dtype = dtypes.as_dtype(dtype)
        if dtypes.promote_types(x.dtype, dtype) != dtype:     # torch refuses a narrowing cast
            raise ValueError(f"vector_norm: dtype must hold the input's {x.dtype} without "
                             f"narrowing, got {dtype}")
        x = x.astype(dtype)
    if x.dtype in LOW_PRECISION:            # accumulated in float32, as torch; the input's dtype
        return vector_norm(x.float(), ord, dim, keepdim).to(x.dtype)
    axes = normalize_axes(dim, x.ndim, "vector_norm")
    if ord < 0 and x.numel() == 0 or (ord == float("inf") and any(x.shape[a] == 0 for a in axes)):
        raise ValueError(f"vector_norm: ord={ord} of an empty tensor is undefined")
    return linalg.VectorNorm.apply(x, float(ord), axes, bool(keepdim))


def einsum(equation, *operands):
    """torch.einsum: ``einsum("ij,jk->ik", a, b)`` (operands may also come as one list).
    Ellipsis broadcasts as in torch; a subscript repeated within one operand takes a diagonal
    (``einsum("ii", a)`` is the trace)."""
    if _autocast.active:
        operands = cast_inputs("einsum", *operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str) or not operands or not all(
            isinstance(t, Tensor) for t in operands):
        raise TypeError("einsum: expected an equation string and tensors")
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    subs = inputs.split(",")
    if len(subs) != len(operands):
        raise ValueError(f"einsum: the equation has {len(subs)} operands, got {len(operands)}")
    letters = set(equation) - set(",->.")
    free = iter(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba"
                if c not in letters)
    batch = max((t.ndim - len(s.replace("...", "")) for s, t in zip(subs, operands)
                 if "..." in s), default=0)
    ell = "".join(next(free) for _ in range(batch))
    named = []
    for s, t in zip(subs, operands):
        named.append(s.replace("...", ell[batch - (t.ndim - len(s.replace("...", ""))):]))
        if len(named[-1]) != t.ndim:
            raise ValueError(f"einsum: subscripts {s!r} do not match an operand of shape "
                             f"{t.shape}")
    if arrow:
        output = output.replace("...", ell)
    else:                               # implicit output: the subscripts used once, sorted
        used = "".join(named)
        output = ell + "".join(sorted(c for c in set(used) if used.count(c) == 1
                                      and c not in ell))
    sizes = {}
    for sub, t in zip(named, operands):
        for c, n in zip(sub, t.shape):
            if sizes.get(c, 1) != 1 and n != 1 and sizes[c] != n:
                raise ValueError(f"einsum: subscript {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
    operands = [t.expand(*(sizes[c] for c in sub)) for sub, t in zip(named, operands)]
    named, operands = _diagonals_as_identities(named, operands, sizes, free)
    return linalg.Einsum.apply(",".join(named) + "->" + output, *operands)


def _diagonals_as_identities(named, operands, sizes, free):
    """A subscript repeated within one operand ("ii") becomes a fresh one ("ij") and an identity
    operand ("ij") joins the product: the same sum, and each operand's gradient stays a plain
    einsum (the identities need none)."""
    named, extra = list(named), []
    for k, sub in enumerate(named):
        renamed = ""
        for c in sub:
            if c in renamed:
                fresh = next(free)
                eye = backend.xp_for(operands[k]._device).eye(sizes[c], dtype=operands[k].dtype)
                extra.append((c + fresh, Tensor._make(eye, False, None, 0, operands[k]._device)))
                c = fresh
            renamed += c
        named[k] = renamed
    return named + [s for s, _ in extra], list(operands) + [t for _, t in extra]


# branch linalg: torch.linalg's matrix functions (their own modules; imported last, as they
# use vector_norm above)
from .linalg_decompositions import (LinAlgError, cholesky, cholesky_ex, det, eig,  # noqa: E402
                                    eigh, eigvals, eigvalsh, householder_product, inv, inv_ex,
                                    lstsq, lu, lu_factor, lu_factor_ex, lu_solve, matrix_exp,
                                    pinv, qr, slogdet, solve, solve_ex, solve_triangular, svd,
                                    svdvals)
from .linalg_norms import (cond, cross, diagonal, matrix_norm, matrix_power,  # noqa: E402
                           matrix_rank, multi_dot, norm, tensorinv, tensorsolve, vander, vecdot)
# session 26, breadth2: Bunch-Kaufman LDL^T (LAPACK's sytrf/sytrs format)
from .linalg_ldl import ldl_factor, ldl_factor_ex, ldl_solve  # noqa: E402

from .out_arg import LINALG as _OUT_NAMES, wrap_names as _wrap_names  # noqa: E402
_wrap_names(globals(), _OUT_NAMES, "linalg.")      # torch's out= keyword (gpudl.out_arg)
