"""The online trainer's resumable checkpoint holds everything a resumed update needs:
weights, optimizer state, state beside the policy, each rank's RNG, step, version,
data position and the algorithm's update state."""

import json
import random

import numpy as np
import pytest
import torch

from raylign.algorithms.ppo import ActorCritic, PPOAlgorithm, PPOConfig
from raylign.engine.policy_trainer import data_position
from raylign.engine.trainer_checkpoint import (
    ResumePoint,
    load_resumable,
    prefer_reported,
    read_resume_state,
    write_checkpoint,
)
from raylign.training.rng_state import (
    capture_rng,
    gather_rng,
    load_rng,
    restore_rng,
    save_rng,
)


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def _actor_critic(model_dir):
    from transformers import AutoModelForCausalLM

    return ActorCritic(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), separate=False)


def _train_once(module):
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[5, 6, 7, 8]])
    out = module(ids, torch.ones_like(ids))
    (out.logits.mean() + out.values.mean()).backward()
    optimizer.step()
    return optimizer


def test_prefer_reported_unless_latest_is_newer():
    assert prefer_reported({"step": 4}, None)
    assert prefer_reported({"step": 4}, {"step": 4})  # the same step: Ray Train's copy
    assert not prefer_reported({"step": 2}, {"step": 4})  # rank 0 died between writing latest/ and reporting
    assert not prefer_reported(None, {"step": 2})


def test_checkpoint_round_trip_restores_optimizer_critic_rng_and_counters(tiny_model_dir, tmp_path):
    from raylign.models.chat import load_tokenizer

    torch.manual_seed(1)
    module = _actor_critic(tiny_model_dir)
    optimizer = _train_once(module)
    with torch.no_grad():
        module.value_head.bias.fill_(0.25)
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    rng = gather_rng()
    expected = _draws()  # what an uninterrupted run draws next
    state = {"step": 4, "policy_version": 4, "data_position": data_position(4, 3),
             "algorithm_update": {"kl_coef": 0.07}, "world_size": 1, "last_report": {"loss": 1.5}}
    folder = tmp_path / "run" / "latest"
    write_checkpoint(folder, module, optimizer, load_tokenizer(tiny_model_dir), state, rng, deepspeed=False)
    assert read_resume_state(tmp_path / "run") == state
    assert state["data_position"] == {"next_step": 4, "prompts_per_step": 3, "prompts_consumed": 12}

    torch.manual_seed(0)  # a restarted worker: fresh critic and optimizer, the weights from the checkpoint
    restored = _actor_critic(folder)
    fresh_optimizer = torch.optim.AdamW([p for p in restored.parameters() if p.requires_grad], lr=1e-2)
    load_resumable(ResumePoint(folder, state, "latest/"), restored, fresh_optimizer, deepspeed=False, rank=0,
                   world_size=1)
    assert _draws() == expected
    assert restored.value_head.bias.item() == 0.25
    before, after = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    assert len(after["state"]) == len(before["state"]) > 0
    for key, values in before["state"].items():
        assert torch.equal(values["exp_avg"], after["state"][key]["exp_avg"])
        assert torch.equal(values["step"], after["state"][key]["step"])
    for name, param in module.policy.named_parameters():
        assert torch.equal(param, dict(restored.policy.named_parameters())[name]), name


def test_rng_of_another_world_size_is_not_applied(tmp_path):
    save_rng(tmp_path, [capture_rng(), capture_rng()])
    assert not load_rng(tmp_path, 0, world_size=1)
    assert not load_rng(tmp_path / "missing", 0, 1)
    torch.manual_seed(5)
    mine = capture_rng()
    expected = torch.rand(2).tolist()
    torch.manual_seed(6)
    save_rng(tmp_path, [capture_rng(), mine])  # rank 1 takes its own entry
    assert load_rng(tmp_path, 1, world_size=2)
    assert torch.rand(2).tolist() == expected
    restore_rng(mine)


def test_adaptive_kl_coefficient_survives_in_the_update_state():
    config = PPOConfig(adaptive_kl=True, kl_coef=0.1, kl_target=1.0, kl_horizon=100)
    trained = PPOAlgorithm(config, max_length=64)
    trained.after_update({"kl": 5.0, "ppo_rollouts": 50})
    state = json.loads(json.dumps(trained.update_state_dict()))
    assert state["kl_coef"] == pytest.approx(0.11)
    restarted = PPOAlgorithm(config, max_length=64)
    restarted.load_update_state_dict(state)
    assert restarted.kl.value == trained.kl.value
