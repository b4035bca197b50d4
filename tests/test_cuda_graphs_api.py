"""gd.cuda.CUDAGraph and gd.cuda.graph against PyTorch 2.13's API: keep_graph and instantiate(),
debug_dump, the raw CUDA handles, get_graph_data, capture_error_mode, check_input_liveness and
enable_annotations. On the CPU path, where a graph is a recorded call list; the signatures and
the documented structures are compared with torch's own (its pure-Python parts run on the CPU
build).
"""

import gc
import inspect
import re
import threading

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn

pytestmark = pytest.mark.skipif(gd.backend._cupy is not None, reason="the CPU path's graphs")

MODES = ("global", "thread_local", "relaxed")


def _step(seed=0):
    """A small model, its optimizer and a static input, warmed up by one eager step."""
    gd.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    opt = gd.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = gd.randn(4, 3)
    return model, opt, x


def _capture(g, model, opt, x, **kwargs):
    with gd.cuda.graph(g, **kwargs):
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
    return loss


def _eager_losses(seed, batches):
    model, opt, x = _step(seed)
    losses = []
    for b in batches:
        x.copy_(b)
        opt.zero_grad(set_to_none=False)
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _batches(n, seed=5):
    rng = np.random.default_rng(seed)
    return [gd.tensor(rng.standard_normal((4, 3)).astype(np.float32)) for _ in range(n)]


# ----------------------------------------------------------------------- signatures
def _parameters(function):
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()
            if p.name != "self"]


def test_signatures_and_defaults_are_torchs():
    assert _parameters(gd.cuda.graph.__init__) == _parameters(torch.cuda.graph.__init__)
    assert _parameters(gd.cuda.CUDAGraph.capture_begin) == \
        _parameters(torch.cuda.CUDAGraph.capture_begin)
    assert _parameters(gd.cuda.CUDAGraph.__init__) == _parameters(torch.cuda.CUDAGraph.__new__)[1:]
    for name in ("instantiate", "replay", "reset", "pool", "enable_debug_mode", "debug_dump",
                 "raw_cuda_graph", "raw_cuda_graph_exec", "get_graph_data"):
        assert _parameters(getattr(gd.cuda.CUDAGraph, name)) == \
            _parameters(getattr(torch.cuda.CUDAGraph, name)), name
    torch_methods = {n for n, v in vars(torch.cuda.CUDAGraph).items()
                     if callable(v) and not n.startswith("_")}
    assert torch_methods <= set(dir(gd.cuda.CUDAGraph))


@pytest.mark.parametrize("make", [lambda mode: gd.cuda.graph(gd.cuda.CUDAGraph(),
                                                             capture_error_mode=mode),
                                  lambda mode: gd.cuda.CUDAGraph().capture_begin(
                                      capture_error_mode=mode)],
                         ids=["graph", "capture_begin"])
@pytest.mark.parametrize("bad", ["Global", "strict", 2, None])
def test_a_bad_capture_error_mode_is_refused_naming_it_and_changes_nothing(make, bad):
    with pytest.raises(ValueError, match=r"capture_error_mode must be one of 'global', "
                                         r"'thread_local', 'relaxed', got " + re.escape(repr(bad))):
        make(bad)
    assert not gd.cuda.is_current_stream_capturing() and gd.backend.capture_guard is None


@pytest.mark.parametrize("name", ["enable_annotations", "check_input_liveness"])
def test_flags_must_be_bools(name):
    with pytest.raises(TypeError, match=rf"^graph: {name} must be a bool, got 'yes' \(str\)"):
        gd.cuda.graph(gd.cuda.CUDAGraph(), **{name: "yes"})
    with pytest.raises(TypeError, match=r"^CUDAGraph: keep_graph must be a bool, got 1 \(int\)"):
        gd.cuda.CUDAGraph(keep_graph=1)
    assert not gd.cuda.is_current_stream_capturing()


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_captures_and_replays_like_eager_steps(mode):
    batches = _batches(4)
    model, opt, x = _step(1)
    x.copy_(batches[0])
    opt.zero_grad(set_to_none=False)
    warmup = (model(x) ** 2).mean()             # the warm-up step, eager
    warmup.backward()
    opt.step()
    g = gd.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    loss = _capture(g, model, opt, x, capture_error_mode=mode, enable_annotations=True)
    losses = [warmup.item()]
    for b in batches[1:]:
        x.copy_(b)
        opt.zero_grad(set_to_none=False)
        g.replay()
        losses.append(loss.item())
    np.testing.assert_allclose(losses, _eager_losses(1, batches), rtol=1e-6)


# ------------------------------------------------------------------- capture_error_mode
def _sync_from_another_thread(mode):
    """gd.cuda.synchronize() (a device sync), a cpu tensor's item() and, where the cuda device
    is there (the simulator), a cuda tensor's item() in a second thread while the main thread
    captures in ``mode``: what each raised, or None."""
    seen = {}

    def other():
        calls = (("sync", gd.cuda.synchronize),
                 ("item", lambda: gd.ones(2, device="cpu").sum().item()))
        if gd.cuda.is_available():
            calls += (("device item", lambda: gd.ones(2, device="cuda").sum().item()),)
        for name, call in calls:
            try:
                call()
                seen[name] = None
            except RuntimeError as e:
                seen[name] = str(e)

    model, _, x = _step()
    with gd.cuda.graph(gd.cuda.CUDAGraph(), capture_error_mode=mode):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        model(x)
    return seen


def test_global_mode_refuses_other_threads_device_syncs_the_others_let_them_run():
    seen = _sync_from_another_thread("global")
    assert seen["sync"].startswith("synchronize: waits for the device while another thread "
                                   "captures a CUDA graph in capture_error_mode='global'")
    assert seen["item"] is None                 # host data: no device call at all
    if gd.cuda.is_available():
        assert seen["device item"].startswith("Tensor.item: waits for the device while another "
                                              "thread captures a CUDA graph")
    for mode in ("thread_local", "relaxed"):
        assert set(_sync_from_another_thread(mode).values()) == {None}


@pytest.mark.parametrize("mode", MODES)
def test_the_capturing_thread_may_not_sync_in_any_mode(mode):
    with pytest.raises(RuntimeError, match=r"^synchronize: reads the device"):
        with gd.cuda.graph(gd.cuda.CUDAGraph(), capture_error_mode=mode):
            gd.cuda.synchronize()
    assert gd.backend.capture_guard is None


# ------------------------------------------------------------------- keep_graph, instantiate
def test_instantiate_follows_torchs_rules():
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.instantiate: capture_end\(\) must have "):
        g.instantiate()
    _capture(g, model, opt, x)
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.instantiate: .*keep_graph=True"):
        g.instantiate()                 # made at capture_end already
    g.replay()


def test_a_kept_graph_is_instantiated_by_instantiate_or_its_first_replay():
    batches = _batches(3)
    for explicit in (True, False):
        model, opt, x = _step(2)
        x.copy_(batches[0])
        g = gd.cuda.CUDAGraph(keep_graph=True)
        loss = _capture(g, model, opt, x)
        with pytest.raises(RuntimeError, match=r"^CUDAGraph.get_graph_data: call instantiate"):
            g.get_graph_data()          # not instantiated at capture_end
        if explicit:
            g.instantiate()
        losses = []
        for b in batches:
            x.copy_(b)
            model.zero_grad(set_to_none=False)
            g.replay()
            losses.append(loss.item())
        np.testing.assert_allclose(losses, _eager_losses(2, batches), rtol=1e-6)
        first = g.get_graph_data()["exec_graph_id"]
        g.instantiate()                 # again: a new instantiation, the same recorded calls
        again = g.get_graph_data()
        assert again["exec_graph_id"] != first and len(again["nodes"]) == 7


def test_reset_keeps_keep_graph_and_debug_mode_and_allows_a_new_capture(tmp_path):
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph(keep_graph=True)
    g.enable_debug_mode()
    _capture(g, model, opt, x)
    g.reset()
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: nothing captured yet"):
        g.replay()
    with gd.cuda.graph(g):
        model(x)
    g.replay()                          # instantiated by the replay: keep_graph stayed True
    assert [n["kernel_name"] for n in g.get_graph_data()["nodes"]] == ["Linear", "Tanh", "Linear"]


# ------------------------------------------------------------------- debug_dump
def _dot_nodes(path):
    """(index, label) of each node and the edges of a DOT file written by debug_dump."""
    text = path.read_text()
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    nodes = [(int(i), label.replace("\\n", "\n"))
             for i, label in re.findall(r'^  n(\d+) \[label="((?:[^"\\]|\\.)*)"\];$', text, re.M)]
    edges = [(int(a), int(b)) for a, b in re.findall(r"^  n(\d+) -> n(\d+);$", text, re.M)]
    return nodes, edges


def test_debug_dump_writes_one_node_per_recorded_call_in_order(tmp_path):
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph()
    g.enable_debug_mode()
    _capture(g, model, opt, x)
    path = tmp_path / "graph.dot"
    g.debug_dump(str(path))
    nodes, edges = _dot_nodes(path)
    # what the body ran, in order: the model's three layers, ** 2, mean, the backward walk
    # (5 nodes, 4 parameters' gradients) and the optimizer step
    assert [i for i, _ in nodes] == list(range(7))
    assert edges == [(i, i + 1) for i in range(6)]
    heads = [label.split("\n")[0] for _, label in nodes]
    assert heads == ["0: function Linear", "1: function Tanh", "2: function Linear",
                     "3: function Pow", "4: function Mean", "5: backward",
                     "6: method Optimizer.step"]
    details = [label.split("\n")[1] for _, label in nodes]
    assert details[0] == "(float32[4, 3], float32[5, 3], float32[5]) -> (float32[4, 5])"
    assert details[3] == "(float32[4, 2], 2) -> (float32[4, 2])"
    assert details[5] == "from MeanBackward through 5 nodes, 4 gradient accumulations"
    assert details[6] == "on SGD"
    g.debug_dump(tmp_path / "again.dot")        # an os.PathLike, and a second dump
    assert (tmp_path / "again.dot").read_text() == path.read_text()


def test_debug_dump_needs_debug_mode_before_the_capture_or_keep_graph(tmp_path):
    model, opt, x = _step()
    path = tmp_path / "graph.dot"
    g = gd.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.debug_dump: nothing captured yet"):
        g.debug_dump(str(path))
    _capture(g, model, opt, x)
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.debug_dump: debug mode was not "
                                           r"enabled.*enable_debug_mode\(\) before capturing"):
        g.debug_dump(str(path))
    g.enable_debug_mode()
    with pytest.raises(RuntimeError, match=r"debug mode was enabled only after the capture"):
        g.debug_dump(str(path))
    with pytest.raises(TypeError, match=r"^CUDAGraph.debug_dump: debug_path must be a str or "
                                        r"os.PathLike, got int"):
        g.debug_dump(3)
    assert not path.exists()                    # refused calls write nothing
    kept = gd.cuda.CUDAGraph(keep_graph=True)
    with gd.cuda.graph(kept):
        model(x)
    kept.debug_dump(str(path))                  # keep_graph keeps it, as in torch
    assert len(_dot_nodes(path)[0]) == 3


# ------------------------------------------------------------------- raw handles, graph data
@pytest.mark.parametrize("name", ["raw_cuda_graph", "raw_cuda_graph_exec"])
@pytest.mark.parametrize("keep", [False, True])
def test_raw_handles_say_there_is_no_cuda_graph_on_the_cpu_path(name, keep):
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph(keep_graph=keep)
    message = rf"^CUDAGraph.{name}: there is no CUDA graph on the CPU path"
    with pytest.raises(RuntimeError, match=message):
        getattr(g, name)()
    _capture(g, model, opt, x)
    g.replay()
    with pytest.raises(RuntimeError, match=message):
        getattr(g, name)()


def _torch_graph_data_keys():
    """The keys PyTorch's get_graph_data documents (its docstring's structure)."""
    doc = torch.cuda.CUDAGraph.get_graph_data.__doc__
    keys = re.findall(r'^( *)"(\w+)": ', doc, re.M)
    top = min(len(indent) for indent, _ in keys)
    return ({k for indent, k in keys if len(indent) == top},
            {k for indent, k in keys if len(indent) > top})


def test_get_graph_data_has_torchs_structure_for_the_recorded_calls():
    top, node_keys = _torch_graph_data_keys()
    assert top == {"exec_graph_id", "nodes"} and "kernel_name" in node_keys
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph()
    _capture(g, model, opt, x)
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.get_graph_data: .*keep_graph=True"):
        g.get_graph_data()
    g = gd.cuda.CUDAGraph(keep_graph=True)
    _capture(g, model, opt, x)
    g.instantiate()
    data = g.get_graph_data()
    assert set(data) == top
    nodes = data["nodes"]
    assert [n["kernel_name"] for n in nodes] == ["Linear", "Tanh", "Linear", "Pow", "Mean",
                                                  "backward", "Optimizer.step"]
    assert [n["node_type"] for n in nodes] == ["function"] * 5 + ["backward", "method"]
    for i, n in enumerate(nodes):
        assert set(n) == node_keys | {"detail"}
        assert n["index"] == n["node_id"] == i and n["graph_id"] == data["exec_graph_id"]
        assert n["tools_id"] == (data["exec_graph_id"] << 32) | i        # torch's encoding
        assert n["dependencies"] == ([i - 1] if i else [])
        assert n["dependents"] == ([i + 1] if i < len(nodes) - 1 else [])


# ------------------------------------------------------------------- check_input_liveness
def _liveness_capture(check):
    model, opt, x = _step()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g, check_input_liveness=check):
        out = model(x)
    expected = model(x).detach()
    return g, out, expected, model, x


def test_check_input_liveness_refuses_a_replay_after_a_static_input_was_deleted():
    g, out, expected, model, x = _liveness_capture(True)
    g.replay()                                  # alive: fine
    del x                                       # the only reference to the static input
    gc.collect()
    with pytest.raises(RuntimeError) as error:
        g.replay()
    message = str(error.value)
    assert message.startswith("CUDAGraph.replay: 1 tensor(s) the graph read when captured were "
                              "deleted since (check_input_liveness=True)")
    assert "Dead tensor #1 (shape (4, 3), float32)" in message
    assert "first read in the capture at:" in message and "_liveness_capture" in message
    assert "deleted at:" in message and "test_check_input_liveness_refuses" in message
    model[0].weight.data.zero_()                # the parameters are alive: not reported
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: 1 tensor\(s\)"):
        g.replay()


def test_without_check_input_liveness_a_replay_reads_the_captured_input():
    g, out, expected, model, x = _liveness_capture(False)
    del x
    gc.collect()
    g.replay()
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)


def test_a_static_input_given_new_storage_is_refused_with_or_without_liveness_checks():
    for check in (False, True):
        g, out, expected, model, x = _liveness_capture(check)
        x.data = gd.randn(4, 3)
        with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: a tensor the graph reads"):
            g.replay()


def test_cuda_graph_data_reads_nodes_and_edges_through_cuda_bindings(monkeypatch):
    """The GPU's get_graph_data with cuda.bindings' calls stood in (their documented returns,
    (error, *values)): kernel x -> memcpy -> kernel y, and x -> y; tools ids remapped to the
    exec graph's id as PyTorch does. Without a driver, the real calls' error is reported."""
    from cuda.bindings import driver, runtime
    from gpudl.graph_debug import cuda_graph_data
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.get_graph_data: .*cudaError"):
        cuda_graph_data(1, 2)                   # no driver here: CUDA's own error, named
    ok, types = runtime.cudaError_t.cudaSuccess, runtime.cudaGraphNodeType
    handles = [101, 102, 103]
    kinds = {101: types.cudaGraphNodeTypeKernel, 102: types.cudaGraphNodeTypeMemcpy,
             103: types.cudaGraphNodeTypeKernel}
    edges = [(101, 102), (102, 103), (101, 103)]
    params = type("params", (), {})
    stand_ins = {
        (runtime, "cudaGraphGetNodes"): lambda g, numNodes=0: (
            ok, handles[:numNodes] if numNodes else None, len(handles)),
        (runtime, "cudaGraphGetEdges"): lambda g, numEdges=0: (
            ok, [a for a, _ in edges][:numEdges], [b for _, b in edges][:numEdges], None,
            len(edges)),
        (runtime, "cudaGraphExecGetId"): lambda e: (ok, 7),
        (runtime, "cudaGraphNodeGetType"): lambda n: (ok, kinds[n]),
        (runtime, "cudaGraphNodeGetToolsId"): lambda n: (ok, (3 << 32) | (n - 100)),
        (driver, "cuGraphKernelNodeGetParams"): lambda n: (
            driver.CUresult.CUDA_SUCCESS, type("p", (params,), {"func": int(n) * 10})()),
        (driver, "cuFuncGetName"): lambda f: (
            driver.CUresult.CUDA_SUCCESS, {1010: b"x", 1030: b"y"}[int(f)])}
    for (module, name), function in stand_ins.items():
        monkeypatch.setattr(module, name, function)
    data = cuda_graph_data(11, 22)
    assert data["exec_graph_id"] == 7
    assert [(n["node_type"], n["kernel_name"], n["node_id"], n["tools_id"], n["dependencies"],
             n["dependents"]) for n in data["nodes"]] == [
        ("kernel", "x", 1, (7 << 32) | 1, [], [1, 2]),
        ("memcpy", None, 2, (7 << 32) | 2, [0], [2]),
        ("kernel", "y", 3, (7 << 32) | 3, [1, 0], [])]
