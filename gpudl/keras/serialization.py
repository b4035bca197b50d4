"""Configs of Keras objects: ``get_config`` / ``from_config`` and the custom-object registry.

A ``Configurable`` object (layers, initializers, regularizers, optimizers, losses, schedules)
remembers the arguments its constructor was called with; ``get_config`` gives them back
(defaults filled in) and ``from_config(config)`` is ``cls(**config)``. ``serialize`` turns an
object into Keras's ``{"module", "class_name", "config"}`` form with JSON values only;
``deserialize`` finds the class again: among the objects given as ``custom_objects=``, those of
an open ``custom_object_scope``, those registered with ``register_keras_serializable``, then
gpudl.keras's own.
"""

import functools
import inspect
import numbers

import numpy as np

_REGISTERED = {}            # "package>name" and plain names -> class or function
_SCOPES = []                # dicts of custom_object_scope, innermost last


class Configurable:
    """Records the arguments of the outermost constructor call as the object's config."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "records_config", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if "_init_arguments" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = {}
                for name, parameter in list(signature.parameters.items())[1:]:
                    value = bound.arguments.get(name)
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(value or {})
                    elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                        arguments[name] = value
                self.__dict__["_init_arguments"] = arguments
            init(self, *args, **kw)
        recording_init.records_config = True
        cls.__init__ = recording_init

    def get_config(self):
        """The constructor's arguments (defaults included): ``cls(**config)`` rebuilds it."""
        return dict(self.__dict__.get("_init_arguments", {}))

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def register_keras_serializable(package="Custom", name=None):
    """Decorator: register a class or function under ``"package>name"`` (name: its own), so
    that saved models naming it load without ``custom_objects=``."""
    def register(obj):
        key = f"{package}>{name or obj.__name__}"
        if key in _REGISTERED and _REGISTERED[key] is not obj:
            raise ValueError(f"register_keras_serializable: {key!r} is already registered")
        _REGISTERED[key] = obj
        obj._registered_name = key
        return obj
    return register


def get_custom_objects():
    """The global registry (a dict, which may be edited: ``get_custom_objects()["f"] = f``)."""
    return _REGISTERED


def get_registered_name(obj):
    """The name ``obj`` is saved under: its registered ``"package>name"``, else its own."""
    return getattr(obj, "_registered_name", None) or obj.__name__


def get_registered_object(name, custom_objects=None, module_objects=None):
    """The class or function called ``name``: in ``custom_objects``, the open scopes, the
    registry, then ``module_objects``; None when none has it."""
    for table in [custom_objects or {}] + _SCOPES[::-1] + [_REGISTERED, module_objects or {}]:
        if name in table:
            return table[name]
        short = name.split(">")[-1]
        if short in table:
            return table[short]
    return None


class custom_object_scope:                      # noqa: N801 (Keras's name)
    """``with custom_object_scope({"MyLayer": MyLayer}):`` makes those names known to loading
    and deserializing inside the block."""

    def __init__(self, custom_objects):
        self.custom_objects = dict(custom_objects or {})

    def __enter__(self):
        _SCOPES.append(self.custom_objects)
        return self

    def __exit__(self, *exc):
        _SCOPES.remove(self.custom_objects)


CustomObjectScope = custom_object_scope


def _known_objects():
    """gpudl.keras's own classes and functions by name (layers first)."""
    from . import (activations, initializers, layers, losses, metrics, models, optimizers,
                   regularizers, schedules)
    from .layers import core
    table = {}
    for module in (schedules, metrics, regularizers, initializers, optimizers, losses,
                   activations, models, core, layers):
        for name in dir(module):
            obj = getattr(module, name)
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                table[name] = obj
    table.update(Functional=models.Model)
    return table


def serialize(obj, where="config"):
    """``obj`` as JSON values: numbers, strings, lists and dicts kept; arrays as lists;
    objects as ``{"module", "class_name", "config"}``; functions by registered name.
    Anything else is refused with a TypeError naming ``where``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, (list, tuple)):
        return [serialize(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {str(k): serialize(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "get_config") and not inspect.isclass(obj):
        return {"module": type(obj).__module__.replace("gpudl.", "", 1),
                "class_name": get_registered_name(type(obj)),
                "config": serialize(obj.get_config(), f"{where}.config")}
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        known = _known_objects()
        name = next((key for key, value in known.items() if value is obj),
                    get_registered_name(obj))
        if obj.__name__ == "<lambda>" or get_registered_object(name, None, known) is not obj:
            raise TypeError(f"{where}: the function {obj.__name__!r} cannot be saved by name; "
                            "use a module-level function registered with "
                            "keras.saving.register_keras_serializable()")
        return name
    raise TypeError(f"{where}: cannot save a {type(obj).__name__} ({obj!r}); expected numbers, "
                    "strings, lists, dicts, arrays and Keras objects with get_config()")


def deserialize(config, custom_objects=None):
    """The object ``serialize`` described (nested configs rebuilt inside out)."""
    if isinstance(config, list):
        return [deserialize(v, custom_objects) for v in config]
    if not isinstance(config, dict):
        return config
    if "class_name" not in config or "config" not in config:
        return {k: deserialize(v, custom_objects) for k, v in config.items()}
    name = config["class_name"]
    cls = get_registered_object(name, custom_objects, _known_objects())
    if cls is None:
        raise ValueError(f"deserialize: unknown class {name!r}; pass it in custom_objects= or "
                         "register it with keras.saving.register_keras_serializable()")
    inner = config["config"]
    if not (isinstance(inner, dict) and "layers" in inner):        # a model rebuilds its own
        inner = {k: deserialize(v, custom_objects) for k, v in inner.items()}
    return cls.from_config(inner)


def deserialize_function(name, custom_objects=None):
    """A function saved by name (a string config value that names a registered function)."""
    return get_registered_object(name, custom_objects, _known_objects())
