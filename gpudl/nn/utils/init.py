"""nn.utils.skip_init: build a module without running its initialisation."""

import inspect


def skip_init(module_cls, *args, **kwargs):
    """``module_cls(*args, **kwargs)`` whose parameters and buffers hold unspecified values (as
    torch's, built without initialising them): the global random streams are not advanced. The
    class must take a ``device`` argument, as torch requires."""
    from ..lazy import throwaway_rng
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    with throwaway_rng():
        return module_cls(*args, **kwargs)
