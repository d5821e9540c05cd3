"""The sampler contract shared by the vLLM and transformers backends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from raylign.config import StrictModel


class SamplingConfig(StrictModel):
    backend: Literal["vllm", "hf"] = "vllm"
    num_samples: int = Field(4, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_prompt_tokens: int = Field(512, ge=1)
    over_long_prompt: Literal["truncate", "reject"] = "truncate"
    # chat: the row's messages through the chat template; raw: its `prompt` text verbatim (few-shot completion)
    prompt_mode: Literal["chat", "raw"] = "chat"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    ignore_eos: bool = False  # every response runs to max_new_tokens (benchmarks: equal work on every side)
    num_samplers: int = Field(2, ge=1)
    num_cpus_per_sampler: float = Field(0.25, ge=0.0)
    num_gpus_per_sampler: float = Field(0.0, ge=0.0)
    max_restarts: int = Field(3, ge=0)  # a dead sampler actor is restarted this often by Ray
    max_retries_per_step: int = Field(2, ge=0)  # a step's prompts are re-sampled after this many sampler deaths
    restart_timeout_s: float = Field(600.0, gt=0)  # how long a restarting sampler may take to come back
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    placement_timeout_s: float = 120.0
    vllm_kv_cache_gb: float = 1.0
    vllm_max_model_len: int = 1024


@dataclass
class Sample:
    """One response: its tokens (EOS included when generated) and their log-probs.

    Log-probs are those of the unmodified model distribution (before temperature
    or top-p), so they are comparable across backends and with the trainer.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "length"
    policy_version: int = 0
    extra: dict = field(default_factory=dict)


class Sampler(ABC):
    """Generates k responses per prompt and can swap in new weights in place."""

    def __init__(self, model_path: str, config: SamplingConfig):
        self.model_path = model_path
        self.config = config
        self.policy_version = 0

    @abstractmethod
    def generate(self, prompts: list[list[int]], num_samples: int | None = None) -> list[list[Sample]]:
        """For each prompt (token ids after the chat template) k samples."""

    def label_logprobs(self, prompts: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        """For each prompt, log P(label tokens | prompt) of every label, teacher-forced (LLM judges)."""
        raise NotImplementedError(f"{type(self).__name__} cannot score labels")

    @abstractmethod
    def load_state_dict(self, state_dict: dict, version: int) -> None:
        """Replace the weights with the trainer's (HF parameter names)."""

    def _stamp(self, batches: list[list[Sample]]) -> list[list[Sample]]:
        for samples in batches:
            for sample in samples:
                sample.policy_version = self.policy_version
        return batches
