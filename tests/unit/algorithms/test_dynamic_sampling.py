"""DAPO's dynamic sampling: a group whose rewards are all equal is never trained on; the
pool refills across steps, drops the excess, trains a partial pool after `patience` steps, and
survives a resume."""

import random

import pytest

from raylign.algorithms.dynamic_sampling import GroupPool, informative
from raylign.algorithms.grpo import GRPOAlgorithm, GRPOConfig
from raylign.engine.algorithm_state import has_state


def step_rows(step: int, rewards_per_group: list[list[float]]) -> list[dict]:
    return [{"prompt_uid": f"{step}:{g}", "prompt_id": f"q{g}", "reward": r, "source": "policy",
             "response": f"answer {i}", "response_token_ids": [1, 2], "prompt_token_ids": [3], "policy_version": step}
            for g, rewards in enumerate(rewards_per_group) for i, r in enumerate(rewards)]


def uids(rows):
    return sorted({r["prompt_uid"] for r in rows})


def test_informative_groups():
    assert informative([{"reward": 0.0}, {"reward": 1.0}])
    assert not informative([{"reward": 1.0}, {"reward": 1.0}])
    assert not informative([{"reward": 0.5}])


def test_refills_across_steps_and_drops_the_excess():
    pool = GroupPool(train_groups=3, patience=10)
    batch, metrics = pool.add(step_rows(0, [[1, 1], [0, 1], [0, 0], [1, 0]]))
    assert batch == [] and metrics["dynamic_pool_groups"] == 2 and metrics["dynamic_equal_groups"] == 2
    batch, metrics = pool.add(step_rows(1, [[0, 1], [1, 1], [1, 0]]))
    assert uids(batch) == ["0:1", "0:3", "1:0"]  # the first three informative groups, in order
    assert metrics["dynamic_trained_groups"] == 3 and metrics["dynamic_excess_groups"] == 1
    assert pool.pool == []  # the excess group (1:2) is dropped, not kept for a later, newer policy


def test_default_target_is_the_steps_prompt_count_and_patience_trains_a_partial_pool():
    pool = GroupPool(train_groups=None, patience=2)
    assert pool.add(step_rows(0, [[1, 0], [1, 1], [0, 0]]))[0] == []
    assert pool.train_groups == 3
    batch, metrics = pool.add(step_rows(1, [[1, 1], [0, 0], [0, 0]]))
    assert uids(batch) == ["0:0"] and metrics["dynamic_trained_groups"] == 1
    # an all-equal stretch with an empty pool trains nothing, however long it lasts
    for step in range(2, 6):
        assert pool.add(step_rows(step, [[0, 0], [1, 1], [0, 0]]))[0] == []


def test_never_trains_a_group_of_equal_rewards():
    rng = random.Random(0)
    algorithm = GRPOAlgorithm(GRPOConfig(dynamic_sampling=True, train_groups=4, dynamic_sampling_patience=3))
    trained = 0
    for step in range(200):
        groups = [[float(rng.random() < 0.2) for _ in range(4)] for _ in range(6)]
        units, metrics = algorithm.select(step_rows(step, groups), step)
        by_group: dict = {}
        for unit in units:
            by_group.setdefault(unit["prompt_uid"], []).append(unit["reward"])
        assert all(len(set(rewards)) > 1 for rewards in by_group.values())
        assert all(unit["advantage"] != 0.0 for unit in units)
        assert len(by_group) <= 4 and metrics.get("zero_advantage_fraction", 0.0) == 0.0
        trained += len(by_group)
    assert trained > 100  # and it does train


def test_state_survives_a_resume():
    config = GRPOConfig(dynamic_sampling=True, train_groups=3)
    first = GRPOAlgorithm(config)
    first.select(step_rows(0, [[1, 0], [0, 0], [0, 1]]), 0)
    resumed = GRPOAlgorithm(config)
    resumed.load_state_dict(first.state_dict())
    units, _ = resumed.select(step_rows(1, [[1, 0]]), 1)
    assert uids(units) == ["0:0", "0:2", "1:0"]
    assert has_state(first) and not has_state(GRPOAlgorithm(GRPOConfig()))


@pytest.mark.parametrize("bad", [{"train_groups": 0}, {"dynamic_sampling_patience": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GRPOConfig(dynamic_sampling=True, **bad)
