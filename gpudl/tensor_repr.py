"""A tensor's repr, laid out as torch prints it.

Floats take one format for the whole tensor, chosen from its finite non-zero values (torch's
rule): scientific notation with four decimals (``1.0000e-05``) when the largest is over 1e8,
or more than 1000 times the smallest, or the smallest is under 1e-4; else whole numbers as
``3.``, others with four decimals (``0.2500``). Every value is padded to one width. Over
1000 elements, only the first and last three along each dim are shown (and choose the format).
``set_printoptions`` changes these numbers as torch's does.
"""

import math

import numpy as np

_PROFILES = {"default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
             "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
             "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80)}
_options = dict(_PROFILES["default"], sci_mode=None)


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None):
    """torch.set_printoptions: digits after the point, the element count above which a repr is
    summarized, the elements kept at each edge then, the line width, a profile ('default',
    'short', 'full') the others amend, and ``sci_mode`` (True/False forces scientific notation
    on or off; None, which every call sets unless given, chooses as torch does)."""
    if profile is not None and profile not in _PROFILES:
        raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, got "
                         f"{profile!r}")
    given = dict(precision=precision, threshold=threshold, edgeitems=edgeitems,
                 linewidth=linewidth)
    for name, value in given.items():
        kinds = (int, float) if name == "threshold" else int       # threshold may be inf
        least = 1 if name == "edgeitems" else 0
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                  or value < least):
            raise ValueError(f"set_printoptions: {name} must be an int >= {least}"
                             f"{' (or inf)' if name == 'threshold' else ''}, got {value!r}")
    if sci_mode is not None and not isinstance(sci_mode, bool):
        raise ValueError(f"set_printoptions: sci_mode must be None, True or False, got "
                         f"{sci_mode!r}")
    updated = dict(_PROFILES[profile]) if profile is not None else {}
    updated.update({name: value for name, value in given.items() if value is not None})
    _options.update(updated, sci_mode=sci_mode)


def tensor_str(values, suffixes):
    """``tensor(values, *suffixes)``; a suffix that would pass the line width starts a new
    line, as torch wraps ``dtype=...`` or ``grad_fn=...``."""
    prefix = "tensor("
    text = prefix + _values_str(values, prefix)
    line = len(text) - text.rfind("\n") + 1         # torch's count for the last line
    for suffix in suffixes:
        if line + len(suffix) + 2 > _options["linewidth"]:
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
    summarize = values.size > _options["threshold"]
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
    edge = _options["edgeitems"]
    cut = summarize and values.shape[0] > 2 * edge
    if values.ndim == 1:
        items = ([text(v) for v in values[:edge].tolist()] + [" ..."]
                 + [text(v) for v in values[-edge:].tolist()]) if cut \
            else [text(v) for v in values.tolist()]
        per_line = max(1, int((_options["linewidth"] - indent) // (width + 2)))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = list(range(edge)) + [None] + list(range(-edge, 0)) if cut \
        else range(values.shape[0])
    slices = ["..." if i is None else _nested(values[i], indent + 1, summarize, text, width)
              for i in rows]
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _shown(values):
    """The elements a summarized repr shows: the first and last few along each dim."""
    edge = _options["edgeitems"]
    for axis, n in enumerate(values.shape):
        if n > 2 * edge:
            keep = np.r_[0:edge, n - edge:n]
            values = np.take(values, keep, axis=axis)
    return values


def _float_format(values):
    """(value -> text, width): the format torch picks for ``values`` and the width of the
    widest finite non-zero one (nan, inf and 0 set no width)."""
    finite = values[np.isfinite(values) & (values != 0)].astype(np.float64)
    if finite.size == 0:
        return _whole, 1                 # "0.", "nan", "inf"
    largest, smallest = np.abs(finite).max(), np.abs(finite).min()
    scientific = largest / smallest > 1000 or largest > 1e8 or smallest < 1e-4 \
        if _options["sci_mode"] is None else _options["sci_mode"]
    whole = (finite == np.ceil(finite)).all()
    text = _scientific if scientific else _whole if whole else _fixed
    return text, max(len(text(v)) for v in finite.tolist())


def _whole(v):
    return f"{v:.0f}." if np.isfinite(v) else f"{v:.0f}"


def _scientific(v):
    return f"{v:.{_options['precision']}e}"


def _fixed(v):
    return f"{v:.{_options['precision']}f}"
