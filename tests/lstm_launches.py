"""Which LSTM path ran, for the simulator tests of the persistent kernels."""


def count_sequences(monkeypatch, module, refused=()):
    """{"forward": n, "backward": n}: the whole-sequence launches of ``module`` (a kernels module
    with ``SEQUENCES``), counted from now on. The per-step LSTM kernels and the sequences of the
    ``refused`` modules raise, so a test reaching another path fails."""
    from gpudl.kernels import lstm_cuda
    count = {"forward": 0, "backward": 0}

    def counted(fn):
        def run(*args, **kwargs):
            count[fn.__name__] += 1
            return fn(*args, **kwargs)
        return run

    def refuse(*args):
        raise AssertionError("another LSTM path ran")
    monkeypatch.setitem(module.SEQUENCES, "lstm", (counted(module.forward),
                                                  counted(module.backward)))
    for other in refused:
        monkeypatch.setitem(other.SEQUENCES, "lstm", (refuse, refuse))
    monkeypatch.setitem(lstm_cuda.CELLS, "lstm", (refuse, refuse))
    return count
