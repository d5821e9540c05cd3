"""Reference-model role: a frozen copy of the starting policy, as a Ray actor.

It gives per-token log-probs of rollouts under the initial weights, which the
trainer turns into a KL penalty (online RRHF without one hacks the reward model).
Responses are packed exactly as the trainer packs them, so position i of the
returned list is the same token the trainer's response mask selects as i.
"""

from __future__ import annotations

import ray
import torch
from pydantic import Field

from raylign.config import ModelName, StrictModel


class ReferenceConfig(StrictModel):
    """The frozen reference model (the `reference` section; a method that needs one says so, and
    its own section holds how strongly it stays near it: `kl_coef`, DPO's `beta`)."""

    model: ModelName | None = None  # default: the policy's starting weights
    num_cpus: float = Field(0.2, ge=0.0)  # per reference actor
    num_gpus: float = Field(0.0, ge=0.0)
    batch_size: int = Field(8, ge=1)  # sequences per forward
    # torch threads in the actor (default: num_cpus rounded, at least 1). On a small machine,
    # reserving every CPU for the actor starves the tasks that feed it, so reserve fewer CPUs
    # and run more threads than that instead.
    threads: int | None = Field(None, ge=1)
    concurrency: int = Field(1, ge=1)  # offline: actors in the Ray Data pool
    max_restarts: int = Field(3, ge=0)  # Ray restarts a dead reference actor this often (its log-probs are pure)


class ReferenceWorker:
    def __init__(self, model_path: str, max_length: int, batch_size: int = 8, threads: int | None = None):
        from transformers import AutoModelForCausalLM

        from raylign.models.chat import load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.no_grad()
    def response_logprobs(self, rows: list[dict]) -> list[list[float]]:
        from raylign.models.sequences import pack_prompt_responses, token_logprobs

        out: list[list[float]] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = pack_prompt_responses(
                [r["prompt_token_ids"] for r in chunk], [r["response_token_ids"] for r in chunk], self.pad_id, self.max_length
            )
            logprobs = token_logprobs(self.model, batch)
            mask = batch["response_mask"].bool()
            out.extend(logprobs[i][mask[i]].tolist() for i in range(len(chunk)))
        return out


ReferenceActor = ray.remote(ReferenceWorker)


def create_reference(config: ReferenceConfig, policy_path: str, max_length: int, required: bool = False):
    """The reference actor, or None when the method needs none."""
    if not required:
        return None
    actor = ReferenceActor.options(num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                                   max_restarts=config.max_restarts).remote(
        config.model or policy_path, max_length, config.batch_size, config.threads
    )
    return actor
