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


def test_skipping_inert_units_gives_the_same_update(tiny_model_dir):
    """Responses whose GRPO advantage is 0 (a group of equal rewards, no KL term) are not run,
    but their tokens still count in the normalisation: the parameters after the step match a
    trainer that runs them, to float tolerance."""
    import copy

    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.algorithms.grpo import GRPOAlgorithm, GRPOConfig
    from raylign.engine.policy_trainer import micro_batches, train_on_units
    from raylign.models.chat import load_tokenizer

    class RunsEverything(GRPOAlgorithm):
        def inert(self, unit):
            return False

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    raw = _units(tokenizer, 12)
    for unit in raw[4:8]:
        unit["reward"] = 1.0  # the second group: all equal, advantage 0
    results = []
    for algorithm in (GRPOAlgorithm(GRPOConfig(), max_length=64), RunsEverything(GRPOConfig(), max_length=64)):
        units, _ = algorithm.select(copy.deepcopy(raw), step=0)
        trained = copy.deepcopy(model)
        optimizer = torch.optim.SGD(trained.parameters(), lr=1.0)
        metrics = train_on_units(trained, optimizer, algorithm, units, None, TrainContext(tokenizer.pad_token_id, 64),
                                 (1, 1, 3), False, None, seed=0)
        results.append((trained, metrics))
    (skipping, fast), (running, slow) = results
    assert fast["inert_unit_fraction"] == pytest.approx(4 / 12) and slow["inert_unit_fraction"] == 0.0
    assert fast["global_weight"] == slow["global_weight"] and fast["micro_steps"] < slow["micro_steps"]
    assert fast["loss"] == pytest.approx(slow["loss"], abs=1e-6)
    for a, b in zip(skipping.parameters(), running.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(skipping.parameters(), model.parameters()))
    assert moved > 0

    # a minibatch of inert units only still runs one (every rank must step), at the whole weight
    algorithm = GRPOAlgorithm(GRPOConfig(), max_length=64)
    inert, _ = algorithm.select(copy.deepcopy(raw[4:8]), step=0)
    micro = micro_batches(algorithm, inert, 3)
    assert len(micro) == 1 and len(micro[0].data) == 1
    assert micro[0].weight == sum(algorithm.unit_weight(u) for u in inert)
