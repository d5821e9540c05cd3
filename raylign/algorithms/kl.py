"""KL-coefficient controllers: a fixed coefficient, or one steered towards a target KL.

The KL estimator itself is `raylign.algorithms.core.k3` (and PPO's per-token k1 penalty).
"""

from __future__ import annotations


class FixedKLController:
    """A constant KL coefficient; `update` is a no-op kept for a uniform interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Ziegler et al. (2019): steer the observed KL towards `target`.

    error = clip(KL / target - 1, -0.2, 0.2); value *= 1 + error * n_steps / horizon,
    where n_steps is the number of samples (or steps) seen since the last update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def make_kl_controller(config) -> FixedKLController | AdaptiveKLController:
    """The controller a method's config asks for (`kl_coef`, `adaptive_kl`, `kl_target`, `kl_horizon`)."""
    if config.adaptive_kl:
        return AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
    return FixedKLController(config.kl_coef)
