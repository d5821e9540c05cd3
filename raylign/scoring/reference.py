"""Reference-model role: a frozen copy of the starting policy, as a Ray actor.

It gives per-token log-probs of rollouts under the initial weights, which the
trainer turns into a KL penalty (online RRHF without one hacks the reward model).
Responses are packed exactly as the trainer packs them, so position i of the
returned list is the same token the trainer's response mask selects as i.
"""

from __future__ import annotations

import ray
import torch

from raylign.config import StrictModel


class ReferenceConfig(StrictModel):
    kl_coef: float = 0.0  # 0 = no reference actor, no KL term
    model: str | None = None  # default: the policy's starting weights
    num_cpus: float = 0.2
    num_gpus: float = 0.0
    batch_size: int = 8
    max_restarts: int = 3  # Ray restarts a dead reference actor this often (its log-probs are pure)


class ReferenceWorker:
    def __init__(self, model_path: str, max_length: int, batch_size: int = 8):
        from transformers import AutoModelForCausalLM

        from raylign.models.chat import load_tokenizer

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
    """The reference actor, or None when no KL term is asked for and the method needs none."""
    if config.kl_coef <= 0 and not required:
        return None
    actor = ReferenceActor.options(num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                                   max_restarts=config.max_restarts).remote(
        config.model or policy_path, max_length, config.batch_size
    )
    return actor
