"""``keras.saving``: whole models in gpudl's ``.keras`` files, and JSON configs.

gpudl's ``.keras`` file is a zip, as Keras's: ``config.json`` (the model's class and config, and
the arguments ``compile`` was given), ``metadata.json`` and the weights, which gpudl stores as
``model.weights.safetensors`` (Keras stores ``model.weights.h5``, which needs h5py). A gpudl
``.keras`` file loads in gpudl; Keras cannot read its weights, and gpudl cannot read Keras's.
The optimizer's state (moments, step counts) is saved with the weights of a compiled model
whose optimizer has been built, and restored by ``load_model(compile=True)``.

``Model.save_weights(path)`` writes safetensors whatever the name ends with (a name such as
``"ckpt.weights.h5"`` gives a safetensors file under that name, which Keras cannot open);
``load_weights`` refuses real HDF5 files with an error saying so.
"""

import datetime
import json
import os
import tempfile
import zipfile

from .. import io
from .serialization import (CustomObjectScope, custom_object_scope, deserialize,
                            get_custom_objects, get_registered_name, get_registered_object,
                            register_keras_serializable, serialize)

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.safetensors"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_name(filepath, where):
    name = os.fspath(filepath)
    if name.endswith((".h5", ".hdf5")):
        raise ValueError(f"{where}: {name!r} asks for the legacy HDF5 format, which needs h5py "
                         "(not a gpudl dependency); use a name ending in '.keras'")
    if not name.endswith(".keras"):
        raise ValueError(f"{where}: the file name must end in '.keras', got {name!r}")
    return name


def model_config(model):
    """``{"module", "class_name", "config", "compile_config"}`` of ``model`` (JSON values)."""
    entry = serialize(model, model.name)
    if getattr(model, "_graph", True) is None and hasattr(model, "build_input_shape"):
        # a subclassed model creates its weights on its first call: save that call's shape
        entry["build_config"] = {"input_shape": serialize(model.build_input_shape)}
    compiled = model.__dict__.get("_compile_arguments")
    try:
        entry["compile_config"] = None if compiled is None else serialize(compiled, "compile")
    except TypeError:                 # e.g. a gpudl.optim optimizer: the model is still saved
        entry["compile_config"] = None
    return entry


def save_model(model, filepath, overwrite=True, zipped=None, **kwargs):
    """Write ``model`` (config, weights, compile arguments, optimizer state) to a ``.keras``
    file (gpudl's: weights in safetensors, see the module docstring)."""
    name = _check_name(filepath, "save_model")
    if zipped is False:
        raise NotImplementedError("save_model: zipped=False (an unzipped folder) is not "
                                  "supported")
    if kwargs:
        raise TypeError(f"save_model: unexpected keyword argument(s) {sorted(kwargs)}")
    if not overwrite and os.path.exists(name):
        raise FileExistsError(f"save_model: {name!r} exists and overwrite=False")
    config = model_config(model)                      # refuses unsavable layers first
    metadata = {"keras_version": "gpudl", "date_saved":
                datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    with tempfile.TemporaryDirectory() as folder:
        weights_path = os.path.join(folder, WEIGHTS)
        io.save(_weights_and_state(model), weights_path)
        partial = name + ".partial"
        with zipfile.ZipFile(partial, "w") as archive:
            archive.writestr(CONFIG, json.dumps(config))
            archive.writestr(METADATA, json.dumps(metadata))
            archive.write(weights_path, WEIGHTS)
        os.replace(partial, name)


def _weights_and_state(model):
    saved = {"weights": positional_weights(model)}
    compiled = model.__dict__.get("_compiled")
    optimizer = None if compiled is None else compiled._optimizer
    if optimizer is not None:
        saved["optimizer"] = optimizer.state_dict()
        saved["iterations"] = getattr(optimizer, "iterations", 0)
    return saved


def positional_weights(model):
    """The weights keyed ``"<position>:<layer.weight>"``: loaded by position, as Keras does
    (layer names differ between two builds of one architecture)."""
    return {f"{i:05d}:{key}": value for i, (key, value) in enumerate(model.state_dict().items())}


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):  # noqa: A002
    """The model saved by ``save_model`` / ``model.save``: rebuilt from its config (classes
    found in ``custom_objects``, a ``custom_object_scope`` or the registry), its weights loaded,
    compiled again when it was (``compile=True``), with its optimizer's state."""
    name = os.fspath(filepath)
    if not zipfile.is_zipfile(name):
        with open(name, "rb") as f:
            start = f.read(8)
        raise ValueError(f"load_model: {name!r} is not a .keras zip" +
                         (" (it is HDF5, Keras 2's format, which needs h5py)"
                          if start == HDF5_SIGNATURE else ""))
    with zipfile.ZipFile(name) as archive, tempfile.TemporaryDirectory() as folder:
        missing = {CONFIG, WEIGHTS} - set(archive.namelist())
        if missing:
            raise ValueError(f"load_model: {name!r} lacks {sorted(missing)} (files saved by "
                             "Keras keep their weights in HDF5, which gpudl does not read)")
        config = json.loads(archive.read(CONFIG))
        saved = io.load(archive.extract(WEIGHTS, folder))
    with custom_object_scope(custom_objects):
        model = deserialize({k: v for k, v in config.items()
                             if k not in ("compile_config", "build_config")})
        if config.get("build_config"):
            _build_on_zeros(model, config["build_config"]["input_shape"])
        set_positional_weights(model, saved["weights"], "load_model")
        if compile and config.get("compile_config"):
            arguments = deserialize(config["compile_config"])
            model.compile(**arguments)
            _restore_optimizer(model, saved)
    return model


def _build_on_zeros(model, input_shape):
    """Create a subclassed model's weights by calling it once on zeros of ``input_shape``."""
    from .. import creation
    from .engine import inference, map_structure
    zeros = map_structure(lambda shape: creation.zeros(*shape), input_shape) \
        if isinstance(input_shape[0], list) else creation.zeros(*input_shape)
    with inference(model):
        model(zeros)


def set_positional_weights(model, saved, where):
    """Set ``model``'s weights from ``saved`` (keys ``"<position>:..."``), in order; the count
    checked."""
    weights = [saved[key].numpy() for key in sorted(saved)]
    if len(weights) != len(model.weights):
        raise ValueError(f"{where}: the file holds {len(weights)} weights, the model has "
                         f"{len(model.weights)}")
    model.set_weights(weights)


def _restore_optimizer(model, saved):
    if "optimizer" not in saved:
        return
    optimizer = model.__dict__["_compiled"].optimizer          # built over the loaded weights
    optimizer.load_state_dict(saved["optimizer"])
    optimizer.iterations = int(saved.get("iterations", 0))


def model_from_json(json_string, custom_objects=None):
    """A new model (fresh weights) from ``model.to_json()``'s string."""
    config = json.loads(json_string)
    with custom_object_scope(custom_objects):
        return deserialize({k: v for k, v in config.items()
                            if k not in ("compile_config", "build_config")})


def load_weights(model, filepath):
    """Load ``save_weights``'s safetensors file into ``model``, by position; or the weights of
    a whole-model ``.keras`` file (``model.save``'s, ModelCheckpoint's), as Keras 3 does."""
    name = os.fspath(filepath)
    if zipfile.is_zipfile(name):
        with zipfile.ZipFile(name) as archive, tempfile.TemporaryDirectory() as folder:
            if WEIGHTS not in archive.namelist():
                raise ValueError(f"load_weights: {name!r} is a zip without {WEIGHTS!r} (not a "
                                 "gpudl .keras file)")
            saved = io.load(archive.extract(WEIGHTS, folder))
        set_positional_weights(model, saved["weights"], "load_weights")
        return
    with open(name, "rb") as f:
        if f.read(8) == HDF5_SIGNATURE:
            raise ValueError(f"load_weights: {name!r} is an HDF5 file (Keras's weights), which "
                             "needs h5py; gpudl reads the safetensors files its save_weights "
                             "writes")
    set_positional_weights(model, io.load(name), "load_weights")


__all__ = ["save_model", "load_model", "model_from_json", "register_keras_serializable",
           "get_custom_objects", "custom_object_scope", "CustomObjectScope", "serialize",
           "deserialize", "get_registered_name", "get_registered_object"]
serialize_keras_object, deserialize_keras_object = serialize, deserialize
