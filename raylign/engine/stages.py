"""The rollout stages: sample (with a staleness gate) and score.

The same two functions run inside Ray Data `map_batches` (streaming mode) and
directly from the driver (sequential mode), so both modes compute the same thing.
"""

from __future__ import annotations

import time

import ray

from raylign.scoring.base import RewardSource


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
    next_stop_check = 0.0
    while True:
        versions = ray.get([s.policy_version.remote() for s in samplers])
        if min(versions) >= required:
            return min(versions)
        now = time.monotonic()
        if now > deadline:
            raise StaleBatchError(f"samplers stuck at versions {versions}, need {required} after {timeout_s:.0f} s "
                                  "(engine.staleness_timeout_s): is the trainer alive?")
        if buffer is not None and now >= next_stop_check:
            next_stop_check = now + 1.0
            if ray.get(buffer.is_closed.remote()):
                raise StreamStopped(f"the run ended while step {required + 1} waited for policy {required}")
        time.sleep(poll_s)


def sample_batch(
    rows: list[dict],
    samplers: list,
    num_samples: int,
    max_staleness: int,
    dataset_responses: bool = False,
    wait_timeout_s: float = 1800.0,
    buffer=None,
) -> list[dict]:
    """Generate k responses per prompt, spreading one step's prompts over all samplers."""
    if not rows:
        return []
    step = rows[0]["batch_index"]
    wait_for_version(samplers, step - max_staleness, wait_timeout_s, buffer=buffer)
    start = time.perf_counter()
    chunks = [rows[i :: len(samplers)] for i in range(len(samplers))]
    calls = [s.generate.remote(chunk, num_samples, dataset_responses) for s, chunk in zip(samplers, chunks) if chunk]
    rollouts = [r for part in ray.get(calls) for r in part]
    if not rollouts:
        raise ValueError(
            f"step {step}: all {len(rows)} prompts were rejected as over-long; raise sampling.max_prompt_tokens "
            "or set sampling.over_long_prompt=truncate"
        )
    seconds = time.perf_counter() - start
    for r in rollouts:
        r["sample_seconds"] = seconds
        r["rows_in_batch"] = len(rollouts)
    return rollouts


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
    references = ray.get(pending) if pending is not None else [None] * len(rollouts)
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


def sample_stage(batch, samplers, num_samples, max_staleness, dataset_responses, wait_timeout_s=1800.0, buffer=None):
    """Ray Data adapter around `sample_batch` (pyarrow in, pyarrow out)."""
    import pyarrow as pa

    out = []
    for rows in group_by_step(batch.to_pylist()):
        out.extend(sample_batch(rows, samplers, num_samples, max_staleness, dataset_responses, wait_timeout_s, buffer))
    return pa.Table.from_pylist(out)


def score_stage(batch, reward, reference=None):
    import pyarrow as pa

    return pa.Table.from_pylist(score_batch(batch.to_pylist(), reward, reference))
