"""Issue 14's GPU benchmarks, built and run on the CPU so that a session with a GPU measures
instead of debugging: ``benchmarks.compare --device cuda``'s three whole steps (eager and
CUDA-graph rows), and ``benchmarks.graph_steps``' table with the ratios the targets are stated
in. Nothing is timed against anything here."""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import compare, graph_steps, workloads  # noqa: E402

import gpudl as gd  # noqa: E402

STEPS = {"LeNet-5 SGD-momentum step, batch 64 x 1x28x28": workloads.lenet_parts,
         "sunspots LSTM(1->32, 2 layers) Adam step, batch 32 x seq 12": workloads.sunspots_parts,
         "transformer 2 layers (64 wide, 4 heads) AdamW step, batch 32 x seq 32":
             workloads.transformer_parts}
ON_GPU = gd.backend._cupy is not None


def test_compare_has_each_step_eager_and_graphed_on_the_gpu():
    devices = {name: devs for name, devs, _ in compare.WORKLOADS}
    for name in STEPS:
        assert "cuda" in devices[name] and "cpu" in devices[name], name
        assert devices[name + ", CUDA graph"] == ("cuda",), name


@pytest.mark.skipif(ON_GPU, reason="the CPU path of the graphed rows")
@pytest.mark.parametrize("name", list(STEPS))
def test_the_graphed_rows_build_and_replay_whole_steps_on_the_cpu(name):
    """The row's own builder (warm-up steps, capture, replay) with gpudl, whose CUDA-graph API
    records on the CPU; each replay is one optimizer step."""
    build = {n: b for n, _, b in compare.WORKLOADS}[name + ", CUDA graph"]
    gd.manual_seed(0)
    replay = build(gd, "cpu")
    graph = replay.__self__                                 # CUDAGraph.replay's graph
    assert graph._recording is not None
    # the parameters move at each replay: the optimizer step is in the graph
    tensors = [static.ref() for static in graph._recording.statics]     # held weakly
    params = [t for t in tensors if t is not None and t.requires_grad]
    before = [p.numpy().copy() for p in params]
    replay()
    moved = [not np.array_equal(p.numpy(), b) for p, b in zip(params, before)]
    assert params and any(moved)


@pytest.mark.parametrize("parts", list(STEPS.values()), ids=["lenet", "sunspots", "transformer"])
def test_the_steps_take_the_same_shapes_in_both_libraries(parts):
    """Both libraries build each workload (a small batch here), and one eager step runs."""
    shapes = []
    for lib in (gd, torch):
        model, loss_fn, opt, x, y = parts(lib, "cpu", False, batch=2)
        workloads.train_step(model, loss_fn, opt, x, y)()
        shapes.append([tuple(p.shape) for p in model.parameters()] + [tuple(x.shape)])
    assert shapes[0] == shapes[1]


def test_graph_steps_reports_the_ratios_of_the_targets(monkeypatch):
    monkeypatch.setattr(graph_steps, "STEPS", tuple(
        (name, functools.partial(parts, batch=2)) for name, parts in graph_steps.STEPS))
    table = graph_steps.run(gd.device(), repeats=1)       # on a GPU: a smoke test of all four
    assert "failed" not in table, table
    for name, _ in graph_steps.STEPS:
        rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        labels = [row.split("|")[2].strip() for row in rows]
        split_k_off = [graph_steps.SPLIT_K_OFF] if ON_GPU else []
        assert labels == ["gpudl eager", "gpudl graphed", "torch eager", "torch graphed",
                          *split_k_off, "gpudl graphed /"], labels
        assert "x torch eager" in rows[-1]
        assert ("x torch graphed" in rows[-1]) == ON_GPU
    variants = [label for label, *_ in graph_steps._variants("cuda")]
    assert variants == ["gpudl eager", "gpudl graphed", "torch eager", "torch graphed",
                        graph_steps.SPLIT_K_OFF]
