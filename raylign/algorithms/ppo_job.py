"""`raylign train ppo`: PPO with policy, frozen reference, reward source and a value model.

The trainer module is an `ActorCritic`: the policy plus a value head on its own last
hidden state ("head") or on a separate copy of the backbone ("separate"). Before each
update every rank recomputes the old log-probs and values (no grad), compares the old
log-probs with the samplers' (logged as a mismatch), builds per-token rewards (KL penalty
+ score at the last token), GAE, and whitens the advantages with moments all-reduced over
every rank. Then `ppo_epochs` passes of the clipped policy + value loss.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from torch import nn

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    masked_list,
    policy_rows,
    response_token_count,
)
from raylign.algorithms.kl import scatter_response_values
from raylign.algorithms.online_job import OnlineJobConfig, online_main
from raylign.algorithms.ppo import (
    PPOConfig,
    gae_advantages,
    make_kl_controller,
    masked_moments,
    moments_to_mean_var,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten_with,
)
from raylign.collectives import all_reduce


class PPOJobConfig(OnlineJobConfig):
    ppo: PPOConfig = PPOConfig()


class ActorCritic(nn.Module):
    """Policy + value head, one module so DDP/DeepSpeed wrap and step them together."""

    def __init__(self, policy: nn.Module, separate: bool):
        super().__init__()
        self.policy = policy
        # A separate critic starts as a copy of the policy's backbone, frozen the same way.
        self.critic = copy.deepcopy(policy.get_decoder()) if separate else None
        hidden = policy.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False):
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False, output_hidden_states=self.critic is None)
        if self.critic is None:
            hidden = out.hidden_states[-1]
        else:
            hidden = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state
        # the head runs in the module's dtype (DeepSpeed bf16 casts it too); values come out fp32
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).float().squeeze(-1)
        return SimpleNamespace(logits=out.logits, values=values)


def forward_rows(module, rows: list[dict], context: TrainContext):
    """(token log-probs [N, T], values [N, T], batch): value at t estimates the return
    from the token at t on, read from the hidden state that predicts it (position t-1)."""
    from raylign.models.sequences import (
        logits_to_token_logprobs,
        model_device,
        pack_prompt_responses,
        position_ids_of,
    )

    batch = pack_prompt_responses([r["prompt_token_ids"] for r in rows], [r["response_token_ids"] for r in rows],
                                  context.pad_id, context.max_length)
    device = model_device(module)
    ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    out = module(input_ids=ids, attention_mask=attention, position_ids=position_ids_of(attention))
    logprobs = logits_to_token_logprobs(out.logits, ids, attention)
    values = torch.zeros(ids.shape, dtype=torch.float32, device=device)
    values[:, 1:] = out.values[:, :-1]
    return logprobs, values, batch


class PPOAlgorithm(Algorithm):
    name = "ppo"
    needs_reference = True

    def __init__(self, config: PPOConfig, max_length: int):
        self.config = config
        self.max_length = max_length
        self.kl = make_kl_controller(config)
        self.update = UpdateConfig(epochs=config.ppo_epochs, num_minibatches=1, micro_batch_size=4)

    def select(self, rows: list[dict], step: int):
        return policy_rows(rows), {}

    def build_module(self, policy):
        return ActorCritic(policy, separate=self.config.value_model == "separate")

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length))

    def prepare(self, module, units: list[dict], context: TrainContext):
        real = context.num_real_units
        moments = torch.zeros(3, dtype=torch.float64)
        stats = torch.zeros(5, dtype=torch.float64)  # kl sum, tokens, |sampler - trainer| sum, compared, rollouts
        for start in range(0, len(units), 8):
            chunk = units[start : start + 8]
            logprobs, values, batch = forward_rows(module, chunk, context)
            logprobs, values = logprobs.cpu(), values.cpu()  # the batch statistics below stay on the CPU
            mask = batch["response_mask"]
            ref = scatter_response_values([u["ref_logprobs"] for u in chunk], mask)
            scores = torch.tensor([float(u["reward"]) for u in chunk])
            rewards, kl = per_token_rewards(logprobs, ref, mask, scores, self.kl.value, self.config.kl_clamp)
            advantages, returns = gae_advantages(rewards, values, mask, self.config.gamma, self.config.lam)
            for i, unit in enumerate(chunk):
                row_mask = mask[i]
                unit["old_logprobs"] = masked_list(logprobs[i], row_mask)
                unit["old_values"] = masked_list(values[i], row_mask)
                unit["advantages"] = masked_list(advantages[i], row_mask)
                unit["returns"] = masked_list(returns[i], row_mask)
            counted = torch.arange(len(chunk)) + start < real
            cmask = mask.bool() & counted.unsqueeze(1)
            moments += torch.stack(masked_moments(advantages, cmask))
            stats[0] += float(torch.where(cmask, kl, torch.zeros_like(kl)).sum())
            stats[1] += float(cmask.sum())
            stats[4] += float(counted.sum())
            for i, unit in enumerate(chunk):
                sampled = unit.get("logprobs") or []
                if counted[i] and len(sampled) == len(unit["old_logprobs"]):
                    stats[2] += sum(abs(a - b) for a, b in zip(sampled, unit["old_logprobs"]))
                    stats[3] += len(sampled)
        moments = torch.tensor(all_reduce(moments.tolist()), dtype=torch.float64)
        stats = all_reduce(stats.tolist())
        if self.config.whiten_advantages and moments[2] > 1:
            mean, var = moments_to_mean_var(moments[0], moments[1], moments[2])
            for unit in units:
                adv = torch.tensor([unit["advantages"]], dtype=torch.float32)
                unit["advantages"] = whiten_with(adv, mean, var, torch.ones_like(adv))[0].tolist()
        kl_mean = stats[0] / max(stats[1], 1.0)
        return {"kl": kl_mean, "kl_coef": self.kl.value, "ppo_rollouts": stats[4],
                "sampler_logprob_abs_diff": stats[2] / max(stats[3], 1.0)}

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, values, batch = forward_rows(module, units, context)
        mask = batch["response_mask"]

        def spread(key):
            return scatter_response_values([u[key] for u in units], mask)

        policy_sum, count, policy_metrics = ppo_policy_loss(logprobs, spread("old_logprobs"), spread("advantages"), mask,
                                                            self.config.cliprange)
        value_sum, _, value_metrics = ppo_value_loss(values, spread("old_values"), spread("returns"), mask,
                                                     self.config.cliprange_value)
        return policy_sum + self.config.vf_coef * value_sum, count, {**policy_metrics, **value_metrics}

    def after_update(self, metrics: dict[str, float]) -> None:
        # Ziegler et al.: the controller moves by the number of rollouts seen this batch.
        self.kl.update(metrics.get("kl", 0.0), int(metrics.get("ppo_rollouts", 0)))

    def update_state_dict(self) -> dict:
        return {"kl_coef": self.kl.value}  # the adaptive controller's coefficient moves every step

    def load_update_state_dict(self, state: dict) -> None:
        if "kl_coef" in state:
            self.kl.value = float(state["kl_coef"])


def make_algorithm(config: PPOJobConfig) -> PPOAlgorithm:
    return PPOAlgorithm(config.ppo, config.engine.trainer.max_length)


def main(argv: list[str]) -> int:
    return online_main(argv, "train ppo", "PPO: policy, reference, reward and value models; GAE, clipped losses.",
                       PPOJobConfig, make_algorithm, "ppo")
