"""gpudl.autograd.graph against torch.autograd.graph (float64, fresh random inputs): node
introspection (name, next_functions, metadata), node hooks in backward, autograd.grad and
create_graph, saved tensors hooks (custom Functions and checkpointing included), save_on_cpu,
multi-grad hooks, gradient edges, increment_version and Variable."""

import subprocess
import sys
import threading

import numpy as np
import pytest

import gpudl as gd
import gpudl.autograd.graph as graph

torch = pytest.importorskip("torch")


def _pair(rng, *shape, requires_grad=True):
    a = rng.standard_normal(shape)
    return (gd.tensor(a, requires_grad=requires_grad),
            torch.tensor(a, requires_grad=requires_grad))


def _close(g, t):
    if t is None:
        assert g is None
        return
    np.testing.assert_allclose(g.detach().numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def _libs(rng, n, *shape):
    """[(gd, graph module, tensors), (torch, ...)]: n tensors requiring grad, one that does not."""
    pairs = [_pair(rng, *shape) for _ in range(n)] + [_pair(rng, *shape, requires_grad=False)]
    return [(gd, graph, [p[0] for p in pairs]), (torch, torch.autograd.graph,
                                                  [p[1] for p in pairs])]


# ------------------------------------------------------------------ introspection
def test_next_functions_follow_torchs_structure(rng):
    for lib, module, (a, b, c) in _libs(rng, 2, 3):
        y = a * b + c
        node = y.grad_fn
        assert isinstance(node, module.Node)
        assert node.name() == "AddBackward0"
        (mul, mul_index), (none, none_index) = node.next_functions
        assert mul.name() == "MulBackward0" and mul_index == 0
        assert none is None and none_index == 0
        (acc_a, ia), (acc_b, ib) = mul.next_functions
        assert acc_a.variable is a and acc_b.variable is b and ia == ib == 0
        assert isinstance(acc_a, module.Node) and acc_a.next_functions == ()
        assert acc_a is mul.next_functions[0][0]        # one AccumulateGrad per leaf
        assert "AccumulateGrad" in acc_a.name()
        assert y.grad_fn.metadata == {} and isinstance(y.grad_fn.metadata, dict)
        node.metadata["step"] = 3
        assert y.grad_fn.metadata == {"step": 3}


def test_node_names_of_common_ops_are_torchs(rng):
    x, _ = _pair(rng, 4)
    assert x.exp().grad_fn.name() == "ExpBackward0"
    assert x.sum().grad_fn.name() == "SumBackward0"
    assert (x - x).grad_fn.name() == "SubBackward0"

    class Twice(gd.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            return v * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2
    assert Twice.apply(x).grad_fn.name() == "TwiceBackward"     # torch's custom-Function name


# ------------------------------------------------------------------ node hooks
def _hooked_run(lib, a, b, c, log, replace):
    y = a * b + c * a
    z = (y.exp() * c).sum()
    mul = y.grad_fn.next_functions[0][0]
    handles = [
        mul.register_prehook(lambda go: log.append(("pre", go))),
        mul.register_hook(lambda gi, go: log.append(("post", gi, go))),
    ]
    if replace:
        handles.append(mul.register_hook(lambda gi, go: (gi[0] * 3, None)))
        handles.append(y.grad_fn.register_prehook(lambda go: (go[0] * 2,)))
    z.backward()
    return handles


@pytest.mark.parametrize("replace", [False, True])
def test_node_hooks_see_and_replace_gradients_as_torchs(rng, replace):
    runs = []
    for lib, _, (a, b, c) in _libs(rng, 2, 3):
        log = []
        _hooked_run(lib, a, b, c, log, replace)
        runs.append((log, a.grad, b.grad))
    (log_g, ga, gb), (log_t, ta, tb) = runs
    assert [e[0] for e in log_g] == [e[0] for e in log_t] == ["pre", "post"]
    for entry_g, entry_t in zip(log_g, log_t):
        for part_g, part_t in zip(entry_g[1:], entry_t[1:]):
            assert len(part_g) == len(part_t)
            for g, t in zip(part_g, part_t):
                _close(g, t)
    _close(ga, ta)
    _close(gb, tb)


def test_node_hooks_run_in_grad_and_create_graph_and_are_removable(rng):
    found = []
    for lib, _, (a, b, c) in _libs(rng, 2, 3):
        y = a * b
        calls = []
        handle = y.grad_fn.register_hook(    # (torch gives None for a gradient not needed)
            lambda gi, go: calls.append(1) or (None if gi[0] is None else gi[0] * 2, gi[1]))
        pre = y.grad_fn.register_prehook(lambda go: calls.append(2))
        g1, = lib.autograd.grad((y * c).sum(), a, retain_graph=True)
        g2, = lib.autograd.grad((y * y).sum(), a, create_graph=True)
        gg, = lib.autograd.grad(g2.sum(), b, retain_graph=True)
        handle.remove()
        pre.remove()
        g3, = lib.autograd.grad((y * c).sum(), a)
        found.append((g1, g2, gg, g3, calls))
    for g, t in zip(found[0][:4], found[1][:4]):
        _close(g, t)
    assert found[0][4] == found[1][4] == [2, 1] * 3


def test_node_hook_returning_the_wrong_count_raises_as_torch(rng):
    messages = []
    for lib, _, (a, b, _c) in _libs(rng, 2, 3):
        y = a * b
        y.grad_fn.register_hook(lambda gi, go: (gi[0],))
        with pytest.raises(RuntimeError) as info:
            y.sum().backward()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    a = gd.ones(2, requires_grad=True)
    y = a * 2
    y.grad_fn.register_hook(lambda gi, go: (gi[0][:1], None))
    with pytest.raises(RuntimeError, match="changed the size"):
        y.sum().backward()


def test_accumulate_grad_hooks_match_torch(rng):
    logs = []
    for lib, _, (a, _b, _c) in _libs(rng, 2, 3):
        log = []
        acc = (a * 1).grad_fn.next_functions[0][0]
        acc.register_prehook(lambda go: log.append(("pre", go[0] * 1)) or (go[0] * 2,))
        acc.register_hook(lambda gi, go: log.append(("post", gi, go[0] * 1)))
        (a * 3).sum().backward()
        logs.append((log, a.grad))
    (log_g, ga), (log_t, ta) = logs
    assert [e[0] for e in log_g] == [e[0] for e in log_t] == ["pre", "post"]
    _close(log_g[0][1], log_t[0][1])
    assert log_g[1][1] == log_t[1][1] == ()
    _close(log_g[1][2], log_t[1][2])
    _close(ga, ta)


# ------------------------------------------------------------------ saved tensors hooks
def _chain(lib, a, b):
    return ((a * b).exp() * a).tanh().sum()


def test_saved_tensors_hooks_through_a_dict_give_the_same_gradients(rng):
    grads = []
    for lib, module, (a, b, _c) in _libs(rng, 2, 4):
        store, values, unpacked = {}, [], []

        def pack(t):
            values.append(t.detach().numpy().copy())      # the value at save time
            store[len(store)] = t
            return len(store) - 1

        def unpack(key):
            unpacked.append(key)
            return store[key]
        with module.saved_tensors_hooks(pack, unpack):
            loss = _chain(lib, a, b)
        loss.backward()
        grads.append((a.grad, b.grad, len(values), sorted(unpacked)))
        assert any(np.array_equal(v, a.detach().numpy()) for v in values)
    (ga, gb, n_g, u_g), (ta, tb, n_t, u_t) = grads
    _close(ga, ta)
    _close(gb, tb)
    assert n_g == n_t and u_g == u_t        # the ops of _chain keep what torch's save


def test_a_pack_hook_that_doubles_changes_gradients_as_torchs(rng):
    grads = []
    for lib, module, (a, b, _c) in _libs(rng, 2, 3):
        with module.saved_tensors_hooks(lambda t: t * 2, lambda t: t):
            y = a * b
        (y * y.detach()).sum().backward()
        grads.append((a.grad, b.grad))
    _close(grads[0][0], grads[1][0])
    _close(grads[0][1], grads[1][1])


def test_saved_tensors_hooks_nest_retain_and_refuse_bad_unpacks_as_torch(rng):
    for lib, module, (a, b, _c) in _libs(rng, 2, 3):
        calls = []
        with module.saved_tensors_hooks(lambda t: calls.append("outer") or t, lambda t: t):
            with module.saved_tensors_hooks(lambda t: calls.append("inner") or t,
                                            lambda t: calls.append("unpack") or t):
                y = (a * b).sum()
            assert calls == ["inner", "inner"]
        y.backward(retain_graph=True)
        y.backward()
        assert calls == ["inner", "inner"] + ["unpack"] * 4
        with module.saved_tensors_hooks(lambda t: t, lambda t: 3):
            y = (a * b).sum()
        with pytest.raises(TypeError, match="unpack_hook expected to be a Tensor"):
            y.backward()
        with module.disable_saved_tensors_hooks("no hooks in this block"):
            with pytest.raises(RuntimeError, match="no hooks in this block"):
                with module.saved_tensors_hooks(lambda t: t, lambda t: t):
                    pass
        with module.saved_tensors_hooks(lambda t: t, lambda t: t):
            with pytest.raises(RuntimeError, match="not here"):
                with module.disable_saved_tensors_hooks("not here"):
                    pass


def test_saved_tensors_hooks_are_per_thread(rng):
    a, _ = _pair(rng, 3)
    calls, results = [], []

    def record():
        results.append((a * a).sum())
    with graph.saved_tensors_hooks(lambda t: calls.append(1) or t, lambda t: t):
        worker = threading.Thread(target=record)
        worker.start()
        worker.join()
    assert calls == []
    results[0].backward()
    _close(a.grad, torch.tensor(2 * a.numpy()))


def test_save_on_cpu_and_hooked_custom_function_and_checkpoint_keep_gradients(rng):
    from gpudl.activation_checkpoint import checkpoint
    from torch.utils.checkpoint import checkpoint as torch_checkpoint
    grads = []
    for lib, module, (a, b, _c) in _libs(rng, 2, 5):
        class Sine(lib.autograd.Function):     # its input, through save_for_backward
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.sin()

            @staticmethod
            def backward(ctx, g):
                return g * ctx.saved_tensors[0].cos()
        packed = []
        with module.save_on_cpu():
            loss = _chain(lib, a, b)
        with module.saved_tensors_hooks(lambda t: packed.append(t.shape) or t * 2, lambda t: t):
            cube = Sine.apply(a)
            run = checkpoint if lib is gd else torch_checkpoint
            checked = run(lambda v: (v.sin() * v).exp(), b, use_reentrant=True)
        g_loss = lib.autograd.grad(loss, (a, b))
        g_cube, = lib.autograd.grad(cube.sum(), a, create_graph=True)
        g_cube2, = lib.autograd.grad(g_cube.sum(), a)
        checked.sum().backward()       # (torch's reentrant checkpoint refuses autograd.grad)
        grads.append((*g_loss, g_cube, g_cube2, b.grad, [tuple(s) for s in packed]))
    for g, t in zip(grads[0][:5], grads[1][:5]):
        _close(g, t)
    assert grads[0][5] == grads[1][5] == [(5,), (5,)]


# ------------------------------------------------------------------ multi-grad hooks
def test_register_multi_grad_hook_all_and_any_as_torch(rng):
    logs = []
    for lib, module, (a, b, _c) in _libs(rng, 2, 2):
        log = []
        handle = module.register_multi_grad_hook((a, b), lambda gs: log.append(list(gs)))
        (a * 2).sum().backward()
        (a * 2 + b).sum().backward()
        handle.remove()
        (a * 2).sum().backward()
        handle = module.register_multi_grad_hook((a, b), lambda g: log.append([g]), mode="any")
        (a * 2 + b * 3).sum().backward()
        lib.autograd.grad((a * 2 + b * 3).sum(), b)
        handle.remove()
        y1, y2 = a * 2, b * 1
        module.register_multi_grad_hook((y1, y2), lambda gs: log.append(list(gs)))
        (y1 * 3).sum().backward()
        logs.append(log)
        with pytest.raises(ValueError, match="mode"):
            module.register_multi_grad_hook((a, b), print, mode="some")
    assert len(logs[0]) == len(logs[1]) == 5
    for entry_g, entry_t in zip(*logs):
        for g, t in zip(entry_g, entry_t):
            _close(g, t)


# ------------------------------------------------------------------ gradient edges, versions
def test_gradient_edges_as_grad_inputs_and_increment_version(rng):
    found = []
    for lib, module, (a, b, c) in _libs(rng, 2, 3):
        y = a * b
        z = (y.exp() * c).sum()
        edge = module.get_gradient_edge(y)
        assert edge.node is y.grad_fn and edge.output_nr == 0
        leaf_edge = module.get_gradient_edge(a)
        assert leaf_edge.node.variable is a
        found.append(lib.autograd.grad(z, (edge, leaf_edge), retain_graph=True))
        found[-1] += lib.autograd.grad(edge, a, lib.ones_like(y))     # an edge as the output
        with pytest.raises(RuntimeError, match="does not require gradients"):
            module.get_gradient_edge(c)
        w = a * b
        module.increment_version(b)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            w.sum().backward()
    for g, t in zip(*found):
        _close(g, t)


def test_variable_returns_a_detached_tensor_as_torch(rng):
    for lib, _, (a, _b, _c) in _libs(rng, 2, 3):
        y = a * 2
        v = lib.autograd.Variable(y)
        assert v.grad_fn is None and not v.requires_grad and isinstance(v, lib.Tensor)
        assert lib.autograd.Variable(y.detach(), requires_grad=True).requires_grad
        assert isinstance(a, lib.autograd.Variable)
        with pytest.raises(TypeError, match="has to be a tensor"):
            lib.autograd.Variable([1.0, 2.0])


def test_import_gpudl_stays_light():
    code = ("import sys, gpudl; import gpudl.autograd.graph; "
            "print('numba' in sys.modules, 'gpudl.nn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


def test_hooks_of_a_two_output_node_see_none_where_no_gradient_came(rng):
    logs = []
    for lib, _, (a, _c) in _libs(rng, 1, 3):
        class Two(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2, x * 3

            @staticmethod
            def backward(ctx, g1, g2):
                return g1 * 2 + g2 * 3
        log = []
        p, q = Two.apply(a)
        p.grad_fn.register_prehook(lambda go: log.append(go))
        p.grad_fn.register_hook(lambda gi, go: log.append(gi + go))
        (q * q).sum().backward()
        p, q = Two.apply(a)
        p.grad_fn.register_prehook(lambda go: (None, go[1] * 5))
        (q * q).sum().backward()
        p, q = Two.apply(a)
        p.grad_fn.register_prehook(lambda go: (go[1], go[1]))
        with pytest.raises(RuntimeError, match="can't replace a None gradient"):
            (q * q).sum().backward()
        logs.append((log, a.grad))
    for entry_g, entry_t in zip(logs[0][0], logs[1][0]):
        assert len(entry_g) == len(entry_t)
        for g, t in zip(entry_g, entry_t):
            _close(g, t)
    _close(logs[0][1], logs[1][1])


# ------------------------------------------------------------------ forward mode (reverse twice)
def _function(lib, w):
    return lambda a, b: ((a.tanh() @ lib.tensor(w)).exp() * b, (a * a).sum())


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # torch's
def test_jvp_vjp_and_linearize_match_torch_func(rng):
    x, v, w = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal((4, 3))
    c, u, ct = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    found = []
    for lib in (gd, torch):
        f = _function(lib, w)
        primals = (lib.tensor(x), lib.tensor(c))
        tangents = (lib.tensor(v), lib.tensor(u))
        out, product = lib.func.jvp(f, primals, tangents)
        _, vjp_fn = lib.func.vjp(f, *primals)
        cotangent = vjp_fn((lib.tensor(ct), lib.tensor(0.5)))
        _, jvp_fn = lib.func.linearize(f, *primals)
        again = jvp_fn(*tangents)
        _, single = lib.autograd.functional.jvp(lambda a: f(a, primals[1])[0], primals[0],
                                                tangents[0])
        found.append((*out, *product, *cotangent, *again, single))
    for g, t in zip(*found):
        _close(g, t)


def test_forward_ad_dual_tensors_match_torch(rng):
    x, v, w = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    found = []
    for lib in (gd, torch):
        fw = lib.autograd.forward_ad
        weight = lib.tensor(w, requires_grad=True)
        with fw.dual_level():
            dual = fw.make_dual(lib.tensor(x), lib.tensor(v))
            y = (dual.sin() * weight).exp()
            primal, tangent = fw.unpack_dual(y)
            assert fw.unpack_dual(weight * 2).tangent is None
            own = fw.unpack_dual(dual).tangent
            y.sum().backward()              # the graph is still there for reverse mode
        assert fw.unpack_dual(y).tangent is None
        found.append((primal, tangent, own, weight.grad))
    for g, t in zip(*found):
        _close(g, t)
    with pytest.raises(RuntimeError, match="dual_level"):
        gd.autograd.forward_ad.make_dual(gd.ones(2), gd.ones(2))
