"""The reward role's one interface: every reward source scores rollout rows the same way.

Implementations (see `make_reward_source`): an in-cluster reward-model actor, a Ray
Serve deployment reached by handle or over HTTP, or a plain Python function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from pydantic import Field

from raylign.config import StrictModel
from raylign.scoring.verifiers import VerifierConfig

Aggregate = Literal["mean", "min", "mean_minus_std"]


class EnsembleSettings(StrictModel):
    """How members' scores become one score."""

    aggregate: Aggregate = "mean_minus_std"
    std_weight: float = Field(1.0, ge=0.0)  # lambda of mean_minus_std


class EnsembleConfig(EnsembleSettings):
    """`reward.ensemble`: any reward models (paths or shipped names) as one reward."""

    models: list[str] = Field(default_factory=list)


class RewardConfig(StrictModel):
    # actor | serve | http | function: a reward model or a function; verifier: checks of a
    # final answer against the prompt's known one; mix: a weighted sum of other sources;
    # ensemble: several reward models aggregated in one actor (raylign.scoring.ensemble)
    kind: Literal["actor", "serve", "http", "function", "verifier", "mix", "ensemble"] = "actor"
    model: str | None = None  # reward model path/name (actor, serve); an ensemble directory works too
    url: str | None = None  # http: base URL of `raylign serve rm`
    app_name: str = "reward"  # serve: Ray Serve application name
    function: str | None = None  # function: "module:callable" taking (rows) -> list[float]
    token: str | None = None  # bearer token for http
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(512, ge=2)
    num_cpus: float = Field(0.25, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    max_restarts: int = Field(3, ge=0)  # actor kind: Ray restarts a dead reward actor this often
    restart_timeout_s: float = Field(600.0, gt=0)
    # subtracted from the score of a sampled response cut at max_new_tokens (no EOS), as TRL's
    # missing_eos_penalty: counters a reward model that pays for ever longer, never-ending text
    missing_eos_penalty: float = Field(0.0, ge=0.0)
    # times the response's seq-rep-4 (share of repeated word 4-grams), subtracted from its score:
    # counters a reward model that pays for one line said over and over
    repetition_penalty: float = Field(0.0, ge=0.0)
    # DAPO's soft overlong punishment: a sampled response longer than max_new_tokens minus this
    # buffer loses up to `overlong_penalty`, linearly in the tokens over, all of it at the limit
    overlong_buffer: int = Field(0, ge=0)
    overlong_penalty: float = Field(1.0, ge=0.0)
    verifier: VerifierConfig = VerifierConfig()  # kind verifier
    mix: list[RewardPart] = []  # kind mix: the parts, each a source with its weight
    # kind ensemble: `models` (any reward models), or `model` an ensemble directory whose
    # aggregate these settings override; mean, min or mean - std_weight * std over members
    ensemble: EnsembleConfig = EnsembleConfig()


class RewardPart(StrictModel):
    weight: float = 1.0
    source: RewardConfig


RewardConfig.model_rebuild()


class RewardSource(ABC):
    """Scores rows that carry `messages` (or `prompt`) and `response`."""

    @abstractmethod
    def score(self, rows: list[dict]) -> list[float]:
        """One scalar reward per row, in order."""

    def close(self) -> None:
        """Release actors or connections."""
