"""Sampler role: a long-lived Ray actor that owns one engine and turns prompt rows into rollouts.

A Ray actor runs one method at a time, so a weight load can never land in the middle
of a `generate` call: every response is produced by exactly one policy version,
which is stamped on the rollout row.
"""

from __future__ import annotations

import logging
import time

import ray

from raylign.models.chat import PromptTooLongError, as_messages, encode_prompt
from raylign.sampling.base import SamplingConfig, make_sampler

log = logging.getLogger(__name__)


class SamplerWorker:
    def __init__(self, model_path: str, config: SamplingConfig, name: str = "sampler"):
        self.config = config
        self.name = name
        self.sampler = make_sampler(model_path, config)
        self.tokenizer = self.sampler.tokenizer
        self.rejected_prompts = 0

    def generate(self, rows: list[dict], num_samples: int | None = None) -> list[dict]:
        """Rollout rows: one per (prompt, sample), prompt fields carried through."""
        kept, prompt_ids = [], []
        for row in rows:
            try:
                prompt_ids.append(
                    encode_prompt(
                        self.tokenizer,
                        as_messages(row),
                        self.config.max_prompt_tokens,
                        self.config.over_long_prompt,
                    )
                )
                kept.append(row)
            except PromptTooLongError as err:
                self.rejected_prompts += 1
                log.warning("%s: skipping prompt %s: %s", self.name, row.get("prompt_id"), err)
        if not kept:
            return []
        rollouts = []
        for row, ids, samples in zip(kept, prompt_ids, self.sampler.generate(prompt_ids, num_samples)):
            for index, sample in enumerate(samples):
                rollouts.append(
                    {
                        **row,
                        "prompt_token_ids": ids,
                        "response": sample.text,
                        "response_token_ids": sample.token_ids,
                        "logprobs": sample.logprobs,
                        "finish_reason": sample.finish_reason,
                        "policy_version": sample.policy_version,
                        "sample_index": index,
                        "sampler": self.name,
                    }
                )
        return rollouts

    def load_state_dict(self, state_dict: dict, version: int) -> float:
        """Swap in new weights; returns the seconds it took."""
        start = time.perf_counter()
        self.sampler.load_state_dict(state_dict, version)
        return time.perf_counter() - start

    def policy_version(self) -> int:
        return self.sampler.policy_version

    def stats(self) -> dict:
        return {"name": self.name, "policy_version": self.sampler.policy_version, "rejected": self.rejected_prompts}


SamplerActor = ray.remote(SamplerWorker)


def create_samplers(model_path: str, config: SamplingConfig, count: int | None = None) -> list:
    """Start `count` sampler actors with fractional CPU requests (2-core machines fit several)."""
    count = count or config.num_samplers
    actors = []
    for index in range(count):
        actors.append(
            SamplerActor.options(
                num_cpus=config.num_cpus_per_sampler,
                num_gpus=config.num_gpus_per_sampler,
                name=None,
            ).remote(str(model_path), config, f"sampler-{index}")
        )
    ray.get([a.policy_version.remote() for a in actors])  # surface start-up errors here
    return actors
