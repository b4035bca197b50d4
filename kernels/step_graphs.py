"""A recurrent layer's per-step loop captured once as a CUDA graph and replayed.

Layers that no persistent kernel takes (GRU, plain RNN, float64, LSTMs wider than the grid
kernels) launch two kernels or more per time step. On a GPU (not under the simulator, and not
inside a user's own capture, which takes these launches into its graph anyway) kernels/lstm.py
hands such a loop to ``StepGraphs.run``: the first call for a key (mode, direction, pass, T, B,
H, dtype) runs the loop as it is (kernels compile, cuBLAS sets up; a shape met once, such as a
last short batch, costs no capture); the second allocates the loop's buffers, captures the loop
on them with ``gd.cuda.CUDAGraph`` (a stream synchronisation and a garbage collection, once per
key) and keeps the buffers and the graph. Every call from then on copies its arrays into those
buffers, replays the graph (one launch instead of 2T or more) and copies them back. The copies are the price of the fixed addresses a graph needs: the caller's
arrays are fresh each call and must stay its own (a second layer of the same shape runs before
the first one's backward reads what it saved). At most ``capacity`` keys are kept (least
recently used dropped), so a run over many sequence lengths does not hold a graph per length.
"""

from collections import OrderedDict

from gpudl import backend


def _cuda_capture(run):
    """Capture ``run()`` as a CUDA graph with the project's machinery; returns the replay."""
    from gpudl import cuda_graphs
    g = cuda_graphs.CUDAGraph()
    # relaxed: a capture the user did not ask for must not forbid other threads (a data
    # loader's) their device calls, as the default "global" mode would
    with cuda_graphs.graph(g, capture_error_mode="relaxed"):
        run()
    return g.replay


class StepGraphs:
    """Captured step loops keyed by shape; ``capture(run)`` returns a callable replaying
    ``run`` (CUDA graphs by default; tests pass a plain re-run)."""

    def __init__(self, capacity=8, capture=_cuda_capture):
        self.capacity, self.capture = capacity, capture
        self._entries = OrderedDict()       # key -> (buffers, replay)
        self._seen = OrderedDict()          # keys run once, not captured yet (bounded)
        self.captures = 0                   # how many loops were captured (tests read it)

    def __len__(self):
        return len(self._entries)

    def clear(self):
        self._entries.clear()
        self._seen.clear()

    def run(self, key, body, arrays):
        """Run ``body(arrays)`` (in place on ``arrays``: arrays and plain values) through the
        graph kept for ``key``, capturing it first if there is none."""
        entry = self._entries.get(key)
        if entry is None and key not in self._seen:
            self._seen[key] = None
            while len(self._seen) > 4 * self.capacity:
                self._seen.popitem(last=False)
            body(arrays)
            return
        if entry is None:
            del self._seen[key]
            entry = self._entries[key] = self._capture(body, arrays)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        buffers, replay = entry
        _copy(arrays, buffers)
        replay()
        _copy(buffers, arrays)

    def _capture(self, body, arrays):
        buffers = [backend.get_array_module(a).empty_like(a) if _is_array(a) else a
                   for a in arrays]
        replay = self.capture(lambda: body(buffers))    # the first call compiled the kernels
        self.captures += 1
        return buffers, replay


def _is_array(a):
    return hasattr(a, "shape") and hasattr(a, "dtype") and getattr(a, "ndim", 0) > 0


def _copy(source, target):
    for s, t in zip(source, target):
        if _is_array(s) and s is not t:
            t[...] = s
