"""create_graph=True through the fused recurrent layers (their graph backward recomputes the
layer step by step in Tensor ops, ops.rnn_steps) and through prod/cumprod of tensors holding
zeros (exact forms, no division): second and third derivatives against torch's."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


def _pair_of_modules(mode, rng, **options):
    theirs = getattr(torch.nn, mode)(3, 4, **options).double()
    ours = getattr(gd.nn, mode)(3, 4, **options).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.uniform(-0.6, 0.6, tuple(p.shape))))
    ours.load_state_dict({k: gd.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


def _second_order(module, lib, x, states):
    """A gradient penalty: |d sum(y^2 + h_n) / dx|^2, differentiated again."""
    out, final = module(x, states) if states is not None else module(x)
    h_n = final[0] if isinstance(final, tuple) else final
    g, = lib.autograd.grad((out ** 2).sum() + (h_n * h_n.detach()).sum(), x, create_graph=True)
    penalty = (g ** 2).sum()
    penalty.backward()
    return g, penalty


@pytest.mark.parametrize("mode, options, with_states", [
    ("LSTM", {}, False),
    ("LSTM", {"num_layers": 2, "bidirectional": True}, True),
    ("GRU", {"num_layers": 2}, True),
    ("GRU", {"bidirectional": True, "batch_first": True}, False),
    ("RNN", {"nonlinearity": "tanh", "bias": False}, True),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}, False),
])
def test_second_order_through_recurrent_layers_matches_torch(mode, options, with_states):
    rng = np.random.default_rng(len(mode) * 10 + len(options) + with_states)
    ours, theirs = _pair_of_modules(mode, rng, **options)
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    shape = (2, 5, 3) if options.get("batch_first") else (5, 2, 3)
    data = rng.standard_normal(shape)
    state_data = [rng.standard_normal((layers, 2, 4)) for _ in range(2 if mode == "LSTM" else 1)]
    results = []
    for module, lib in ((ours, gd), (theirs, torch)):
        x = lib.tensor(data, requires_grad=True)
        states = [lib.tensor(s, requires_grad=True) for s in state_data] if with_states else None
        given = None if states is None else (tuple(states) if mode == "LSTM" else states[0])
        g, penalty = _second_order(module, lib, x, given)
        grads = [x.grad] + [s.grad for s in states or []]
        grads += [p.grad for p in module.parameters()]
        results.append([g.detach().numpy(), penalty.detach().numpy()]
                       + [t.numpy() for t in grads])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_second_order_through_a_packed_lstm_matches_torch():
    rng = np.random.default_rng(3)
    ours, theirs = _pair_of_modules("LSTM", rng, bidirectional=True)
    data, lengths = rng.standard_normal((4, 3, 3)), [2, 4, 1]
    results = []
    for module, lib in ((ours, gd), (theirs, torch)):
        x = lib.tensor(data, requires_grad=True)
        packed = lib.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h_n, c_n) = module(packed)
        loss = (out.data ** 2).sum() + (h_n * c_n).sum()
        g, = lib.autograd.grad(loss, x, create_graph=True)
        (g.sin() ** 2).sum().backward()
        results.append([g.detach().numpy(), x.grad.numpy()]
                       + [p.grad.numpy() for p in module.parameters()])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_third_order_through_a_gru_layer_matches_torch():
    rng = np.random.default_rng(4)
    ours, theirs = _pair_of_modules("GRU", rng)
    data = rng.standard_normal((3, 1, 3))
    results = []
    for module, lib in ((ours, gd), (theirs, torch)):
        x = lib.tensor(data, requires_grad=True)
        y = (module(x)[0] ** 2).sum()
        g1, = lib.autograd.grad(y, x, create_graph=True)
        g2, = lib.autograd.grad(g1.sum(), x, create_graph=True)
        g3, = lib.autograd.grad((g2 ** 2).sum(), x)
        results.append([g.detach().numpy() for g in (g1, g2, g3)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_second_order_through_a_float32_lstm_is_close_to_float64():
    rng = np.random.default_rng(5)
    ours, _ = _pair_of_modules("LSTM", rng, num_layers=2)
    data = rng.standard_normal((4, 2, 3))
    results = []
    for dtype in (np.float32, np.float64):
        module = ours.float() if dtype == np.float32 else ours.double()
        x = gd.tensor(data.astype(dtype), requires_grad=True)
        g, _ = _second_order(module, gd, x, None)
        assert g.dtype == dtype and x.grad.dtype == dtype
        results.append((g.detach().numpy(), x.grad.numpy()))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------- products holding zeros
@pytest.mark.parametrize("op", ["cumprod", "prod", "prod_keepdim", "prod_all"])
@pytest.mark.parametrize("shape, axis, zeros", [
    ((6,), 0, 1), ((6,), 0, 2), ((3, 5), 1, 1), ((4, 3), 0, 3), ((2, 3, 4), 1, 2), ((2, 2), 1, 1)])
def test_products_holding_zeros_differentiate_twice_and_thrice_as_torch(op, shape, axis, zeros):
    rng = np.random.default_rng(sum(shape) + axis + zeros)
    data = rng.standard_normal(shape)
    data.reshape(-1)[rng.choice(data.size, zeros, replace=False)] = 0.0
    w, v = rng.standard_normal(data.size), rng.standard_normal(shape)

    def apply(x):
        return {"cumprod": lambda: x.cumprod(axis), "prod": lambda: x.prod(axis),
                "prod_keepdim": lambda: x.prod(axis, keepdim=True),
                "prod_all": lambda: x.prod()}[op]()
    results = []
    for lib in (gd, torch):
        x = lib.tensor(data, requires_grad=True)
        y = apply(x)
        g, = lib.autograd.grad(y, x, lib.tensor(w[:y.numel()].reshape(tuple(y.shape))),
                               create_graph=True)
        h, = lib.autograd.grad((g * lib.tensor(v)).sum(), x, create_graph=True)
        third, = lib.autograd.grad((h ** 2).sum(), x, allow_unused=True)
        results.append([g.detach().numpy(), h.detach().numpy(),
                        np.zeros(shape) if third is None else third.numpy()])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
