"""`make_reward_source`: the four ways the loop reaches a reward model, behind one interface.

- actor:    a Ray actor hosting the model in the cluster (fractional num_cpus)
- serve:    a running Ray Serve app, by application name (deployment handle)
- http:     any `raylign serve rm` URL, through `RewardClient`
- function: a Python callable "module:callable" taking rows -> list[float]
"""

from __future__ import annotations

import importlib
from typing import Callable

from raylign.scoring.base import RewardConfig, RewardSource
from raylign.scoring.repetition import repeated_ngram_fraction


def _slim(rows: list[dict]) -> list[dict]:
    """Only what scoring reads, so large rollout fields (logprobs, token ids) stay behind."""
    slim = []
    for i, row in enumerate(rows):
        if "response" not in row or not ("messages" in row or "prompt" in row):
            raise ValueError(f"row {i}: a reward source needs 'response' and 'messages' or 'prompt' (has {sorted(row)})")
        slim.append({"messages": row.get("messages"), "prompt": row.get("prompt"), "response": row["response"]})
    return slim


def _chunks(rows: list[dict], size: int):
    for start in range(0, len(rows), max(1, size)):
        yield rows[start : start + size]


class ActorRewardSource(RewardSource):
    def __init__(self, config: RewardConfig):
        from raylign.scoring.actor import RewardModelActor

        if not config.model:
            raise ValueError("reward kind 'actor' needs reward.model (a path or a shipped name like hh-rm-smollm2)")
        threads = max(1, round(config.num_cpus)) if config.num_cpus >= 1 else 1
        self.config = config
        # restarted by Ray if it dies; scoring is pure, so a lost call is simply asked again
        self.actor = RewardModelActor.options(num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                                              max_restarts=config.max_restarts).remote(
            config.model, config.max_length, config.batch_size, threads
        )

    def score(self, rows: list[dict]) -> list[float]:
        from raylign.runtime import when_alive

        if not rows:
            return []
        slim = _slim(rows)
        return when_alive(lambda: self.actor.score_rows.remote(slim), "reward", self.config.restart_timeout_s)

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


class ServeRewardSource(RewardSource):
    def __init__(self, config: RewardConfig):
        from ray import serve

        self.handle = serve.get_app_handle(config.app_name)
        self.batch_size = config.batch_size

    def score(self, rows: list[dict]) -> list[float]:
        responses = [self.handle.score_rows.remote(chunk) for chunk in _chunks(_slim(rows), self.batch_size)]
        return [score for response in responses for score in response.result()]


class HttpRewardSource(RewardSource):
    """Pickles as its config (an open HTTP client does not), so the streaming pipeline can
    ship it into Ray Data stages; each process opens its own connection pool."""

    def __init__(self, config: RewardConfig):
        from raylign.scoring.reward_client import RewardClient

        if not config.url:
            raise ValueError("reward kind 'http' needs reward.url (e.g. http://127.0.0.1:8000)")
        self.config = config
        self.client = RewardClient(config.url, config.token, batch_size=config.batch_size)

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    def score(self, rows: list[dict]) -> list[float]:
        return self.client.score(_slim(rows))

    def close(self) -> None:
        self.client.close()


def load_callable(spec: str) -> Callable:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward.function must look like 'module:callable', got '{spec}'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward.function '{spec}': cannot import module '{module_name}': {err}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"reward.function '{spec}': '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"reward.function '{spec}' is not callable")
    return target


class FunctionRewardSource(RewardSource):
    def __init__(self, config: RewardConfig):
        if not config.function:
            raise ValueError("reward kind 'function' needs reward.function ('module:callable')")
        self.name = config.function
        self.function = load_callable(config.function)

    def score(self, rows: list[dict]) -> list[float]:
        scores = [float(s) for s in self.function(rows)]
        if len(scores) != len(rows):
            raise ValueError(f"reward function {self.name} returned {len(scores)} scores for {len(rows)} rows")
        return scores


SOURCES: dict[str, type[RewardSource]] = {
    "actor": ActorRewardSource,
    "serve": ServeRewardSource,
    "http": HttpRewardSource,
    "function": FunctionRewardSource,
}


class MissingEosPenalty(RewardSource):
    """Another source's scores, less `penalty` for each response the sampler cut at its
    token limit (`finish_reason == "length"`); responses that stopped, or came from a
    dataset, keep their score."""

    def __init__(self, source: RewardSource, penalty: float):
        self.source, self.penalty = source, penalty

    def score(self, rows: list[dict]) -> list[float]:
        scores = self.source.score(rows)
        return [s - self.penalty if row.get("finish_reason") == "length" else s for row, s in zip(rows, scores)]

    def close(self) -> None:
        self.source.close()


class RepetitionPenalty(RewardSource):
    """Another source's scores, less `penalty` times each sampled response's seq-rep-4 (the
    share of its word 4-grams that repeat an earlier one); dataset responses keep theirs."""

    def __init__(self, source: RewardSource, penalty: float):
        self.source, self.penalty = source, penalty

    def score(self, rows: list[dict]) -> list[float]:
        scores = self.source.score(rows)
        return [s if row.get("finish_reason") == "dataset" else s - self.penalty * repeated_ngram_fraction(row["response"])
                for row, s in zip(rows, scores)]

    def close(self) -> None:
        self.source.close()


def make_reward_source(config: RewardConfig) -> RewardSource:
    source = SOURCES[config.kind](config)
    if config.repetition_penalty > 0:
        source = RepetitionPenalty(source, config.repetition_penalty)
    return MissingEosPenalty(source, config.missing_eos_penalty) if config.missing_eos_penalty > 0 else source
