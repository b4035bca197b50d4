"""The CPU size grid (issue 18): tiny, benchmark and large shapes of every CPU twin, two models.

Each entry is ``(name, build)`` with ``build(lib)`` returning a step callable, written once
against ``lib`` (``gpudl`` or ``torch``), so ``python -m benchmarks.compare --grid`` times both
side by side and ``bench_grid.py`` runs the same steps under asv. "fwd" marks forward-only rows;
every other row is forward + backward. Imports neither library itself.
"""

from benchmarks.workloads import lenet_step, randn, train_step


def _backward(out):
    out.sum().backward()


def conv(n, c, hw, k, ks, stride=1, padding=1):
    def build(lib):
        F = lib.nn.functional
        x = randn(lib, "cpu", n, c, hw, hw, grad=True)
        w = randn(lib, "cpu", k, c, ks, ks, grad=True)
        b = randn(lib, "cpu", k, grad=True)
        return lambda: _backward(F.conv2d(x, w, b, stride=stride, padding=padding))
    return build


def pool(kind, shape, ks, stride=None, padding=0, forward_only=False):
    def build(lib):
        F = lib.nn.functional
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        x = randn(lib, "cpu", *shape, grad=not forward_only)
        if forward_only:
            return lambda: fn(x, ks, stride, padding)
        return lambda: _backward(fn(x, ks, stride, padding))
    return build


def rnn(kind, inp, hidden, batch, seq):
    def build(lib):
        layer = getattr(lib.nn, kind)(inp, hidden)
        x = randn(lib, "cpu", seq, batch, inp, grad=True)
        return lambda: _backward(layer(x)[0])
    return build


def sdpa(shape, causal, forward_only=False):
    def build(lib):
        F = lib.nn.functional
        q, k, v = (randn(lib, "cpu", *shape, grad=not forward_only) for _ in range(3))
        if forward_only:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return lambda: _backward(F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    return build


def transformer_step(lib, batch=8, seq=32, d_model=64, heads=4):
    """One Adam step of a 2-layer transformer encoder + linear head, (batch, seq, d_model)."""
    nn = lib.nn
    layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.0,
                                       batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2)
    head = nn.Linear(d_model, 10)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = lib.optim.Adam(params, lr=1e-3)
    x = randn(lib, "cpu", batch, seq, d_model)
    y = lib.randint(0, 10, (batch,), device="cpu")
    return train_step(lambda inp: head(encoder(inp).mean(1)), nn.CrossEntropyLoss(), opt, x, y)


GRID = [
    ("conv2d 3x3 tiny (2,4,16,16) x 8", conv(2, 4, 16, 8, 3)),
    ("conv2d 3x3 (32,16,32,32) x 32", conv(32, 16, 32, 32, 3)),
    ("conv2d 3x3 large (32,32,32,32) x 64", conv(32, 32, 32, 64, 3)),
    ("conv2d 1x1 tiny (2,8,16,16) x 8", conv(2, 8, 16, 8, 1, padding=0)),
    ("conv2d 1x1 (32,64,28,28) x 64", conv(32, 64, 28, 64, 1, padding=0)),
    ("conv2d 1x1 large (32,128,28,28) x 128", conv(32, 128, 28, 128, 1, padding=0)),
    ("conv2d 7x7 s2 tiny (2,3,32,32) x 8", conv(2, 3, 32, 8, 7, 2, 3)),
    ("conv2d 7x7 s2 (8,3,112,112) x 32", conv(8, 3, 112, 32, 7, 2, 3)),
    ("conv2d 7x7 s2 large (16,3,224,224) x 64", conv(16, 3, 224, 64, 7, 2, 3)),
    ("max_pool2d 3x3 s2 tiny (2,4,16,16)", pool("max", (2, 4, 16, 16), 3, 2)),
    ("max_pool2d 2x2 (32,16,32,32)", pool("max", (32, 16, 32, 32), 2)),
    ("max_pool2d 2x2 large (32,32,64,64)", pool("max", (32, 32, 64, 64), 2)),
    ("avg_pool2d 3x3 s2 tiny (2,4,16,16) fwd", pool("avg", (2, 4, 16, 16), 3, 2,
                                                    forward_only=True)),
    ("avg_pool2d 3x3 s2 tiny (2,4,16,16)", pool("avg", (2, 4, 16, 16), 3, 2)),
    ("avg_pool2d 2x2 (32,16,32,32)", pool("avg", (32, 16, 32, 32), 2)),
    ("avg_pool2d 2x2 large (32,32,64,64)", pool("avg", (32, 32, 64, 64), 2)),
    ("LSTM tiny 8->16 batch 2 T 8", rnn("LSTM", 8, 16, 2, 8)),
    ("LSTM 64->128 batch 16 T 32", rnn("LSTM", 64, 128, 16, 32)),
    ("LSTM large 64->128 batch 16 T 256", rnn("LSTM", 64, 128, 16, 256)),
    ("GRU tiny 8->16 batch 2 T 8", rnn("GRU", 8, 16, 2, 8)),
    ("GRU 64->128 batch 16 T 32", rnn("GRU", 64, 128, 16, 32)),
    ("GRU large 64->128 batch 16 T 256", rnn("GRU", 64, 128, 16, 256)),
    ("SDPA tiny (1,2,64,16) fwd", sdpa((1, 2, 64, 16), False, forward_only=True)),
    ("SDPA tiny (1,2,64,16)", sdpa((1, 2, 64, 16), False)),
    ("SDPA d32 (4,4,256,32)", sdpa((4, 4, 256, 32), False)),
    ("SDPA causal d32 (4,4,256,32)", sdpa((4, 4, 256, 32), True)),
    ("SDPA d64 (1,4,1024,64)", sdpa((1, 4, 1024, 64), False)),
    ("SDPA causal d64 (1,4,1024,64)", sdpa((1, 4, 1024, 64), True)),
    ("SDPA d128 (1,4,1024,128)", sdpa((1, 4, 1024, 128), False)),
    ("SDPA causal d128 (1,4,1024,128)", sdpa((1, 4, 1024, 128), True)),
    ("LeNet-5 SGD-momentum step, batch 64", lambda lib: lenet_step(lib, "cpu")),
    ("transformer 2x(d64 h4) Adam step, (8,32,64)", transformer_step),
]
