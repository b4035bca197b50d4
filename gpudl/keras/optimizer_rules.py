"""Keras 3's update rules for Adamax, Nadam, Adadelta, Lion and Lamb, as gpudl optimizers.

gpudl.optim's Adamax, NAdam and Adadelta follow PyTorch, whose formulas differ from Keras's
(where epsilon goes, NAdam's momentum schedule, Adadelta's learning rate of 1.0); these follow
Keras's ``update_step`` exactly. ``t`` is the parameter's update count, 1 for the first.
Keras's ``weight_decay`` is decoupled: ``p -= lr * weight_decay * p`` before the update.
"""

from .. import backend, optim
from ..optim.optimizer import new_state_buffer


class KerasRule(optim.Optimizer):
    """A Keras update rule: ``buffers`` names the state (zeros at first), ``rule`` updates
    ``param`` in place from ``grad`` (raw device arrays)."""

    buffers = ()

    def __init__(self, params, lr, weight_decay=0.0, **options):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, **options))

    def _init_state(self, param, group):
        state = {"step": 0}
        state.update((name, new_state_buffer(param)) for name in self.buffers)
        return state

    def _update(self, param, grad, state, group):
        state["step"] += 1
        if group["weight_decay"]:
            param -= group["lr"] * group["weight_decay"] * param
        arrays = {name: state[name]._data for name in self.buffers}
        self.rule(backend.get_array_module(param), param, grad, arrays, state, group)


class KerasAdamax(KerasRule):
    """``m += (g - m)(1 - b1)``, ``u = max(b2 u, |g|)``, ``p -= lr m / ((1 - b1^t)(u + eps))``."""

    buffers = ("m", "u")

    def rule(self, xp, param, grad, s, state, group):
        beta_1, beta_2 = group["betas"]
        s["m"] += (grad - s["m"]) * (1 - beta_1)
        xp.maximum(beta_2 * s["u"], xp.abs(grad), out=s["u"])
        param -= group["lr"] * s["m"] / ((1 - beta_1 ** state["step"]) * (s["u"] + group["eps"]))


class KerasNadam(KerasRule):
    """Keras's Nadam: Adam with Dozat's momentum schedule ``u_t = b1 (1 - 0.5 * 0.96^t)``,
    ``m_hat = u_{t+1} m / (1 - prod u_1..u_{t+1}) + (1 - u_t) g / (1 - prod u_1..u_t)``,
    ``p -= lr m_hat / (sqrt(v / (1 - b2^t)) + eps)``."""

    buffers = ("m", "v")

    def _init_state(self, param, group):
        state = super()._init_state(param, group)
        state["u_product"] = 1.0
        return state

    def rule(self, xp, param, grad, s, state, group):
        beta_1, beta_2 = group["betas"]
        t = state["step"]
        u_t = beta_1 * (1 - 0.5 * 0.96 ** t)
        u_next = beta_1 * (1 - 0.5 * 0.96 ** (t + 1))
        state["u_product"] *= u_t
        product = state["u_product"]
        s["m"] += (grad - s["m"]) * (1 - beta_1)
        s["v"] += (grad * grad - s["v"]) * (1 - beta_2)
        m_hat = u_next * s["m"] / (1 - product * u_next) + (1 - u_t) * grad / (1 - product)
        v_hat = s["v"] / (1 - beta_2 ** t)
        param -= group["lr"] * m_hat / (xp.sqrt(v_hat) + group["eps"])


class KerasAdadelta(KerasRule):
    """``a = rho a + (1 - rho) g^2``, ``d = -sqrt(D + eps) g / sqrt(a + eps)``,
    ``D = rho D + (1 - rho) d^2``, ``p += lr d``."""

    buffers = ("grad_average", "delta_average")

    def rule(self, xp, param, grad, s, state, group):
        rho, eps = group["rho"], group["eps"]
        s["grad_average"] *= rho
        s["grad_average"] += (1 - rho) * grad * grad
        delta = -xp.sqrt(s["delta_average"] + eps) * grad / xp.sqrt(s["grad_average"] + eps)
        s["delta_average"] *= rho
        s["delta_average"] += (1 - rho) * delta * delta
        param += group["lr"] * delta


class KerasLion(KerasRule):
    """``p -= lr sign(b1 m + (1 - b1) g)``, then ``m = b2 m + (1 - b2) g``."""

    buffers = ("m",)

    def rule(self, xp, param, grad, s, state, group):
        beta_1, beta_2 = group["betas"]
        param -= group["lr"] * xp.sign(beta_1 * s["m"] + (1 - beta_1) * grad)
        s["m"] *= beta_2
        s["m"] += (1 - beta_2) * grad


class KerasLamb(KerasRule):
    """Adam's step ``r = m_hat / (sqrt(v_hat) + eps)`` scaled by the trust ratio
    ``|p| / |r|`` (1 when either norm is 0): ``p -= ratio * lr * r``."""

    buffers = ("m", "v")

    def rule(self, xp, param, grad, s, state, group):
        beta_1, beta_2 = group["betas"]
        t = state["step"]
        s["m"] += (grad - s["m"]) * (1 - beta_1)
        s["v"] += (grad * grad - s["v"]) * (1 - beta_2)
        update = s["m"] / (1 - beta_1 ** t) / (xp.sqrt(s["v"] / (1 - beta_2 ** t)) +
                                               group["eps"])
        weight_norm, update_norm = xp.sqrt((param * param).sum()), xp.sqrt((update * update).sum())
        ratio = xp.where((weight_norm > 0) & (update_norm > 0),
                         weight_norm / xp.where(update_norm > 0, update_norm, 1), 1)
        param -= ratio * group["lr"] * update


class KerasFtrl(KerasRule):
    """Follow-the-regularized-leader (Keras's form): with ``n' = n + g^2``,
    ``z += g + 2 l2_shrinkage p - (n'^-power - n^-power) / lr * p``,
    ``p = (clip(z, -l1, l1) - z) / (n'^-power / lr + 2 (l2 + beta / (2 lr)))``, ``n = n'``."""

    buffers = ("accumulator", "linear")

    def _init_state(self, param, group):
        state = super()._init_state(param, group)
        state["accumulator"] = new_state_buffer(param, group["initial_accumulator_value"])
        return state

    def rule(self, xp, param, grad, s, state, group):
        lr, power, l1 = group["lr"], -group["learning_rate_power"], group["l1"]
        l2 = group["l2"] + group["beta"] / (2.0 * lr)
        new_accumulator = s["accumulator"] + grad * grad
        s["linear"] += grad + 2 * group["l2_shrinkage"] * param - (
            new_accumulator ** power - s["accumulator"] ** power) / lr * param
        quadratic = new_accumulator ** power / lr + 2 * l2
        param[...] = (xp.clip(s["linear"], -l1, l1) - s["linear"]) / quadratic
        s["accumulator"][...] = new_accumulator
