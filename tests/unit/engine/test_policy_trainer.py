"""The update plan the trainer runs (engine.trainer.epochs x num_minibatches) is the one every
method sees: a method that reuses a rollout batch must take its old log-probs before the first
step, or every later minibatch trains with ratio 1 and nothing is clipped."""

from __future__ import annotations

import pytest
import torch


def _units(tokenizer, count: int = 8) -> list[dict]:
    prompt = tokenizer("Say hello.", add_special_tokens=False)["input_ids"]
    units = []
    for i in range(count):
        response = tokenizer(f"Hello number {i} to you", add_special_tokens=False)["input_ids"]
        units.append({"prompt_token_ids": prompt, "response_token_ids": response, "reward": float(i % 4),
                      "prompt_uid": f"0:{i // 4}", "source": "policy", "policy_version": 0})
    return units


@pytest.mark.parametrize("plan_key", ["num_minibatches", "epochs"])
def test_grpo_reuses_a_batch_with_its_old_logprobs_under_the_trainers_plan(tiny_model_dir, plan_key):
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.algorithms.grpo import GRPOAlgorithm, GRPOConfig
    from raylign.engine.config import TrainerConfig
    from raylign.engine.policy_trainer import train_on_units, update_plan
    from raylign.models.chat import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    algorithm = GRPOAlgorithm(GRPOConfig(), max_length=64)
    units, _ = algorithm.select(_units(tokenizer), step=0)
    trainer = TrainerConfig(**{plan_key: 2})
    plan = update_plan(trainer, algorithm)
    assert plan[0] * plan[1] == 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-2)
    context = TrainContext(tokenizer.pad_token_id, 64)
    metrics = train_on_units(model, optimizer, algorithm, units, None, context, plan, False, 1.0, seed=0)
    assert metrics["optimizer_steps"] == 2
    assert all("old_logprobs" in unit for unit in units), "no old log-probs: the batch is reused on-policy"
    # the second step's ratio moved away from 1 (the first step changed the policy)
    assert metrics["approx_kl"] > 0.0
