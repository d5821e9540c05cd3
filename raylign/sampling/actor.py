"""Sampler role: a long-lived Ray actor that owns one engine and turns prompt rows into rollouts.

A Ray actor runs one method at a time, so a weight load can never land in the middle
of a `generate` call: every response is produced by exactly one policy version,
which is stamped on the rollout row.
"""

from __future__ import annotations

import logging
import time

import ray

from raylign.models.chat import (
    PromptTooLongError,
    as_messages,
    encode_prompt,
    encode_raw_prompt,
    encode_response,
    prompt_prefix_ids,
)
from raylign.sampling.base import Sampler, SamplingConfig

log = logging.getLogger(__name__)


def make_sampler(model_path: str, config: SamplingConfig) -> Sampler:
    """The engine `sampling.backend` names (imported only when used: vLLM is heavy, and absent
    on a machine that samples with transformers)."""
    if config.backend == "vllm":
        from raylign.sampling.vllm_sampler import VLLMSampler

        return VLLMSampler(model_path, config)
    from raylign.sampling.hf_sampler import HFSampler

    return HFSampler(model_path, config)


class SamplerWorker:
    def __init__(self, model_path: str, config: SamplingConfig, name: str = "sampler", initial_version: int = 0):
        self.config = config
        self.name = name
        self.sampler = make_sampler(model_path, config)
        self.sampler.policy_version = initial_version
        self.tokenizer = self.sampler.tokenizer
        # A checkpoint trained with control tokens (Quark) says which prefix it expects.
        self.default_prefix_ids = prompt_prefix_ids(model_path, self.tokenizer)
        self.rejected_prompts = 0
        # Ray re-ran this constructor after the actor died: until weights arrive it serves the
        # starting ones, and the loop must hand it the current version (engine/recovery.py).
        self.awaiting_weights = _was_restarted()

    def generate(self, rows: list[dict], num_samples: int | None = None) -> list[dict]:
        """Rollout rows: one per (prompt, sample), prompt fields carried through.

        Answers given with a prompt (`candidates`, e.g. HH-RLHF's chosen/rejected that RRHF
        ranks beside its samples) are encoded and appended as extra rollouts (source="dataset").
        """
        kept, prompt_ids = [], []
        for row in rows:
            try:
                ids = self._prompt_ids(row)
                # A method's control tokens (Quark's reward quantile) go before the chat.
                prefix = row["prompt_prefix_ids"] if "prompt_prefix_ids" in row else self.default_prefix_ids
                prompt_ids.append(list(prefix or []) + ids)
                kept.append({**row, "prompt_prefix_ids": list(prefix or [])} if prefix else row)
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
                        "source": "policy",
                    }
                )
            if row.get("candidates"):
                rollouts.extend(self._dataset_rollouts(row, ids, len(samples)))
        return rollouts

    def _prompt_ids(self, row: dict) -> list[int]:
        if self.config.prompt_mode == "raw":
            return encode_raw_prompt(self.tokenizer, row["prompt"], self.config.max_prompt_tokens, self.config.over_long_prompt)
        return encode_prompt(self.tokenizer, as_messages(row), self.config.max_prompt_tokens, self.config.over_long_prompt)

    def _dataset_rollouts(self, row: dict, prompt_ids: list[int], first_index: int) -> list[dict]:
        extra = []
        for offset, text in enumerate(row["candidates"]):
            extra.append(
                {
                    **row,
                    "prompt_token_ids": prompt_ids,
                    "response": text,
                    "response_token_ids": encode_response(self.tokenizer, text, self.config.max_new_tokens * 4),
                    "logprobs": [],
                    "finish_reason": "dataset",
                    "policy_version": self.sampler.policy_version,
                    "sample_index": first_index + offset,
                    "sampler": self.name,
                    "source": "dataset",
                }
            )
        return extra

    def label_logprobs(self, rows: list[dict], labels: list[str]) -> list[list[float]]:
        """log P(label | chat prompt) per row and label (an LLM judge reads its answer from these).

        Prompts are encoded as for `generate` (over-long ones keep their end, where a judging
        template asks its question); a label is its plain token ids, no special tokens.
        """
        prompts = [encode_prompt(self.tokenizer, as_messages(row), self.config.max_prompt_tokens, "truncate")
                   for row in rows]
        label_ids = [list(self.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels]
        if not all(label_ids):
            raise ValueError(f"labels {labels} must each encode to at least one token")
        return self.sampler.label_logprobs(prompts, label_ids) if prompts else []

    def load_state_dict(self, state_dict: dict, version: int) -> float:
        """Swap in new weights; returns the seconds it took."""
        start = time.perf_counter()
        self.sampler.load_state_dict(state_dict, version)
        self.awaiting_weights = False
        return time.perf_counter() - start

    def init_weight_group(self, host: str, port: int, rank: int, world_size: int) -> None:
        self.sampler.init_weight_group(host, port, rank, world_size)

    def receive_weights(self, metas: list, version: int) -> float:
        start = time.perf_counter()
        self.sampler.receive_weights(metas, version)
        return time.perf_counter() - start

    def policy_version(self) -> int:
        return self.sampler.policy_version

    def restarted_without_weights(self) -> bool:
        return self.awaiting_weights

    def stats(self) -> dict:
        return {"name": self.name, "policy_version": self.sampler.policy_version, "rejected": self.rejected_prompts}


def _was_restarted() -> bool:
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside an actor (a SamplerWorker used directly)
        return False


SamplerActor = ray.remote(SamplerWorker)


class SamplerGroup(list):
    """The sampler actors (a plain list of handles) plus the placement group they live in."""

    def __init__(self, actors, group=None):
        super().__init__(actors)
        self.placement_group = group

    def shutdown(self) -> None:
        """Stop the actors and give their reserved resources back to the cluster."""
        from ray.util.placement_group import remove_placement_group

        for actor in self:
            ray.kill(actor)
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None


def create_samplers(
    model_path: str, config: SamplingConfig, count: int | None = None, initial_version: int = 0
) -> SamplerGroup:
    """Start `count` sampler actors in one placement group (a bundle each).

    Fractional CPU bundles let several samplers share a 2-core machine; on GPU nodes
    each bundle holds `num_gpus_per_sampler` and SPREAD puts samplers on different nodes.
    """
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    count = count or config.num_samplers
    bundle = {"CPU": config.num_cpus_per_sampler}
    if config.num_gpus_per_sampler:
        bundle["GPU"] = config.num_gpus_per_sampler
    group = placement_group([dict(bundle) for _ in range(count)], strategy=config.placement_strategy)
    try:
        ray.get(group.ready(), timeout=config.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(
            f"the cluster cannot place {count} sampler(s) of {bundle} ({config.placement_strategy}); "
            f"available: {ray.available_resources()}. Lower sampling.num_samplers or the per-sampler resources."
        ) from None
    actors = []
    for index in range(count):
        actors.append(
            SamplerActor.options(
                max_restarts=config.max_restarts,
                num_cpus=config.num_cpus_per_sampler,
                num_gpus=config.num_gpus_per_sampler,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index),
            ).remote(str(model_path), config, f"sampler-{index}", initial_version)
        )
    samplers = SamplerGroup(actors, group)
    try:
        ray.get([a.policy_version.remote() for a in actors])  # surface start-up errors here
    except Exception:
        samplers.shutdown()
        raise
    return samplers
