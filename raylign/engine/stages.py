"""The rollout stages: sample (with a staleness gate) and score.

The same two functions run inside Ray Data `map_batches` (streaming mode) and
directly from the driver (sequential mode), so both modes compute the same thing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from raylign.engine.recovery import restore_sampler
from raylign.runtime import ACTOR_LOST, RoleFailedError, when_alive
from raylign.scoring.base import RewardSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSettings:
    """Everything the sample stage needs besides the step's prompt rows (one object, handed to
    the Ray Data stage as it is to the sequential loop)."""

    samplers: list
    num_samples: int
    max_staleness: int = 0  # step i is sampled once the samplers serve policy >= i - max_staleness
    wait_timeout_s: float = 1800.0  # engine.staleness_timeout_s
    buffer: Any = None  # the run's RolloutBuffer: its latest weights restore a restarted sampler
    retries: int = 2  # sampling.max_retries_per_step


class StaleBatchError(RuntimeError):
    pass


class StreamStopped(RuntimeError):
    """The run ended (the trainer finished or failed) while this stage waited."""


def wait_for_version(samplers: list, required: int, timeout_s: float = 1800.0, poll_s: float = 0.1,
                     buffer=None) -> int:
    """Block until every sampler serves at least policy `required`.

    This is the `max_staleness` bound: prompts of training step i are sampled only
    once the samplers hold version >= i - max_staleness (0 = strictly on-policy).
    Gives up after `timeout_s` (engine.staleness_timeout_s), and at once when the run's
    rollout buffer is closed (the trainer ended), instead of polling on.
    """
    deadline = time.monotonic() + timeout_s
    next_buffer_check = 0.0
    while True:
        versions = _versions(samplers, timeout_s)
        if min(versions) >= required:
            return min(versions)
        now = time.monotonic()
        if now > deadline:
            raise StaleBatchError(f"samplers stuck at versions {versions}, need {required} after {timeout_s:.0f} s "
                                  "(engine.staleness_timeout_s): is the trainer alive?")
        if buffer is not None and now >= next_buffer_check:  # once a second, not every poll
            next_buffer_check = now + 1.0
            if ray.get(buffer.is_closed.remote()):
                raise StreamStopped(f"the run ended while step {required + 1} waited for policy {required}")
            _restore_restarted(samplers, versions, buffer, timeout_s)
        time.sleep(poll_s)


def _versions(samplers: list, timeout_s: float) -> list[int]:
    """Every sampler's policy version in one round trip; a sampler being restarted is asked
    again until it is back."""
    try:
        return ray.get([s.policy_version.remote() for s in samplers])
    except ACTOR_LOST:
        return [when_alive(lambda s=s: s.policy_version.remote(), f"sampler-{i}", timeout_s)
                for i, s in enumerate(samplers)]


def _restore_restarted(samplers: list, versions: list[int], buffer, timeout_s: float) -> None:
    """A sampler behind the newest pushed version was restarted by Ray (while idle) and
    serves its starting weights: give it the current ones."""
    latest = ray.get(buffer.latest_weights.remote())
    if latest is None:
        return
    for i, (sampler, version) in enumerate(zip(samplers, versions)):
        if version < latest[1] and when_alive(lambda s=sampler: s.restarted_without_weights.remote(), f"sampler-{i}"):
            log.warning("sampler-%d serves policy %d, behind %d: restarted; restoring its weights", i, version, latest[1])
            restore_sampler(sampler, f"sampler-{i}", buffer, timeout_s)


def sample_batch(rows: list[dict], settings: SampleSettings) -> list[dict]:
    """Generate k responses per prompt, spreading one step's prompts over all samplers."""
    if not rows:
        return []
    samplers = settings.samplers
    step = rows[0]["batch_index"]
    wait_for_version(samplers, step - settings.max_staleness, settings.wait_timeout_s, buffer=settings.buffer)
    start = time.perf_counter()
    chunks = {i: rows[i :: len(samplers)] for i in range(len(samplers))}
    parts, retried = _generate_surviving_deaths({i: c for i, c in chunks.items() if c}, step, settings)
    rollouts = [r for i in sorted(parts) for r in parts[i]]
    if not rollouts:
        raise ValueError(
            f"step {step}: all {len(rows)} prompts were rejected as over-long; raise sampling.max_prompt_tokens "
            "or set sampling.over_long_prompt=truncate"
        )
    seconds = time.perf_counter() - start
    for r in rollouts:
        r["sample_seconds"] = seconds
        # which part of the step this call sampled, so the feeder can tell a whole step (loop.step_is_whole)
        r["part"] = rows[0].get("prompt_uid")
        r["rows_in_batch"] = len(rollouts)
        r["part_prompts"] = len(rows)
        r["sampler_retries"] = retried
    return rollouts


def _generate_surviving_deaths(chunks: dict, step: int, settings: SampleSettings):
    """Each sampler's share of the step; a share whose sampler died is generated again once
    Ray has restarted it and it serves the current weights (so the step stays complete and
    every rollout is stamped with the version that made it)."""
    samplers, retries = settings.samplers, settings.retries
    parts: dict[int, list[dict]] = {}
    retried = 0
    todo = dict(chunks)
    for attempt in range(retries + 1):
        calls = {i: samplers[i].generate.remote(chunk, settings.num_samples) for i, chunk in todo.items()}
        lost = []
        for i, ref in calls.items():
            try:
                parts[i] = ray.get(ref)
            except ACTOR_LOST:
                lost.append(i)
        if not lost:
            return parts, retried
        if attempt == retries:
            break
        retried += len(lost)
        for i in lost:
            log.warning("step %d: sampler-%d died; retrying its %d prompts after the restart", step, i, len(todo[i]))
            restore_sampler(samplers[i], f"sampler-{i}", settings.buffer, settings.wait_timeout_s)
        todo = {i: todo[i] for i in lost}
    raise RoleFailedError(f"step {step}: sampler-{lost[0]} died {retries + 1} times on the same prompts "
                          "(sampling.max_retries_per_step); see its log in the Ray dashboard")


def score_batch(rollouts: list[dict], reward: RewardSource, reference=None) -> list[dict]:
    """Reward per rollout; with a reference actor also its log-probs (computed concurrently)."""
    if not rollouts:
        return []
    start = time.perf_counter()
    pending = None
    if reference is not None:
        # The reference sees the prompt without any control-token prefix the policy was given.
        tokens = [
            {"prompt_token_ids": r["prompt_token_ids"][len(r.get("prompt_prefix_ids") or []) :],
             "response_token_ids": r["response_token_ids"]}
            for r in rollouts
        ]
        pending = reference.response_logprobs.remote(tokens)
    scores = reward.score(rollouts)
    references = [None] * len(rollouts)
    if pending is not None:
        try:
            references = ray.get(pending)
        except ACTOR_LOST:  # a pure call: ask the restarted reference again
            log.warning("the reference actor died; retrying its log-probs after the restart")
            references = when_alive(lambda: reference.response_logprobs.remote(tokens), "reference")
    seconds = time.perf_counter() - start
    for r, score, ref in zip(rollouts, scores, references):
        r["reward"] = float(score)
        r["ref_logprobs"] = ref
        r["score_seconds"] = seconds
    return rollouts


def group_by_step(rows: list[dict]) -> list[list[dict]]:
    """Rows split by their training step (`batch_index`), in step order."""
    steps: dict[int, list[dict]] = {}
    for row in rows:
        steps.setdefault(row["batch_index"], []).append(row)
    return [steps[k] for k in sorted(steps)]


def sample_stage(batch, settings: SampleSettings):
    """Ray Data adapter around `sample_batch` (pyarrow in, pyarrow out)."""
    import pyarrow as pa

    out = []
    for rows in group_by_step(batch.to_pylist()):
        out.extend(sample_batch(rows, settings))
    return pa.Table.from_pylist(out)


def score_stage(batch, reward, reference=None):
    import pyarrow as pa

    return pa.Table.from_pylist(score_batch(batch.to_pylist(), reward, reference))
