"""gpudl.nn.RNN / LSTM / GRU and the cells: PyTorch state dicts load and give torch's outputs and
gradients (input, every weight, initial states) for every option; the fused op matches an unfused
reference built from gpudl's elementwise ops and passes gradcheck; one graph node per layer and
direction; bad input is refused with a clear error."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.ops.rnn import RecurrentLayer, gru_layer, lstm_layer, rnn_layer
from gpudl.testing import gradcheck

torch = pytest.importorskip("torch")

KINDS = {"lstm": ("LSTM", {}), "gru": ("GRU", {}), "rnn_tanh": ("RNN", {}),
         "rnn_relu": ("RNN", {"nonlinearity": "relu"})}
OPTIONS = [{}, {"num_layers": 2}, {"bidirectional": True}, {"batch_first": True},
           {"bias": False}, {"num_layers": 2, "bidirectional": True, "batch_first": True},
           {"num_layers": 3, "dropout": 0.5}]           # dropout: compared in eval mode
T, B, I, H = 5, 3, 4, 6


def _pair(kind, dtype=torch.float64, **options):
    """A torch module and a gpudl one holding the same weights, via state_dict."""
    name, extra = KINDS[kind]
    torch_module = getattr(torch.nn, name)(I, H, **extra, **options).to(dtype)
    module = getattr(nn, name)(I, H, **extra, **options, dtype=str(dtype).split(".")[1])
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    return torch_module, module


def _states(rng, kind, layers, batch, dtype=np.float64):
    count = 2 if kind == "lstm" else 1
    shape = (layers, batch, H) if batch is not None else (layers, H)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def _flatten(out):
    """(output, h_n) or (output, (h_n, c_n)) -> [output, h_n, (c_n)]."""
    first, rest = out
    return [first] + (list(rest) if isinstance(rest, tuple) else [rest])


def _compare(torch_module, module, x, states, rng, rtol=1e-9, atol=1e-10):
    """Run both on the same input and states; compare outputs, then every gradient."""
    tx = torch.tensor(x, requires_grad=True)
    gx = gd.tensor(x, requires_grad=True)
    t_states = [torch.tensor(s, requires_grad=True) for s in states]
    g_states = [gd.tensor(s, requires_grad=True) for s in states]
    lstm = isinstance(torch_module, (torch.nn.LSTM, torch.nn.LSTMCell))
    cell = isinstance(torch_module, torch.nn.RNNCellBase)

    def call(module, inp, st):
        if not st:
            return module(inp)
        return module(inp, tuple(st) if lstm else st[0])

    t_out, g_out = call(torch_module, tx, t_states), call(module, gx, g_states)
    t_outs = list(t_out) if cell and lstm else ([t_out] if cell else _flatten(t_out))
    g_outs = list(g_out) if cell and lstm else ([g_out] if cell else _flatten(g_out))
    assert len(t_outs) == len(g_outs)
    weights = [rng.standard_normal(tuple(o.shape)) for o in t_outs]
    for t, g in zip(t_outs, g_outs):
        assert g.shape == tuple(t.shape)
        np.testing.assert_allclose(g.numpy(), t.detach().numpy(), rtol=rtol, atol=atol)
    sum((t * torch.tensor(w, dtype=t.dtype)).sum() for t, w in zip(t_outs, weights)).backward()
    sum((g * gd.tensor(w, dtype=g.dtype)).sum() for g, w in zip(g_outs, weights)).backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)
    for t, g in zip(t_states, g_states):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)
    params = dict(module.named_parameters())
    for name, p in torch_module.named_parameters():
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=rtol,
                                   atol=atol, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.items())) or "default")
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_torch_for_every_option(rng, kind, options, with_state):
    torch_module, module = _pair(kind, **options)
    torch_module.eval()
    module.eval()
    shape = (B, T, I) if options.get("batch_first") else (T, B, I)
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    states = _states(rng, kind, layers, B) if with_state else []
    _compare(torch_module, module, rng.standard_normal(shape), states, rng)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("read", ["last", "first and last", "only c_n"])
def test_final_states_read_in_pieces_match_torch(rng, kind, read):
    """h_n[-1] (and c_n[k]) alone: the layers whose final state is left out get a zero gradient
    there (gpudl: a zero the recurrent node reads as none), every parameter a gradient as in
    torch, zeros included (a layer nothing reaches but through h_n)."""
    if read == "only c_n" and kind != "lstm":
        pytest.skip("c_n is the LSTM's")
    torch_module, module = _pair(kind, num_layers=3, bidirectional=True)
    x = rng.standard_normal((T, B, I))
    weights = [rng.standard_normal((B, H)) for _ in range(2)]

    def loss(lib, out):
        states = out[1] if kind == "lstm" else (out[1], out[1])
        h_n, c_n = states
        if read == "last":
            return (h_n[-1] * lib.tensor(weights[0])).sum()
        if read == "only c_n":
            return (c_n[2] * lib.tensor(weights[0])).sum()
        return (h_n[0] * lib.tensor(weights[0]) + c_n[-1] * lib.tensor(weights[1])).sum()
    tx, gx = torch.tensor(x, requires_grad=True), gd.tensor(x, requires_grad=True)
    loss(torch, torch_module(tx)).backward()
    loss(gd, module(gx)).backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    params = dict(module.named_parameters())
    for name, p in torch_module.named_parameters():
        assert params[name].grad is not None, name
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=1e-9,
                                   atol=1e-10, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_in_float32(rng, kind):
    torch_module, module = _pair(kind, torch.float32, num_layers=2)
    assert module.weight_ih_l0.dtype == np.float32
    x = rng.standard_normal((9, 4, I)).astype(np.float32)
    _compare(torch_module, module, x, _states(rng, kind, 2, 4, np.float32), rng,
             rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched_input_matches_torch(rng, kind, with_state):
    torch_module, module = _pair(kind, bidirectional=True)
    states = _states(rng, kind, 2, None) if with_state else []
    _compare(torch_module, module, rng.standard_normal((T, I)), states, rng)


@pytest.mark.parametrize("name, extra", [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}),
                                         ("RNNCell", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("batched, with_state", [(True, True), (True, False), (False, True)])
def test_cells_match_torch(rng, name, extra, batched, with_state):
    torch_cell = getattr(torch.nn, name)(I, H, **extra).double()
    cell = getattr(nn, name)(I, H, **extra, dtype="float64")
    cell.load_state_dict({k: v.detach().numpy() for k, v in torch_cell.state_dict().items()})
    shape = (B, I) if batched else (I,)
    count = 2 if name == "LSTMCell" else 1
    states = [rng.standard_normal((B, H) if batched else (H,)) for _ in range(count)]
    _compare(torch_cell, cell, rng.standard_normal(shape), states if with_state else [], rng)


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_have_torch_names_shapes_and_init(kind):
    name, extra = KINDS[kind]
    options = dict(num_layers=2, bidirectional=True, **extra)
    expected = {k: tuple(v.shape) for k, v in
                getattr(torch.nn, name)(I, 64, **options).state_dict().items()}
    module = getattr(nn, name)(I, 64, **options)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert list(module.state_dict()) == list(expected)              # same order too
    bound = 1 / np.sqrt(64)
    values = np.concatenate([p.numpy().ravel() for p in module.parameters()])
    assert values.dtype == np.float32 and np.abs(values).max() <= bound
    assert abs(values.std() - bound / np.sqrt(3)) < 0.05 * bound   # uniform, not constant


# ----------------------------------------------------------------- the op against an unfused one
def _reference(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, reverse):
    """The recurrence from gpudl's elementwise Tensor ops, one graph node per op and step."""
    ys = [None] * x.shape[0]
    for t in (range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])):
        gi, gh = x[t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        n = h.shape[1]
        if mode == "lstm":
            a = gi + gh
            i, f, g, o = (a[:, k * n:(k + 1) * n] for k in range(4))
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        elif mode == "gru":
            r = (gi[:, :n] + gh[:, :n]).sigmoid()
            z = (gi[:, n:2 * n] + gh[:, n:2 * n]).sigmoid()
            new = (gi[:, 2 * n:] + r * gh[:, 2 * n:]).tanh()
            h = (1 - z) * new + z * h
        else:
            h = (gi + gh).tanh() if mode == "rnn_tanh" else (gi + gh).relu()
        ys[t] = h
    return (gd.stack(ys), h) + ((c,) if mode == "lstm" else ())


def _fused(mode):
    if mode == "lstm":
        return lambda x, h, c, *w, reverse: lstm_layer(x, h, c, *w, reverse=reverse)
    if mode == "gru":
        return lambda x, h, c, *w, reverse: gru_layer(x, h, *w, reverse=reverse)
    return lambda x, h, c, *w, reverse: rnn_layer(x, h, *w, nonlinearity=mode[4:],
                                                  reverse=reverse)


def _layer_inputs(rng, mode, shape=(T, B, I, H)):
    t, b, i, h = shape
    g = {"lstm": 4, "gru": 3}.get(mode, 1)
    arrays = [rng.standard_normal((t, b, i)), rng.standard_normal((b, h)),
              rng.standard_normal((b, h)), 0.5 * rng.standard_normal((g * h, i)),
              0.5 * rng.standard_normal((g * h, h)), rng.standard_normal(g * h),
              rng.standard_normal(g * h)]
    return [gd.tensor(a, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_op_matches_unfused_reference(rng, mode, reverse):
    inputs = _layer_inputs(rng, mode)
    outs = _fused(mode)(*inputs, reverse=reverse)
    ref = _reference(mode, *inputs, reverse=reverse)
    assert len(outs) == len(ref)
    weights = [gd.tensor(rng.standard_normal(o.shape)) for o in outs]
    grads = []
    for result in (outs, ref):
        for t in inputs:
            t.grad = None
        sum((o * w).sum() for o, w in zip(result, weights)).backward()
        grads.append([t.grad.numpy() if t.grad is not None else None for t in inputs])
    for o, r in zip(outs, ref):
        np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=1e-10, atol=1e-12)
    for k, (g, r) in enumerate(zip(grads[0], grads[1])):
        if k == 2 and mode != "lstm":
            assert g is None and r is None          # c0 is not an input of GRU / RNN
            continue
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-11, err_msg=f"input {k}")


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck(rng, mode, reverse):
    inputs = _layer_inputs(rng, mode, (3, 2, 2, 2))
    assert gradcheck(lambda *a: _fused(mode)(*a, reverse=reverse), inputs)


def _recurrent_nodes(tensor):
    """Every node reachable from ``tensor``, and how many are RecurrentLayer nodes."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(e[0] for e in node.edges if isinstance(e, tuple))
    return len(seen), sum(node.function is RecurrentLayer for node in seen)


def test_graph_has_one_node_per_layer_and_direction(rng):
    module = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    totals = []
    for steps in (2, 40):
        out, (h_n, c_n) = module(gd.tensor(rng.standard_normal((steps, B, I)).astype("float32")))
        total, recurrent = _recurrent_nodes(out.sum() + h_n.sum() + c_n.sum())
        assert recurrent == 4
        totals.append(total)
    assert totals[0] == totals[1]                   # the graph does not grow with T


# ----------------------------------------------------------------- dropout and edge cases
def test_dropout_is_active_in_training_only(rng):
    module = nn.LSTM(I, H, num_layers=2, dropout=0.5)
    x = gd.tensor(rng.standard_normal((T, B, I)).astype("float32"), requires_grad=True)
    module.eval()
    evaluated = module(x)[0].numpy()
    np.testing.assert_array_equal(module(x)[0].numpy(), evaluated)
    module.train()
    gd.manual_seed(3)
    first = module(x)[0]
    gd.manual_seed(3)
    again = module(x)[0].numpy()
    assert not np.allclose(first.numpy(), evaluated)
    np.testing.assert_array_equal(first.numpy(), again)     # the mask follows manual_seed
    first.sum().backward()
    assert np.isfinite(x.grad.numpy()).all() and np.abs(module.weight_ih_l0.grad.numpy()).sum() > 0


def test_dropout_one_feeds_zeros_to_the_next_layer(rng):
    torch_module, module = _pair("lstm", num_layers=2, dropout=1.0)
    module.train()
    x = rng.standard_normal((T, B, I))
    out, (h_n, _) = module(gd.tensor(x))
    second = torch.nn.LSTM(H, H).double()           # layer 1 alone, on an all-zero input
    second.load_state_dict({k.replace("l1", "l0"): v for k, v in torch_module.state_dict().items()
                            if "l1" in k})
    expected, _ = second(torch.zeros(T, B, H, dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    _, (t_h_n, _) = torch_module.eval()(torch.tensor(x))    # layer 0 is untouched by dropout
    np.testing.assert_allclose(h_n.numpy()[0], t_h_n[0].detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_and_single_step(rng, kind):
    torch_module, module = _pair(kind)
    out = _flatten(module(gd.tensor(np.zeros((T, 0, I)))))
    assert [o.shape for o in out] == [(T, 0, H)] + [(1, 0, H)] * (len(out) - 1)
    _compare(torch_module, module, rng.standard_normal((1, 1, I)), [], rng)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("call, error, words", [
    (lambda m: m(gd.zeros(T, B, I + 1)), ValueError, ["5 features", "input_size is 4"]),
    (lambda m: m(gd.zeros(T, B, 1, I)), ValueError, ["2 (unbatched) or 3", "(5, 3, 1, 4)"]),
    (lambda m: m(gd.zeros(I)), ValueError, ["(4,)"]),
    (lambda m: m(gd.zeros(0, B, I)), ValueError, ["sequence length"]),
    (lambda m: m(gd.zeros(T, B, I), (gd.zeros(1, B + 1, H), gd.zeros(1, B, H))), ValueError,
     ["h_0", "(1, 3, 6)", "(1, 4, 6)"]),
    (lambda m: m(gd.zeros(T, B, I), (gd.zeros(1, B, H), gd.zeros(2, B, H))), ValueError,
     ["c_0", "(1, 3, 6)", "(2, 3, 6)"]),
    (lambda m: m(gd.zeros(T, I), (gd.zeros(1, B, H), gd.zeros(1, B, H))), ValueError,
     ["(1, 6)", "(1, 3, 6)"]),
    (lambda m: m(gd.zeros(T, B, I), gd.zeros(1, B, H)), TypeError, ["(h_0, c_0)"]),
    (lambda m: m(np.zeros((T, B, I))), TypeError, ["Tensor", "ndarray"]),
])
def test_bad_input_is_refused_with_a_clear_error(call, error, words):
    module = nn.LSTM(I, H)
    before = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    with pytest.raises(error) as info:
        call(module)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_gru_state_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 3, 6\), got \(1, 3, 6\)"):
        nn.GRU(I, H, bidirectional=True)(gd.zeros(T, B, I), gd.zeros(1, B, H))


@pytest.mark.parametrize("make, words", [
    (lambda: nn.LSTM(I, 0), "hidden_size"), (lambda: nn.GRU(I, H, num_layers=0), "num_layers"),
    (lambda: nn.LSTM(I, H, dropout=1.5), "dropout"),
    (lambda: nn.RNN(I, H, nonlinearity="sigmoid"), "nonlinearity"),
    (lambda: nn.LSTMCell(0, H), "input_size"),
])
def test_bad_constructor_arguments(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_dropout_on_a_single_layer_warns():
    with pytest.warns(UserWarning, match="no effect"):
        nn.LSTM(I, H, dropout=0.2)


def test_op_checks_weights_and_dtypes(rng):
    x, h, c, w_ih, w_hh, b_ih, b_hh = _layer_inputs(rng, "lstm")
    with pytest.raises(ValueError, match=r"input has 4 features but weight_ih has shape \(24, 3\)"):
        lstm_layer(x, h, c, w_ih[:, :3], w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="c0 has shape"):
        lstm_layer(x, h, c[:, :2], w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(TypeError, match="weight_hh has dtype float32"):
        lstm_layer(x, h, c, w_ih, w_hh.float(), b_ih, b_hh)
    with pytest.raises(ValueError, match="bias_hh has shape"):
        lstm_layer(x, h, c, w_ih, w_hh, b_ih, b_hh[:5])
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn_layer(x, h, w_ih[:6], w_hh[:6, :6], nonlinearity="gelu")


def test_cell_errors():
    cell = nn.LSTMCell(I, H)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 4\)"):
        cell(gd.zeros(B, I + 2))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \(3, 6\), got \(2, 6\)"):
        cell(gd.zeros(B, I), (gd.zeros(B, H), gd.zeros(2, H)))
    with pytest.raises(TypeError, match=r"\(h_0, c_0\)"):
        cell(gd.zeros(B, I), gd.zeros(B, H))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reused_buffers_never_alias_live_results(rng, kind):
    """The CPU twin reuses its buffers across calls of one shape (kernels/workspace.py): outputs
    still held, and a graph kept for a second backward, must survive later calls untouched."""
    torch_module, module = _pair(kind, torch.float32)
    xs = [rng.standard_normal((T, B, I)).astype(np.float32) for _ in range(3)]
    t_x = [torch.tensor(x, requires_grad=True) for x in xs]
    g_x = [gd.tensor(x, requires_grad=True) for x in xs]
    t_y = [torch_module(x)[0] for x in t_x]
    g_y = [module(x)[0] for x in g_x]
    g_y[1].sum().backward()                         # frees graph 1: its buffers may be reused
    g_y[2] = module(g_x[2])[0]                      # ... by this call
    g_y[0].sum().backward(retain_graph=True)
    g_y[0].sum().backward()
    t_y[1].sum().backward()
    t_y[0].sum().backward(retain_graph=True)
    t_y[0].sum().backward()
    for t, g in zip(t_y, g_y):
        np.testing.assert_allclose(g.numpy(), t.detach().numpy(), rtol=2e-5, atol=2e-5)
    for t, g in zip(t_x[:2], g_x[:2]):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=2e-5, atol=2e-5)
