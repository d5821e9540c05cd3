"""Surviving dead actors: a sampler, reward or reference actor that dies mid-run is restarted
by Ray (`max_restarts`), gets the current policy weights again, and its unfinished work is
retried, so no prompt is lost and none is trained twice.

Actors here are stateless apart from the samplers' weights, which the trainer's weight sync
also leaves with the run's `RolloutBuffer` (`set_latest_weights`), where a restarted sampler
fetches them. A role that is not back within `timeout_s`, or fails the same step more than
`retries` times (samplers), ends the run with an error that names it.
"""

from __future__ import annotations

import ray

from raylign.runtime import when_alive


def restore_sampler(sampler, role: str, buffer=None, timeout_s: float = 300.0) -> int:
    """Wait for a restarted sampler and give it the newest policy weights; returns its version.
    Before the first sync it already serves the starting weights it was created with."""
    latest = ray.get(buffer.latest_weights.remote()) if buffer is not None else None
    if latest is not None:
        (weights,), version = latest
        when_alive(lambda: sampler.load_state_dict.remote(weights, version), role, timeout_s)
    return when_alive(lambda: sampler.policy_version.remote(), role, timeout_s)
