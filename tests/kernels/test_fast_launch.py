"""kernels.fast_launch: Numba's PTX launched by one cuLaunchKernel, the parameters packed as
Numba's calling convention lays them out. Offline: the layout against the PTX's parameter list
(sizes, byte offsets, total), the packed bytes read back at the PTX's offsets for several
signatures, the driver call, the fallback to Numba; on a GPU: the same results as Numba's
launcher, and a CUDA graph's captured launch. (The gate and ``--check`` compare the layout with
every kernel's PTX.)"""

import ctypes
import struct
import sys
import types

import numpy as np
import pytest
from numba import cuda

from gpudl import backend
from gpudl.kernels import fast_launch, launch


def _kernel(x, y, flag, n, scale, big, ratio, cube):
    i = cuda.grid(1)
    if i < n and flag:
        y[i, 0] = x[i] * scale + cube[0, 0, i] + big + ratio


SIGNATURE = ("void(float32[::1], float32[:, ::1], boolean, int32, float32, int64, float64, "
             "float32[:, :, :])")


def test_the_layout_passes_exactly_the_ptxs_parameters():
    ptx, _ = cuda.compile_ptx(_kernel, SIGNATURE, cc=(9, 0))
    layout = fast_launch.layout(SIGNATURE)
    assert layout == (1, 2, "?", "i", "f", "q", "d", 3)
    ours = fast_launch.param_offsets(layout)
    assert [size for _, size in ours] == fast_launch.ptx_param_bytes(ptx)
    assert len(ours) == 7 + 9 + 5 + 11
    offsets, total = fast_launch.ptx_param_offsets(ptx)
    assert [offset for offset, _ in ours] == offsets
    # 16 words, the boolean at 128, the int32 at 132, the float32 at 136, then 8-aligned again
    assert offsets[16:21] == [128, 132, 136, 144, 152] and total == 160 + 11 * 8
    assert fast_launch.packer(layout).size == total
    assert fast_launch.check_layout(ptx, SIGNATURE) is None
    other = SIGNATURE.replace("int32,", "int64,", 1)        # a scalar of another width
    assert "the PTX takes" in fast_launch.check_layout(ptx, other)


def test_the_layout_check_finds_a_parameter_at_another_offset(monkeypatch):
    ptx, _ = cuda.compile_ptx(_kernel, SIGNATURE, cc=(9, 0))
    real = fast_launch.param_offsets
    # as if the boolean were packed 4-aligned (the sizes still agree with the PTX's)
    monkeypatch.setattr(fast_launch, "param_offsets", lambda layout: [
        (offset + 4 * (i >= 17), size) for i, (offset, size) in enumerate(real(layout))])
    assert fast_launch.check_layout(ptx, SIGNATURE) == \
        "fast_launch packs parameter 17 at byte 136, the PTX's is at 132"


def _scalar_kernel(flag, n, big, scale, x, m, ratio, y, on, z):
    i = cuda.grid(1)
    if i < n and flag and on:
        z[0, 0, i] = y[0, i] + x[i] * scale + big + m + ratio


# several signatures: booleans and an int32 between int64s, float32 and float64 scalars,
# 1-3 d arrays, a scalar first
PACK_CASES = [
    (_kernel, SIGNATURE),
    (_scalar_kernel, "void(boolean, int32, int64, float32, float64[::1], int32, float64, "
                     "int64[:, ::1], boolean, float32[:, :, ::1])"),
    (_scalar_kernel, "void(boolean, int64, int32, float64, float32[::1], int64, float32, "
                     "float32[:, :], boolean, float64[:, :, :])"),
]


def _arguments(signature, rng):
    """Fresh arguments of ``signature``'s types (NumPy arrays standing in for device ones, some
    of them strided views) and the numbers each should become, with their kinds."""
    from numba.core import sigutils, types as nb
    wanted, _ = sigutils.normalize_signature(signature)
    args, fields = [], []
    for t in wanted:
        if isinstance(t, nb.Array):
            shape = tuple(int(n) for n in rng.integers(2, 6, t.ndim))
            base = np.zeros(tuple(2 * n for n in shape), dtype=str(t.dtype))
            array = base[tuple(slice(None, None, 2) for _ in shape)]
            args.append(array)
            fields += [("u", 0), ("u", 0), ("s", array.size), ("s", array.itemsize),
                       ("u", array.__array_interface__["data"][0])]
            fields += [("s", n) for n in array.shape] + [("s", s) for s in array.strides]
        elif isinstance(t, nb.Boolean):
            value = bool(rng.integers(2))
            args.append(np.bool_(value) if rng.integers(2) else value)
            fields.append(("b", value))
        elif isinstance(t, nb.Integer):
            value = int(rng.integers(-2 ** (t.bitwidth - 1), 2 ** (t.bitwidth - 1)))
            args.append(value)
            fields.append(("s", value))
        else:
            value = float(np.dtype(str(t)).type(rng.standard_normal()))    # exact in its type
            args.append(np.dtype(str(t)).type(value))
            fields.append(("f", value))
    return tuple(args), fields


def _read(memory, offset, size, kind):
    """The number of ``kind`` (u, s: unsigned, signed integer; f: float; b: boolean) and
    ``size`` bytes at ``offset`` of ``memory``, read with NumPy in little-endian order."""
    dtype = {"u": "<u", "s": "<i", "f": "<f", "b": "<u"}[kind] + str(size)
    value = np.frombuffer(memory, dtype, 1, offset)[0]
    return bool(value) if kind == "b" else value.item()


@pytest.mark.parametrize("case", range(len(PACK_CASES)))
def test_packed_parameters_read_back_at_the_ptxs_offsets(case, rng):
    kernel, signature = PACK_CASES[case]
    ptx, _ = cuda.compile_ptx(kernel, signature, cc=(9, 0))
    assert fast_launch.check_layout(ptx, signature) is None
    offsets, total = fast_launch.ptx_param_offsets(ptx)
    sizes = fast_launch.ptx_param_bytes(ptx)
    loaded = fast_launch._Loaded(None, fast_launch.layout(signature))
    args, fields = _arguments(signature, rng)
    assert len(fields) == len(sizes)
    buffer, extra = loaded.pack(args)
    # the extra array: {BUFFER_POINTER, &parameters, BUFFER_SIZE, &size_t size, END}
    words = (ctypes.c_uint64 * 5).from_address(extra)
    assert [words[0], words[2], words[4]] == [1, 2, 0]
    assert ctypes.c_size_t.from_address(words[3]).value == total
    memory = ctypes.string_at(words[1], total)
    for i, ((kind, want), offset, size) in enumerate(zip(fields, offsets, sizes)):
        assert _read(memory, offset, size, kind) == want, f"parameter {i}"


def test_a_scalar_out_of_its_range_is_refused():
    loaded = fast_launch._Loaded(None, fast_launch.layout("void(int32, float32)"))
    loaded.pack((2 ** 31 - 1, 0.5))
    with pytest.raises(struct.error):
        loaded.pack((2 ** 31, 0.5))


def test_a_kernel_cupy_cannot_load_goes_to_numba_for_good(monkeypatch):
    runtime = types.SimpleNamespace(getDevice=lambda: 0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime)))
    calls = []

    def refuse(kernel, signature):
        calls.append(signature)
        raise RuntimeError("needs linking")
    monkeypatch.setattr(fast_launch, "_load", refuse)
    monkeypatch.setattr(fast_launch, "FALLBACK", {})
    for _ in range(2):
        assert fast_launch.launch(_kernel, SIGNATURE, 1, 32, ()) is False
    assert calls == [SIGNATURE]
    assert "needs linking" in fast_launch.FALLBACK[(_kernel, SIGNATURE)]


def test_one_driver_call_with_the_packed_parameters_on_cupys_stream(monkeypatch, rng):
    calls = []

    def launch_kernel(*call):            # reads the buffer while it is alive, as the driver does
        *head, kernel_params, extra = call
        words = (ctypes.c_uint64 * 5).from_address(extra)
        size = ctypes.c_size_t.from_address(words[3]).value
        calls.append((head, kernel_params, ctypes.string_at(words[1], size)))
    driver = types.SimpleNamespace(launchKernel=launch_kernel,
                                   funcSetAttribute=lambda *a: calls.append(("opt-in", a)))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: 0), driver=driver,
        get_current_stream=lambda: types.SimpleNamespace(ptr=0xABC))))
    layout = fast_launch.layout(SIGNATURE)
    loaded = fast_launch._Loaded(types.SimpleNamespace(ptr=0x1234), layout)
    monkeypatch.setattr(fast_launch, "_loaded", {(_kernel, SIGNATURE, 0): loaded})
    args, _ = _arguments(SIGNATURE, rng)
    assert fast_launch.launch(_kernel, SIGNATURE, (3, 2), 64, args, shared=64 * 1024)
    assert fast_launch.launch(_kernel, SIGNATURE, 5, (32, 4, 2), args)
    assert calls[0] == ("opt-in", (0x1234, 8, 64 * 1024))
    expected = fast_launch.packer(layout).pack(*fast_launch.values(layout, args))
    assert calls[1] == ([0x1234, 3, 2, 1, 64, 1, 1, 64 * 1024, 0xABC], 0, expected)
    assert calls[2] == ([0x1234, 5, 1, 1, 32, 4, 2, 0, 0xABC], 0, expected)


def test_the_packed_launch_is_the_default_unless_turned_off():
    import subprocess
    import sys
    read = "from gpudl.kernels import fast_launch; print(fast_launch.ENABLED)"
    for setting, expected in ((None, "True"), ("cupy", "True"), ("numba", "False"),
                              (" Numba ", "False")):
        env = {k: v for k, v in __import__("os").environ.items() if k != "GPUDL_LAUNCH"}
        if setting is not None:
            env["GPUDL_LAUNCH"] = setting
        out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == expected, (setting, out)


def test_inside_a_capture_numba_launches_unless_the_packed_launch_is_cleared(monkeypatch):
    taken, numba = [], []
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(fast_launch, "launch", lambda *args: taken.append(args) or True)
    monkeypatch.setattr(launch, "configured", lambda *args: lambda *a: numba.append(a))
    monkeypatch.setattr(backend, "capture_guard", lambda *args: None)
    launch.launch(_kernel, SIGNATURE, 2, 64, "x", "y")
    assert (taken, numba) == ([], [("x", "y")])
    monkeypatch.setattr(fast_launch, "IN_CAPTURE", True)
    launch.launch(_kernel, SIGNATURE, 2, 64, "x", "y")
    assert len(taken) == 1 and len(numba) == 1


def test_launch_takes_the_cupy_launcher_when_opted_in(monkeypatch):
    taken = []
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(fast_launch, "launch", lambda *args: taken.append(args) or True)
    monkeypatch.setattr(launch, "specialised", lambda *args: pytest.fail("Numba launched it"))
    launch.launch(_kernel, SIGNATURE, 2, 64, "x", "y", shared=128)
    assert taken == [(_kernel, SIGNATURE, 2, 64, ("x", "y"), 128)]
    launch.launch(_kernel, SIGNATURE, 0, 64, "x", "y")           # an empty grid: no launch
    assert len(taken) == 1


@pytest.mark.skipif(backend._cupy is None or backend.SIMULATOR, reason="needs a GPU (CuPy)")
def test_on_a_gpu_the_cupy_launcher_computes_what_numbas_does(rng):
    import cupy
    n = 1000
    x = cupy.asarray(rng.standard_normal(n).astype(np.float32))
    cube = cupy.asarray(rng.standard_normal((2, 3, n)).astype(np.float32))[:1, ::2]
    outputs = []
    for use_cupy in (False, True):
        y = cupy.full((n, 2), np.nan, np.float32)
        args = (x, y, True, n, np.float32(1.5), 3, 0.25, cube)
        if use_cupy:
            assert fast_launch.launch(_kernel, SIGNATURE, 4, 256, args)
        else:
            launch.specialised(_kernel, SIGNATURE)[4, 256, backend.launch_stream(), 0](*args)
        outputs.append(cupy.asnumpy(y))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.isfinite(outputs[1][:, 0]).all()


@pytest.mark.skipif(backend._cupy is None or backend.SIMULATOR, reason="needs a GPU (CuPy)")
def test_on_a_gpu_a_captured_launch_keeps_its_parameters(rng):
    """The parameter buffer is the launch call's own: a CUDA graph's kernel node must hold a copy
    (replayed after the buffer is gone, and after other launches reused the memory)."""
    import cupy
    n = 512
    x = cupy.asarray(rng.standard_normal(n).astype(np.float32))
    cube = cupy.asarray(rng.standard_normal((1, 1, n)).astype(np.float32))
    y = cupy.full((n, 2), np.nan, np.float32)
    args = (x, y, True, n, np.float32(-2.0), 5, 0.125, cube)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        assert fast_launch.launch(_kernel, SIGNATURE, 2, 256, args)     # loaded outside capture
        stream.begin_capture()
        assert fast_launch.launch(_kernel, SIGNATURE, 2, 256, args)
        graph = stream.end_capture()
        y.fill(np.nan)
        other = cupy.zeros((n, 2), np.float32)
        for _ in range(3):                      # other parameters packed meanwhile
            fast_launch.launch(_kernel, SIGNATURE, 1, 32, (x, other, False, 1, 0.0, 0, 0.0, cube))
        graph.launch(stream)
        stream.synchronize()
    want = cupy.asnumpy(x).astype(np.float64) * -2.0 + cupy.asnumpy(cube)[0, 0] + 5 + 0.125
    np.testing.assert_allclose(cupy.asnumpy(y)[:, 0], want, rtol=1e-6, atol=1e-5)
    assert np.isnan(cupy.asnumpy(y)[:, 1]).all()
