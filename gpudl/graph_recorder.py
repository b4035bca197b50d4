"""The CPU side of ``gd.cuda.graph``: a captured step recorded as a call list, replayed in place.

A ``with gd.cuda.graph(g):`` body runs once, but a graph must replay it, so on the CPU (and under
Numba's simulator) the capture records what the body does at gpudl's few choke points: every
autograd Function call (its class and its input and output arrays), every backward walk (the
nodes in order, and how each gradient reached a ``.grad``), every in-place Tensor method, and
every optimizer ``step``/``zero_grad`` as one call. ``replay()`` re-runs those calls in order on
the same arrays: forwards write into the capture's output arrays, gradients into the same
``.grad`` arrays, optimizers into the parameters, so the tensors the body made are static outputs
as on a GPU.

As on a GPU, the capture itself is not a step: what the body changed in place that existed
before it (parameters, gradients, optimizer state, running statistics, the random generators)
is restored when the capture ends, so N replays give the numbers of N eager steps. Random draws
inside a Function (dropout) are drawn again at every replay, from the same generator.

What the recorder cannot replay is refused while capturing, naming the op: a host read
(``item``, ``numpy``, printing), a tensor made from Python data, by a random factory or by a call
that bypasses the autograd Functions (its values would be frozen), a scheduler step, and a
backward that reaches operations recorded before the capture began.
"""

import gc
import linecache
import sys
import threading
import traceback
import weakref

import numpy as np

from . import autograd, backend, random
from .graph_debug import describe_backward, describe_call, describe_forward, describe_refill
from .tensor import Tensor


def refuse(what, why):
    """Raise the error of an op a graph capture cannot contain."""
    raise RuntimeError(f"{what}: {why}, which a CUDA graph capture cannot contain; move it out of "
                       "the `with gd.cuda.graph(g):` block")


class Hook:
    """Base of what ``autograd._capture`` holds: active only in the thread that began the
    capture or replay (other threads run as usual) and outside its own plain calls (``eager``)."""

    def __init__(self, check_liveness=False):
        self.thread = threading.get_ident()
        self.bypass = 0
        self.numbers, self.stepped = [], set()  # optimizer_numbers of the optimizers stepped
        self.statics = {}               # id(tensor) -> Static: older tensors the graph reads
        self.check_liveness = check_liveness

    def note_static(self, tensor, array):
        """``tensor``, from before the capture, is read by the graph (``check_statics``)."""
        static = self.statics.get(id(tensor))
        if static is None or static.ref() is not tensor:
            self.statics[id(tensor)] = Static(tensor, array, self.check_liveness)
        else:
            static.array = array        # the array it holds at its last read

    def note_step(self, kind, method, target):
        """At a capture's first step of an optimizer, keep its Python hyperparameters, which a
        replay checks (``check_statics``)."""
        if kind == "optimizer" and method.__name__ == "step" and id(target) not in self.stepped:
            self.stepped.add(id(target))
            self.numbers += optimizer_numbers(target)

    def active(self):
        return self.bypass == 0 and threading.get_ident() == self.thread

    def made(self, data, what=None):
        pass

    def constant(self, array):
        pass


def eager(function, *args):
    """Call ``function`` on the plain paths of apply, backward, ... (the hook stands aside)."""
    hook = autograd._capture
    hook.bypass += 1
    try:
        return function(*args)
    finally:
        hook.bypass -= 1


# ------------------------------------------------------------------------- recorded calls
class _Forward:
    """One Function call: forward again on the same inputs, into the same output arrays."""

    __slots__ = ("function", "args", "needs", "outputs", "ctx")

    def __init__(self, function, args, needs, outputs):
        self.function, self.args, self.needs, self.outputs = function, args, needs, outputs
        self.ctx = None

    def replay(self, replayer):
        ctx = autograd.Context()
        ctx.needs_input_grad = self.needs
        out = self.function.forward(ctx, *self.args)
        for static, new in zip(self.outputs, out if isinstance(out, tuple) else (out,)):
            if new is static or (static.base is not None and _same_view(static, new)):
                continue                # a view of an input: the same memory again
            if np.shape(new) != static.shape:
                raise RuntimeError(
                    f"CUDAGraph.replay: {self.function.__name__} made an output of shape "
                    f"{np.shape(new)} where the capture's had {static.shape}; a graph replays "
                    "the shapes it captured")
            static[...] = new
        self.ctx = ctx                  # what this call's backward node uses at the next walk

    def describe(self):
        return describe_forward(self.function, self.args, self.outputs)


def _same_view(a, b):
    return (isinstance(b, np.ndarray) and a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


class _Backward:
    """One backward walk: the same nodes, with the contexts of the replayed forwards."""

    __slots__ = ("tensor", "grad", "retain", "order", "forwards", "plan")

    def __init__(self, tensor, grad, retain, order, forwards):
        self.tensor, self.grad, self.retain = tensor, grad, retain
        self.order, self.forwards = order, forwards
        self.plan = []                  # (tensor, its .grad Tensor, "new" | "add") per accumulation

    def replay(self, replayer):
        for node, forward in self.forwards:
            node.ctx, node.freed, node.saved_versions = forward.ctx, False, ()
        replayer.plan = iter(self.plan)
        autograd._backward(self.tensor, self.grad, self.retain, self.order)
        replayer.plan = None

    def describe(self):
        return describe_backward(self.order, len(self.plan))


class _Call:
    """A call replayed as is: an in-place Tensor method, Optimizer.step or zero_grad, gradient
    clipping. A Tensor it returned (clip_grad_norm_'s norm) is a static output: refilled."""

    __slots__ = ("method", "target", "args", "kwargs", "output")

    def __init__(self, method, target, args, kwargs, output):
        self.method, self.target, self.args, self.kwargs = method, target, args, kwargs
        self.output = output

    def replay(self, replayer):
        result = self.method(self.target, *self.args, **self.kwargs)
        if self.output is not None:
            self.output[...] = result._data

    def describe(self):
        return describe_call(self.method, self.target)


class _Refill:
    """A constant made in the capture (zeros, ones, full) and later edited in place: it gets its
    first values back before that edit, as a fresh one would have them in an eager step."""

    __slots__ = ("array", "values")

    def __init__(self, array):
        self.array, self.values = array, array.copy()

    def replay(self, replayer):
        self.array[...] = self.values

    def describe(self):
        return describe_refill(self.array)


# ------------------------------------------------------------------------- capture and replay
class Recorder(Hook):
    """``autograd._capture`` while a graph is captured on the CPU: records and checks."""

    def __init__(self, forward_of=None, check_liveness=False):
        super().__init__(check_liveness)
        self.calls = []
        self.inner = 0                  # > 0 inside a recorded call: nested work is not recorded
        self.plan = None                # the accumulation list of the backward being recorded
        self.born = {}                  # id -> array written by a recorded call (kept alive)
        self.constants = {}             # id -> array of zeros/ones/full made in the capture
        self.known = None               # id -> array of every live tensor, at the first need
        self.snapshots = []             # (array, values before its first write in the capture)
        self.touched = set()
        # id(node) -> (node, its _Forward): shared by the graphs of one pool (cuda_graphs)
        self.forward_of = {} if forward_of is None else forward_of
        self.optimizers = {}            # id(optimizer) -> (optimizer, {param: state dict copy})
        self.generators = dict(random._generators)
        self.generator_states = {k: g.bit_generator.state for k, g in self.generators.items()
                                 if hasattr(g, "bit_generator")}
        states = random._dropout_states         # the simulator's device dropout states
        self.dropout_states = None if states is None else (states, states.copy())

    # --------------------------------------------------------------- choke points
    def apply(self, cls, args):
        if self.inner:
            return eager(cls.apply, *args)
        raw = [a._data if isinstance(a, Tensor) else a for a in args]
        needs = autograd.is_grad_enabled() and any(
            isinstance(a, Tensor) and a.requires_grad for a in args)
        needs = tuple(needs and isinstance(a, Tensor) and a.requires_grad for a in args)
        for a in args:
            if isinstance(a, Tensor):
                self.read(a)
        self.inner += 1
        try:
            result = eager(cls.apply, *args)
        finally:
            self.inner -= 1
        results = result if isinstance(result, tuple) else (result,)
        outputs = [t._data for t in results]
        for o in outputs:
            if id(o) not in (self.known or ()) and id(o) not in self.touched:
                self.born[id(o)] = o
        forward = _Forward(cls, raw, needs, outputs)
        self.calls.append(forward)
        for t in results:
            if t.grad_fn is not None:
                self.forward_of[id(t.grad_fn)] = (t.grad_fn, forward)
                break
        return result

    def backward(self, tensor, grad, retain_graph):
        if self.inner:
            return eager(autograd._backward, tensor, grad, retain_graph)
        order = [] if tensor.grad_fn is None else autograd._topological_order(tensor.grad_fn)
        forwards = []
        for node in order:
            entry = self.forward_of.get(id(node))
            if entry is None or entry[0] is not node:
                refuse("backward", f"reaches {node!r}, whose forward ran before the capture "
                       "began and in no graph sharing its pool (run the forward inside the "
                       "capture too)")
            forwards.append(entry)
        call = _Backward(tensor, grad, retain_graph, order, forwards)
        self.plan = call.plan
        self.inner += 1
        try:
            autograd._backward(tensor, grad, retain_graph, order)
        finally:
            self.inner -= 1
            self.plan = None
        self.calls.append(call)

    def accumulate(self, tensor, g, owned=False):
        if self.plan is None:
            return eager(autograd._accumulate, tensor, g, owned)
        grad = tensor.grad
        if grad is None:
            grad = tensor.grad = Tensor._make(g.copy(), False, None, 0, tensor.device)
            self.born[id(grad._data)] = grad._data
            kind = "new"
        else:           # in place (eager rebinds): replays must write the same array
            self.touch(grad._data)
            grad._data += g
            kind = "add"
        self.plan.append((tensor, grad, kind))

    def call(self, kind, method, target, args, kwargs):
        name = method.__qualname__
        if kind == "refused":
            refuse(name, "changes Python state (the learning rate) that a replay would not "
                   "change again; on a GPU it is baked into the graph")
        if kind == "inplace":
            self.read(target)
            self.touch(target._data)
        elif kind == "compute":     # a Tensor method computing a new tensor outside Functions
            self.read(target)
        elif kind == "optimizer":
            self.save_optimizer(target)
            self.note_step(kind, method, target)
        elif kind == "grads":       # Module.zero_grad, clip_grad_*_(parameters, ...)
            if not hasattr(target, "parameters"):
                target = [target] if isinstance(target, Tensor) else list(target)
            for p in (target.parameters() if hasattr(target, "parameters") else target):
                if p.grad is not None:
                    self.touch(p.grad._data)
        if self.inner:
            return method(target, *args, **kwargs)
        for a in args:
            if isinstance(a, Tensor):
                self.read(a)
        self.inner += 1
        try:
            result = method(target, *args, **kwargs)
        finally:
            self.inner -= 1
        output = None
        if isinstance(result, Tensor) and result is not target:
            output = result._data
            self.born[id(output)] = output
        self.calls.append(_Call(method, target, args, kwargs, output))
        return result

    def made(self, data, what=None):
        """A tensor is being made from ``data`` outside a recorded call: refused unless the
        recorder knows the array (a recorded output, a constant, a tensor older than the
        capture), since a replay would reuse this capture's values."""
        key = id(data)
        if self.inner or key in self.born or key in self.constants:
            return
        if self.known is None:
            # Every tensor made so far in the capture passed this check, so the tensors alive
            # now are those from before it and the checked ones (a scan of ~0.1 s, done once).
            arrays = (getattr(obj, "_data", None) for obj in gc.get_objects()
                      if issubclass(type(obj), Tensor))      # type(): no __class__ hooks
            self.known = {id(a): a for a in arrays if a is not None}   # None: being built
        if key in self.known:
            return
        if what is None:
            frame = sys._getframe(2)
            while frame.f_back is not None and frame.f_code.co_name.startswith("_") \
                    and not frame.f_code.co_name.startswith("__"):
                frame = frame.f_back          # name the public op, not its helper
            what = frame.f_code.co_qualname
            if what.endswith("<lambda>"):     # ``__gt__ = lambda ...``: name the assignment
                line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                name = line.partition("=")[0].strip()
                what = what.replace("<lambda>", name) if name.isidentifier() else what
        refuse(what, "makes a tensor from values the CPU recorder cannot replay (Python data, a "
               "random factory, or a computation outside gpudl's autograd Functions), so every "
               "replay would reuse this capture's values")

    def constant(self, array):
        self.constants[id(array)] = array

    # --------------------------------------------------------------- bookkeeping
    def read(self, tensor):
        """Remember a tensor from before the capture that the calls read: a replay checks it
        still holds the same array (``static.data = other`` would silently be ignored)."""
        array = tensor._data
        if id(array) not in self.born and id(array) not in self.constants:
            self.note_static(tensor, array)
            self.touch(array)

    def touch(self, array):
        """Before the capture's first write to ``array``: keep its values for the restore."""
        key = id(array)
        if key in self.touched or key in self.born:
            return
        self.touched.add(key)
        if key in self.constants:
            if not self.inner:
                self.calls.append(_Refill(array))
            return
        self.snapshots.append((array, array.copy()))

    def save_optimizer(self, optimizer):
        if id(optimizer) in self.optimizers:
            return
        self.optimizers[id(optimizer)] = (
            optimizer, {p: dict(s) for p, s in optimizer.state.items()})
        for group in optimizer.param_groups:
            for p in group["params"]:
                self.read(p)
                if p.grad is not None:
                    self.touch(p.grad._data)
        for state in optimizer.state.values():
            for value in state.values():
                value = value._data if isinstance(value, Tensor) else value
                if isinstance(value, backend.ARRAY_TYPES):
                    self.touch(value)

    def restore(self):
        """Undo the capture's writes to what existed before it (see the module docstring)."""
        for array, values in reversed(self.snapshots):
            array[...] = values
        for optimizer, states in self.optimizers.values():
            optimizer.state.clear()
            optimizer.state.update(states)
        random._generators.clear()
        random._generators.update(self.generators)
        for key, state in self.generator_states.items():
            self.generators[key].bit_generator.state = state
        if self.dropout_states is not None:
            states, values = self.dropout_states
            states[...] = values

    def recording(self):
        return Recording(self.calls, list(self.statics.values()), self.numbers)


def optimizer_numbers(optimizer):
    """(param group, key, value) for each hyperparameter of ``optimizer`` held as a Python value
    (lr, momentum, betas, flags): a GPU graph of its step keeps them as they were captured."""
    return [(group, key, value) for group in optimizer.param_groups
            for key, value in group.items() if key != "params" and _python_value(value)]


def _python_value(value):
    if isinstance(value, tuple):
        return all(isinstance(v, (bool, int, float)) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


class Static:
    """A tensor from before the capture that the graph reads, held weakly (the graph keeps its
    array, not the tensor), with the array it held. With ``check_liveness`` (torch's
    ``check_input_liveness``) it also notes where the capture first read it and where it was
    deleted: a replay after its deletion reads the captured values forever, since nothing left
    can copy new ones into that array."""

    __slots__ = ("ref", "array", "first_read", "deleted", "__weakref__")

    def __init__(self, tensor, array, check_liveness=False):
        self.array, self.deleted = array, None
        self.first_read = "".join(traceback.format_stack()[:-3]) if check_liveness else None
        self.ref = weakref.ref(tensor, _note_deletion(self) if check_liveness else None)


def _note_deletion(static):
    static = weakref.ref(static)        # the callback must not keep the Static alive

    def deleted(_):
        if static() is not None:
            static().deleted = "".join(traceback.format_stack()[:-1])
    return deleted


def check_statics(statics, numbers=()):
    """Before a replay: every tensor the capture read (``Static``) still holds the array it
    captured (and, where tracked, is alive), and the optimizers' Python hyperparameters
    (``optimizer_numbers``) are those it captured."""
    dead = []
    for static in statics:
        tensor, array = static.ref(), static.array
        if tensor is None:
            if static.first_read is not None:
                dead.append(static)
        elif tensor._data is not array:
            raise RuntimeError(
                f"CUDAGraph.replay: a tensor the graph reads (shape {array.shape} when captured) "
                f"now holds other storage (shape {tuple(tensor.shape)}); a graph replays on the "
                "arrays it captured: copy new values in with static.copy_(x), keeping the "
                "captured shape")
    if dead:
        _refuse_dead(dead)
    for group, key, value in numbers:
        now = group.get(key)
        if type(now) is not type(value) or now != value:
            raise RuntimeError(
                f"CUDAGraph.replay: the optimizer's {key} is {now!r} but was {value!r} when the "
                "graph was captured, and a GPU graph keeps the value it captured; give a "
                "learning rate that changes between replays as a 0-d tensor "
                "(lr=gd.tensor(0.01)), which schedulers update in place, or capture again")


def _refuse_dead(dead):
    """torch's check_input_liveness: a replay refuses once a tracked tensor the capture read is
    gone, saying where the capture read it and where it was deleted (the first five)."""
    parts = [f"CUDAGraph.replay: {len(dead)} tensor(s) the graph read when captured were "
             "deleted since (check_input_liveness=True); the graph keeps reading their captured "
             "arrays, which nothing can copy new values into: keep the static inputs alive and "
             "copy_ into them, or capture again\n"]
    for i, s in enumerate(dead[:5], 1):
        parts.append(f"Dead tensor #{i} (shape {s.array.shape}, {s.array.dtype}):\n"
                     f"  first read in the capture at:\n{_indent(s.first_read)}")
        if s.deleted:
            parts.append(f"  deleted at:\n{_indent(s.deleted)}")
    if len(dead) > 5:
        parts.append(f"  ... and {len(dead) - 5} more\n")
    raise RuntimeError("".join(parts))


def _indent(stack):
    return "".join("    " + line + "\n" for line in stack.strip().splitlines())


class Recording:
    """A captured CPU graph: ``replay()`` re-runs its calls on the captured arrays."""

    def __init__(self, calls, statics, numbers=()):
        self.calls, self.statics, self.numbers = calls, statics, numbers

    def describe(self):
        """(kind, name, detail) of each recorded call, in replay order."""
        return [call.describe() for call in self.calls]

    def replay(self):
        check_statics(self.statics, self.numbers)
        replayer = _Replayer()
        saved = autograd._capture
        autograd._capture = replayer
        try:
            with autograd.no_grad():
                for call in self.calls:
                    call.replay(replayer)
        finally:
            autograd._capture = saved


class _Replayer(Hook):
    """``autograd._capture`` during a replay: plain paths, except accumulation into the
    captured ``.grad`` arrays."""

    plan = None

    def apply(self, cls, args):
        return eager(cls.apply, *args)

    def backward(self, tensor, grad, retain_graph):
        return eager(autograd._backward, tensor, grad, retain_graph)

    def accumulate(self, tensor, g, owned=False):
        if self.plan is None:
            return eager(autograd._accumulate, tensor, g, owned)
        _, grad, kind = next(self.plan)
        if kind == "new":
            grad._data[...] = g
            tensor.grad = grad          # as the eager step's new .grad, in the captured array
        else:
            grad._data += g

    def call(self, kind, method, target, args, kwargs):
        return method(target, *args, **kwargs)
