"""KL-coefficient controllers against hand-computed values."""

from __future__ import annotations

import pytest

from raylign.algorithms.kl import AdaptiveKLController, FixedKLController, make_kl_controller
from raylign.algorithms.ppo import PPOConfig


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.value == 0.1
    ctl.update(9.0, 1000)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10000))
    ctl.update(5.4, 1000)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))
    ctl.update(0.0, 1000)  # error -1 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99 * 0.98)


def test_fixed_kl_controller_and_factory():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 10) == 0.05 and ctl.value == 0.05
    assert isinstance(make_kl_controller(PPOConfig()), FixedKLController)
    adaptive = make_kl_controller(PPOConfig(adaptive_kl=True))
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.value == pytest.approx(0.0067)
