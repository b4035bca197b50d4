"""Where a captured training step first differs from eager: one line per way of capturing it.

Session 20's GPU run replayed a NaN loss in tests/test_cuda_graphs.py's hand-written SGD step
(``p -= 0.1 * p.grad; p.grad.zero_()`` captured by hand) with packed launches
(``GPUDL_LAUNCH=cupy``), while every whole-step capture in torch's recipe passed. That test
says only that the first replay's loss is NaN. This probe captures the same MLP step in parts,
under each condition that differs between the two tests, and compares each replay with the
same computation done eagerly on a twin model, so that one run on a GPU says where it breaks:

- ``body``: what the graph holds: ``forward`` (the loss), ``backward`` (and the gradients),
  ``step`` (and the hand-written update, then ``p.grad.zero_()``), ``recipe`` (forward, backward and an SGD optimizer
  step, as torch's whole-step recipe);
- ``grads``: whether ``.grad`` exists when the capture starts (``kept``: the hand-written
  test's, accumulated into in place) or not (``none``: the recipe's ``zero_grad(set_to_none=
  True)``, the capture allocates them);
- ``warmup``: the eager warm-up step on the current stream (``current``, the hand-written
  test's) or on a side stream (``side``, torch's recipe);
- ``launcher``: Numba's for every launch (``numba``, session 20's default), the packed one for
  every launch (``packed``, session 20's failing case), or the packed one eagerly and Numba's
  inside the capture (``hybrid``, the default since session 21); the last two on a GPU only.

For each: replays of three batches against eager, the largest relative difference of the loss,
the logits, every gradient and every parameter after the replay, and which of them holds a
NaN first. On the CPU (and under the simulator) the capture is gpudl's call recorder: every
line must read ``ok`` there (tests/test_graph_probe.py runs it). Usage, on a GPU::

    GPUDL_DEVICE=cuda python -m tools.graph_probe [--markdown FILE]
"""

import argparse
import itertools

import numpy as np

import gpudl as gd
from gpudl import backend, nn

BODIES = ("forward", "backward", "step", "recipe")
# launcher: (kernels.launch.FAST_LAUNCH, kernels.fast_launch.IN_CAPTURE)
LAUNCHERS = {"numba": (False, False), "packed": (True, True), "hybrid": (True, False)}
LR = 0.1
TOLERANCE = 2e-4        # relative: float32 rounding between two equal computations, a few ulps


def _model():
    gd.manual_seed(6)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _batches(n, seed=11):
    rng = np.random.default_rng(seed)
    return [(gd.tensor(rng.standard_normal((8, 6)).astype(np.float32)),
             gd.tensor(rng.integers(0, 3, 8))) for _ in range(n)]


class _Step:
    """One body on one model: ``run(x, y)`` does it (eagerly or into a capture) and returns
    the tensors to compare: loss, logits, gradients, parameters."""

    def __init__(self, body, model):
        self.body, self.model = body, model
        self.opt = gd.optim.SGD(model.parameters(), lr=LR) if body == "recipe" else None

    def run(self, x, y):
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if self.body != "forward":
            loss.backward()
        if self.body == "step":
            with gd.no_grad():
                for p in self.model.parameters():
                    p -= LR * p.grad
                    p.grad.zero_()
        elif self.body == "recipe":
            self.opt.step()
        return loss, logits

    def clear_grads(self, to_none):
        for p in self.model.parameters():
            if to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


def _values(model, loss, logits):
    out = {"loss": loss.numpy().copy(), "logits": logits.detach().numpy().copy()}
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[f"{name}.grad"] = p.grad.numpy().copy()
        out[name] = p.detach().numpy().copy()
    return out


def _compare(got, want):
    """(largest relative difference over every compared array, the first name holding a NaN
    where eager has none, names missing from the replay)."""
    worst, first_nan, missing = 0.0, None, []
    for name, w in want.items():
        if name not in got:
            missing.append(name)
            continue
        g = np.asarray(got[name], np.float64)
        w = np.asarray(w, np.float64)
        if first_nan is None and np.isnan(g).any() and not np.isnan(w).any():
            first_nan = name
        scale = max(float(np.abs(w).max(initial=0.0)), 1e-6)
        worst = max(worst, float(np.nan_to_num(np.abs(g - w), nan=np.inf).max(initial=0.0))
                    / scale)
    return worst, first_nan, missing


def probe(body, grads, warmup, launcher, replays=3, after_capture=None):
    """One configuration: {'worst': relative difference, 'first_nan': name or None,
    'missing': [...], 'replay': index of the first replay that differs or None}.
    ``after_capture(model)``, when given, runs on the graphed model once captured (tests: a
    change the probe must see)."""
    from gpudl.kernels import fast_launch, launch
    data = _batches(replays + 1)
    eager, graphed = _Step(body, _model()), _Step(body, _model())
    saved = launch.FAST_LAUNCH, fast_launch.IN_CAPTURE
    launch.FAST_LAUNCH, fast_launch.IN_CAPTURE = LAUNCHERS[launcher]
    try:
        on_gpu = backend._cupy is not None
        # warm-up on batch 0: kernels built and loaded, .grad made (torch asks for it on a GPU)
        if warmup == "side" and on_gpu:
            side = gd.cuda.Stream()
            side.wait_stream(gd.cuda.current_stream())
            with gd.cuda.stream(side):
                graphed.run(*data[0])
            gd.cuda.current_stream().wait_stream(side)
        else:
            graphed.run(*data[0])
        eager.run(*data[0])
        graphed.clear_grads(grads == "none")
        eager.clear_grads(grads == "none")
        static_x, static_y = data[1][0].clone(), data[1][1].clone()
        g = gd.cuda.CUDAGraph()
        with gd.cuda.graph(g):
            static_loss, static_logits = graphed.run(static_x, static_y)
        if after_capture is not None:
            after_capture(graphed.model)
        result = {"worst": 0.0, "first_nan": None, "missing": [], "replay": None}
        for replay, (x, y) in enumerate(data[1:]):
            # kept: backward adds into .grad, so both start each step from zero; none: the
            # captured backward wrote new .grad arrays, which each replay overwrites, as an
            # eager backward into .grad = None does
            if grads == "kept":
                graphed.clear_grads(False)
            eager.clear_grads(grads == "none")
            static_x.copy_(x)
            static_y.copy_(y)
            g.replay()
            want = _values(eager.model, *eager.run(x, y))
            got = _values(graphed.model, static_loss, static_logits)
            worst, first_nan, missing = _compare(got, want)
            if result["replay"] is None and (worst > TOLERANCE or first_nan or missing):
                result.update(worst=worst, first_nan=first_nan, missing=missing, replay=replay)
            result["worst"] = max(result["worst"], worst)
        return result
    finally:
        launch.FAST_LAUNCH, fast_launch.IN_CAPTURE = saved


def configurations():
    """Every (body, grads, warmup, launcher) this machine can run."""
    launchers = tuple(LAUNCHERS) if backend._cupy is not None else ("numba",)
    return list(itertools.product(BODIES, ("kept", "none"), ("current", "side"), launchers))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.graph_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", metavar="FILE", help="also write the table here")
    args = parser.parse_args(argv)
    rows = ["| body | .grad at capture | warm-up | launcher | verdict | first replay off | "
            "worst rel. diff | first NaN | missing |", "|---|---|---|---|---|---|---|---|---|"]
    failed = 0
    for config in configurations():
        try:
            r = probe(*config)
            bad = r["replay"] is not None
            verdict = "DIFFERS" if bad else "ok"
            cells = [verdict, "-" if r["replay"] is None else str(r["replay"]),
                     f"{r['worst']:.2e}", r["first_nan"] or "-", ", ".join(r["missing"]) or "-"]
        except Exception as exc:  # noqa: BLE001 - every configuration is reported
            bad = True
            cells = [f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", "-", "-",
                     "-", "-"]
        failed += bad
        rows.append("| " + " | ".join(list(config) + cells) + " |")
        print(rows[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(rows) + "\n")
    print(f"{len(rows) - 2 - failed} ok, {failed} differ or fail")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
