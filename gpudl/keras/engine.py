"""The Keras layer machinery on gpudl Modules: ``Layer`` (built from its first input's shape),
symbolic ``KerasTensor``s and ``Input`` for the functional API.

A layer called on KerasTensors runs once on small zero batches in inference mode, without
gradients: that builds its weights and gives its output shape, so shapes are never written by
hand. Dimensions left ``None`` (a variable sequence length) are probed with two sizes; an output
dimension that follows them stays ``None``.
"""

import re
from contextlib import contextmanager

import numpy as np

from .. import creation, dtypes, nn
from ..autograd import no_grad
from ..tensor import Tensor
from .serialization import Configurable

PROBE_BATCH = 2
PROBE_SIZES = (24, 40)      # stand-ins for None dims; distinct so dependent dims show up
_NAME_COUNTS = {}


def to_snake_case(name):
    """Keras's layer-name rule: ``Conv2D`` -> ``conv2d``, ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base):
    """``base``, then ``base_1``, ``base_2``, ... as Keras names new layers."""
    count = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def clear_session():
    """Restart layer naming (``keras.backend.clear_session()``)."""
    _NAME_COUNTS.clear()


def map_structure(fn, value):
    """``fn`` applied to every leaf of nested lists, tuples and dicts (structure kept)."""
    if isinstance(value, (list, tuple)):
        return type(value)(map_structure(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: map_structure(fn, v) for k, v in value.items()}
    return fn(value)


def flatten(value):
    """The leaves of nested lists, tuples and dicts, in order."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in flatten(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in flatten(v)]
    return [value]


class KerasTensor:
    """A symbolic tensor of the functional API: a shape (``None`` for the batch and any unknown
    dim), a dtype, and the layer call that produces it."""

    def __init__(self, shape, dtype, node=None, index=0):
        self.shape = tuple(shape)
        self.dtype = dtypes.as_dtype(dtype, "KerasTensor")
        self.node, self.index = node, index

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        layer = self.node.layer.name if self.node else None
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, layer={layer!r}>"

    def __len__(self):
        raise TypeError("a KerasTensor has no length; use .shape")

    # arithmetic in functional code (``x = Dense(8)(x) + skip``) becomes layers
    def _binary(self, other, op, reflected=False):
        from .layers.core import ElementwiseOperation
        if isinstance(other, KerasTensor):
            pair = [other, self] if reflected else [self, other]
            return ElementwiseOperation(op)(pair)
        return ElementwiseOperation(op, constant=other, reflected=reflected)(self)

    def __add__(self, other):
        return self._binary(other, "add")

    def __radd__(self, other):
        return self._binary(other, "add", reflected=True)

    def __sub__(self, other):
        return self._binary(other, "subtract")

    def __rsub__(self, other):
        return self._binary(other, "subtract", reflected=True)

    def __mul__(self, other):
        return self._binary(other, "multiply")

    def __rmul__(self, other):
        return self._binary(other, "multiply", reflected=True)

    def __truediv__(self, other):
        return self._binary(other, "divide")

    def __neg__(self):
        return self._binary(-1.0, "multiply")

    def __iter__(self):
        raise TypeError(f"a KerasTensor of shape {self.shape} cannot be iterated; layers that "
                        "return several tensors give a list")


class Node:
    """One call of a layer on KerasTensors: what it took and what it gave."""

    def __init__(self, layer, args, kwargs, outputs):
        self.layer, self.args, self.kwargs, self.outputs = layer, args, kwargs, outputs

    @property
    def inputs(self):
        return [v for v in flatten((self.args, self.kwargs)) if isinstance(v, KerasTensor)]


def is_symbolic(value):
    return any(isinstance(v, KerasTensor) for v in flatten(value))


def shape_of(value):
    """Shapes (tuples) of a Tensor or of nested Tensors, as ``build(input_shape)`` takes."""
    return map_structure(lambda v: tuple(v.shape) if hasattr(v, "shape") else v, value)


@contextmanager
def inference(module):
    """``module`` (and its children) in eval mode without gradients; the modes come back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with no_grad():
            yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


@contextmanager
def _mode(module, training):
    """``module`` (and its children) in train (True) or eval (False) mode; modes come back."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(bool(training))
    try:
        yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


def symbolic_call(layer, args, kwargs):
    """KerasTensors for ``layer(*args, **kwargs)`` with KerasTensors among the arguments."""
    symbols = [v for v in flatten((args, kwargs)) if isinstance(v, KerasTensor)]
    variable = any(d is None for v in symbols for d in v.shape[1:])
    results = []
    with inference(layer):
        for size in PROBE_SIZES if variable else PROBE_SIZES[:1]:
            concrete = map_structure(lambda v: _zeros(v, size) if isinstance(v, KerasTensor)
                                     else v, (args, kwargs))
            results.append(flatten(layer(*concrete[0], **concrete[1])))
    first = results[0]
    node = Node(layer, args, kwargs, None)
    outputs = []
    for i, out in enumerate(first):
        shape = [None] + [d if all(r[i].shape[j] == d for r in results) else None
                          for j, d in enumerate(out.shape) if j > 0]
        outputs.append(KerasTensor(shape, out.dtype, node, i))
    node.outputs = outputs
    layer._nodes.append(node)
    return outputs if len(outputs) > 1 or _is_sequence_output(layer) else outputs[0]


def _is_sequence_output(layer):
    return getattr(layer, "returns_list", False)


def _zeros(symbol, size):
    shape = (PROBE_BATCH,) + tuple(size if d is None else d for d in symbol.shape[1:])
    return creation.zeros(*shape, dtype=symbol.dtype)


class Layer(nn.Module, Configurable):
    """A Keras layer: a gpudl Module whose weights are created by ``build(input_shape)`` on the
    first call (or at once, given ``input_shape=``), and that can be called on KerasTensors.

    Subclasses define ``build(input_shape)`` (creating weights with ``add_weight``) and
    ``call(inputs, ...)``. Integer inputs are cast to float32 unless ``accepts_integers``.
    """

    accepts_integers = False
    supports_masking = False     # pass a mask (from Embedding(mask_zero=True)) on unchanged
    consumes_mask = False        # call() takes mask= (recurrent layers)

    def __init__(self, trainable=True, name=None, dtype=None, input_shape=None,
                 batch_input_shape=None, input_dim=None, **kwargs):
        from . import regularizers
        super().__init__()
        cls = type(self).__name__
        # kernel_regularizer=, bias_regularizer=, ...: applied to the weight of that name
        given = {key[:-len("_regularizer")]: kwargs.pop(key)
                 for key in [k for k in kwargs if k.endswith("_regularizer")]}
        self._regularizers = {name: regularizers.get(value) for name, value in given.items()
                              if value is not None}
        # outputs' regularizer: its term over the last call, divided by the batch size
        self.activity_regularizer = self._regularizers.pop("activity", None)
        self._activity_losses = []
        if kwargs:
            raise TypeError(f"{cls}: unexpected keyword argument(s) {sorted(kwargs)}")
        if isinstance(dtype, str) and dtype.startswith("mixed_"):
            raise NotImplementedError(f"{cls}: the dtype policy {dtype!r} is not supported (use "
                                      "gd.autocast for mixed precision)")
        self.weight_dtype = dtypes.as_dtype(dtype, f"{cls}: dtype") or default_float()
        self._unnamed_weights = set()          # add_weight(...) names waiting for an attribute
        self.name = name or unique_name(to_snake_case(cls))
        self.built = False
        self._nodes = []
        self._trainable = bool(trainable)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None and input_shape is None:
            input_shape = tuple(batch_input_shape)[1:]
        self.declared_input_shape = None if input_shape is None else _shape_tuple(
            input_shape, cls)

    # -- what subclasses define
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (the batch size included)."""

    def call(self, inputs, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define call(inputs)")

    def forward(self, *args, **kwargs):
        return self(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if kwargs.get("training") is not None and not is_symbolic((args, kwargs)):
            # Keras's layer(x, training=False): this call in that mode, whatever the layer's
            training = kwargs.pop("training")
            with _mode(self, training):
                return self(*args, **kwargs)
        kwargs.pop("training", None)
        if is_symbolic((args, kwargs)):
            return symbolic_call(self, args, kwargs)
        if not args:
            raise TypeError(f"{self.name}: expected inputs")
        # Keras converts NumPy inputs (and masks) to tensors: float arrays in float32
        args = map_structure(_from_numpy, args)
        kwargs = {k: map_structure(_from_numpy, v) for k, v in kwargs.items()}
        if not self.accepts_integers:
            args = (map_structure(_as_float, args[0]),) + args[1:]
        if not self.built:
            self.build_input_shape = shape_of(args[0])       # Keras's build_config
            self.build(self.build_input_shape)
            self.built = True
            self.trainable = self._trainable
        weight = next(iter(self._parameters.values()), None)
        if weight is not None:             # Keras's autocast: float inputs in the weights' dtype
            args = (map_structure(lambda v: _as_dtype(v, weight.dtype), args[0]),) + args[1:]
        out = self.call(*args, **kwargs)
        if self.activity_regularizer is not None:
            self._activity_losses = [self.activity_regularizer(t) / max(t.shape[0], 1)
                                     for t in flatten(out) if isinstance(t, Tensor) and t.ndim]
        return out

    def get_config(self):
        """The layer's constructor arguments (``from_config`` rebuilds it), with its current
        ``name`` and ``trainable``."""
        config = super().get_config()
        config.update(name=self.name, trainable=self.trainable)
        return config

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output (Keras's rule: passed on only by layers that
        support masking)."""
        return mask if self.supports_masking else None

    def call_masked(self, inputs, mask):
        """``(output, output mask)`` for one input carrying ``mask`` (None: no mask)."""
        if mask is not None and self.consumes_mask:
            out = self(inputs, mask=mask)
        else:
            out = self(inputs)
        return out, self.compute_mask(inputs, mask)

    # -- weights
    def add_weight(self, *args, **kwargs):
        """A new weight of ``shape`` filled by ``initializer``: a Parameter when trainable, else
        a buffer (Keras's non-trainable weights: BatchNormalization's moving statistics); it
        becomes the attribute ``name``.

        Keras 3's call ``add_weight(shape=None, initializer=None, dtype=None, trainable=True,
        regularizer=None, constraint=None, name=None)`` (initializer None: glorot_uniform; a
        weight without a name is called ``variable``, ``variable_1``, ...) and gpudl's
        ``add_weight(name, shape, initializer="zeros", trainable=True)`` (a name first) are
        both taken."""
        if args and isinstance(args[0], str):
            spec = dict(zip(("name", "shape", "initializer", "trainable"), args))
        else:
            spec = dict(zip(("shape", "initializer", "dtype", "trainable"), args))
            spec.setdefault("initializer", kwargs.pop("initializer", None) or "glorot_uniform")
        spec.update(kwargs)
        return self._new_weight(**spec)

    def _new_weight(self, name=None, shape=(), initializer="zeros", dtype=None, trainable=True,
                    regularizer=None, constraint=None, **unsupported):
        from . import initializers, regularizers
        if constraint is not None or unsupported:
            raise NotImplementedError(f"{self.name}.add_weight: constraint and "
                                      f"{sorted(unsupported) or 'other options'} are not "
                                      "supported")
        unnamed = name is None
        if unnamed:
            taken = set(self._parameters) | set(self._buffers)
            name = next(candidate for candidate in
                        ["variable"] + [f"variable_{i}" for i in range(1, len(taken) + 2)]
                        if candidate not in taken)
        weight_dtype = self.weight_dtype if dtype is None else dtypes.as_dtype(dtype,
                                                                               "add_weight")
        value = creation.empty(*_shape_tuple(shape, f"{self.name}.add_weight"),
                               dtype=weight_dtype)
        initializers.get(initializer)(value)
        if trainable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)
        if regularizer is not None:
            self._regularizers[name] = regularizers.get(regularizer)
        if unnamed:
            self._unnamed_weights.add(name)
        return getattr(self, name)

    def __setattr__(self, name, value):
        """``self.w = self.add_weight(shape=...)``: the weight made without a name takes the
        attribute's (Keras's custom layers), instead of being held twice."""
        unnamed = self.__dict__.get("_unnamed_weights")
        if unnamed and isinstance(value, Tensor) and not name.startswith("_"):
            for table in (self._parameters, self._buffers):
                old = next((k for k in unnamed if table.get(k) is value), None)
                if old is not None:
                    del table[old]
                    unnamed.discard(old)
                    if old in self._regularizers:
                        self._regularizers[name] = self._regularizers.pop(old)
                    if table is self._buffers:
                        self.register_buffer(name, value)
                        return
        super().__setattr__(name, value)

    @property
    def losses(self):
        """The regularization terms of this layer's weights and of the layers inside it, and
        the activity regularizers' terms of the last call (Tensors added to the training
        loss)."""
        terms = []
        for module in self.modules():
            terms += getattr(module, "_activity_losses", [])
            for name, regularizer in getattr(module, "_regularizers", {}).items():
                weight = getattr(module, name, None)
                if weight is not None:
                    terms.append(regularizer(weight))
        return terms

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze or unfreeze every weight of the layer (and of the layers inside it)."""
        self._trainable = bool(value)
        for module in self.modules():
            if isinstance(module, Layer):
                object.__setattr__(module, "_trainable", bool(value))
        for param in self.parameters():
            param.requires_grad_(bool(value))

    @property
    def weights(self):
        """The layer's weights, Keras's order: each layer's own (trainable first), layer by layer."""
        return list(self.state_dict(keep_vars=True).values())

    @property
    def trainable_weights(self):
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def non_trainable_weights(self):
        trainable = {id(p) for p in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def get_weights(self):
        """The weights as NumPy arrays (Keras's layouts, e.g. Dense's kernel (in, out))."""
        return [w.numpy().copy() for w in self.weights]

    def set_weights(self, weights):
        """Assign NumPy arrays (as ``get_weights`` gives) to the weights, checked first."""
        mine = self.weights
        weights = list(weights)
        if len(weights) != len(mine):
            raise ValueError(f"{self.name}.set_weights: expected {len(mine)} arrays, got "
                             f"{len(weights)}")
        for i, (w, value) in enumerate(zip(mine, weights)):
            if tuple(getattr(value, "shape", ())) != tuple(w.shape):
                raise ValueError(f"{self.name}.set_weights: weight {i} has shape "
                                 f"{tuple(w.shape)}, got {getattr(value, 'shape', None)}")
        with no_grad():
            for w, value in zip(mine, weights):
                w.copy_(creation.tensor(value, dtype=w.dtype))

    def count_params(self):
        """The number of scalars in all weights, trainable or not (Keras's Param #)."""
        return sum(w.numel() for w in self.weights)

    # -- shapes recorded by symbolic calls
    @property
    def output_shape(self):
        if not self._nodes:
            raise AttributeError(f"{self.name} has not been called on symbolic inputs; its "
                                 "output shape is unknown")
        shapes = [t.shape for t in self._nodes[-1].outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input_shape(self):
        if not self._nodes:
            raise AttributeError(f"{self.name} has not been called on symbolic inputs")
        shapes = [t.shape for t in self._nodes[-1].inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output(self):
        return self._nodes[-1].outputs[0] if self._nodes else None

    def extra_repr(self):
        return f"name={self.name!r}"


def default_float():
    """keras.backend.floatx() as a gpudl dtype."""
    from .backend import default_float as floatx
    return floatx()


def _as_dtype(value, dtype):
    if isinstance(value, Tensor) and dtypes.is_floating(value.dtype) and value.dtype != dtype:
        return value.astype(dtype)
    return value


def _from_numpy(value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            value = value.astype(np.dtype(dtypes.DEFAULT_FLOAT.name), copy=False)
        return creation.tensor(value)
    return value


def _as_float(value):
    if isinstance(value, Tensor) and not dtypes.is_floating(value.dtype):
        return value.astype(dtypes.DEFAULT_FLOAT)
    return value


def _shape_tuple(shape, where):
    try:
        shape = tuple(shape)
    except TypeError:
        shape = (shape,)
    for d in shape:
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
            raise ValueError(f"{where}: shape dims must be ints >= 0 or None, got {shape}")
    return shape


class InputLayer(Layer):
    """The layer behind ``Input``: passes its input through (any dtype)."""

    accepts_integers = True

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None, shape=None,
                 **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: give shape= (without the batch dimension)")
        super().__init__(name=name, input_shape=shape, **kwargs)
        self.input_dtype = dtypes.as_dtype(dtype or default_float(), "Input")
        self.built = True
        symbol = KerasTensor((batch_size,) + self.declared_input_shape, self.input_dtype)
        symbol.node = Node(self, (), {}, [symbol])
        self._nodes.append(symbol.node)

    def call(self, inputs):
        return inputs


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):  # noqa: N802
    """A symbolic input of ``shape`` (without the batch dimension) for the functional API."""
    if batch_shape is not None:
        shape, batch_size = tuple(batch_shape)[1:], batch_shape[0]
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype,
                      name=name or unique_name("input_layer")).output
