"""KL-coefficient controllers: a fixed coefficient, or one steered towards a target KL.

The KL estimator itself is `raylign.algorithms.core.k3` (and PPO's per-token k1 penalty).
`KLControl` holds the settings every method with a steerable coefficient shares (PPO, GRPO).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from raylign.config import StrictModel


class KLControl(StrictModel):
    """Steer the KL coefficient (the method's `kl_coef` is where it starts) towards `kl_target`:
    a budget of drift from the reference the policy cannot trade for reward, as the fixed
    coefficient lets it do once the reward outgrows the penalty."""

    adaptive_kl: bool = False
    # the per-token KL the run logs as `kl` (nats per response token, not per response)
    kl_target: float = Field(0.1, gt=0.0)
    # rollouts over which a 20% error moves the coefficient 20% (above a fifth of one step's
    # rollouts, or a single update could flip the coefficient's sign)
    kl_horizon: int = Field(10000, ge=1)

    @model_validator(mode="after")
    def _adaptive_needs_a_start(self):
        if self.adaptive_kl and not getattr(self, "kl_coef", 0.0) > 0:
            raise ValueError("adaptive_kl steers kl_coef multiplicatively: set kl_coef > 0 as its start")
        return self


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
