"""gd.cuda.graph under Numba's simulator: the cuda device's kernels run in the simulator, the
CPU recorder captures them (simulated arrays are NumPy arrays), and replays match eager steps."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import replayed_losses
from gpudl import backend, nn

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


def _model():
    gd.manual_seed(2)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to("cuda")


def test_simulated_step_replays_match_eager_steps():
    rng = np.random.default_rng(0)
    data = [(gd.tensor(rng.standard_normal((2, 3)).astype(np.float32), device="cuda"),
             gd.tensor(rng.integers(0, 2, 2), device="cuda")) for _ in range(3)]
    eager, graphed = _model(), _model()
    opts = [gd.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (eager, graphed)]
    losses = []
    for x, y in data:
        opts[0].zero_grad()
        loss = nn.functional.cross_entropy(eager(x), y)
        loss.backward()
        opts[0].step()
        losses.append(loss.numpy().copy())
    np.testing.assert_allclose(replayed_losses(graphed, opts[1], data, nn.functional.cross_entropy),
                               losses, rtol=1e-5)
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-5, atol=1e-6)


def test_simulated_item_inside_a_capture_is_refused():
    x = gd.randn(2, 3, device="cuda")
    with pytest.raises(RuntimeError, match="Tensor.item: .*CUDA graph capture cannot contain"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            (x * 2).sum().item()


def test_simulated_graphed_callables_train_like_eager(monkeypatch):
    """make_graphed_callables' forward and backward graphs (recorded, GRAPHS_ON_CPU) around
    the simulator's kernels: a tuple of two modules, the second's input requiring grad."""
    from gpudl import graphed_callables
    monkeypatch.setattr(graphed_callables, "GRAPHS_ON_CPU", True)
    rng = np.random.default_rng(1)
    pairs = [_model() for _ in range(2)]
    graphed = gd.cuda.make_graphed_callables(
        (pairs[1][0], pairs[1][2]), ((gd.randn(2, 3, device="cuda"),),
                                     (gd.randn(2, 4, device="cuda", requires_grad=True),)))
    stacks = [(m[0], m[1], m[2]) for m in pairs[:1]] + [(graphed[0], pairs[1][1], graphed[1])]
    opts = [gd.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in pairs]
    for _ in range(3):
        x = gd.tensor(rng.standard_normal((2, 3)).astype(np.float32), device="cuda")
        y = gd.tensor(rng.integers(0, 2, 2), device="cuda")
        for (a, act, b), opt in zip(stacks, opts):
            opt.zero_grad()
            nn.functional.cross_entropy(b(act(a(x))), y).backward()
            opt.step()
    for pe, pg in zip(pairs[0].parameters(), pairs[1].parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-5, atol=1e-6)


def test_simulated_data_dependent_shape_is_refused_naming_the_op():
    """On the cuda device a boolean mask's count is a device read: refused while capturing, as
    on a GPU (the CPU device records it instead: tests/test_cuda_graphs.py)."""
    x = gd.randn(4, device="cuda")
    with pytest.raises(RuntimeError, match="^boolean-mask indexing: reads the device"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            x[x > 0]


def test_simulated_global_mode_refuses_another_threads_device_read_the_others_allow_it():
    """A device read (``.item()`` of a cuda tensor, a device-to-host sync) by a second thread
    while the main thread captures: refused in torch's default "global" mode, allowed in
    "thread_local" and "relaxed"."""
    import threading
    model, x = _model(), gd.randn(2, 3, device="cuda")

    def other_thread(mode):
        seen = []

        def read():
            try:
                seen.append(gd.ones(2, device="cuda").sum().item())
            except RuntimeError as e:
                seen.append(str(e))
        with gd.cuda.graph(gd.cuda.CUDAGraph(), capture_error_mode=mode):
            worker = threading.Thread(target=read)
            worker.start()
            worker.join()
            model(x)
        return seen[0]

    assert other_thread("global").startswith(
        "Tensor.item: waits for the device while another thread captures a CUDA graph in "
        "capture_error_mode='global'")
    assert other_thread("thread_local") == other_thread("relaxed") == 2.0


def test_a_first_upload_of_host_tables_inside_a_capture_is_refused_by_name(monkeypatch):
    # pooling uploads its window tables at a geometry's first use: CUDA refuses a capture a
    # copy from pageable host memory, so the capture names it and asks for an eager warm-up
    from gpudl.kernels import pool_cuda
    monkeypatch.setattr(pool_cuda, "_DEVICE_TABLES", {})
    x = gd.randn(1, 2, 7, 7, device="cuda")
    with pytest.raises(RuntimeError, match="pooling's window tables: copies host data to the "
                                           "device .*CUDA graph capture cannot contain"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            nn.functional.avg_pool2d(x, 3, 2)
    eager = nn.functional.avg_pool2d(x, 3, 2)          # the warm-up uploads them
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        captured = nn.functional.avg_pool2d(x, 3, 2)
    g.replay()
    np.testing.assert_array_equal(captured.cpu().numpy(), eager.cpu().numpy())
