"""Surviving dead actors: a sampler, reward or reference actor that dies mid-run is restarted
by Ray (`max_restarts`), gets the current policy weights again, and its unfinished work is
retried, so no prompt is lost and none is trained twice.

Actors here are stateless apart from the samplers' weights, which the trainer's weight sync
also leaves with the run's `RolloutBuffer` (`set_latest_weights`), where a restarted sampler
fetches them. A role that is not back within `timeout_s`, or fails the same step more than
`retries` times (samplers), ends the run with an error that names it.
"""

from __future__ import annotations

import time
from typing import Callable

import ray

ACTOR_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class RoleFailedError(RuntimeError):
    """An actor role (sampler-N, reward, reference) could not finish its work."""


def when_alive(call: Callable, role: str, timeout_s: float = 300.0, poll_s: float = 1.0):
    """`ray.get(call())`, re-submitted while the actor is down and being restarted (an
    idempotent call only: a version query, a weight load, a pure scoring call)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(call())
        except ACTOR_LOST as err:
            if time.monotonic() > deadline:
                raise RoleFailedError(f"{role} is down and did not come back within {timeout_s:.0f} s "
                                      f"({type(err).__name__}); raise its max_restarts or check its logs") from None
            time.sleep(poll_s)


def restore_sampler(sampler, role: str, buffer=None, timeout_s: float = 300.0) -> int:
    """Wait for a restarted sampler and give it the newest policy weights; returns its version.
    Before the first sync it already serves the starting weights it was created with."""
    latest = ray.get(buffer.latest_weights.remote()) if buffer is not None else None
    if latest is not None:
        (weights,), version = latest
        when_alive(lambda: sampler.load_state_dict.remote(weights, version), role, timeout_s)
    return when_alive(lambda: sampler.policy_version.remote(), role, timeout_s)
