"""``gpudl.nn.modules`` and its torch-named submodules (``gpudl.nn.modules.batchnorm``, ``.conv``,
``.loss``, ...), so that ports of ``from torch.nn.modules.batchnorm import _BatchNorm`` or
``isinstance(m, nn.modules.conv._ConvNd)`` run unchanged. Each submodule holds every public
nn class plus the names (private base classes included) of the gpudl files that hold torch's
classes of that name."""

import sys
import types

from . import (activation, adaptive, attention, container, conv, distance, dropout, lazy, linear,
               loss, module, normalization, padding, pool, resample, rnn, sparse, transformer)

_PUBLIC = {name: value for name, value in vars(sys.modules[__package__]).items()
           if isinstance(value, type)}
for _name, _value in _PUBLIC.items():
    globals().setdefault(_name, _value)

_TORCH_FILES = {           # torch.nn.modules.<name>: the gpudl.nn files with its classes
    "activation": (activation, attention), "adaptive": (adaptive,),
    "batchnorm": (normalization,), "instancenorm": (normalization,),
    "normalization": (normalization,), "channelshuffle": (resample,),
    "pixelshuffle": (resample,), "upsampling": (resample,), "container": (container,),
    "conv": (conv,), "fold": (conv,), "distance": (distance,), "dropout": (dropout,),
    "flatten": (linear,), "linear": (linear,), "lazy": (lazy,), "loss": (loss,),
    "module": (module,), "padding": (padding,), "pooling": (pool,), "rnn": (rnn,),
    "sparse": (sparse,), "transformer": (attention, transformer),
}

for _name, _files in _TORCH_FILES.items():
    _alias = types.ModuleType(f"{__name__}.{_name}", f"torch.nn.modules.{_name} in gpudl")
    for _file in _files:
        _alias.__dict__.update({k: v for k, v in vars(_file).items() if isinstance(v, type)})
    _alias.__dict__.update(_PUBLIC)
    sys.modules[_alias.__name__] = _alias
    globals()[_name] = _alias
