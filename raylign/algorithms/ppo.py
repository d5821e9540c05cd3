"""PPO (`raylign train ppo`), AlpacaFarm / InstructGPT style: policy, frozen reference, reward, critic.

The trainer module is an `ActorCritic`: the policy plus a value head on its own last
hidden state ("head") or on a separate copy of the backbone ("separate"). Before each
update every rank recomputes the old log-probs and values (no grad), compares the old
log-probs with the samplers' (logged as a mismatch), builds per-token rewards (KL penalty
+ score at the last token), GAE, and whitens the advantages with moments all-reduced over
every rank. Then epochs x minibatches (`engine.trainer`, 2 x 1 by default) of the clipped policy +
value loss. Per-token tensors follow `raylign.algorithms.core`'s conventions; see ALGORITHMS.md, PPO.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Literal

import torch
from torch import Tensor, nn

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    masked_list,
    policy_rows,
    response_token_count,
    scatter_response_values,
)
from raylign.algorithms.core import (
    aggregate,
    bool_mask,
    check_same_shape,
    last_token_index,
    masked_fill_zero,
    masked_moments,
    moments_to_mean_var,
    safe_mean,
    whiten_with,
)
from raylign.algorithms.kl import KLControl, make_kl_controller
from raylign.algorithms.policy_losses import PolicyLossName, get_policy_loss, policy_loss_metrics
from raylign.collectives import all_reduce
from raylign.config import Retired
from raylign.models.sequences import logits_to_token_logprobs, model_device, pack_prompt_responses, position_ids_of


class PPOConfig(KLControl):
    """AlpacaFarm defaults (simulated feedback: kl_coef 0.0067; human feedback used 0.02)."""

    kl_coef: float = 0.0067
    kl_clamp: bool = True  # AlpacaFarm: kl_t = max(0, logpi - logref)
    gamma: float = 1.0
    lam: float = 1.0
    policy_loss: PolicyLossName = "ppo_clip"  # a registered policy loss (raylign.algorithms.policy_losses)
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    value_model: Literal["head", "separate"] = "head"


def per_token_rewards(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, scores: Tensor,
                      kl_coef: float, clamp: bool = True) -> tuple[Tensor, Tensor]:
    """r_t = -kl_coef * kl_t, plus the reward-model score at the last response token.

    kl_t = logpi - logref (the k1 estimate on the sampled token), clamped at 0 when
    `clamp` (AlpacaFarm) so a token the policy finds less likely than the reference
    is not paid a bonus. scores [N]. Returns (rewards, kl), both [N, T], 0 on padding;
    a row without response tokens gets no score (there is no token to credit).
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must be [N] = [{logprobs.shape[0]}], got {tuple(scores.shape)}")
    m = bool_mask(mask, logprobs)
    with torch.no_grad():
        kl = masked_fill_zero(logprobs.detach() - ref_logprobs.detach().to(logprobs), m)
        if clamp:
            kl = kl.clamp(min=0.0)
        rewards = -kl_coef * kl
        last = last_token_index(m)
        has_response = m.any(-1)
        score = torch.where(has_response, scores.to(rewards), torch.zeros_like(rewards[:, 0]))
        rewards = rewards.scatter_add(1, last.unsqueeze(1), score.unsqueeze(1))
    return rewards, kl


def gae_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                   lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the response tokens of each row.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, where
    t+1 is the next *response* token: after the last one the episode ends (no
    bootstrap from padding values). Returns (advantages, returns = A + V), both
    detached and 0 on padding.
    """
    check_same_shape(rewards=rewards, values=values, mask=mask)
    m = bool_mask(mask, rewards)
    with torch.no_grad():
        r = masked_fill_zero(rewards.detach().float(), m)
        v = masked_fill_zero(values.detach().float(), m)
        next_value = torch.zeros_like(r[:, 0])
        next_adv = torch.zeros_like(r[:, 0])
        advantages = torch.zeros_like(r)
        for t in reversed(range(r.shape[1])):
            on = m[:, t]
            delta = r[:, t] + gamma * next_value - v[:, t]
            adv = delta + gamma * lam * next_adv
            advantages[:, t] = torch.where(on, adv, torch.zeros_like(adv))
            next_value = torch.where(on, v[:, t], next_value)
            next_adv = torch.where(on, adv, next_adv)
        returns = masked_fill_zero(advantages + v, m)
    return advantages.to(rewards.dtype), returns.to(rewards.dtype)


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    config: PPOConfig) -> tuple[Tensor, float, dict[str, float]]:
    """The configured policy loss summed over response tokens: (loss_sum, #tokens, metrics)."""
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    m = bool_mask(mask, logprobs)
    out = get_policy_loss(config.policy_loss)(logprobs, old_logprobs, advantages, m, config)
    loss_sum, count = aggregate(out.per_token, m, "token")
    return loss_sum, count, policy_loss_metrics(out, m)


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   cliprange_value: float = 0.2) -> tuple[Tensor, float, dict[str, float]]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2) summed over response tokens.

    Returns (loss_sum, #tokens, metrics); the trainer applies vf_coef. Clipping the
    value around the rollout's value keeps the critic from jumping in one epoch.
    """
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    m = bool_mask(mask, values)
    v = masked_fill_zero(values, m)
    old = masked_fill_zero(old_values.to(values), m)
    ret = masked_fill_zero(returns.to(values), m)
    v_clipped = old + (v - old).clamp(-cliprange_value, cliprange_value)
    err = (v - ret) ** 2
    err_clipped = (v_clipped - ret) ** 2
    per_token = masked_fill_zero(0.5 * torch.maximum(err, err_clipped), m)
    loss_sum = per_token.sum()
    count = float(m.sum())
    with torch.no_grad():
        metrics = {
            "value_loss": safe_mean(loss_sum, count),
            "value_clipfrac": safe_mean((m & (err_clipped > err)).sum(), count),
            "value_mean": safe_mean(v.sum(), count),
            "value_error": safe_mean(err.sum(), count),
        }
    return loss_sum, count, metrics


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
    """One unit = one sampled response; the trainer module is the policy plus its critic."""

    name = "ppo"
    config_class = PPOConfig
    section = "ppo"
    needs_reference = True
    update = UpdateConfig(epochs=2, num_minibatches=1, micro_batch_size=4)
    renamed_keys = {"ppo.ppo_epochs": "engine.trainer.epochs",
                    "reference.kl_coef": Retired("the KL coefficient is ppo.kl_coef")}

    def __init__(self, config: PPOConfig, max_length: int = 768):
        super().__init__(config, max_length)
        self.kl = make_kl_controller(config)

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
                                                            self.config)
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
