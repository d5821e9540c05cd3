"""Reward sources 'actor' and 'function' on the real local Ray cluster."""

import pytest

pytestmark = pytest.mark.integration


def length_reward(rows):
    """A rule-based reward used through kind='function'."""
    return [float(len(row["response"])) for row in rows]


@pytest.fixture(scope="module")
def rm_dir(tiny_reward_model_dir):
    return tiny_reward_model_dir


ROWS = [
    {"prompt": "What is the capital of France?", "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "response": "Paris.", "logprobs": [0.1] * 3},
    {"prompt": "Write a poem", "response": "The sea, the sky and the wind."},
]


def test_actor_source_matches_local_scores(ray_cluster, rm_dir):
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.reward_model import RewardScorer
    from raylign.scoring.sources import make_reward_source

    source = make_reward_source(RewardConfig(kind="actor", model=str(rm_dir), num_cpus=0.25, max_length=128))
    try:
        scores = source.score(ROWS)
    finally:
        source.close()
    local = RewardScorer(rm_dir, max_length=128).score_rows(ROWS)
    assert scores == pytest.approx(local, abs=1e-5)


def test_ensemble_source_of_listed_models_in_one_actor(ray_cluster, rm_dir):
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.reward_model import RewardScorer
    from raylign.scoring.sources import make_reward_source

    config = RewardConfig(kind="ensemble", ensemble={"models": [str(rm_dir), str(rm_dir)], "aggregate": "min"},
                          num_cpus=0.25, max_length=128)
    source = make_reward_source(config)
    try:
        scores = source.score(ROWS)
    finally:
        source.close()
    assert scores == pytest.approx(RewardScorer(rm_dir, max_length=128).score_rows(ROWS), abs=1e-5)
    with pytest.raises(ValueError, match="reward.ensemble.models .* or reward.model"):
        make_reward_source(RewardConfig(kind="ensemble"))


def test_function_source_and_its_errors():
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    source = make_reward_source(RewardConfig(kind="function", function=f"{__name__}:length_reward"))
    assert source.score(ROWS) == [6.0, 30.0]
    with pytest.raises(ValueError, match="module:callable"):
        make_reward_source(RewardConfig(kind="function", function="no_colon"))
    with pytest.raises(ValueError, match="has no attribute"):
        make_reward_source(RewardConfig(kind="function", function=f"{__name__}:missing"))
    with pytest.raises(ValueError, match="needs reward.url"):
        make_reward_source(RewardConfig(kind="http"))
