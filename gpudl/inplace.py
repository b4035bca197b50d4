"""In-place ops in the autograd graph, as PyTorch records them.

An in-place op on a tensor that takes part in a graph (it requires grad, views a tensor that
does, or is written from one that does) runs as its out-of-place form, whose result is written
back into the tensor's memory:

- on a tensor that views no other, the op's node becomes the tensor's grad_fn (its history is
  rebased, as in torch);
- on a view, the base's history becomes ``CopySlices(old base history, the op's result)``, whose
  backward passes the base's gradient outside the view to the old history and inside it to the
  op; the view's grad_fn is then taken again from the base's new history. Other views of the
  base find their history stale by their version counter and take theirs again at their next
  use (refresh_view).

A leaf that requires grad (or a view of one) is refused, as torch refuses it. What the op's
node saved of the old values is copied before they are overwritten
(keep_values_before_write); whatever else saved them still fails the version check.
"""

from . import autograd, backend, dtypes
from .autograd import Context, ArrayFunction
from .ops._util import sum_to, xp_of


# ----------------------------------------------------------------- views
def view_origin(view):
    """(base, steps, grad mode) of a tensor with ``_view`` set. ``Tensor._view`` is a tuple
    (Function, its arguments, version, grad mode): the op that took the view from its first
    argument, the shared version counter's value when the view's grad_fn was last derived, and
    whether grad mode was on when it was taken. The base is the first tensor up the chain that
    is no view itself (it owns the memory); ``steps`` ((Function, arguments after the first)
    each) take the view from it; the grad mode is off if it was off for any step."""
    steps, grad_mode, tensor = [], True, view
    while tensor._view is not None:
        cls, args, _, mode = tensor._view
        steps.append((cls, args[1:]))
        grad_mode = grad_mode and mode
        tensor = args[0]
    return tensor, tuple(reversed(steps)), grad_mode


def view_of_array(steps, array):
    """The steps of view_origin applied to a raw array (the base's, or a gradient of its
    shape)."""
    for cls, rest in steps:
        array = cls.forward(Context(), array, *rest)
    return array


def view_of_tensor(steps, tensor):
    """The steps of view_origin applied to a Tensor, recorded as any op is."""
    for cls, rest in steps:
        tensor = cls.apply(tensor, *rest)
    return tensor


def refresh_view(view):
    """The base of ``view`` was edited in place after the view's grad_fn was set: derive its
    grad_fn again from the base's new history, as torch regenerates a view's grad_fn."""
    base, steps, grad_mode = view_origin(view)
    if not autograd._grad.enabled or not base._requires_grad or (view.grad_fn is None
                                                         and view._requires_grad):
        return      # nothing to record now, or a leaf taken as a view: keeps what it has
    if not grad_mode:
        raise RuntimeError(
            "a view was created in no_grad mode and its base or another view of its base has "
            "been modified inplace with grad mode enabled; this is ambiguous and refused (as "
            "torch does): take the view and edit in place both inside no_grad or both outside")
    fresh = view_of_tensor(steps, base)
    view_is_current(view)           # first: _rebase's retain_grad() reads the view's history
    _rebase(view, fresh)


def view_is_current(view):
    """Record that ``view``'s grad_fn follows its base's history at the current version."""
    cls, args, _, grad_mode = view._view
    view._view = (cls, args, view._version_counter[0], grad_mode)


def keep_values_before_write(node, stop, array):
    """Before ``array``'s memory is written in place: the nodes from ``node`` (not past the
    nodes in ``stop``) that kept arrays overlapping it for backward, while those are still at
    their saved version, keep private copies instead and stop checking that memory's version.
    An in-place op is recorded as its out-of-place form whose result is then written back;
    this keeps what that form saved of the old values (torch saves a copy of them too)."""
    seen, todo = set(stop), [node]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(edge[0] for edge in node.edges if isinstance(edge, tuple))
        saved = node.saved_versions
        overlapping = [entry for entry in saved or () if autograd._overlaps(entry[4], array)]
        if not overlapping or any(counter[0] != version
                                  for counter, version, _, _, _ in overlapping):
            continue                # nothing of it kept, or edited already: backward refuses
        _map_kept(node.ctx, lambda a: a.copy() if autograd._overlaps(a, array) else a)
        node.saved_versions = [entry for entry in saved if not autograd._overlaps(entry[4], array)]


def saved_output_moved(node, old, new, counter):
    """``node``'s output array ``old`` was copied into ``new``, the memory of an in-place op's
    tensor (version counter ``counter``): what the node kept of it reads ``new`` instead, checked
    against that memory's version, and the copy can be freed (torch saves the tensor itself)."""
    saved = node.saved_versions
    if not saved or not any(entry[4] is old for entry in saved):
        return
    _map_kept(node.ctx, lambda a: new if a is old else a)
    node.saved_versions = [(counter, counter[0], role, i, new) if a is old
                           else (c, version, role, i, a) for c, version, role, i, a in saved]


def _map_kept(ctx, change):
    """Replace every array ``ctx`` keeps (as _kept_arrays reads them) by ``change(array)``."""
    types = backend.ARRAY_TYPES

    def changed(value):
        if isinstance(value, types):
            return change(value)
        if isinstance(value, dict):
            return {k: change(v) if isinstance(v, types) else v for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            items = [change(v) if isinstance(v, types) else v for v in value]
            return (type(value)(*items) if hasattr(value, "_fields")        # a namedtuple
                    else type(value)(items))
        return value
    for key, value in list(ctx.__dict__.items()):
        if key != "needs_input_grad":
            setattr(ctx, key, changed(value))


# ----------------------------------------------------------------- in-place ops
class CopySlices(ArrayFunction):
    """``base`` with the memory of its view (``steps``, see view_origin) overwritten by
    ``values``, in place: the new history of a base edited through a view."""

    @staticmethod
    def forward(ctx, base, steps, values):
        ctx.steps = steps
        ctx.layout = "F" if base.flags.f_contiguous and not base.flags.c_contiguous else "C"
        view_of_array(steps, base)[...] = values
        return base

    @staticmethod
    def backward(ctx, g):
        g_base = xp_of(g).array(g, order=ctx.layout, copy=True)   # the base's layout: the
        region = view_of_array(ctx.steps, g_base)                  # steps take a view of it
        if not xp_of(g).may_share_memory(region, g_base):
            raise RuntimeError("CopySlicesBackward: the view's steps copy a gradient of the "
                               "base's shape instead of viewing it; cannot route the gradient")
        g_values = region.copy() if ctx.needs_input_grad[2] else None
        region[...] = 0
        return g_base, None, g_values


class Overwrite(ArrayFunction):
    """``a``'s values replaced by ``values`` (an array or number broadcast to a's shape): copy_,
    fill_ and the random fills in the graph; ``a`` gets no gradient."""

    @staticmethod
    def forward(ctx, a, values):
        ctx.shape = getattr(values, "shape", ())
        out = xp_of(a).empty_like(a)
        out[...] = values
        return out

    @staticmethod
    def backward(ctx, g):
        return None, (sum_to(g, ctx.shape) if ctx.needs_input_grad[1] else None)


def needs_graph(tensor, others=()):
    """Whether an in-place op on ``tensor`` with tensors ``others`` must be recorded."""
    if not autograd._grad.enabled:         # (on every in-place call: no generator, no call)
        return False
    if tensor._requires_grad:
        return True
    if tensor._view is not None and view_origin(tensor)[0]._requires_grad:
        return True
    for other in others:
        if isinstance(other, autograd._Tensor) and other._requires_grad:
            return True
    return False


def apply(tensor, op, compute, others=()):
    """``tensor`` <- ``compute(tensor)`` in place (``compute`` makes the out-of-place result;
    ``others``: the tensors it reads besides ``tensor``), recorded when the graph needs it."""
    if needs_graph(tensor, others):
        return record(tensor, op, compute, others)
    with autograd.no_grad():
        out = _checked_result(tensor, op, compute(tensor))
    if out._data is not tensor._data:
        tensor._data[...] = out._data
    tensor._bump_version()
    return tensor


def apply_flag(tensor, op, compute):
    """``apply`` for an ``inplace=True`` flag (activations, dropout): out of place instead
    while a graph capture records a tensor in the graph, which it cannot replay in place (the
    values are the same; only the input keeps its own)."""
    capture = autograd._capture
    if capture is not None and capture.active() and needs_graph(tensor):
        return compute(tensor)
    return apply(tensor, op, compute)


def record(tensor, op, compute, others=()):
    """``apply`` for a tensor in the graph (see the module docstring); returns ``tensor``."""
    _refuse(tensor, op)
    source = tensor
    node = tensor.grad_fn
    if tensor._view is not None and node is not None and node.hooks and \
            node.hooks.get(tensor._out_index):
        # torch's CopySlices routes the gradient of an edited view straight to its base: the
        # hooks registered on the view's old history never see it
        base, steps, _ = view_origin(tensor)
        source = view_of_tensor(steps, base)
    out = _checked_result(tensor, op, compute(source))
    stop = {t.grad_fn for t in (tensor, source, *others)
            if isinstance(t, autograd._Tensor) and t.grad_fn is not None}
    if out.grad_fn is not None:
        keep_values_before_write(out.grad_fn, stop, tensor._data)
    if tensor._view is None and out._data is not tensor._data:
        tensor._data[...] = out._data
    took_values(tensor, out)
    if out.grad_fn is not None:
        saved_output_moved(out.grad_fn, out._data, tensor._data, tensor._version_counter)
    return tensor


def took_values(tensor, out):
    """``tensor`` now holds the values of ``out`` (written already when it views no other
    tensor; a view's base is written by CopySlices here): it takes out's history, or its base
    takes the CopySlices of it and the view its new view of the base; one version bump."""
    if tensor._view is None:
        _rebase(tensor, out)
        tensor._bump_version()
        return
    base, steps, _ = view_origin(tensor)
    _rebase(base, CopySlices.apply(base, steps, out))
    tensor._bump_version()
    _rebase(tensor, view_of_tensor(steps, base))
    view_is_current(tensor)


def _rebase(tensor, new):
    """``tensor`` takes the history of ``new`` (same values); a retain_grad() follows it, as
    in torch (its hooks stay with the old history: they see the gradient of the old values)."""
    node, index = tensor.grad_fn, tensor._out_index
    tensor.grad_fn, tensor._out_index = new.grad_fn, new._out_index
    tensor._requires_grad = new._requires_grad
    if node is not None and node.retained and node.retained.get(index) is tensor:
        del node.retained[index]
        if tensor._requires_grad:
            tensor.retain_grad()


def _refuse(tensor, op):
    """The in-place edits torch refuses while recording (a refused call changes nothing)."""
    capture = autograd._capture
    if capture is not None and capture.active():
        raise RuntimeError(f"{op}: an in-place op recorded in the autograd graph cannot be "
                           "captured; edit a tensor that is not in the graph, or out of place")
    if tensor.grad_fn is None and tensor._requires_grad:
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an "
                           "in-place operation; wrap the update in gpudl.no_grad()")
    if tensor._view is not None:
        base, _, grad_mode = view_origin(tensor)
        if base.grad_fn is None and base._requires_grad:
            raise RuntimeError(f"{op}: a view of a leaf Variable that requires grad is being "
                               "used in an in-place operation; wrap the update in "
                               "gpudl.no_grad(), or clone() the leaf first")
        if not grad_mode:
            raise RuntimeError(f"{op}: this view was created in no_grad mode and is being "
                               "modified in place with grad mode enabled; take the view "
                               "outside no_grad, or edit it inside no_grad")


def refuse_overlap(tensor, op):
    """Refuse, as torch, an in-place edit of a tensor whose elements share memory (an expanded
    one): every Tensor method that writes its tensor calls this (``autograd.recorded``). NumPy
    marks such views read-only (its error names no tensor), CuPy does not: there the edit would
    write each location once per element, racing."""
    data = tensor._data
    if data.size and any(step == 0 and n > 1 for step, n in zip(data.strides, data.shape)):
        raise RuntimeError(f"{op}: unsupported operation: more than one element of the "
                           "written-to tensor refers to a single memory location (an "
                           "expanded tensor); clone() it before editing it in place")


def _checked_result(tensor, op, out):
    """``out`` as it can be stored in ``tensor``: its shape, its dtype (refused when of a higher
    kind, bool < integer < floating, as torch refuses a float result in an int tensor)."""
    if out.shape != tensor.shape:
        raise RuntimeError(f"{op}: output with shape {tensor.shape} doesn't match the "
                           f"broadcast shape {out.shape}")
    if out.dtype != tensor.dtype:
        if dtypes.category(out.dtype) > dtypes.category(tensor.dtype):
            raise RuntimeError(f"{op}: result type {out.dtype} can't be cast to the desired "
                               f"output type {tensor.dtype}")
        out = out.astype(tensor.dtype)
    return out


autograd._refuse_overlap = refuse_overlap
