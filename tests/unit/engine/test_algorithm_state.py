"""Driver-side algorithm state is saved per step and read back for the step a run resumes at."""

import json

from raylign.algorithms.base import Algorithm
from raylign.algorithms.quark import QuarkAlgorithm, QuarkConfig
from raylign.engine.algorithm_state import (
    STATE_DIR,
    load_algorithm_state,
    save_algorithm_state,
)


def _quark():
    return QuarkAlgorithm(QuarkConfig(num_quantiles=2, pool_size=8), max_length=64)


def _select(algorithm, step, rewards):
    rows = [{"prompt_uid": f"{step}:{i}", "reward": r, "prompt_token_ids": [1, 2], "response_token_ids": [3],
             "response": "x"} for i, r in enumerate(rewards)]
    algorithm.token_ids = {"<|reward_0|>": 90, "<|reward_1|>": 91}
    return algorithm.select(rows, step)


def _checkpoint_at(output_dir, step):
    (output_dir / "latest").mkdir(parents=True, exist_ok=True)
    (output_dir / "latest" / "raylign_state.json").write_text(json.dumps({"step": step, "policy_version": step}))


def test_state_per_step_is_pruned_below_the_checkpoint_and_read_back(tmp_path):
    algorithm = _quark()
    for step in range(4):
        _select(algorithm, step, [float(step), step + 0.5])
        if step == 2:
            _checkpoint_at(tmp_path, 2)  # the trainer checkpointed step 2 while the driver selected step 2
        save_algorithm_state(tmp_path, step + 1, algorithm)
    assert sorted(p.name for p in (tmp_path / STATE_DIR).iterdir()) == ["step_2.json", "step_3.json", "step_4.json"]

    resumed = _quark()  # a new driver continuing at the checkpoint's step
    assert load_algorithm_state(tmp_path, 2, resumed)
    assert len(resumed.pool) == 4  # steps 0 and 1 selected, as when step 2 was about to be
    assert [r["prompt_uid"] for r in resumed.pool.rows] == ["0:0", "0:1", "1:0", "1:1"]
    units, metrics = _select(resumed, 2, [2.0, 2.5])
    assert metrics["pool_size"] == 6.0 and units[0]["prompt_token_ids"][0] == 90


def test_missing_state_warns_and_stateless_algorithms_write_nothing(tmp_path, capsys):
    assert not load_algorithm_state(tmp_path, 3, _quark())
    assert "resumes with an empty state" in capsys.readouterr().out
    assert not load_algorithm_state(tmp_path, 0, _quark())  # a fresh start needs none
    assert save_algorithm_state(tmp_path, 1, Algorithm()) is None
    assert not (tmp_path / STATE_DIR).exists()
