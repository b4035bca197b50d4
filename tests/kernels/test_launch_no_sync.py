"""kernels.launch does not let Numba wait for the GPU before a launch.

Numba synchronises the stream a CuPy argument's ``__cuda_array_interface__`` names (CuPy's
current stream) before every launch unless ``CUDA_ARRAY_INTERFACE_SYNC`` is off; gpudl launches
on that same stream, so the wait only stalled the host, once per array argument. Offline: the
dispatcher runs with the setting off, and the user's setting comes back afterwards, after a
failed launch too. On a GPU: a launch returns while earlier work is still queued."""


import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import launch


@pytest.fixture
def config():
    return backend.numba_cuda_config()


class _Dispatcher:
    """specialised()'s stand-in: ``[grid, block, stream, shared](*args)`` records the setting."""

    def __init__(self, config, error=None):
        self.config, self.error, self.seen = config, error, []

    def __getitem__(self, launch_config):
        def run(*args):
            self.seen.append(self.config.CUDA_ARRAY_INTERFACE_SYNC)
            if self.error:
                raise self.error
        return run


@pytest.mark.parametrize("users_setting", [1, 0])
def test_the_dispatcher_runs_without_numbas_stream_sync(monkeypatch, config, users_setting):
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    monkeypatch.setattr(config, "CUDA_ARRAY_INTERFACE_SYNC", users_setting)
    dispatcher = _Dispatcher(config)
    monkeypatch.setattr(launch, "specialised", lambda kernel, signature: dispatcher)
    launch.launch(object(), "void(float32[::1])", 2, 32, np.zeros(4, np.float32))
    assert dispatcher.seen == [0]
    assert config.CUDA_ARRAY_INTERFACE_SYNC == users_setting


def test_a_failed_launch_gives_the_setting_back(monkeypatch, config):
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    monkeypatch.setattr(config, "CUDA_ARRAY_INTERFACE_SYNC", 1)
    dispatcher = _Dispatcher(config, RuntimeError("launch failed"))
    monkeypatch.setattr(launch, "specialised", lambda kernel, signature: dispatcher)
    with pytest.raises(RuntimeError, match="launch failed"):
        launch.launch(object(), "void(float32[::1])", 2, 32, np.zeros(4, np.float32))
    assert dispatcher.seen == [0]
    assert config.CUDA_ARRAY_INTERFACE_SYNC == 1


def test_an_empty_grid_launches_nothing(monkeypatch, config):
    monkeypatch.setattr(backend, "SIMULATOR", False)
    dispatcher = _Dispatcher(config)
    monkeypatch.setattr(launch, "specialised", lambda kernel, signature: dispatcher)
    launch.launch(object(), "void(float32[::1])", 0, 32, np.zeros(0, np.float32))
    assert dispatcher.seen == []


class _Configuring:
    """specialised()'s stand-in that counts the configurations Numba's ``[...]`` would build."""

    def __init__(self):
        self.built = []

    def __getitem__(self, launch_config):
        self.built.append(launch_config)
        return lambda *args: None


def test_a_launch_configuration_is_built_once(monkeypatch):
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    monkeypatch.setattr(launch, "_CONFIGURED", {})
    first = stream = object()
    monkeypatch.setattr(backend, "launch_stream", lambda: stream)
    dispatcher, kernel, x = _Configuring(), object(), np.zeros(4, np.float32)
    monkeypatch.setattr(launch, "specialised", lambda k, signature: dispatcher)
    for _ in range(3):
        launch.launch(kernel, "void(float32[::1])", 2, 32, x)
    assert dispatcher.built == [(2, 32, first, 0)]
    launch.launch(kernel, "void(float32[::1])", (2, 3), 32, x, shared=64)    # another grid
    launch.launch(kernel, "void(float32[::1])", 2, 32, x, shared=64)         # other shared
    stream = object()                                                        # another stream
    launch.launch(kernel, "void(float32[::1])", 2, 32, x, shared=64)
    launch.launch(kernel, "void(float32[::1])", 2, 32, x, shared=64)
    assert dispatcher.built[1:] == [((2, 3), 32, first, 64), (2, 32, first, 64),
                                    (2, 32, stream, 64)]
    for _ in range(2):                  # unhashable dimensions: configured at every launch
        launch.launch(kernel, "void(float32[::1])", 2, [32], x)
    assert len(dispatcher.built) == 6
    monkeypatch.setattr(launch, "_MAX_CONFIGURED", 4)
    launch.launch(kernel, "void(float32[::1])", 5, 32, x)      # the fifth: the cache starts anew
    assert len(launch._CONFIGURED) == 1


def test_under_the_simulator_every_launch_configures_its_kernel(monkeypatch):
    """The simulator's ``kernel[...]`` sets the dimensions on the kernel object itself."""
    monkeypatch.setattr(backend, "SIMULATOR", True)
    monkeypatch.setattr(launch, "_CONFIGURED", {})
    monkeypatch.setattr(launch, "check_arguments", lambda *args: None)
    monkeypatch.setattr(backend, "launch_stream", lambda: 0)
    dispatcher = _Configuring()
    monkeypatch.setattr(launch, "specialised", lambda k, signature: dispatcher)
    for _ in range(2):
        launch.launch(object(), "void(float32[::1])", 2, 32, np.zeros(4, np.float32))
    assert len(dispatcher.built) == 2 and launch._CONFIGURED == {}


@pytest.mark.skipif(not backend.is_device_array(backend.xp_for("cuda").zeros(1)),
                    reason="needs a GPU with CuPy: the simulator runs launches synchronously")
def test_a_launch_returns_while_earlier_work_is_queued():
    """Half a second of matrix products queued, then a pooling kernel: the host is back before
    the products are done (Numba's stream sync would have waited for them)."""
    import cupy

    from gpudl.kernels import pool
    a = cupy.random.standard_normal((4096, 4096), dtype=np.float32)
    x = cupy.random.standard_normal((2, 3, 8, 8), dtype=np.float32)
    pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)     # compile, warm up
    cupy.cuda.get_current_stream().synchronize()
    for _ in range(200):                # ~137 GFLOP each: well over 0.1 s on any GPU
        a = a @ a
        a *= 1e-3                       # keeps the values finite
    y, _ = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert not cupy.cuda.get_current_stream().done, \
        "the launch waited for the queued matrix products (Numba's stream sync is on)"
    cupy.cuda.get_current_stream().synchronize()
    want = cupy.asnumpy(x).reshape(2, 3, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(cupy.asnumpy(y), want)
