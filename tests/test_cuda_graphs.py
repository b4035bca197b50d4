"""gd.cuda.CUDAGraph / graph: capture a whole training step, replay it, compare with eager steps.

On the CPU (and under the simulator) the capture records a call list; the same tests run on a
GPU (tools/gpu_check.sh), where the capture is CuPy's stream capture, after the warm-up steps
that PyTorch's recipe asks for.
"""

import inspect

import numpy as np
import pytest

import gpudl as gd
from device_checks import replayed_losses
from gpudl import nn
from gpudl.models import LSTMRegressor

ON_GPU = gd.backend._cupy is not None
# a GPU graph needs the step count on the device (torch's capturable=True) where Adam has one
ADAM = ({"capturable": True} if ON_GPU
        and "capturable" in inspect.signature(gd.optim.Adam.__init__).parameters else {})


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0,
                                                batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


def _bn_cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


CASES = {
    "cnn-batchnorm-sgd": (_bn_cnn, lambda p: gd.optim.SGD(p, lr=0.05, momentum=0.9),
                          nn.CrossEntropyLoss(), lambda rng: (rng.standard_normal((5, 2, 6, 6)),
                                                              rng.integers(0, 3, 5))),
    "mlp-sgd-momentum": (_mlp, lambda p: gd.optim.SGD(p, lr=0.05, momentum=0.9),
                         nn.CrossEntropyLoss(), lambda rng: (rng.standard_normal((8, 6)),
                                                             rng.integers(0, 3, 8))),
    "lenet-adam": (_lenet, lambda p: gd.optim.Adam(p, lr=1e-3, **ADAM), nn.CrossEntropyLoss(),
                   lambda rng: (rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4))),
    "lstm-adam": (lambda: LSTMRegressor(1, 8, num_layers=2, output_size=1),
                  lambda p: gd.optim.Adam(p, lr=5e-3, **ADAM), nn.MSELoss(),
                  lambda rng: (rng.standard_normal((5, 7, 1)), rng.standard_normal((5, 1)))),
    "transformer-adamw": (_Encoder, lambda p: gd.optim.AdamW(p, lr=1e-3, **ADAM),
                          nn.CrossEntropyLoss(),
                          lambda rng: (rng.standard_normal((3, 5, 16)), rng.integers(0, 4, 3))),
}


def _batches(make_batch, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x, y = make_batch(rng)
        out.append((gd.tensor(x.astype(np.float32)),
                    gd.tensor(y.astype(np.float32 if y.dtype.kind == "f" else np.int64))))
    return out


def _build(case):
    make_model, make_opt, loss_fn, make_batch = CASES[case]
    gd.manual_seed(7)
    model = make_model()
    return model, make_opt(model.parameters()), loss_fn, make_batch


def _eager(case, data):
    model, opt, loss_fn, _ = _build(case)
    losses = []
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.numpy().copy())
    return model, losses


def _graphed(case, data, warmup):
    """torch's whole-step recipe: warm-up steps, capture, then copy each batch in and replay."""
    model, opt, loss_fn, _ = _build(case)
    return model, replayed_losses(model, opt, data, loss_fn, warmup)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("warmup", [0, 2])
def test_replays_match_eager_steps(case, warmup):
    if ON_GPU and warmup == 0:
        pytest.skip("a GPU capture needs warm-up steps first (optimizer state, kernel builds)")
    data = _batches(CASES[case][3], 6, seed=sorted(CASES).index(case))
    eager_model, eager_losses = _eager(case, data)
    graph_model, graph_losses = _graphed(case, data, warmup)
    # float32 rounding: even two eager runs differ in the last bits when the BLAS thread count
    # (which follows the machine's load) changes between them
    tol = dict(rtol=1e-4, atol=1e-5) if ON_GPU else dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.array(graph_losses), np.array(eager_losses), **tol)
    for (name, pe), (_, pg) in zip(eager_model.named_parameters(), graph_model.named_parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), err_msg=name, **tol)
        np.testing.assert_allclose(pg.grad.numpy(), pe.grad.numpy(), err_msg=name, **tol)
    for (name, be), (_, bg) in zip(eager_model.named_buffers(), graph_model.named_buffers()):
        np.testing.assert_allclose(bg.numpy(), be.numpy(), err_msg=name, **tol)   # running stats


def _captured_mlp():
    gd.manual_seed(1)
    model = _mlp()
    x = gd.randn(4, 6)
    if ON_GPU:          # warm-up: kernels built and loaded before any capture
        model(x).square().sum().backward()
        model.zero_grad()
    return model, x


@pytest.mark.parametrize("op", ["item", "numpy", "float", "print"])
def test_host_reads_inside_a_capture_are_refused_naming_the_op(op, capsys):
    model, x = _captured_mlp()
    g = gd.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="CUDA graph capture cannot contain") as info:
        with gd.cuda.graph(g):
            out = model(x).sum()
            {"item": lambda: out.item(), "numpy": lambda: out.numpy(),
             "float": lambda: float(out), "print": lambda: print(out)}[op]()
    named = {"item": "Tensor.item", "float": "Tensor.item", "numpy": "numpy", "print": "repr"}[op]
    assert named in str(info.value) or (ON_GPU and "to_numpy" in str(info.value))
    assert not gd.cuda.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="nothing captured"):
        g.replay()
    assert model(x).sum().item() == model(x).sum().item()   # reads work again after the capture


def test_capture_is_not_a_step_and_restores_what_it_changed():
    model, x = _captured_mlp()
    opt = gd.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.numpy().copy() for p in model.parameters()]
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        assert gd.cuda.is_current_stream_capturing()
        model(x).square().sum().backward()
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
    if not ON_GPU:      # the CPU recorder undoes the optimizer state the capture created
        assert opt.state == {} or all(not s for s in opt.state.values())
    g.replay()
    assert not np.array_equal(next(model.parameters()).numpy(), before[0])


def test_replay_refuses_a_static_input_given_new_storage_or_shape():
    model, x = _captured_mlp()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = model(x)
    x.data = gd.randn(9, 6)
    with pytest.raises(RuntimeError, match=r"shape \(4, 6\) when captured.*\(9, 6\)"):
        g.replay()


def test_static_output_is_updated_in_place_by_replay():
    model, x = _captured_mlp()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = model(x) * 2
    new = gd.randn(4, 6)
    x.copy_(new)
    g.replay()
    with gd.no_grad():
        np.testing.assert_allclose(out.numpy(), (model(new) * 2).numpy(), rtol=1e-6)


@pytest.mark.skipif(ON_GPU, reason="the CPU recorder's own refusals")
@pytest.mark.parametrize("make", [
    lambda x: x + gd.tensor([1.0] * 6),                  # Python data inside the capture
    lambda x: x + gd.randn(4, 6),                        # a random factory: frozen values
])
def test_values_the_recorder_cannot_replay_are_refused(make):
    _, x = _captured_mlp()
    with pytest.raises(RuntimeError, match="CUDA graph capture cannot contain"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            make(x)


def test_constants_and_in_place_edits_replay_like_eager():
    _, x = _captured_mlp()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        acc = gd.zeros(4, 6)
        acc.add_(x)
        acc.mul_(2)
        out = acc + 1
    for _ in range(3):                # the zeros must be fresh at every replay, as in eager
        x.copy_(gd.randn(4, 6))
        g.replay()
        np.testing.assert_allclose(out.numpy(), x.numpy() * 2 + 1, rtol=1e-6)


def test_scheduler_step_and_backward_through_older_ops_are_refused():
    model, x = _captured_mlp()
    opt = gd.optim.SGD(model.parameters(), lr=0.1)
    sched = gd.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(RuntimeError, match="StepLR.step|LRScheduler.step"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            sched.step()
    assert opt.param_groups[0]["lr"] == 0.1
    if ON_GPU:
        return
    early = model(x).sum()
    with pytest.raises(RuntimeError, match="before the capture began"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            early.backward()


def test_dropout_draws_again_at_each_replay_like_eager_steps():
    """CPU: each replay re-runs the recorded dropout; GPU: the graph's dropout kernel draws
    from device-side states that each replay advances (the capture itself draws nothing)."""
    x = gd.randn(32, 8)
    gd.manual_seed(3)
    eager = [gd.nn.functional.dropout(x, 0.5).numpy().copy() for _ in range(3)]
    gd.manual_seed(3)
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = gd.nn.functional.dropout(x, 0.5)
    replayed = []
    for _ in range(3):
        g.replay()
        replayed.append(out.numpy().copy())
    np.testing.assert_array_equal(np.array(replayed), np.array(eager))


@pytest.mark.skipif(not ON_GPU, reason="a GPU graph's dropout (kernels/dropout_cuda.py)")
def test_gpu_graphed_dropout_step_draws_a_new_mask_at_each_replay():
    p, shape = 0.25, (256, 512)
    rng = np.random.default_rng(5)
    x = gd.tensor(rng.uniform(0.5, 2.0, shape).astype(np.float32), device="cuda",
                  requires_grad=True)
    weight = gd.tensor(rng.standard_normal(shape).astype(np.float32), device="cuda")
    (gd.nn.functional.dropout(x, p) * weight).sum().backward()     # warm-up: states, kernels
    x.grad = None
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = gd.nn.functional.dropout(x, p)
        (out * weight).sum().backward()
    masks = []
    for _ in range(2):
        g.replay()
        y, grad = out.detach().numpy(), x.grad.numpy()
        kept = y != 0
        assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / kept.size)
        scale = np.float32(1 / (1 - p))
        np.testing.assert_array_equal(y[kept], x.detach().numpy()[kept] * scale)
        np.testing.assert_allclose(grad, weight.numpy() * kept * scale, rtol=1e-6)
        masks.append(kept)
    assert 0.3 < (masks[0] != masks[1]).mean() < 0.45     # 2 p (1 - p) = 0.375 if independent


def test_captures_do_not_nest_and_a_graph_holds_one_capture():
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        with pytest.raises(RuntimeError, match="cannot nest"):
            with gd.cuda.graph(gd.cuda.CUDAGraph()):
                pass
    with pytest.raises(RuntimeError, match="holds a capture already"):
        with gd.cuda.graph(g):
            pass
    with pytest.raises(TypeError, match="CUDAGraph"):
        gd.cuda.graph(object())


@pytest.mark.skipif(not ON_GPU, reason="GPU capture rules")
def test_gpu_capture_refuses_random_numbers_and_host_counted_adam():
    model, x = _captured_mlp()
    with pytest.raises(RuntimeError, match="random numbers"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            model(x) + gd.randn(4, 3)
    opt = gd.optim.Adam(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    opt.step()                                          # warm-up: state exists
    with pytest.raises(RuntimeError, match="capturable=True"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            model(x).sum().backward()
            opt.step()
    assert not gd.cuda.is_current_stream_capturing()


@pytest.mark.skipif(not ON_GPU, reason="GPU graph memory")
def test_gpu_graph_keeps_its_memory_and_shares_a_pool():
    model, x = _captured_mlp()
    first, second = gd.cuda.CUDAGraph(), gd.cuda.CUDAGraph()
    with gd.cuda.graph(first):
        hidden = model[0](x)
    with gd.cuda.graph(second, pool=first.pool()):
        out = model[2](model[1](hidden))
    import gc
    gc.collect()
    gd.randn(1 << 20)                                    # eager allocations elsewhere
    x.copy_(gd.randn(4, 6))
    first.replay()
    second.replay()
    with gd.no_grad():
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_other_threads_run_as_usual_during_a_capture():
    import threading
    model, x = _captured_mlp()
    seen = []

    def loader():           # a data-loading thread: Python data on the cpu and host reads are fine
        t = gd.tensor([[1.0, 2.0]], device="cpu") * 3
        seen.append(t.sum().item())

    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        worker = threading.Thread(target=loader)
        worker.start()
        worker.join()
        out = model(x)
    assert seen == [9.0]
    x.copy_(gd.randn(4, 6))
    g.replay()
    with gd.no_grad():
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_gradient_clipping_inside_the_step_replays_like_eager(clip):
    data = _batches(CASES["mlp-sgd-momentum"][3], 4, seed=9)

    def step(model, opt, x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if clip == "norm":
            norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        else:
            nn.utils.clip_grad_value_(model.parameters(), 0.01)
            norm = None
        opt.step()
        return loss, norm

    def build():
        gd.manual_seed(5)
        model = _mlp()
        return model, gd.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    model, opt = build()
    eager = []
    for x, y in data:
        opt.zero_grad()
        loss, norm = step(model, opt, x, y)
        eager.append((loss.numpy().copy(), None if norm is None else norm.numpy().copy()))
    graphed, gopt = build()
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    if ON_GPU:
        pytest.skip("warm-up and device-side norms: covered by the whole-step test on a GPU")
    g = gd.cuda.CUDAGraph()
    gopt.zero_grad()
    with gd.cuda.graph(g):
        static_loss, static_norm = step(graphed, gopt, static_x, static_y)
    for (x, y), (loss, norm) in zip(data, eager):
        static_x.copy_(x)
        static_y.copy_(y)
        g.replay()
        np.testing.assert_allclose(static_loss.numpy(), loss, rtol=2e-5)
        if norm is not None:
            np.testing.assert_allclose(static_norm.numpy(), norm, rtol=2e-5)
    for pe, pg in zip(model.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=2e-5, atol=2e-6)


class _FakeCuPy:
    """Just enough of CuPy's stream, graph and pool API to drive the GPU branch's plumbing on a
    machine without a GPU (what it captures is not checked here: tools/gpu_check.sh does)."""

    def __init__(self):
        fake = self
        self.log, self.allocator = [], None

        class Stream:
            def __init__(self, non_blocking=False, name="side"):
                self.name, self.capturing, self.ptr = name, False, id(self)

            def use(self):
                fake.current = self

            def record(self):
                return self.name

            def wait_event(self, event):
                fake.log.append(f"{self.name} waits {event}")

            def synchronize(self):
                assert not self.capturing, "synchronize on a capturing stream"
                fake.log.append(f"{self.name} synchronized")

            def begin_capture(self, mode):
                fake.log.append(f"begin {self.name} mode {mode}")
                self.capturing = True

            def end_capture(self):
                self.capturing = False
                fake.log.append(f"end {self.name}")
                return Graph()

            def is_capturing(self):
                return self.capturing

        class Graph:
            graph, graphExec = 1000, 2000          # cudaGraph_t, cudaGraphExec_t

            def launch(self, stream):
                fake.log.append(f"launch on {stream.name}")

        class runtime:                              # cupy.cuda.runtime, CuPy >= 14
            @staticmethod
            def graphInstantiate(graph):
                fake.execs += 1
                fake.log.append(f"instantiate {graph} as {2000 + fake.execs}")
                return 2000 + fake.execs

            @staticmethod
            def graphLaunch(graph_exec, stream_ptr):
                name = "main" if stream_ptr == fake.current.ptr else "?"
                fake.log.append(f"launch {graph_exec} on {name}")

            @staticmethod
            def graphExecDestroy(graph_exec):
                fake.log.append(f"destroy {graph_exec}")

            @staticmethod
            def graphDebugDotPrint(graph, path, flags):
                with open(path, "w") as f:
                    f.write(f"digraph cuda {{ graph {graph} flags {flags} }}\n")

        class MemoryPool:
            def malloc(self, size):
                fake.log.append(f"malloc {size}")

        def using_allocator(allocator):
            import contextlib

            @contextlib.contextmanager
            def use():
                fake.allocator = allocator
                yield
                fake.allocator = None
            return use()

        self.ndarray = type("ndarray", (), {})      # no array here is a CuPy array
        self.current, self.execs = Stream(name="main"), 0
        self.cuda = type("cuda", (), dict(
            Stream=Stream, MemoryPool=MemoryPool, using_allocator=staticmethod(using_allocator),
            get_current_stream=staticmethod(lambda: fake.current), runtime=runtime))


@pytest.mark.skipif(ON_GPU, reason="a stand-in for CuPy, for machines without a GPU")
def test_gpu_branch_plumbing_with_a_stand_in_cupy(monkeypatch):
    from gpudl import backend
    fake = _FakeCuPy()
    monkeypatch.setattr(backend, "_cupy", fake)
    g = gd.cuda.CUDAGraph()
    before = gd.cuda.sync_count()
    with gd.cuda.graph(g):
        assert gd.cuda.sync_count() == before + 1      # torch's wait for the device, counted
        # Numba kernels launch on CuPy's current stream, the capturing one
        monkeypatch.setitem(backend._streams, fake.current.ptr, "numba's view of side")
        assert backend.launch_stream() == "numba's view of side"
        assert fake.log == ["main synchronized", "side waits main", "begin side mode 0"]
        assert gd.cuda.is_current_stream_capturing()
        assert fake.current.name == "side" and fake.allocator is not None
        with pytest.raises(RuntimeError, match="Tensor.item: reads the device"):
            backend.capture_guard("Tensor.item")
    assert fake.current.name == "main" and fake.allocator is None
    assert backend.capture_guard is None
    g.replay()
    assert fake.log == ["main synchronized", "side waits main", "begin side mode 0", "end side",
                        "launch on main"]
    with pytest.raises(ValueError, match="boom"):        # the body's error, capture ended
        with gd.cuda.graph(gd.cuda.CUDAGraph(), pool=g.pool()):
            raise ValueError("boom")
    assert fake.log[-1] == "end side" and not gd.cuda.is_current_stream_capturing()
    assert backend.capture_guard is None


@pytest.mark.skipif(ON_GPU, reason="a stand-in for CuPy, for machines without a GPU")
def test_gpu_branch_keep_graph_instantiate_raw_handles_and_dump(monkeypatch, tmp_path):
    """torch's keep_graph rules on the GPU branch, with the stand-in CuPy: a kept graph gets its
    own cudaGraphExec_t from the raw graph at instantiate() (or the first replay), replays
    launch that one, a new instantiate() destroys the old; without keep_graph CuPy's exec is
    launched and the raw graph is not handed out. debug_dump prints CUDA's DOT (verbose)."""
    from gpudl import backend
    fake = _FakeCuPy()
    monkeypatch.setattr(backend, "_cupy", fake)
    plain = gd.cuda.CUDAGraph()
    with gd.cuda.graph(plain, capture_error_mode="relaxed"):
        pass
    assert plain.raw_cuda_graph_exec() == 2000
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.raw_cuda_graph: .*keep_graph=True"):
        plain.raw_cuda_graph()
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.instantiate: .*keep_graph=True"):
        plain.instantiate()
    plain.replay()
    assert fake.log[-2:] == ["end side", "launch on main"]
    kept = gd.cuda.CUDAGraph(keep_graph=True)
    kept.enable_debug_mode()
    with gd.cuda.graph(kept):
        pass
    assert kept.raw_cuda_graph() == 1000
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.raw_cuda_graph_exec: .*until "
                                           r"instantiate\(\) has been called"):
        kept.raw_cuda_graph_exec()
    kept.replay()                                   # instantiates first
    assert fake.log[-2:] == ["instantiate 1000 as 2001", "launch 2001 on main"]
    assert kept.raw_cuda_graph_exec() == 2001
    kept.instantiate()                              # the raw graph again; the old exec goes
    assert fake.log[-2:] == ["instantiate 1000 as 2002", "destroy 2001"]
    kept.replay()
    assert fake.log[-1] == "launch 2002 on main" and kept.raw_cuda_graph_exec() == 2002
    kept.debug_dump(str(tmp_path / "g.dot"))
    assert (tmp_path / "g.dot").read_text() == "digraph cuda { graph 1000 flags 1 }\n"
    kept.reset()
    assert fake.log[-1] == "destroy 2002"


@pytest.mark.skipif(ON_GPU or not hasattr(Exception, "add_note"),
                    reason="a stand-in for CuPy; notes need Python >= 3.11")
@pytest.mark.parametrize("mode", ["global", "thread_local", "relaxed"])
def test_gpu_branch_explains_a_call_cuda_refused_while_capturing(monkeypatch, mode):
    from gpudl import backend
    monkeypatch.setattr(backend, "_cupy", _FakeCuPy())
    refused = RuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when "
                           "stream is capturing")
    with pytest.raises(RuntimeError) as error:
        with gd.cuda.graph(gd.cuda.CUDAGraph(), capture_error_mode=mode):
            raise refused
    assert error.value is refused
    notes = getattr(error.value, "__notes__", [])
    if mode == "relaxed":
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith(
            f"gd.cuda.graph: CUDA refused a call as unsafe while capturing in "
            f"capture_error_mode={mode!r}") and "warm the body up" in notes[0]


@pytest.mark.skipif(ON_GPU, reason="a stand-in for CuPy, for machines without a GPU")
def test_gpu_branch_pool_allocates_with_the_capture_mode_relaxed(monkeypatch):
    """As PyTorch's allocator: in "global" and "thread_local" captures, the private pool's
    cudaMalloc runs with the thread's capture mode swapped to relaxed and back (driver API)."""
    from cuda.bindings import driver
    from gpudl import backend
    fake = _FakeCuPy()
    monkeypatch.setattr(backend, "_cupy", fake)
    modes = driver.CUstreamCaptureMode

    def exchange(mode):
        fake.log.append(f"mode {int(mode)}")
        return driver.CUresult.CUDA_SUCCESS, modes.CU_STREAM_CAPTURE_MODE_GLOBAL

    monkeypatch.setattr(driver, "cuThreadExchangeStreamCaptureMode", exchange)
    for mode, swaps in (("global", ["mode 2", "malloc 512", "mode 0"]),
                        ("thread_local", ["mode 2", "malloc 512", "mode 0"]),
                        ("relaxed", ["malloc 512"])):
        with gd.cuda.graph(gd.cuda.CUDAGraph(), capture_error_mode=mode):
            fake.allocator(512)
        assert fake.log[-len(swaps) - 1:-1] == swaps, mode


@pytest.mark.skipif(ON_GPU, reason="a stand-in for CuPy, for machines without a GPU")
def test_gpu_branch_refuses_what_a_gpu_graph_cannot_hold_naming_it(monkeypatch):
    """The GPU branch's own refusals, driven with the stand-in CuPy: the body runs eagerly on
    NumPy data (the capture "records" nothing), so what is checked is which op is refused, and
    that a replay refuses a static input given new storage or a new shape."""
    from gpudl import backend
    model, x = _captured_mlp()
    adam = gd.optim.Adam(model.parameters(), lr=1e-3)
    capturable = gd.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
    sched = gd.optim.lr_scheduler.StepLR(gd.optim.SGD(model.parameters(), lr=0.1), 1)
    monkeypatch.setattr(backend, "_cupy", _FakeCuPy())
    refusals = [(lambda: adam.step(), r"^Adam.step: counts its steps on the host.*capturable"),
                (lambda: sched.step(), r"^(StepLR|LRScheduler).step: changes Python state"),
                (lambda: backend.host_sync("synchronize"), r"^synchronize: reads the device"),
                (lambda: gd.random.generator("cuda"), r"^random numbers on the GPU")]
    for body, match in refusals:
        with pytest.raises(RuntimeError, match=match):
            with gd.cuda.graph(gd.cuda.CUDAGraph()):
                model(x).sum().backward()
                body()
        assert backend.capture_guard is None and not gd.cuda.is_current_stream_capturing()
    from gpudl.cuda_graphs import _check_capturable
    _check_capturable(capturable)                       # the device-side count is accepted
    sgd = gd.optim.SGD(model.parameters(), lr=0.1)
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        model(x).sum().backward()
        sgd.step()
    g.replay()
    sgd.param_groups[0]["lr"] = 0.2
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: the optimizer's lr is 0.2 but "):
        g.replay()
    sgd.param_groups[0]["lr"] = 0.1
    g.replay()
    x.data = gd.randn(9, 6)
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: .*\(4, 6\) when captured.*"
                                           r"\(9, 6\)"):
        g.replay()


@pytest.mark.skipif(ON_GPU, reason="a stand-in for CuPy, for machines without a GPU")
def test_gpu_replays_queue_their_device_side_checks(monkeypatch):
    """A check queued while capturing (a cross-entropy target range) reads a value the capture
    never computed: it leaves the queue, and every replay queues a copy of the value that replay
    computed (here set by hand: the stand-in graph computes nothing), reported at the next read."""
    from gpudl import backend
    backend.raise_deferred()
    monkeypatch.setattr(backend, "_cupy", _FakeCuPy())
    flag = np.array(0)                                  # the graph's array: 0 = all in range
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        backend.defer_check(flag, lambda v: v == 0, lambda v: IndexError(f"target {v}"))
    assert backend._deferred == []
    g.replay()
    flag[...] = 7                                       # the second replay finds target 7
    g.replay()
    flag[...] = 0                                       # and the third none
    g.replay()
    assert len(backend._deferred) == 3
    with pytest.raises(IndexError, match="target 7"):
        backend.raise_deferred()
    assert backend._deferred == []


def test_comparisons_and_argmax_replay_like_eager():
    model, x = _captured_mlp()
    y = gd.tensor(np.array([0, 1, 2, 1]))
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = model(x)
        correct = (out.argmax(1) == y).float().sum()
        positive = (out > 0).any()
    for _ in range(3):
        x.copy_(gd.randn(4, 6))
        g.replay()
        with gd.no_grad():
            eager = model(x)
        assert correct.item() == float((eager.numpy().argmax(1) == y.numpy()).sum())
        assert bool(positive.item()) == bool((eager.numpy() > 0).any())


def test_a_hand_written_sgd_step_replays_like_eager():
    data = _batches(CASES["mlp-sgd-momentum"][3], 4, seed=11)

    def step(model, x, y):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with gd.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad.zero_()
        return loss

    gd.manual_seed(6)
    eager = _mlp()
    losses = [step(eager, x, y).numpy().copy() for x, y in data]
    gd.manual_seed(6)
    graphed = _mlp()
    if ON_GPU:
        step(graphed, *data[0])                         # warm-up (then compare from step 2)
        losses = losses[1:]
        data = data[1:]
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    before = [p.numpy().copy() for p in graphed.parameters()]
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        static_loss = step(graphed, static_x, static_y)
    # the capture runs nothing (the third GPU run's packed launches gave a NaN first loss:
    # these say whether the parameters were written before the first replay)
    for p, b in zip(graphed.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b, err_msg="a parameter changed by capture")
    for replay, ((x, y), loss) in enumerate(zip(data, losses)):
        static_x.copy_(x)
        static_y.copy_(y)
        g.replay()
        np.testing.assert_allclose(static_loss.numpy(), loss, rtol=2e-5,
                                   err_msg=f"replay {replay}")
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=2e-5, atol=2e-6)


def test_writes_through_a_view_of_an_older_tensor_are_undone_by_the_capture():
    x = gd.randn(3, 4)
    before = x.numpy().copy()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        x[0].add_(1.0)      # through a view of a static input (the view's op snapshots x)
    np.testing.assert_array_equal(x.numpy(), before)
    g.replay()
    g.replay()
    expected = before.copy()
    expected[0] += 2.0
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)


def test_a_data_dependent_shape_is_refused_naming_the_op():
    """A boolean mask selects as many elements as it holds True values. A GPU capture refuses it
    at once (CuPy would read the count back); the CPU records it, and a replay whose count
    changes refuses, naming the op and the two shapes."""
    x = gd.tensor(np.array([1.0, -2.0, 3.0, -4.0], np.float32))
    g = gd.cuda.CUDAGraph()
    if ON_GPU:
        with pytest.raises(RuntimeError, match="^boolean-mask indexing: reads the device"):
            with gd.cuda.graph(g):
                x[x > 0]
        return
    with gd.cuda.graph(g):
        positive = x[x > 0] * 2
    x.copy_(gd.tensor(np.array([5.0, 6.0, -1.0, -1.0], np.float32)))   # still two: replays
    g.replay()
    np.testing.assert_array_equal(positive.numpy(), [10.0, 12.0])
    x.copy_(gd.tensor(np.array([5.0, 6.0, 7.0, -1.0], np.float32)))
    with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: GetItem made an output of shape "
                                           r"\(3,\) where the capture's had \(2,\)"):
        g.replay()


def test_a_python_learning_rate_changed_after_the_capture_is_refused_at_replay():
    """A GPU graph keeps the Python numbers of the step it captured, so a scheduler stepping a
    float lr between replays would silently not apply (as in torch): the replay refuses,
    naming it, on both devices. A 0-d tensor lr is read where it lies: schedulers may step it."""
    for lr in (0.1, gd.tensor(0.1)):
        model, x = _captured_mlp()
        opt = gd.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        sched = gd.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        if ON_GPU:
            model(x).sum().backward()
            opt.step()
        g = gd.cuda.CUDAGraph()
        with gd.cuda.graph(g):
            model(x).sum().backward()
            opt.step()
        g.replay()
        sched.step()
        if isinstance(lr, float):
            with pytest.raises(RuntimeError, match=r"^CUDAGraph.replay: the optimizer's lr is "
                                                   r"0.05 but was 0.1 when the graph was captured"):
                g.replay()
            opt.param_groups[0]["lr"] = 0.1
            only_zero_grad = gd.cuda.CUDAGraph()        # reads no hyperparameter: not pinned
            with gd.cuda.graph(only_zero_grad):
                opt.zero_grad(set_to_none=False)
            sched.step()
            only_zero_grad.replay()
            opt.param_groups[0]["lr"] = 0.1
        before = model[0].weight.numpy().copy()
        g.replay()
        assert not np.array_equal(model[0].weight.numpy(), before)
