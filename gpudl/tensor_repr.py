"""A tensor's repr, laid out as torch prints it.

Floats take one format for the whole tensor, chosen from its finite non-zero values (torch's
rule): whole numbers as ``3.``, else four decimals (``0.2500``), or four significant decimals in
scientific notation (``1.0000e-05``) when the largest is over 1e8, or more than 1000 times the
smallest, or (not whole) the smallest is under 1e-4. Every value is padded to one width. Over
1000 elements, only the first and last three along each dim are shown (and choose the format).
"""

import numpy as np

_PRECISION, _THRESHOLD, _EDGEITEMS, _LINEWIDTH = 4, 1000, 3, 80


def tensor_str(values, suffixes):
    """``tensor(values, *suffixes)``; a suffix that would pass the line width starts a new
    line, as torch wraps ``dtype=...`` or ``grad_fn=...``."""
    prefix = "tensor("
    text = prefix + _values_str(values, prefix)
    line = len(text) - text.rfind("\n") + 1         # torch's count for the last line
    for suffix in suffixes:
        if line + len(suffix) + 2 > _LINEWIDTH:
            text += ",\n" + " " * len(prefix) + suffix
            line = len(prefix) + len(suffix)
        else:
            text += ", " + suffix
            line += len(suffix) + 2
    return text + ")"


def _values_str(values, prefix):
    """``values`` (a NumPy array) as torch prints it after ``prefix`` (``"tensor("``): rows of
    as many elements as fit the line width, nested brackets aligned under the first."""
    if values.size == 0:
        return "[]"
    summarize = values.size > _THRESHOLD
    shown = _shown(values) if summarize else values
    if values.dtype.kind == "f":
        text, width = _float_format(shown)
    else:                                # ints and bools: str(), padded to the widest
        text, width = str, max(len(str(v)) for v in shown.ravel().tolist())
    return _nested(values, len(prefix), summarize, lambda v: text(v).rjust(width), width)


def _nested(values, indent, summarize, text, width):
    """torch's layout: a vector in lines of elements, a higher dim as its slices, one per
    line (a blank line between blocks of 3 dims and more), ``...`` where summarized."""
    if values.ndim == 0:
        return text(values.item())
    cut = summarize and values.shape[0] > 2 * _EDGEITEMS
    if values.ndim == 1:
        items = ([text(v) for v in values[:_EDGEITEMS].tolist()] + [" ..."]
                 + [text(v) for v in values[-_EDGEITEMS:].tolist()]) if cut \
            else [text(v) for v in values.tolist()]
        per_line = max(1, (_LINEWIDTH - indent) // (width + 2))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = list(range(_EDGEITEMS)) + [None] + list(range(-_EDGEITEMS, 0)) if cut \
        else range(values.shape[0])
    slices = ["..." if i is None else _nested(values[i], indent + 1, summarize, text, width)
              for i in rows]
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _shown(values):
    """The elements a summarized repr shows: the first and last few along each dim."""
    for axis, n in enumerate(values.shape):
        if n > 2 * _EDGEITEMS:
            keep = np.r_[0:_EDGEITEMS, n - _EDGEITEMS:n]
            values = np.take(values, keep, axis=axis)
    return values


def _float_format(values):
    """(value -> text, width): the format torch picks for ``values`` and the width of the
    widest finite non-zero one (nan, inf and 0 set no width)."""
    finite = values[np.isfinite(values) & (values != 0)].astype(np.float64)
    if finite.size == 0:
        return _whole, 1                 # "0.", "nan", "inf"
    largest, smallest = np.abs(finite).max(), np.abs(finite).min()
    spread = largest / smallest > 1000 or largest > 1e8
    if (finite == np.ceil(finite)).all():
        text = _scientific if spread else _whole
    else:
        text = _scientific if spread or smallest < 1e-4 else _fixed
    return text, max(len(text(v)) for v in finite.tolist())


def _whole(v):
    return f"{v:.0f}." if np.isfinite(v) else f"{v:.0f}"


def _scientific(v):
    return f"{v:.{_PRECISION}e}"


def _fixed(v):
    return f"{v:.{_PRECISION}f}"
