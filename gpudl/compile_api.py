"""``gd.compile``: torch.compile's call, answered by running the model as it is.

gpudl has no graph compiler: its speed comes from its own kernels, and a whole training step's
launches are replayed as CUDA graphs by ``gd.cuda.make_graphed_callables`` / ``gd.cuda.graph``
(README). A script that calls ``model = torch.compile(model)`` runs unchanged, on the same
module (its ``state_dict`` keys stay the module's own, without torch's ``_orig_mod.``)."""

_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None,  # noqa: A001
            options=None, disable=False):
    """``model`` itself (a Module or a function), after torch's checks of the arguments; with
    ``model`` None, a decorator that does the same."""
    if mode not in _MODES:
        raise RuntimeError(f"compile: unrecognized mode={mode!r}, should be one of: "
                           f"{', '.join(m for m in _MODES if m)}")
    if mode is not None and options is not None:
        raise RuntimeError("compile: either mode or options can be specified, not both")
    if not (isinstance(backend, str) or callable(backend)):
        raise TypeError(f"compile: backend must be a name or a callable, got "
                        f"{type(backend).__name__}")
    if model is None:
        return lambda fn: compile(fn, fullgraph=fullgraph, dynamic=dynamic, backend=backend,
                                  mode=mode, options=options, disable=disable)
    if not callable(model):
        raise TypeError(f"compile: model must be a Module or a function, got "
                        f"{type(model).__name__}")
    return model
