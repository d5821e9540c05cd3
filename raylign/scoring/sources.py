"""`make_reward_source`: the four ways the loop reaches a reward model, behind one interface.

- actor:    a Ray actor hosting the model in the cluster (fractional num_cpus)
- ensemble: one actor hosting several reward models, their scores aggregated
- serve:    a running Ray Serve app, by application name (deployment handle)
- http:     any `raylign serve rm` URL, through `RewardClient`
- function: a Python callable "module:callable" taking rows -> list[float]
"""

from __future__ import annotations

from raylign.config import load_callable
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
    """A reward model (or, for kind `ensemble`, all members of an ensemble) in one Ray actor."""

    def __init__(self, config: RewardConfig):
        from raylign.scoring.actor import RewardModelActor

        model, settings = config.model, None
        if config.kind == "ensemble":
            if bool(config.ensemble.models) == bool(config.model):
                raise ValueError("reward kind 'ensemble' needs reward.ensemble.models (a list of reward models) "
                                 "or reward.model (an ensemble directory), not both")
            model, settings = (config.ensemble, None) if config.ensemble.models else (config.model, config.ensemble)
        elif not config.model:
            raise ValueError("reward kind 'actor' needs reward.model (a path or a shipped name like hh-rm-smollm2)")
        threads = max(1, round(config.num_cpus)) if config.num_cpus >= 1 else 1
        self.config = config
        # restarted by Ray if it dies; scoring is pure, so a lost call is simply asked again
        self.actor = RewardModelActor.options(num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                                              max_restarts=config.max_restarts).remote(
            model, config.max_length, config.batch_size, threads, settings
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


class MixRewardSource(RewardSource):
    """`reward.kind: mix`: the weighted sum of other sources' scores (a verifier and a reward model)."""

    def __init__(self, parts: list[tuple[float, RewardSource]]):
        if not parts:
            raise ValueError("reward kind 'mix' needs reward.mix: a list of {weight, source}")
        self.parts = parts

    def score(self, rows: list[dict]) -> list[float]:
        totals = [0.0] * len(rows)
        for weight, source in self.parts:
            totals = [t + weight * s for t, s in zip(totals, source.score(rows))]
        return totals

    def close(self) -> None:
        for _, source in self.parts:
            source.close()


def overlong_fraction(tokens: int, max_tokens: int, buffer: int) -> float:
    """DAPO's soft overlong punishment as a share of the penalty: 0 up to max_tokens - buffer, then
    rising linearly to 1 at max_tokens (and beyond)."""
    if buffer <= 0 or tokens <= max_tokens - buffer:
        return 0.0
    return min(1.0, (tokens - (max_tokens - buffer)) / buffer)


class ShapedReward(RewardSource):
    """Another source's scores less the recipe's penalties on sampled responses (a dataset's own
    answers keep their score): `missing_eos_penalty` for a response cut at the token limit (TRL's),
    `repetition_penalty` times its seq-rep-4 (counters a reward model that pays for one line said
    over and over), and DAPO's soft overlong punishment (`overlong_buffer`, `overlong_penalty`)."""

    def __init__(self, source: RewardSource, config: RewardConfig, max_new_tokens: int | None = None):
        if config.overlong_buffer and not max_new_tokens:
            raise ValueError("reward.overlong_buffer needs the sampling limit (sampling.max_new_tokens)")
        self.source, self.config, self.max_new_tokens = source, config, max_new_tokens

    def penalty(self, row: dict) -> float:
        if row.get("finish_reason") == "dataset":
            return 0.0
        config, total = self.config, 0.0
        if row.get("finish_reason") == "length":
            total += config.missing_eos_penalty
        if config.repetition_penalty:
            total += config.repetition_penalty * repeated_ngram_fraction(row["response"])
        if config.overlong_buffer:
            tokens = len(row.get("response_token_ids") or [])
            total += config.overlong_penalty * overlong_fraction(tokens, self.max_new_tokens, config.overlong_buffer)
        return total

    def score(self, rows: list[dict]) -> list[float]:
        return [s - self.penalty(row) for row, s in zip(rows, self.source.score(rows))]

    def close(self) -> None:
        self.source.close()


def _verifier(config: RewardConfig) -> RewardSource:
    from raylign.scoring.verifier_source import VerifierRewardSource

    return VerifierRewardSource(config.verifier)


SOURCES = {
    "actor": ActorRewardSource,
    "ensemble": ActorRewardSource,
    "serve": ServeRewardSource,
    "http": HttpRewardSource,
    "function": FunctionRewardSource,
    "verifier": _verifier,
}


def make_reward_source(config: RewardConfig, max_new_tokens: int | None = None) -> RewardSource:
    """The source `reward` names, with its penalties; `max_new_tokens` is the samplers' limit
    (the overlong punishment is measured against it)."""
    if config.kind == "mix":
        source: RewardSource = MixRewardSource([(part.weight, make_reward_source(part.source, max_new_tokens))
                                                for part in config.mix])
    else:
        source = SOURCES[config.kind](config)
    if config.missing_eos_penalty or config.repetition_penalty or config.overlong_buffer:
        source = ShapedReward(source, config, max_new_tokens)
    return source
