"""Moved to `raylign.scoring.reward_client` (the `http` reward source uses it); this name keeps
working for one release."""

from raylign.scoring.reward_client import RewardClient, RewardServiceError  # noqa: F401
