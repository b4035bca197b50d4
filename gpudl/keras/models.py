"""Keras's models: ``Sequential`` (with ``add``), the functional ``Model(inputs, outputs)`` and
subclassed ``Model`` with ``call``; each a gpudl Module with Keras's training methods (gpudl.train
underneath) and ``summary``/``count_params``/weights I/O."""

import json
import types

from .. import io
from . import model_config, saving, training
from .engine import (PROBE_BATCH, Input, InputLayer, KerasTensor, Layer, flatten, inference,
                     is_symbolic, map_structure)
from .optimizers import check_settable


class Model(Layer):
    """A Keras model. ``Model(inputs, outputs)`` builds the functional graph; a subclass defines
    its layers in ``__init__`` and ``call(inputs)``."""

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._graph, self._input_dict_keys = None, None
        if inputs is not None or outputs is not None:
            self._build_graph(inputs, outputs)

    # -- the functional graph
    def _build_graph(self, inputs, outputs):
        self._inputs_list = _symbols(inputs, "inputs")
        self._input_dict_keys = list(inputs) if isinstance(inputs, dict) else None
        self._outputs_list = _symbols(outputs, "outputs")
        self._outputs_single = isinstance(outputs, KerasTensor)
        order, seen = [], set()

        def visit(symbol):
            node = symbol.node
            if id(node) in seen or isinstance(node.layer, InputLayer):
                return
            for parent in node.inputs:
                visit(parent)
            seen.add(id(node))
            order.append(node)
        for out in self._outputs_list:
            visit(out)
        missing = [s for s in _graph_inputs(order) if all(s is not i for i in self._inputs_list)]
        if missing:
            raise ValueError(f"Model: the outputs depend on inputs not given in inputs: "
                             f"{missing}")
        self._graph = order
        for node in order:
            if node.layer.name not in self._modules:
                self.register_module(node.layer.name, node.layer)
        self.built = True

    @property
    def n_outputs(self):
        if self._graph is not None:
            return 1 if self._outputs_single else len(self._outputs_list)
        return 1

    @property
    def inputs(self):
        return list(self._inputs_list) if self._graph is not None else None

    @property
    def outputs(self):
        return list(self._outputs_list) if self._graph is not None else None

    @property
    def input_shape(self):
        """The inputs' shapes (None for the batch): one tuple, or a list for several."""
        return _shapes(self.inputs) if self.inputs else Layer.input_shape.fget(self)

    @property
    def output_shape(self):
        return _shapes(self.outputs) if self.outputs else Layer.output_shape.fget(self)

    @property
    def input_keys(self):
        """The keys a dict of inputs is matched by (Keras's rule): those of ``Model(inputs=
        {...})``, else the names of the Input layers, in the model's order."""
        if self._graph is None and self.inputs is None:
            return None
        return self._input_dict_keys or [s.node.layer.name for s in self.inputs]

    @property
    def output_names(self):
        return [s.node.layer.name for s in self._outputs_list]

    def __call__(self, *args, **kwargs):
        if len(args) > 1 and self._graph is not None and len(args) == len(self._inputs_list):
            args = (list(args),)                 # gpudl.train calls model(x1, x2, ...)
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None):
        if self._graph is None:
            raise NotImplementedError(f"{type(self).__name__}: a subclassed Model must define "
                                      "call(inputs)")
        if isinstance(inputs, dict):
            from .training import _by_name
            inputs = _by_name(self, inputs, "x", self.name)
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(inputs) != len(self._inputs_list):
            raise ValueError(f"{self.name}: expected {len(self._inputs_list)} inputs, got "
                             f"{len(inputs)}")
        values = {id(s): v for s, v in zip(self._inputs_list, inputs)}
        masks = {}                       # id(symbol) -> the mask its value carries
        for node in self._graph:
            args, kwargs = map_structure(
                lambda v: values[id(v)] if isinstance(v, KerasTensor) else v,
                (node.args, node.kwargs))
            source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
            mask = masks.get(id(source)) if isinstance(source, KerasTensor) else None
            input_masks = getattr(node.layer, "takes_input_masks", None)
            if input_masks:                  # MultiHeadAttention: query/value/key masks
                given = {name: masks.get(id(a)) for name, a in zip(input_masks, node.args)
                         if isinstance(a, KerasTensor) and masks.get(id(a)) is not None}
                out = node.layer(*args, **kwargs, **given)
                mask = given.get(input_masks[0])           # the output keeps the query's mask
            elif mask is not None:
                out, mask = node.layer.call_masked(args[0], mask)
            else:
                out = node.layer(*args, **kwargs)
                mask = node.layer.compute_mask(args[0], None) if len(args) == 1 and \
                    not isinstance(args[0], (list, tuple)) else None
            outs = flatten(out)
            for symbol, value in zip(node.outputs, outs):
                values[id(symbol)] = value
            if mask is not None:
                masks[id(node.outputs[0])] = mask
        outs = [values[id(s)] for s in self._outputs_list]
        self._set_output_mask(masks.get(id(self._outputs_list[0])) if self._outputs_single
                              else None)
        return outs[0] if self._outputs_single else outs

    def _set_output_mask(self, mask):
        """Keep the mask of the last forward's output (padded steps), for the loss."""
        object.__setattr__(self, "output_mask", mask)

    # -- layers
    @property
    def layers(self):
        """The layers, in the order they were added (functional: InputLayers first)."""
        if self._graph is not None:
            inputs = [s.node.layer for s in self._inputs_list]
            return inputs + [m for m in self._modules.values() if isinstance(m, Layer)]
        return [m for m in self._modules.values() if isinstance(m, Layer)]

    def get_layer(self, name=None, index=None):
        layers = self.layers
        if index is not None:
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}; layers: "
                         f"{[la.name for la in layers]}")

    # -- Keras's training API (gpudl.keras.training, i.e. gpudl.train's loop)
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, **kwargs):
        """Keras's compile (see gpudl.keras.training.compile). Keras's execution options
        (run_eagerly, jit_compile, steps_per_execution, auto_scale_loss) are accepted and
        have no effect here."""
        unknown = sorted(set(kwargs) - _EXECUTION_OPTIONS)
        if unknown:
            raise TypeError(f"compile: unexpected keyword argument(s) {unknown}")
        training.compile(self, optimizer=optimizer, loss=loss, metrics=metrics,
                         loss_weights=loss_weights, weighted_metrics=weighted_metrics)
        self.__dict__["_compile_arguments"] = dict(optimizer=optimizer, loss=loss,
                                                   metrics=metrics, loss_weights=loss_weights,
                                                   weighted_metrics=weighted_metrics)

    @property
    def optimizer(self):
        """The optimizer ``compile`` built (None before): the gpudl optimizer, with Keras's
        ``learning_rate`` (read and assigned) on top."""
        config = self.__dict__.get("_compiled")
        return None if config is None else KerasOptimizerView(config.optimizer)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(x, types.GeneratorType):      # peeked once, its first batches replayed
            x = training.keras_batches(x, self, "fit")
        self._ensure_built(x)
        return training.fit(self, x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        return training.evaluate(self, x, y, **kwargs)

    def predict(self, x, **kwargs):
        return training.predict(self, x, **kwargs)

    def train_on_batch(self, x, y, **kwargs):
        self._ensure_built(x)
        return training.train_on_batch(self, x, y, **kwargs)

    def predict_on_batch(self, x):
        return training.predict(self, x, batch_size=max(len(flatten(x)[0]), 1))

    def _ensure_built(self, x):
        """Build the weights from the first samples of ``x`` (arrays, or the first batch of an
        iterable of batches) when the model has none yet (a subclassed or input-less model
        creates them on its first call), so that the optimizer compile deferred sees them."""
        if x is None or any(True for _ in self.parameters()):
            return
        if training._is_loader(x):
            sample = list(next(iter(x)))[:-1]
        else:
            sample = [t[:PROBE_BATCH] for t in training._tensors(x, "x", "fit")]
        with inference(self):
            self(*sample)

    # -- saving
    def save_weights(self, filepath, overwrite=True):
        """The weights as a safetensors file, whatever the name ends with (``.weights.h5``
        included: Keras cannot open it): keys ``"<position>:<layer.weight>"``, so that
        ``load_weights`` matches them by position, as Keras does (layer names differ between
        two builds of one architecture)."""
        io.save(saving.positional_weights(self), filepath)

    def load_weights(self, filepath):
        """Load ``save_weights``'s file into this model's weights, in order (shapes checked)."""
        saving.load_weights(self, filepath)

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Write the whole model to a ``.keras`` file (gpudl's: see gpudl.keras.saving);
        ``keras.models.load_model`` reads it back."""
        saving.save_model(self, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def get_config(self):
        """Keras's model config: a functional model's graph of layer calls; a subclassed model
        must define its own (as in Keras)."""
        if self._graph is None:
            raise NotImplementedError(f"{type(self).__name__}: a subclassed Model has no config "
                                      "of its own; define get_config() (and register the class "
                                      "with keras.saving.register_keras_serializable)")
        return model_config.functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The model ``config`` describes, with new weights."""
        if "layers" not in config:
            return cls(**config)
        with saving.custom_object_scope(custom_objects):
            return model_config.functional_from_config(cls, config)

    def to_json(self, **kwargs):
        """The model's config as a JSON string (``keras.models.model_from_json`` reads it)."""
        return json.dumps(saving.model_config(self), **kwargs)

    # -- weights and summary

    def count_params(self):
        if not self.built:
            raise ValueError(f"{self.name}: the model has not been built yet; give the first "
                             "layer an input_shape, start with Input(...), or call it on data")
        return super().count_params()

    def summary(self, print_fn=None, line_length=90):
        """Print Keras's table: layer (type), output shape, parameter count; then totals."""
        print_fn = print_fn or print
        self.count_params()
        widths = (int(line_length * 0.4), int(line_length * 0.35), line_length -
                  int(line_length * 0.4) - int(line_length * 0.35))
        row = lambda *cells: "".join(f"{c} ".ljust(w) for c, w in zip(cells, widths))  # noqa
        lines = [f'Model: "{self.name}"', "_" * line_length,
                 row("Layer (type)", "Output Shape", "Param #"), "=" * line_length]
        for layer in self._summary_layers():
            try:
                shape = layer.output_shape
            except AttributeError:
                shape = "?"
            lines.append(row(f"{layer.name} ({type(layer).__name__})", _shape_text(shape),
                             f"{layer.count_params():,}"))
        total = self.count_params()
        trainable = [p for p in self.parameters() if p.requires_grad]
        count = sum(p.numel() for p in trainable)
        total_bytes = sum(w.numel() * w._data.dtype.itemsize for w in self.weights)
        trainable_bytes = sum(p.numel() * p._data.dtype.itemsize for p in trainable)
        lines += ["=" * line_length, f"Total params: {total:,} ({_memory(total_bytes)})",
                  f"Trainable params: {count:,} ({_memory(trainable_bytes)})",
                  f"Non-trainable params: {total - count:,} "
                  f"({_memory(total_bytes - trainable_bytes)})", "_" * line_length]
        for line in lines:
            print_fn(line)

    def _summary_layers(self):
        return self.layers


_EXECUTION_OPTIONS = {"run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss"}


class KerasOptimizerView:
    """A gpudl optimizer seen as a Keras one: ``learning_rate`` (alias ``lr``) reads and sets
    every parameter group's lr; everything else is the gpudl optimizer's."""

    def __init__(self, optimizer):
        object.__setattr__(self, "wrapped", optimizer)

    @property
    def learning_rate(self):
        """The rate of the next update: with a schedule, ``schedule(iterations)`` (Keras's
        ``_get_current_learning_rate``), else the first parameter group's."""
        schedule = getattr(self.wrapped, "learning_rate_schedule", None)
        if schedule is not None:
            return float(schedule(self.wrapped.iterations))
        return self.wrapped.param_groups[0]["lr"]

    @learning_rate.setter
    def learning_rate(self, value):
        check_settable(self.wrapped, "optimizer.learning_rate")
        for group in self.wrapped.param_groups:
            group["lr"] = float(value)

    lr = learning_rate

    @property
    def iterations(self):
        """The number of updates made (counted by gpudl.keras's optimizers; with gradient
        accumulation, steps // gradient_accumulation_steps, as Keras)."""
        steps = getattr(self.wrapped, "iterations", None)
        accumulation = getattr(self.wrapped, "accumulation_steps", None)
        return steps // accumulation if steps is not None and accumulation else steps

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __setattr__(self, name, value):
        if name in ("learning_rate", "lr"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.wrapped, name, value)


def _memory(size):
    """Keras's ``readable_memory_size``: bytes as '1.22 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _shapes(symbols):
    shapes = [tuple(s.shape) for s in symbols]
    return shapes[0] if len(shapes) == 1 else shapes


def _shape_text(shape):
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return str(tuple(shape)).replace(",)", ")")


def _symbols(values, name):
    symbols = flatten(values)
    if not symbols or not all(isinstance(s, KerasTensor) for s in symbols):
        raise TypeError(f"Model: {name} must be KerasTensors from Input(...) and layer calls, "
                        f"got {values!r}")
    return symbols


def _graph_inputs(order):
    return [s for node in order for s in node.inputs if isinstance(s.node.layer, InputLayer)]


class Sequential(Model):
    """Layers called in order. Shapes are inferred: from ``Input(shape)`` as the first element,
    from the first layer's ``input_shape=``, or from the first data it sees."""

    def __init__(self, layers=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._input = None                  # the KerasTensor the layers were built on
        self._last = None
        for layer in layers or ():
            self.add(layer)

    def add(self, layer):
        """Append a layer (or an ``Input(...)``, which sets the input shape)."""
        if isinstance(layer, KerasTensor):
            if self._input is not None or len(self._modules):
                raise ValueError("Sequential: Input(...) must come first")
            self._input = self._last = layer
            return
        if isinstance(layer, InputLayer):
            self._input = self._last = layer.output
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Keras layer, got "
                            f"{type(layer).__name__}")
        if layer.name in self._modules:
            raise ValueError(f"Sequential: the model already has a layer named {layer.name!r}")
        if self._input is None and not len(self._modules):
            if layer.declared_input_shape is not None:
                self._input = self._last = Input(shape=layer.declared_input_shape)
            elif isinstance(layer, Model) and layer.inputs:       # a built model first
                first = layer.inputs[0]
                self._input = self._last = Input(shape=first.shape[1:], dtype=first.dtype)
        self.register_module(layer.name, layer)
        if self._last is not None:
            self._last = layer(self._last)
            self.built = True

    def pop(self):
        name = list(self._modules)[-1]
        layer = self._modules.pop(name)
        self._rebuild()
        return layer

    def _rebuild(self):
        self._last = self._input
        if self._input is not None:
            for layer in self._modules.values():
                self._last = layer(self._last)

    @property
    def n_outputs(self):
        return 1

    @property
    def inputs(self):
        return None if self._input is None else [self._input]

    @property
    def outputs(self):
        return None if self._last is None else [self._last]

    def build(self, input_shape=None):
        """Build the layers for inputs of ``input_shape`` (the batch dim included, as Keras)."""
        if self._input is None:
            if input_shape is None:
                raise ValueError("Sequential.build: give input_shape")
            self._input = Input(shape=tuple(input_shape)[1:])
            self._rebuild()
        self.built = True

    def __call__(self, *args, **kwargs):
        if not is_symbolic(args) and self._input is None and args:
            first = args[0]
            self._input = Input(shape=tuple(first.shape[1:]), dtype=first.dtype)
            self._rebuild()
            self.built = True
        return Layer.__call__(self, *args, **kwargs)

    def call(self, inputs, training=None):
        mask = None
        for layer in self._modules.values():
            inputs, mask = layer.call_masked(inputs, mask)
        self._set_output_mask(mask)
        return inputs

    @property
    def layers(self):
        return [m for m in self._modules.values() if isinstance(m, Layer)]

    def get_config(self):
        return model_config.sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        with saving.custom_object_scope(custom_objects):
            return model_config.sequential_from_config(cls, config)


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):  # noqa: A002
    """Keras's ``models.load_model`` (see gpudl.keras.saving.load_model)."""
    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile,
                             safe_mode=safe_mode)


def model_from_json(json_string, custom_objects=None):
    """A new model (fresh weights) from ``model.to_json()``."""
    return saving.model_from_json(json_string, custom_objects=custom_objects)


def clone_model(model, input_tensors=None, clone_function=None):
    """A new model of the same architecture with new weights (Keras's clone_model: the layers
    are rebuilt from their configs; ``clone_function(layer)`` may build each one instead)."""
    if input_tensors is not None:
        raise NotImplementedError("clone_model: input_tensors is not supported")
    if clone_function is None:
        return type(model).from_config(model.get_config())
    if isinstance(model, Sequential):
        clone = Sequential(name=model.name)
        if model._input is not None:
            clone.add(Input(shape=model._input.shape[1:], dtype=model._input.dtype))
        for layer in model.layers:
            clone.add(clone_function(layer))
        return clone
    raise NotImplementedError("clone_model: clone_function is supported for Sequential models")


__all__ = ["Model", "Sequential", "load_model", "model_from_json", "clone_model"]
