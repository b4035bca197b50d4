"""gpudl.keras's breadth against Keras 3 itself (torch backend): ops, activations, losses,
layers (the same weights), metrics, optimizers and a few training steps give Keras's numbers.

Keras is an oracle here, not a dependency: without it the module is skipped (the same names
are checked against independent references in test_keras_breadth.py and test_keras_ops.py).
"""

import numpy as np
import pytest

from keras_oracle import import_keras

real_keras = import_keras()
import gpudl as gd  # noqa: E402
from gpudl import keras as gk  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6


def _np(value):
    if isinstance(value, (list, tuple)):
        return [_np(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    return np.asarray(value)


def _close(ours, theirs, rtol=RTOL, atol=ATOL):
    ours = ours.numpy() if isinstance(ours, gd.Tensor) else ours
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=rtol, atol=atol)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((4, 6)).astype("float32"),
            "y": rng.standard_normal((6, 3)).astype("float32"),
            "pos": rng.uniform(0.1, 2.0, (4, 6)).astype("float32"),
            "labels": rng.integers(0, 2, (4, 6)).astype("float32"),
            "probs": rng.uniform(0.05, 0.95, (4, 6)).astype("float32"),
            "onehot": np.eye(6, dtype="float32")[rng.integers(0, 6, 4)],
            "ids": rng.integers(0, 6, 4), "rng": rng}


OPS = [("add", ("x", "x"), {}), ("divide", ("x", "pos"), {}), ("power", ("pos", "x"), {}),
       ("matmul", ("x", "y"), {}), ("dot", ("x", "y"), {}), ("sum", ("x",), {"axis": 1}),
       ("mean", ("x",), {"axis": 0, "keepdims": True}), ("max", ("x",), {}),
       ("min", ("x",), {"axis": -1}), ("argmax", ("x",), {"axis": 1}), ("argmin", ("x",), {}),
       ("std", ("x",), {"axis": 1}), ("var", ("x",), {}), ("logsumexp", ("x",), {"axis": 1}),
       ("norm", ("x",), {}), ("norm", ("x",), {"axis": 1, "ord": 1}),
       ("cumsum", ("x",), {"axis": 1}), ("cumsum", ("x",), {}), ("sort", ("x",), {}),
       ("argsort", ("x",), {"axis": 0}), ("softmax", ("x",), {"axis": 0}),
       ("log_softmax", ("x",), {}), ("gelu", ("x",), {}),
       ("gelu", ("x",), {"approximate": False}), ("silu", ("x",), {}),
       ("relu", ("x",), {}), ("sigmoid", ("x",), {}), ("leaky_relu", ("x",), {}),
       ("clip", ("x",), {"x_min": -0.5, "x_max": 0.5}), ("transpose", ("x",), {}),
       ("expand_dims", ("x",), {"axis": 1}), ("reshape", ("x",), {"newshape": (3, -1)}),
       ("tile", ("x",), {"repeats": (2, 1)}), ("repeat", ("x",), {"repeats": 2, "axis": 1}),
       ("repeat", ("x",), {"repeats": 2}), ("take", ("x",), {"indices": [5, 0], "axis": 1}),
       ("take", ("x",), {"indices": [[1, 7]]}), ("square", ("x",), {}), ("sqrt", ("pos",), {}),
       ("log", ("pos",), {}), ("exp", ("x",), {}), ("abs", ("x",), {}),
       ("maximum", ("x", "probs"), {}), ("where", ("labels", "x", "probs"), {}),
       ("one_hot", ("ids",), {"num_classes": 6}), ("flip", ("x",), {"axis": 1}),
       ("einsum", ("ij,jk->ik", "x", "y"), {})]


@pytest.mark.parametrize("name,args,kwargs", OPS, ids=[f"{o[0]}-{i}" for i, o in enumerate(OPS)])
def test_ops_match_keras(data, name, args, kwargs):
    values = [data.get(a, a) for a in args]
    theirs = getattr(real_keras.ops, name)(*values, **kwargs)
    ours = getattr(gk.ops, name)(*values, **kwargs)
    _close(ours, theirs)
    assert str(ours.dtype) == str(_np(theirs).dtype) or name in ("argmax", "argmin", "argsort")


def test_op_tuples_match_keras(data):
    x = data["x"]
    for ours, theirs in zip(gk.ops.top_k(x, 3), real_keras.ops.top_k(x, 3)):
        _close(ours, theirs)
    for ours, theirs in zip(gk.ops.split(x, [1, 4], axis=1),
                            real_keras.ops.split(x, [1, 4], axis=1)):
        _close(ours, theirs)
    assert gk.ops.arange(5).dtype == _np(real_keras.ops.arange(5)).dtype
    _close(gk.ops.linspace(0, 2, 7), real_keras.ops.linspace(0, 2, 7))


ACTIVATIONS = ["celu", "glu", "hard_silu", "hard_tanh", "log_sigmoid", "mish", "softsign",
               "tanh_shrink", "soft_shrink", "hard_shrink", "squareplus", "sparse_plus", "selu",
               "hard_sigmoid", "gelu", "elu", "leaky_relu", "relu6", "silu", "softplus"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_keras(data, name):
    x = data["x"] * 2
    _close(gk.activations.get(name)(gd.tensor(x)), getattr(real_keras.activations, name)(x))


LOSSES = [("hinge", "labels", "x", {}), ("squared_hinge", "labels", "x", {}),
          ("categorical_hinge", "onehot", "x", {}), ("log_cosh", "pos", "x", {}),
          ("poisson", "pos", "probs", {}), ("cosine_similarity", "pos", "x", {}),
          ("mean_absolute_percentage_error", "pos", "x", {}),
          ("mean_squared_logarithmic_error", "pos", "probs", {}),
          ("binary_focal_crossentropy", "labels", "probs", {}),
          ("binary_focal_crossentropy", "labels", "x",
           {"from_logits": True, "apply_class_balancing": True, "gamma": 1.5,
            "label_smoothing": 0.1}),
          ("categorical_focal_crossentropy", "onehot", "probs", {}),
          ("categorical_focal_crossentropy", "onehot", "x",
           {"from_logits": True, "label_smoothing": 0.2, "alpha": 0.4}),
          ("dice", "labels", "probs", {}), ("dice", "labels", "probs", {"axis": 1}),
          ("tversky", "labels", "probs", {}),
          ("tversky", "labels", "probs", {"alpha": 0.3, "beta": 0.7, "axis": (1,)})]


@pytest.mark.parametrize("name,true,pred,kwargs", LOSSES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(LOSSES)])
def test_loss_functions_match_keras(data, name, true, pred, kwargs):
    y, p = data[true], data[pred]
    _close(getattr(gk.losses, name)(gd.tensor(y), gd.tensor(p), **kwargs),
           getattr(real_keras.losses, name)(y, p, **kwargs))


LOSS_CLASSES = [("Hinge", {}, "labels", "x"), ("Dice", {}, "labels", "probs"),
                ("Tversky", {"alpha": 0.2, "beta": 0.8}, "labels", "probs"),
                ("BinaryFocalCrossentropy", {"gamma": 3.0}, "labels", "probs"),
                ("CategoricalFocalCrossentropy", {}, "onehot", "probs"),
                ("CosineSimilarity", {}, "pos", "x"), ("LogCosh", {}, "pos", "x"),
                ("Poisson", {}, "pos", "probs"),
                ("MeanSquaredLogarithmicError", {}, "pos", "probs"),
                ("MeanAbsolutePercentageError", {}, "pos", "x"),
                ("SquaredHinge", {}, "labels", "x"),
                ("CategoricalHinge", {}, "onehot", "x")]


@pytest.mark.parametrize("name,kwargs,true,pred", LOSS_CLASSES, ids=[c[0] for c in LOSS_CLASSES])
def test_loss_classes_match_keras(data, name, kwargs, true, pred):
    y, p = data[true], data[pred]
    weights = data["rng"].uniform(0.5, 2, 4).astype("float32")
    call = {} if name in ("Dice", "Tversky") else {"sample_weight": weights}
    ours = getattr(gk.losses, name)(**kwargs)(gd.tensor(y), gd.tensor(p), **call)
    _close(ours, getattr(real_keras.losses, name)(**kwargs)(y, p, **call))


LAYERS = [("PReLU", {"shared_axes": [1, 2]}, (2, 5, 6, 3)), ("ELU", {"alpha": 0.7}, (2, 5)),
          ("GroupNormalization", {"groups": 2}, (2, 4, 5, 6)),
          ("UnitNormalization", {}, (3, 6)), ("RMSNormalization", {}, (3, 4, 6)),
          ("Conv1DTranspose", {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"},
           (2, 7, 4)),
          ("Conv1DTranspose", {"filters": 3, "kernel_size": 4, "strides": 3}, (2, 5, 2)),
          ("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2, "strides": 2,
                               "padding": "same"}, (2, 7, 8, 3)),
          ("DepthwiseConv1D", {"kernel_size": 3, "depth_multiplier": 3, "dilation_rate": 2},
           (2, 9, 2)),
          ("Cropping1D", {"cropping": (1, 2)}, (2, 7, 3)),
          ("Cropping2D", {"cropping": ((1, 0), (2, 1))}, (2, 5, 6, 3)),
          ("Cropping3D", {"cropping": 1}, (2, 4, 5, 6, 2)),
          ("GlobalMaxPool1D", {}, (2, 5, 3)), ("GlobalAvgPool3D", {}, (2, 3, 4, 5, 2)),
          ("GlobalMaxPooling3D", {"keepdims": True}, (2, 3, 4, 5, 2)),
          ("Identity", {}, (2, 3)), ("Masking", {}, (2, 4, 3)),
          ("ActivityRegularization", {"l1": 0.1}, (2, 3))]


@pytest.mark.parametrize("name,kwargs,shape", LAYERS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(LAYERS)])
def test_layers_with_keras_weights_match_keras(data, name, kwargs, shape):
    rng = data["rng"]
    x = rng.standard_normal(shape).astype("float32")
    theirs = getattr(real_keras.layers, name)(**kwargs)
    theirs(x)
    weights = [rng.standard_normal(w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours = getattr(gk.layers, name)(**kwargs)
    ours(gd.tensor(x))
    ours.set_weights(weights)                   # Keras's layouts: the shapes must agree
    _close(ours(gd.tensor(x)), theirs(x))


def test_merge_encoding_and_attention_layers_match_keras(data):
    rng = data["rng"]
    a, b = rng.standard_normal((3, 4, 5)).astype("float32"), \
        rng.standard_normal((3, 6, 5)).astype("float32")
    for kwargs in ({"axes": 2}, {"axes": (2, 2), "normalize": True}):
        _close(gk.layers.Dot(**kwargs)([gd.tensor(a), gd.tensor(b)]),
               real_keras.layers.Dot(**kwargs)([a, b]))
    _close(gk.layers.Dot(axes=1)([gd.tensor(a[:, 0]), gd.tensor(b[:, 0])]),
           real_keras.layers.Dot(axes=1)([a[:, 0], b[:, 0]]))
    _close(gk.layers.Minimum()([gd.tensor(a), gd.tensor(a[:, ::-1].copy())]),
           real_keras.layers.Minimum()([a, a[:, ::-1].copy()]))
    ids = np.array([[0, 2, 2], [3, 1, 0]])
    for mode in ("multi_hot", "count"):
        _close(gk.layers.CategoryEncoding(5, output_mode=mode)(gd.tensor(ids)),
               real_keras.layers.CategoryEncoding(5, output_mode=mode)(ids))
    q, v = rng.standard_normal((2, 3, 4)).astype("float32"), \
        rng.standard_normal((2, 5, 4)).astype("float32")
    theirs = real_keras.layers.AdditiveAttention()
    theirs([q, v])
    weights = [rng.standard_normal(w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours = gk.layers.AdditiveAttention()
    ours([gd.tensor(q), gd.tensor(v)])
    ours.set_weights(weights)
    _close(ours([gd.tensor(q), gd.tensor(v)]), theirs([q, v]))


def _metric_cases(rng):
    yb = rng.integers(0, 2, (50, 1)).astype("float32")
    pb = np.clip(yb * 0.3 + rng.uniform(0, 0.7, (50, 1)), 0, 1).astype("float32")
    y4 = np.eye(4, dtype="float32")[rng.integers(0, 4, 50)]
    s4 = rng.standard_normal((50, 4)).astype("float32")
    p4 = np.exp(s4) / np.exp(s4).sum(1, keepdims=True)
    labels = rng.integers(0, 4, 50)
    return [("AUC", {}, yb, pb), ("AUC", {"curve": "PR"}, yb, pb),
            ("AUC", {"summation_method": "minoring", "num_thresholds": 50}, yb, pb),
            ("Precision", {}, yb, pb), ("Recall", {"thresholds": [0.3, 0.6]}, yb, pb),
            ("Precision", {"class_id": 2, "thresholds": 0.2}, y4, p4),
            ("TruePositives", {}, yb, pb), ("FalseNegatives", {"thresholds": 0.4}, yb, pb),
            ("F1Score", {}, y4, p4), ("F1Score", {"average": "micro"}, y4, p4),
            ("F1Score", {"average": "macro"}, y4, p4),
            ("F1Score", {"average": "weighted"}, y4, p4),
            ("FBetaScore", {"average": "macro", "beta": 2.0, "threshold": 0.3}, y4, p4),
            ("TopKCategoricalAccuracy", {"k": 2}, y4, p4),
            ("SparseTopKCategoricalAccuracy", {"k": 2}, labels, p4),
            ("MeanIoU", {"num_classes": 4}, labels, p4.argmax(1)),
            ("IoU", {"num_classes": 4, "target_class_ids": [0, 2], "sparse_y_pred": False},
             labels, p4),
            ("R2Score", {}, y4, p4),
            ("R2Score", {"class_aggregation": "variance_weighted_average", "num_regressors": 2},
             y4, p4),
            ("RootMeanSquaredError", {}, y4, p4), ("CosineSimilarity", {}, y4, s4)]


@pytest.mark.parametrize("weighted", [False, True])
def test_metrics_match_keras(weighted):
    rng = np.random.default_rng(1)
    weights = rng.integers(0, 3, 50).astype("float32")      # IoU: Keras casts weights to int
    for name, kwargs, y, p in _metric_cases(rng):
        call = {"sample_weight": weights} if weighted else {}
        theirs, ours = getattr(real_keras.metrics, name)(**kwargs), \
            getattr(gk.metrics, name)(**kwargs)
        for half in (slice(0, 25), slice(25, 50)):
            part = {k: v[half] for k, v in call.items()}
            theirs.update_state(y[half], p[half], **part)
            ours.update_state(y[half], p[half], **part)
        np.testing.assert_allclose(ours.result().numpy(), _np(theirs.result()), rtol=1e-5,
                                   atol=1e-6, err_msg=f"{name} {kwargs}")


def _two_models(keras, seed_weights=None):
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        keras.layers.GroupNormalization(groups=3),
        keras.layers.PReLU(shared_axes=[1, 2]),
        keras.layers.Conv2D(4, 3, strides=2),
        keras.layers.GlobalMaxPool2D(),
        keras.layers.Dense(5, activation="mish"),
        keras.layers.UnitNormalization(),
        keras.layers.Dense(3, activation="softmax")])
    if seed_weights is not None:
        model.set_weights(seed_weights)
    return model


@pytest.mark.parametrize("optimizer,kwargs", [("Adamax", {}), ("Nadam", {"learning_rate": 0.01}),
                                              ("Adadelta", {"learning_rate": 0.5}),
                                              ("Lion", {"learning_rate": 0.003}),
                                              ("Lamb", {"learning_rate": 0.01,
                                                        "weight_decay": 0.01}),
                                              # no l1 here: its clip at +-l1 turns float32
                                              # rounding into zeroed weights (see the NumPy
                                              # test of Ftrl with l1 in float64)
                                              ("Ftrl", {"learning_rate": 0.05,
                                                        "l2_regularization_strength": 0.02,
                                                        "l2_shrinkage_regularization_strength":
                                                        0.03, "beta": 0.1})])
def test_training_steps_match_keras(optimizer, kwargs):
    """New layers, a focal loss and an AUC metric: a few epochs give Keras's history and
    final weights."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 24)]
    theirs = _two_models(real_keras)
    ours = _two_models(gk, theirs.get_weights())
    histories = []
    for keras, model in ((real_keras, theirs), (gk, ours)):
        model.compile(optimizer=getattr(keras.optimizers, optimizer)(**kwargs),
                      loss=keras.losses.CategoricalFocalCrossentropy(),
                      metrics=[keras.metrics.AUC(name="auc")])
        histories.append(model.fit(x, y, batch_size=8, epochs=2, shuffle=False,
                                   verbose=0).history)
    for key in ("loss", "auc"):
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-4, atol=1e-6)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cell,kwargs", [("LSTMCell", {}), ("GRUCell", {}),
                                         ("GRUCell", {"reset_after": False}),
                                         ("SimpleRNNCell", {})])
@pytest.mark.parametrize("options", [{}, {"return_sequences": True, "return_state": True,
                                          "go_backwards": True}])
def test_rnn_cells_match_keras(cell, kwargs, options):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4)).astype("float32")
    theirs = real_keras.layers.RNN(getattr(real_keras.layers, cell)(6, **kwargs), **options)
    theirs(x)
    weights = [0.5 * rng.standard_normal(w.shape).astype("float32")
               for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours = gk.layers.RNN(getattr(gk.layers, cell)(6, **kwargs), **options)
    ours(gd.tensor(x))
    ours.set_weights(weights)
    expected, got = theirs(x), ours(gd.tensor(x))
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        _close(a, b)


def test_masked_rnn_of_a_cell_matches_keras():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 4)).astype("float32")
    x[0, 3:] = 0
    x[1, :2] = 0
    models = [keras.Sequential([keras.Input((5, 4)), keras.layers.Masking(),
                                keras.layers.RNN(keras.layers.LSTMCell(6),
                                                 return_sequences=True)])
              for keras in (real_keras, gk)]
    models[1].set_weights(models[0].get_weights())
    _close(models[1].predict(x, verbose=0), models[0].predict(x, verbose=0))


@pytest.mark.parametrize("name, kwargs", [("Accuracy", {}), ("BinaryAccuracy", {}),
                                          ("BinaryAccuracy", {"threshold": 0.3}),
                                          ("CategoricalAccuracy", {}),
                                          ("SparseCategoricalAccuracy", {})])
def test_accuracy_objects_match_keras(data, name, kwargs):
    rng = data["rng"]
    y_true, y_pred = {
        "Accuracy": (data["ids"], rng.integers(0, 6, 4)),
        "BinaryAccuracy": (data["labels"], data["probs"]),
        "CategoricalAccuracy": (data["onehot"], data["x"]),
        "SparseCategoricalAccuracy": (data["ids"][:, None], data["x"])}[name]
    weights = rng.uniform(0.1, 2.0, 4)
    theirs, ours = (getattr(keras.metrics, name)(**kwargs) for keras in (real_keras, gk))
    for metric in (theirs, ours):
        metric.update_state(y_true, y_pred)
        metric.update_state(y_true, y_pred, sample_weight=weights)
    _close(ours.result(), theirs.result())


@pytest.mark.parametrize("name", ["Precision", "Recall"])
@pytest.mark.parametrize("kwargs", [{"top_k": 2}, {"top_k": 3, "class_id": 1},
                                    {"top_k": 2, "thresholds": [0.3, 0.6]}])
def test_precision_recall_top_k_match_keras(data, name, kwargs):
    theirs, ours = (getattr(keras.metrics, name)(**kwargs) for keras in (real_keras, gk))
    weights = data["rng"].uniform(0.1, 2.0, 4)
    for metric in (theirs, ours):
        metric.update_state(data["labels"], data["probs"], sample_weight=weights)
    _close(ours.result(), theirs.result())


@pytest.mark.parametrize("cells, options", [
    (("LSTMCell", "GRUCell"), {}),
    (("GRUCell", "SimpleRNNCell", "LSTMCell"), {"return_sequences": True,
                                                "return_state": True}),
    (("LSTMCell", "LSTMCell"), {"return_state": True, "go_backwards": True})])
@pytest.mark.parametrize("masked", [False, True])
def test_rnn_of_stacked_cells_matches_keras(cells, options, masked):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 5, 4)).astype("float32")
    mask = np.arange(5)[None, :] < np.array([[5], [3], [1]]) if masked else None
    theirs = real_keras.layers.RNN([getattr(real_keras.layers, c)(6 - i)
                                    for i, c in enumerate(cells)], **options)
    theirs(x)
    weights = [0.5 * rng.standard_normal(w.shape).astype("float32")
               for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours = gk.layers.RNN([getattr(gk.layers, c)(6 - i) for i, c in enumerate(cells)],
                         **options)
    ours(gd.tensor(x))
    ours.set_weights(weights)
    expected = theirs(x, mask=None if mask is None else real_keras.ops.convert_to_tensor(mask))
    got = ours(gd.tensor(x), mask=None if mask is None else gd.tensor(mask))

    def flat(value):
        return [v for item in value for v in flat(item)] if isinstance(value, (list, tuple)) \
            else [value]
    expected, got = flat(expected), flat(got)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        _close(a, b)
