"""Raw-array kernels: Numba-CUDA kernels and their CPU twins. No Tensor, no autograd.

Each family has two modules:

- ``<family>.py``: the public entry points (``conv2d_forward`` ...) and the CPU twin, which is also
  the reference the CUDA kernels are tested against. The entry validates arguments and picks the
  path with ``backend.kernel_device(x)``.
- ``<family>_cuda.py``: launch constants, the ``@cuda.jit`` kernels (decorated lazily, without
  signatures) and their launchers, plus ``SIGNATURES``:
  ``[(kernel, [signature, ...], Budget(...)), ...]``, the table that ``python -m gpudl.kernels
  --check`` compiles to PTX offline and ``--gate`` holds to each kernel's budget (budget.py,
  gate.py). Launchers go through ``launch.launch``, which specialises a kernel for one signature
  at first use. It is imported only on the cuda path, so ``numba.cuda`` is never loaded on a CPU
  machine.

Submodules load on first attribute access (``kernels.conv.conv2d_forward``) to keep
``import gpudl`` fast: Numba alone costs ~0.3 s to import.
"""

import importlib

FAMILIES = ("elementwise", "conv", "pool", "lstm", "attention")


def __getattr__(name):
    if name in FAMILIES or name.endswith("_cuda"):
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
