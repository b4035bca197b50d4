"""What the simulator's convolution tests share: the CPU twin as the reference (every array
treated as a CPU one), the Winograd tests' inputs and tolerance, and one forward-and-backward
comparison."""

import numpy as np

from gpudl import backend
from gpudl.kernels import conv


def on_cpu(monkeypatch, fn, *args):
    """fn(*args) on the CPU twin: the same entry points, every array taken for a CPU one."""
    with monkeypatch.context() as m:
        m.setattr(backend, "kernel_device", lambda array, bfloat16=False: "cpu")
        return fn(*args)


def float64_reference(monkeypatch, fn, *args):
    """fn on the CPU twin in float64 (the direct sum for the Winograd tests' shapes, which are
    below the twin's own Winograd floor)."""
    args = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    return on_cpu(monkeypatch, fn, *args)


def winograd_inputs(rng, N, C, H, W, K, dtype=np.float32):
    """x (N, C, H, W), w (K, C, 3, 3), b (K,): fresh standard normal values."""
    return (rng.standard_normal((N, C, H, W)).astype(dtype),
            rng.standard_normal((K, C, 3, 3)).astype(dtype),
            rng.standard_normal(K).astype(dtype))


def winograd_close(got, want, dtype=np.float32):
    """Within 1e-5 (float32; 1e-12 float64) of the reference, relative to its largest value."""
    assert got.shape == want.shape and got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, np.abs(want).max()))


def forward_and_backward_match(rng, monkeypatch, x, w, b, conf, close, reference,
                               forward=conv.conv2d_forward, backward=conv.conv2d_backward):
    """``forward`` (conv2d's, or conv_transpose2d's), then its three gradients for a fresh random
    gy, each ``close`` to ``reference(monkeypatch, fn, *args)``."""
    y = forward(x, w, b, *conf)
    close(y, reference(monkeypatch, forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    got = backward(x, w, gy, *conf)
    want = reference(monkeypatch, backward, x, w, gy, *conf)
    for g, r in zip(got, want):
        close(g, r)


def winograd_matches(rng, monkeypatch, N, C, H, W, K, p, dtype=np.float32):
    """A 3x3 conv2d padded by p on fresh inputs, forward and backward, against the float64
    direct sum."""
    x, w, b = winograd_inputs(rng, N, C, H, W, K, dtype)
    forward_and_backward_match(rng, monkeypatch, x, w, b, ((1, 1), (p, p), (1, 1), 1),
                               lambda g, r: winograd_close(g, r, dtype), float64_reference)


def winograd_transpose_matches(rng, monkeypatch):
    """A stride-1 3x3 conv_transpose2d with bias, forward and backward, against the float64
    direct sum."""
    x = rng.standard_normal((2, 4, 5, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)    # (Cin, Cout, 3, 3)
    b = rng.standard_normal(3).astype(np.float32)
    forward_and_backward_match(rng, monkeypatch, x, w, b, ((1, 1), (1, 1), (0, 0), 1, (1, 1)),
                               winograd_close, float64_reference,
                               conv.conv_transpose2d_forward, conv.conv_transpose2d_backward)


def winograd_nan_stays_in_its_tiles(rng, monkeypatch):
    """Outputs whose 3x3 window holds no NaN are exact in every tile whose 4x4 patch holds none;
    a NaN output only appears in a tile whose patch reads the NaN input (as cuDNN's Winograd)."""
    N, C, H, W, K, p = 1, 2, 8, 9, 3, 1
    x, w, b = winograd_inputs(rng, N, C, H, W, K)
    bad = (4, 5)                                   # input pixel (row, column)
    x[0, 1, bad[0], bad[1]] = np.nan
    conf = ((1, 1), (p, p), (1, 1), 1)
    y = conv.conv2d_forward(x, w, b, *conf)
    want = float64_reference(monkeypatch, conv.conv2d_forward, x, w, b, *conf)
    oh, ow = np.indices(y.shape[2:])
    # the padded pixel bad + p lies in tile (ty, tx)'s patch iff 2ty <= bad + p <= 2ty + 3
    touched = ((2 * (oh // 2) <= bad[0] + p) & (bad[0] + p <= 2 * (oh // 2) + 3)
               & (2 * (ow // 2) <= bad[1] + p) & (bad[1] + p <= 2 * (ow // 2) + 3))
    clean = ~touched[None, None] & np.isfinite(want)
    assert clean.sum() > 0.7 * clean.size
    np.testing.assert_allclose(y[np.broadcast_to(clean, y.shape)],
                               want[np.broadcast_to(clean, y.shape)], rtol=1e-5, atol=1e-5)
    assert not np.isnan(y[:, :, ~touched]).any()
    assert np.isnan(y[:, :, touched]).any()


def launched_kernels(rng, monkeypatch):
    """The kernels a small 3x3 conv2d forward and backward launches, each launch's arguments
    checked against its signature (launch.check_arguments, which runs under the simulator: a
    GPU's specialised dispatcher would refuse other types)."""
    from gpudl.kernels import launch
    seen = set()
    real = launch.check_arguments

    def spy(kernel, signature, args):
        seen.add(kernel)
        return real(kernel, signature, args)
    monkeypatch.setattr(launch, "check_arguments", spy)
    x, w, b = winograd_inputs(rng, 1, 2, 4, 4, 2)
    y = conv.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    conv.conv2d_backward(x, w, np.ones_like(y), (1, 1), (1, 1), (1, 1), 1)
    return seen


def public_op_matches(rng, monkeypatch):
    """gd.conv2d (3x3, padding 1, strict fp32) forward and backward on cuda tensors (the strict
    simulator's device arrays, which refuse host data as CuPy does) against the float64 direct
    sum: no host array reaches the device path."""
    import gpudl as gd
    monkeypatch.setattr(gd.backends.cudnn, "allow_tf32", False)
    x, w, b = winograd_inputs(rng, 2, 3, 5, 6, 4)
    gy = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    tensors = [gd.tensor(a, requires_grad=True) for a in (x, w, b)]
    assert backend.SIM_DEVICE_ARRAYS and tensors[0].device.type == "cuda"
    y = gd.conv2d(*tensors, padding=1)
    y.backward(gd.tensor(gy))
    conf = ((1, 1), (1, 1), (1, 1), 1)
    winograd_close(y.detach().numpy(),
                   float64_reference(monkeypatch, conv.conv2d_forward, x, w, b, *conf))
    grads = float64_reference(monkeypatch, conv.conv2d_backward, x, w, gy, *conf)
    for t, r in zip(tensors, grads):
        winograd_close(t.grad.numpy(), r)
