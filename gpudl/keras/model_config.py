"""Configs of Sequential and functional models (Keras 3's layout) and models rebuilt from them.

Sequential: ``{"name", "layers": [layer configs, an InputLayer first when the input is known]}``.
Functional: ``{"name", "layers": [...], "input_layers", "output_layers"}``; each layer entry has
Keras's ``inbound_nodes``: the arguments of each call, with every symbolic tensor written as
``{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}``
(the layer's name, which of its calls in this model, which of that call's outputs).
"""

from .engine import InputLayer, KerasTensor, flatten, map_structure
from .serialization import deserialize, serialize

KERAS_TENSOR = "__keras_tensor__"


def sequential_config(model):
    """The config of a Sequential model: its layers in order (the InputLayer first when the
    input is known)."""
    layers = ([model._input.node.layer] if model._input is not None else []) + model.layers
    return {"name": model.name, "trainable": model.trainable,
            "layers": [serialize(layer, f"{model.name}: layer {layer.name}")
                       for layer in layers]}


def sequential_from_config(cls, config):
    """A Sequential model rebuilt from ``sequential_config``'s config (new weights)."""
    model = cls(name=config.get("name"))
    for entry in config["layers"]:
        model.add(deserialize(entry))
    model.trainable = config.get("trainable", True)
    return model


def functional_config(model):
    """The graph of a functional model: its layers in call order with their calls."""
    calls = {}                          # id(layer) -> the layer's nodes in this model
    for node in model._graph:
        calls.setdefault(id(node.layer), []).append(node)
    history = {}                        # id(symbol) -> [layer name, node index, tensor index]
    for symbol in model._inputs_list:
        history[id(symbol)] = [symbol.node.layer.name, 0, 0]
    for nodes in calls.values():
        for n, node in enumerate(nodes):
            for i, symbol in enumerate(node.outputs):
                history[id(symbol)] = [node.layer.name, n, i]

    def tensor_ref(value):
        if isinstance(value, KerasTensor):
            return {"class_name": KERAS_TENSOR, "config": {"keras_history": history[id(value)]}}
        return value

    layers = []
    for layer in model.layers:
        entry = serialize(layer, f"{model.name}: layer {layer.name}")
        entry["name"] = layer.name
        entry["inbound_nodes"] = [
            {"args": serialize(map_structure(tensor_ref, list(node.args)), layer.name),
             "kwargs": serialize(map_structure(tensor_ref, dict(node.kwargs)), layer.name)}
            for node in calls.get(id(layer), [])]
        layers.append(entry)
    refs = lambda symbols: [history[id(s)] for s in symbols]  # noqa: E731
    outputs = refs(model._outputs_list)
    return {"name": model.name, "trainable": model.trainable, "layers": layers,
            "input_layers": refs(model._inputs_list),
            "output_layers": outputs[0] if model._outputs_single else outputs}


def functional_from_config(cls, config):
    """The model ``functional_config`` described, its layers newly built (fresh weights)."""
    layers, outputs_of = {}, {}          # name -> layer; (name, node index) -> output symbols
    pending = []
    for entry in config["layers"]:
        layer = deserialize({k: entry[k] for k in ("class_name", "config", "module")
                             if k in entry})
        layers[entry["name"]] = layer
        if isinstance(layer, InputLayer):
            outputs_of[(entry["name"], 0)] = [layer.output]
        pending += [(entry["name"], n, call) for n, call in enumerate(entry["inbound_nodes"])]
    while pending:
        ready = [p for p in pending if all(_key(ref) in outputs_of for ref in _refs(p[2]))]
        if not ready:
            raise ValueError(f"from_config: the calls of layers "
                             f"{sorted({p[0] for p in pending})} refer to outputs no layer "
                             "gives")
        for name, n, call in ready:
            args, kwargs = (deserialize(_resolve(call[part], outputs_of))
                            for part in ("args", "kwargs"))
            outputs_of[(name, n)] = flatten(layers[name](*args, **kwargs))
            pending.remove((name, n, call))
    symbol = lambda ref: outputs_of[_key(ref)][ref[2]]  # noqa: E731
    inputs = [symbol(ref) for ref in config["input_layers"]]
    single = config["output_layers"] and not isinstance(config["output_layers"][0], list)
    outputs = symbol(config["output_layers"]) if single else \
        [symbol(ref) for ref in config["output_layers"]]
    model = cls(inputs=inputs, outputs=outputs, name=config.get("name"))
    model.trainable = config.get("trainable", True)
    return model


def _key(ref):
    return ref[0], ref[1]


def _refs(value):
    """The keras_history entries of the symbolic tensors in a saved call."""
    if isinstance(value, dict):
        if value.get("class_name") == KERAS_TENSOR:
            return [value["config"]["keras_history"]]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _resolve(value, outputs_of):
    if isinstance(value, dict):
        if value.get("class_name") == KERAS_TENSOR:
            ref = value["config"]["keras_history"]
            return outputs_of[_key(ref)][ref[2]]
        return {k: _resolve(v, outputs_of) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, outputs_of) for v in value]
    return value
