"""L-BFGS (torch.optim.LBFGS): quasi-Newton steps from a limited history of gradient changes,
with an optional strong-Wolfe line search, on the parameters as one flat vector.

The two-loop recursion and the line search (bracketing, then zooming by cubic interpolation) are
those of Nocedal & Wright, Numerical Optimization (algorithms 7.4, 3.5 and 3.6) with the
safeguards and stopping rules of torch.optim.LBFGS, so the same closure gives the same parameters.
Scalars (dot products, losses) are read to the host: each iteration decides on them.
"""

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import enable_grad, no_grad, recorded
from ..tensor import Tensor
from .optimizer import Optimizer, check_range

_VECTORS = ("d", "prev_flat_grad")            # state entries holding one flat vector
_VECTOR_LISTS = ("old_dirs", "old_stps")      # ... a list of them


def _host(array):
    return float(backend.host_value(array, "LBFGS"))


def _dot(a, b):
    return _host(backend.get_array_module(a).dot(a, b))


def _max_abs(a):
    return _host(abs(a).max())


def _cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1), (x2, f2) with slopes g1, g2, kept within
    ``bounds`` (default: between x1 and x2); the bounds' middle when the cubic has none."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square < 0:
        return (low + high) / 2.0
    d2 = math.sqrt(d2_square)
    if x1 <= x2:
        t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(t, low), high)


def _strong_wolfe(evaluate, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9,
                  max_ls=25):
    """A step t along d meeting the strong Wolfe conditions (sufficient decrease c1, curvature
    c2), from loss f, flat gradient g and slope gtd at t = 0; ``evaluate(t)`` gives (loss,
    gradient) at t. Returns (loss, gradient, t, evaluations). Points are (t, f, g, slope)."""
    d_norm = _max_abs(d)
    start = (0, f, g, gtd)
    previous = start
    f_new, g_new = evaluate(t)
    evaluations, tries = 1, 0
    current = (t, f_new, g_new, _dot(g_new, d))
    bracket, done = None, False
    while tries < max_ls:                      # widen the step until a bracket holds a point
        t, f_new, _, gtd_new = current
        if f_new > f + c1 * t * gtd or (tries > 1 and f_new >= previous[1]):
            bracket = [previous, current]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [current], True
            break
        if gtd_new >= 0:
            bracket = [previous, current]
            break
        t_next = _cubic_minimum(previous[0], previous[1], previous[3], t, f_new, gtd_new,
                                bounds=(t + 0.01 * (t - previous[0]), t * 10))
        previous = current
        f_new, g_new = evaluate(t_next)
        evaluations, tries = evaluations + 1, tries + 1
        current = (t_next, f_new, g_new, _dot(g_new, d))
    if tries == max_ls:
        bracket = [start, current]
    low, high = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
    stalled = False
    while not done and tries < max_ls:         # zoom into the bracket
        (t0, f0, _, s0), (t1, f1, _, s1) = bracket
        if abs(t1 - t0) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(t0, f0, s0, t1, f1, s1)
        top, bottom = max(t0, t1), min(t0, t1)
        margin = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < margin:   # too near an end: move in, unless it is new
            if stalled or t >= top or t <= bottom:
                t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evaluations, tries = evaluations + 1, tries + 1
        point = (t, f_new, g_new, _dot(g_new, d))
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = point
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(point[3]) <= -c2 * gtd:
                done = True
            elif point[3] * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = point
    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evaluations


def _two_loop(neg_grad, old_dirs, old_stps, ro, H_diag, al):
    """The L-BFGS direction: the inverse-Hessian estimate (from the history of gradient changes
    y, steps s and ro = 1 / y.s, scaled by H_diag) times ``neg_grad`` (overwritten)."""
    q = neg_grad
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = _dot(old_stps[i], q) * ro[i]
        q += -al[i] * old_dirs[i]
    r = q * H_diag
    for i in range(len(old_dirs)):
        r += (al[i] - _dot(old_dirs[i], r) * ro[i]) * old_stps[i]
    return r


def _check_count(what, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"LBFGS: {what} must be a positive int, got {value!r}")


class LBFGS(Optimizer):
    """torch.optim.LBFGS: up to ``max_iter`` quasi-Newton iterations per ``step(closure)``
    (``max_eval`` closure calls, default ``max_iter * 5 // 4``), from the last ``history_size``
    gradient changes; stops early when the largest gradient entry is at most ``tolerance_grad``
    or a step or loss change is below ``tolerance_change``. ``line_search_fn='strong_wolfe'``
    searches each step; otherwise steps are ``lr`` along the direction (``lr * min(1, 1 /
    |g|_1)`` at the first). One parameter group only; the closure must clear the gradients,
    compute the loss, call backward and return the loss.

    Example:
        >>> opt = gd.optim.LBFGS(model.parameters(), line_search_fn="strong_wolfe")
        >>> def closure():
        ...     opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); return loss
        >>> opt.step(closure)
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        if max_eval is None and isinstance(max_iter, numbers.Integral):
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS: takes one parameter group (no per-parameter options), "
                             f"got {len(self.param_groups)}")

    def _check_group(self, group):
        for what in ("lr", "tolerance_grad", "tolerance_change"):
            check_range("LBFGS", what, group[what])
        for what in ("max_iter", "max_eval", "history_size"):
            _check_count(what, group[what])
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got "
                             f"{group['line_search_fn']!r}")

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS: takes one parameter group (no per-parameter options)")
        super().add_param_group(param_group)

    # ----------------------------------------------------------------- the flat vector
    def _params(self):
        return self.param_groups[0]["params"]

    def _flat_grad(self):
        xp = backend.get_array_module(self._params()[0]._data)
        return xp.concatenate([p.grad._data.reshape(-1) if p.grad is not None
                               else xp.zeros(p._data.size, p._data.dtype)
                               for p in self._params()])

    def _add_step(self, t, direction):
        """Parameters += t * direction (the flat vector cut to their shapes)."""
        offset = 0
        for p in self._params():
            n = p._data.size
            p._data += t * direction[offset:offset + n].reshape(p._data.shape)
            p._bump_version()
            offset += n

    def _restore(self, saved):
        for p, array in zip(self._params(), saved):
            p._data[...] = array
            p._bump_version()

    # ----------------------------------------------------------------- stepping
    @recorded("refused")
    def step(self, closure=None):
        """Run up to ``max_iter`` iterations; ``closure()`` re-evaluates the loss (with its
        gradients). Returns the loss the first closure call gave."""
        if not callable(closure):
            raise TypeError(f"LBFGS.step: needs a closure that computes the loss and its "
                            f"gradients, got {type(closure).__name__}")

        def evaluate():
            with enable_grad():
                return closure()

        with no_grad():
            return self._iterate(evaluate)

    def _iterate(self, evaluate):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        params = self._params()
        state = self.state.setdefault(params[0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        first_loss = evaluate()
        loss = float(first_loss)
        evaluations = 1
        state["func_evals"] += 1
        flat_grad = self._flat_grad()
        if _max_abs(flat_grad) <= tolerance_grad:
            return first_loss
        raw = {k: _raw(state.get(k)) for k in _VECTORS + _VECTOR_LISTS}
        d, prev_flat_grad = raw["d"], raw["prev_flat_grad"]
        old_dirs, old_stps = raw["old_dirs"], raw["old_stps"]
        t, ro, H_diag, prev_loss = (state.get(k) for k in ("t", "ro", "H_diag", "prev_loss"))
        iteration = 0
        while iteration < max_iter:
            iteration += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, H_diag = [], [], [], 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(y, s)
                if ys > 1e-10:                 # keep the pair only where curvature is positive
                    if len(old_dirs) == group["history_size"]:
                        for history in (old_dirs, old_stps, ro):
                            history.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(y, y)
                al = state.setdefault("al", [None] * group["history_size"])
                d = _two_loop(-flat_grad, old_dirs, old_stps, ro, H_diag, al)
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            t = min(1.0, 1.0 / _host(abs(flat_grad).sum())) * lr if state["n_iter"] == 1 else lr
            gtd = _dot(flat_grad, d)
            if gtd > -tolerance_change:        # not a descent direction
                break
            step_evaluations = 0
            if group["line_search_fn"] == "strong_wolfe":
                start = [p._data.copy() for p in params]

                def along(step):
                    self._add_step(step, d)
                    loss_there = float(evaluate())
                    grad_there = self._flat_grad()
                    self._restore(start)
                    return loss_there, grad_there

                loss, flat_grad, t, step_evaluations = _strong_wolfe(
                    along, t, d, loss, flat_grad, gtd, max_ls=max_eval - evaluations)
                self._add_step(t, d)
                converged = _max_abs(flat_grad) <= tolerance_grad
            else:
                self._add_step(t, d)
                converged = False
                if iteration != max_iter:      # the last iteration's loss is not needed
                    loss = float(evaluate())
                    flat_grad = self._flat_grad()
                    converged = _max_abs(flat_grad) <= tolerance_grad
                    step_evaluations = 1
            evaluations += step_evaluations
            state["func_evals"] += step_evaluations
            if iteration == max_iter or evaluations >= max_eval or converged:
                break
            if _max_abs(d * t) <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        device = params[0].device
        state.update(d=_wrap(d, device), t=t, old_dirs=_wrap(old_dirs, device),
                     old_stps=_wrap(old_stps, device), ro=ro, H_diag=H_diag,
                     prev_flat_grad=_wrap(prev_flat_grad, device), prev_loss=prev_loss)
        return first_loss

    # ----------------------------------------------------------------- state dict
    def _loaded_state(self, index, key, value, param):
        """LBFGS's state (on its first parameter) holds flat vectors, lists of them and
        numbers, not arrays shaped like the parameter."""
        if key in _VECTORS or key in _VECTOR_LISTS:
            return _wrap(_loaded_vector(value, param), param.device)
        if key in ("func_evals", "n_iter"):
            return int(_loaded_number(value))
        if isinstance(value, (list, tuple)):                       # ro, al
            return [None if v is None else _loaded_number(v) for v in value]
        return None if value is None else _loaded_number(value)   # t, H_diag, prev_loss


def _raw(value):
    """A state entry's arrays (a Tensor's, or each of a list's), None as is."""
    if isinstance(value, list):
        return [v._data for v in value]
    return value._data if isinstance(value, Tensor) else value


def _wrap(value, device):
    if value is None:
        return None
    if isinstance(value, list):
        return [_wrap(v, device) for v in value]
    return Tensor._make(value, False, None, 0, device)


def _loaded_number(value):
    if isinstance(value, Tensor):
        value = value._data
    return float(backend.host_value(value, "load_state_dict")) if hasattr(value, "item") \
        else float(value)


def _loaded_vector(value, param):
    """A saved flat vector (or list of them) as arrays on ``param``'s device and dtype."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_loaded_vector(v, param) for v in value]
    array = backend.to_numpy(value._data if isinstance(value, Tensor) else value)
    array = np.array(array, dtype=param.dtype, copy=True).reshape(-1)
    return backend.to_device_array(array, param.device)
