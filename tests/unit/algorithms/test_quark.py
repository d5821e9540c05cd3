"""Quark control tokens, reward-quantile pool and loss against hand-computed values."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from raylign.algorithms.quark import (
    QuarkConfig,
    QuarkPool,
    control_tokens,
    quantile_sizes,
    quark_loss,
)
from raylign.config import ConfigError, build_config


def _rows(rewards, start=0):
    return [{"prompt_uid": f"p{start + i}", "reward": r, "response": f"r{start + i}"} for i, r in enumerate(rewards)]


def test_control_tokens():
    assert control_tokens(4) == ["<|reward_0|>", "<|reward_1|>", "<|reward_2|>", "<|reward_3|>"]
    assert control_tokens(1) == ["<|reward_0|>"]
    with pytest.raises(ValueError):
        control_tokens(0)


def test_quantile_sizes():
    assert quantile_sizes(5, 4) == [2, 1, 1, 1]
    assert quantile_sizes(8, 4) == [2, 2, 2, 2]
    assert quantile_sizes(3, 4) == [1, 1, 1, 0]


def test_pool_quantiles_with_deterministic_ties():
    pool = QuarkPool(num_quantiles=4, pool_size=10)
    pool.add(_rows([1.0, 5.0, 3.0, 5.0, 2.0]))
    # rank: 5 (r3, newer first on ties), 5 (r1), 3 (r2), 2 (r4), 1 (r0); sizes [2, 1, 1, 1]
    assert pool.quantiles() == [3, 0, 1, 0, 2]
    best = pool.training_rows(best_only=True)
    assert [r["response"] for r in best] == ["r1", "r3"]
    assert all(r["quantile"] == 0 and r["control_token"] == "<|reward_0|>" for r in best)
    assert all("_pool_seq" not in r for r in best)
    every = pool.training_rows(best_only=False)
    assert [(r["response"], r["control_token"]) for r in every] == [
        ("r0", "<|reward_3|>"), ("r1", "<|reward_0|>"), ("r2", "<|reward_1|>"),
        ("r3", "<|reward_0|>"), ("r4", "<|reward_2|>")]
    assert pool.best_token == "<|reward_0|>"


def test_pool_drops_oldest_and_does_not_mutate_inputs():
    rows = _rows([1.0, 5.0, 3.0, 5.0, 2.0])
    pool = QuarkPool(num_quantiles=4, pool_size=3)
    pool.add(rows[:2])
    pool.add(rows[2:])
    assert len(pool) == 3
    assert [r["response"] for r in pool.training_rows(best_only=False)] == ["r2", "r3", "r4"]
    assert pool.quantiles() == [1, 0, 2]  # 3 -> q1, 5 -> q0, 2 -> q2; q3 empty
    assert rows[0] == {"prompt_uid": "p0", "reward": 1.0, "response": "r0"}


def test_pool_pickles_and_rejects_nan_rewards():
    pool = QuarkPool.from_config(QuarkConfig(pool_size=4))
    pool.add(_rows([0.5, 0.1]))
    clone = pickle.loads(pickle.dumps(pool))
    clone.add(_rows([0.9], start=2))
    assert len(pool) == 2 and len(clone) == 3
    assert [r["response"] for r in clone.training_rows()] == ["r2"]  # sizes [1, 1, 1, 0]
    with pytest.raises(ValueError, match="finite"):
        pool.add(_rows([float("nan")]))


def test_pool_state_survives_json_and_keeps_ranking_ties():
    import json

    pool = QuarkPool(num_quantiles=2, pool_size=4)
    pool.add(_rows([1.0, 2.0, 2.0, 0.5, 3.0]))  # the first is evicted
    clone = QuarkPool(num_quantiles=2, pool_size=4)
    clone.load_state_dict(json.loads(json.dumps(pool.state_dict())))
    assert clone.training_rows(best_only=False) == pool.training_rows(best_only=False)
    pool.add(_rows([2.0], start=5))
    clone.add(_rows([2.0], start=5))  # the insertion counter came back: the tie breaks the same way
    assert clone.quantiles() == pool.quantiles()
    smaller = QuarkPool(num_quantiles=2, pool_size=2)
    smaller.load_state_dict(pool.state_dict())
    assert [r["response"] for r in smaller.rows] == ["r4", "r5"]


def test_quark_loss_hand_computed():
    lp = torch.tensor([[-1.0, -2.0, float("nan")], [float("inf"), -0.5, float("-inf")]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, float("nan")], [float("nan"), 0.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    loss_sum, weight, m = quark_loss(lp, ref, mask, kl_coef=0.05)
    k3_a = math.exp(-0.5) + 0.5 - 1  # d = ref - logp = -0.5
    k3_b = 0.0                       # d = 0
    k3_c = math.exp(0.5) - 0.5 - 1   # d = 0.5
    nll = 1.0 + 2.0 + 0.5
    assert loss_sum.item() == pytest.approx(nll + 0.05 * (k3_a + k3_b + k3_c), rel=1e-6)
    assert weight == 3.0
    assert m["nll"] == pytest.approx(nll / 3)
    assert m["kl"] == pytest.approx((k3_a + k3_c) / 3, rel=1e-6)
    loss_sum.backward()
    assert torch.isfinite(lp.grad).all()
    # d/dlp = -1 + kl_coef * (1 - exp(ref - lp)); 0 on padding
    expected = torch.tensor([[-1 + 0.05 * (1 - math.exp(-0.5)), -1.0, 0.0],
                             [0.0, -1 + 0.05 * (1 - math.exp(0.5)), 0.0]])
    assert torch.allclose(lp.grad, expected, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        quark_loss(lp, ref[:1], mask)


def test_quark_config():
    cfg = QuarkConfig()
    assert (cfg.num_quantiles, cfg.kl_coef, cfg.pool_size, cfg.train_best_only) == (4, 0.05, 256, True)
    with pytest.raises(ConfigError, match="quantiles"):
        build_config(QuarkConfig, {"quantiles": 5})


def test_group_relative_ranking_picks_responses_not_prompts():
    """An easy prompt (rewards 5, 4) and a hard one (1, -1): by reward both easy responses
    are the top half; relative to their prompt's mean (+0.5, -0.5, +1, -1) the best response
    of each prompt is."""
    rows = [{"prompt_uid": uid, "reward": r, "response": name}
            for uid, r, name in [("easy", 5.0, "e1"), ("easy", 4.0, "e2"), ("hard", 1.0, "h1"), ("hard", -1.0, "h2")]]
    by_reward = QuarkPool(num_quantiles=2, pool_size=8)
    by_reward.add(rows)
    assert [r["response"] for r in by_reward.training_rows()] == ["e1", "e2"]
    relative = QuarkPool.from_config(QuarkConfig(num_quantiles=2, pool_size=8, rank_by="group_relative"))
    relative.add(rows)
    assert relative.ranking_scores() == [0.5, -0.5, 1.0, -1.0]
    assert relative.quantiles() == [0, 1, 0, 1]
    assert [r["response"] for r in relative.training_rows()] == ["e1", "h1"]
    relative.add([{"reward": 9.0, "response": "alone"}])  # no prompt_uid: its own group, score 0
    assert relative.ranking_scores()[-1] == 0.0
    with pytest.raises(ValueError, match="rank_by"):
        QuarkPool(rank_by="median")
