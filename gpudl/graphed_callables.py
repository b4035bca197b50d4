"""``gd.cuda.make_graphed_callables``: a module or function whose forward and backward replay
CUDA graphs (torch.cuda.make_graphed_callables).

On a GPU each callable is warmed up on a side stream (``num_warmup_iters`` forward+backward
passes on the sample arguments), then its forward is captured into one graph and its backward
(gradients of the outputs with respect to the inputs that require grad and the parameters) into
a second, sharing one private memory pool. The returned callable copies its arguments into the
sample tensors (the static inputs), replays the forward graph and returns its static outputs,
inside an autograd Function whose backward copies the incoming gradients into static buffers
and replays the backward graph, so the parameters' ``.grad`` accumulate as usual. A module's
``forward`` is replaced and the module returned, as PyTorch does; in ``eval()`` mode (if it was
captured training) or under ``no_grad`` it runs its original forward.

On the CPU the callables run eagerly, with the same argument checks, so scripts stay portable.
With ``GRAPHS_ON_CPU`` set, the CPU takes the GPU's path instead, its two graphs recorded as
call lists (gpudl.graph_recorder): that is how the tests check the graphs' semantics (static
inputs and outputs, the backward graph reading the forward graph's arrays) without a GPU.
"""

from . import autograd, backend
from .cuda_graphs import CUDAGraph, Stream, current_stream, graph, stream
from .tensor import Tensor

GRAPHS_ON_CPU = False   # the CPU runs the callables eagerly unless this is set (tests set it)


def make_graphed_callables(callables, sample_args, num_warmup_iters=3,
                           allow_unused_input=False, pool=None):
    """Graphed versions of ``callables`` (a Module or function, or a tuple of them), each
    captured with its tuple of ``sample_args`` (Tensors only; their shapes, dtypes and
    ``requires_grad`` are what later calls must pass)."""
    from .nn import Module
    single = not isinstance(callables, tuple)
    if single:
        callables, sample_args = (callables,), (sample_args,)
    if not isinstance(sample_args, tuple) or len(sample_args) != len(callables):
        raise ValueError(f"make_graphed_callables: expected one tuple of sample_args per "
                         f"callable ({len(callables)}), got {_describe(sample_args)}")
    if isinstance(num_warmup_iters, bool) or not isinstance(num_warmup_iters, int) \
            or num_warmup_iters < 0:
        raise ValueError(f"make_graphed_callables: num_warmup_iters must be an int >= 0, got "
                         f"{num_warmup_iters!r}")
    for i, (c, args) in enumerate(zip(callables, sample_args)):
        if not callable(c):
            raise TypeError(f"make_graphed_callables: callable {i} is a {type(c).__name__}")
        if not isinstance(args, tuple) or not all(isinstance(a, Tensor) for a in args):
            raise TypeError(f"make_graphed_callables: sample_args[{i}] must be a tuple of "
                            f"Tensors only, got {_describe(args)}")
        if isinstance(c, Module) and any(b.requires_grad for b in c.buffers()):
            raise ValueError(f"make_graphed_callables: callable {i} has a buffer that requires "
                             "grad; only parameters may be trainable")
    graphed = []
    for c, args in zip(callables, sample_args):
        forward = c.forward if isinstance(c, Module) else c
        if backend._cupy is not None or GRAPHS_ON_CPU:
            run = _graphed(c, forward, args, num_warmup_iters, allow_unused_input, pool)
        else:
            run = forward
        checked = _checked(run, forward, args, c if isinstance(c, Module) else None)
        if isinstance(c, Module):
            c.forward = checked
            graphed.append(c)
        else:
            graphed.append(checked)
    return graphed[0] if single else tuple(graphed)


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {[type(v).__name__ for v in value]}"
    return type(value).__name__


def _checked(run, eager_forward, samples, module):
    """``run`` behind PyTorch's contract: the arguments match the samples the graphs were made
    with; in another training mode, or without grad, the eager forward runs instead."""
    training = module.training if module is not None else None

    def call(*args):
        if len(args) != len(samples):
            raise TypeError(f"graphed callable: expected {len(samples)} arguments (as the "
                            f"sample_args), got {len(args)}")
        for i, (a, s) in enumerate(zip(args, samples)):
            if not isinstance(a, Tensor):
                raise TypeError(f"graphed callable: argument {i} must be a Tensor, got "
                                f"{type(a).__name__}")
            if a.shape != s.shape or a.dtype != s.dtype or a.requires_grad != s.requires_grad:
                raise ValueError(
                    f"graphed callable: argument {i} is {a.dtype} {a.shape} with "
                    f"requires_grad={a.requires_grad}, but the graphs were made for "
                    f"{s.dtype} {s.shape} with requires_grad={s.requires_grad}")
        if not autograd.is_grad_enabled() or (module is not None
                                              and module.training != training):
            return eager_forward(*args)
        return run(*args)
    return call


def _flat(outputs):
    return (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)


def _grads(outputs, inputs, grad_outputs, allow_unused):
    """d(outputs)/d(inputs) weighted by ``grad_outputs`` (torch.autograd.grad), leaving the
    inputs' ``.grad`` as they were; the recorded graph is kept for the next call."""
    saved = [t.grad for t in inputs]
    for t in inputs:
        t.grad = None
    try:
        for o, g in zip(outputs, grad_outputs):
            if o.requires_grad:
                o.backward(g, retain_graph=True)
        grads = [t.grad for t in inputs]
    finally:
        for t, g in zip(inputs, saved):
            t.grad = g
    if not allow_unused and any(g is None for g in grads):
        raise RuntimeError("make_graphed_callables: an input that requires grad (or a "
                           "parameter) does not reach the outputs; pass "
                           "allow_unused_input=True if that is intended")
    return grads


def _graphed(c, forward, samples, warmup, allow_unused, pool):
    """The GPU path: capture the forward and backward graphs, return the replaying function.
    (Run on the CPU recorder by tests/test_graphed_callables.py; not yet run on a GPU.)"""
    from .creation import empty_like, ones_like
    params = tuple(p for p in getattr(c, "parameters", lambda: ())() if p.requires_grad)
    wants = [a for a in samples if a.requires_grad] + list(params)
    side = Stream()
    side.wait_stream(current_stream())
    with stream(side):
        for _ in range(warmup):
            outs = _flat(forward(*samples))
            _grads(outs, wants, [ones_like(o) for o in outs], allow_unused)
    current_stream().wait_stream(side)

    forward_graph, backward_graph = CUDAGraph(), CUDAGraph()
    with graph(forward_graph, pool=pool):
        structure = forward(*samples)
    static_outputs = _flat(structure)
    with graph(backward_graph, pool=forward_graph.pool()):
        static_grad_outputs = [empty_like(o) if o.requires_grad else None
                               for o in static_outputs]
        static_grads = _grads(static_outputs, wants, static_grad_outputs, allow_unused)
    grad_of = dict(zip(map(id, wants), static_grads))
    arg_grads = [grad_of.get(id(a)) if a.requires_grad else None for a in samples]
    arg_grads += [grad_of[id(p)] for p in params]

    class Graphed(autograd.ArrayFunction):
        @staticmethod
        def forward(ctx, *arrays):
            for sample, new in zip(samples, arrays):
                if new is not sample._data:
                    sample._data[...] = new
            forward_graph.replay()
            return tuple(o._data for o in static_outputs)

        @staticmethod
        def backward(ctx, *grads):
            for buffer, g in zip(static_grad_outputs, grads):
                if buffer is not None and g is not buffer._data:
                    buffer._data[...] = g
            # the capture left the parameters' .grad as they were (_grads); a CPU recording
            # would re-attach the buffers it made to them, which a GPU replay never does
            kept = [t.grad for t in wants]
            backward_graph.replay()
            for t, g in zip(wants, kept):
                t.grad = g
            return tuple(None if g is None else g._data for g in arg_grads)

    def run(*args):
        outs = Graphed.apply(*args, *params)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return outs[0] if isinstance(structure, Tensor) else type(structure)(outs)
    run.graphs = (forward_graph, backward_graph)      # keep them (and their pool) alive
    return run
