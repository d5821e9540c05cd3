"""Pairwise annotators: given `{instruction, input, output_1, output_2}`, which output is better.

Every annotator returns a preference in [1, 2] per pair (1 = output_1 better, 2 =
output_2, 1.5 = no preference; soft values carry confidence), the AlpacaEval
convention. Kinds:

- `RewardAnnotator`: any `RewardSource` (an RM actor, Serve app, HTTP RM, function)
  scores both outputs; preference = 1 + sigmoid(r_2 - r_1);
- `SamplerJudge` (raylign/feedback/judges.py): a judging template on the sampler actors,
  read from the judge's probabilities of the two label tokens;
- `HttpJudge` (raylign/feedback/judges.py): an OpenAI-compatible chat endpoint.

Annotators are pickled into Ray Data stages: shared actors are started once in the
driver by `prepare()`, clients that cannot be pickled are made lazily in each process.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from itertools import combinations
from typing import Sequence

from raylign.data.adapters import alpaca_prompt, user_messages
from raylign.data.readers import DataError
from raylign.scoring.base import RewardConfig, RewardSource


def normalize_pair(row: dict, index: int = 0, source: str = "rows") -> dict:
    """The pair fields, checked: instruction and both outputs are strings, input may be absent."""
    for name in ("instruction", "output_1", "output_2"):
        if not isinstance(row.get(name), str):
            got = type(row.get(name)).__name__ if name in row else "nothing"
            raise DataError(f"{source}: row {index}: field '{name}' must be a string, got {got}")
    text_input = row.get("input")
    if text_input is not None and not isinstance(text_input, str):
        raise DataError(f"{source}: row {index}: field 'input' must be a string or null")
    return {**row, "input": text_input or ""}


def expand_candidates(row: dict, index: int = 0, source: str = "rows") -> list[dict]:
    """A row with a list of candidates (`output` or `outputs`) -> every pair (i < j)."""
    outputs = row.get("outputs", row.get("output"))
    if not isinstance(outputs, list) or len(outputs) < 2 or not all(isinstance(o, str) for o in outputs):
        raise DataError(f"{source}: row {index}: field 'output' must be a list of at least 2 strings")
    base = {k: v for k, v in row.items() if k not in ("output", "outputs")}
    return [normalize_pair({**base, "output_1": outputs[i], "output_2": outputs[j], "index_1": i, "index_2": j},
                           index, source) for i, j in combinations(range(len(outputs)), 2)]


def as_pairs(rows: Sequence[dict], source: str = "rows") -> list[dict]:
    """Pair rows as they are; candidate-list rows expanded into all their pairs."""
    pairs = []
    for i, row in enumerate(rows):
        if "output_1" in row or "output_2" in row:
            pairs.append(normalize_pair(row, i, source))
        else:
            pairs.extend({**pair, "row": i} for pair in expand_candidates(row, i, source))
    return pairs


def judged_pair(row: dict, swapped: bool) -> dict:
    """The pair as the annotator sees it (outputs exchanged when swapped)."""
    first, second = (row["output_2"], row["output_1"]) if swapped else (row["output_1"], row["output_2"])
    return {"instruction": row["instruction"], "input": row.get("input") or "", "output_1": first, "output_2": second}


def pair_messages(row: dict) -> list[dict]:
    """The user turn the outputs answer (the same prompt the data adapters build)."""
    return user_messages(alpaca_prompt(row["instruction"], row.get("input") or None))


class Annotator(ABC):
    name: str = "annotator"

    def prepare(self) -> None:
        """Start shared resources (actors) in the driver before the annotator is pickled."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies this annotator's judgments in the cache (model, template, settings)."""

    @abstractmethod
    def preferences(self, pairs: list[dict]) -> list[float]:
        """One preference in [1, 2] per pair, in order."""

    def check(self, values, count: int) -> list[float]:
        values = [float(v) for v in values]
        if len(values) != count:
            raise ValueError(f"annotator {self.name} returned {len(values)} preferences for {count} pairs")
        bad = [v for v in values if not (1.0 <= v <= 2.0)]
        if bad:
            raise ValueError(f"annotator {self.name} returned preferences outside [1, 2]: {bad[:3]}")
        return values

    def close(self) -> None:
        """Release actors or connections."""


def preference_from_scores(score_1: float, score_2: float) -> float:
    """1 + P(output_2 better) under Bradley-Terry; equal scores give exactly 1.5."""
    diff = score_2 - score_1
    if diff == 0:
        return 1.5
    return 1.0 + (1.0 / (1.0 + math.exp(-diff)) if diff > -60 else 0.0)


def _model_version(model: str | None) -> str:
    """What changes when a reward model's weights change (shipped delta hash, or file times)."""
    from raylign.models.registry import model_fingerprint

    return model_fingerprint(model)


class RewardAnnotator(Annotator):
    """Pairs judged by a reward model (or any RewardSource): preference = 1 + sigmoid(r_2 - r_1).

    Give a `RewardConfig` (the source is built in the driver for `actor`, lazily in each
    process otherwise) or a ready `RewardSource` (in-process use; it must pickle to be
    used in the Ray Data job).
    """

    def __init__(self, config: RewardConfig | None = None, source: RewardSource | None = None,
                 name: str | None = None, temperature: float = 1.0):
        if config is None and source is None:
            raise ValueError("RewardAnnotator needs a RewardConfig or a RewardSource")
        self.config = config
        self._source = source
        self.temperature = temperature
        label = (config.model or config.url or config.function or config.app_name) if config else type(source).__name__
        self.name = name or f"rm:{label}"

    def prepare(self) -> None:
        if self._source is None and self.config.kind == "actor":
            self._source = self._build()

    def _build(self) -> RewardSource:
        from raylign.scoring.sources import make_reward_source

        return make_reward_source(self.config)

    @property
    def source(self) -> RewardSource:
        if self._source is None:
            self._source = self._build()
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        # HTTP clients hold locks: rebuild them in the process that uses them.
        if self.config is not None and self.config.kind == "http":
            state["_source"] = None
        return state

    def fingerprint(self) -> str:
        if self.config is None:
            return f"reward-source:{self.name}:{self.temperature}"
        settings = self.config.model_dump(exclude={"num_cpus", "num_gpus", "batch_size", "token", "app_name"})
        settings["version"] = _model_version(self.config.model)
        settings["temperature"] = self.temperature
        return "reward:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]

    def preferences(self, pairs: list[dict]) -> list[float]:
        if not pairs:
            return []
        # A reward model scores each output alone, so an output shared by several pairs (a candidate
        # list expands into all its pairs: n outputs, n(n-1)/2 pairs) is scored once.
        keys = [(p["instruction"], p.get("input") or "", p[side]) for side in ("output_1", "output_2") for p in pairs]
        unique = list(dict.fromkeys(keys))
        rows = [{"messages": pair_messages({"instruction": i, "input": x}), "response": r} for i, x, r in unique]
        score_of = dict(zip(unique, self.source.score(rows)))
        scores = [score_of[k] for k in keys]
        first, second = scores[: len(pairs)], scores[len(pairs) :]
        return [preference_from_scores(a / self.temperature, b / self.temperature) for a, b in zip(first, second)]

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


def length_reward(rows: list[dict]) -> list[float]:
    """Character length of the response: the 'longer answer wins' baseline judge."""
    return [float(len(row["response"])) for row in rows]
