"""ALMoST end to end on a real local Ray cluster with the tiny model: seed prompts -> generated
prompts -> responses from ranked configurations -> preference rows the reward-model trainer reads."""

import json

import pytest
import ray

from raylign.feedback.almost import (
    ASSETS,
    AlmostConfig,
    ResponseConfig,
    read_demonstrations,
    response_text,
    run,
)
from raylign.feedback.almost_filters import is_near_duplicate
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig

pytestmark = pytest.mark.integration


def test_raw_prompt_mode_feeds_the_text_verbatim(ray_cluster, tiny_model_dir):
    from raylign.models.chat import load_tokenizer

    text = "Human:  What is a haiku?\n\nAssistant:"
    group = create_samplers(str(tiny_model_dir), SamplingConfig(backend="hf", prompt_mode="raw", num_samples=2,
                                                                max_new_tokens=6, dtype="float32"), count=1)
    try:
        rollouts = ray.get(group[0].generate.remote([{"prompt_id": "x", "prompt": text}]))
    finally:
        group.shutdown()
    assert len(rollouts) == 2
    assert rollouts[0]["prompt_token_ids"] == load_tokenizer(str(tiny_model_dir))(text)["input_ids"]


@pytest.mark.slow
def test_almost_pipeline_writes_preference_rows_from_two_models_and_reruns_from_its_cache(
        ray_cluster, tiny_model_dir, tmp_path):
    from raylign.data.adapters import load_rows
    from raylign.models.chat import load_tokenizer
    from raylign.models.cli import shrink_model
    from raylign.scoring.text import encode_scored_pair

    small = tmp_path / "small"  # the "smaller generator": the tiny model's bottom block
    shrink_model(tiny_model_dir, 1, small)
    config = AlmostConfig(  # the shipped seeds and demonstrations (../shared/data's ALMoST files)
        model=str(tiny_model_dir),
        prompts={"num_prompts": 3, "shots": 4, "per_round": 6, "max_rounds": 4, "min_words": 2},
        responses=[ResponseConfig(name="faithful_1", shots=1, demonstrations="faithful"),
                   ResponseConfig(name="hhh_1", shots=1, demonstrations="hhh"),
                   ResponseConfig(name="small_hhh_1", model=str(small), size=0.5, shots=1, demonstrations="hhh")],
        cache_dir=str(tmp_path / "cache"),
        sampling=SamplingConfig(backend="hf", num_samples=1, max_new_tokens=24, temperature=1.0, dtype="float32",
                                max_prompt_tokens=1000, num_samplers=2),
        min_response_words=2,
        output=str(tmp_path / "almost.jsonl"),
    )
    summary = run(config)
    assert summary["ranking"] == ["faithful_1", "hhh_1", "small_hhh_1"]
    assert summary["responses"] == {"generated": 3 * summary["prompts"], "cached": 0}
    seeds = (ASSETS / "seed_prompts.txt").read_text().splitlines()[1:]
    responses = [json.loads(line) for line in open(summary["responses_file"])]
    assert 1 <= len(responses) == summary["prompts"] <= 3
    for r in responses:
        assert not is_near_duplicate(r["prompt"], seeds)
        assert set(r["responses"]) == {"faithful_1", "hhh_1", "small_hhh_1"}
    rows = [json.loads(line) for line in open(summary["output"])]
    assert len(rows) == summary["pairs"] > 0
    order = {"faithful_1": 0, "hhh_1": 1, "small_hhh_1": 2}
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "meta"}
        assert order[row["meta"]["chosen_config"]] < order[row["meta"]["rejected_config"]]
        by_prompt = next(r for r in responses if r["prompt"] == row["prompt"])["responses"]
        assert row["chosen"] == by_prompt[row["meta"]["chosen_config"]].strip()
    # The reward-model trainer's reader takes them as they are.
    pairs = load_rows(summary["output"], "preference")
    assert len(pairs) == len(rows) and pairs[0]["chosen"] == rows[0]["chosen"]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for pair in pairs:
        assert encode_scored_pair(tokenizer, pair, pair["chosen"], 256, "truncate")
        assert encode_scored_pair(tokenizer, pair, pair["rejected"], 256, "truncate")
    # A rerun generates nothing: prompts and responses come from the cache, the rows are the same.
    first = open(summary["output"]).read()
    again = run(config)
    assert again["responses"] == {"generated": 0, "cached": 3 * summary["prompts"]}
    assert open(again["output"]).read() == first


def test_response_prompt_shape():
    header, dialogues = read_demonstrations(str(ASSETS / "faithful_prompt.txt"))
    assert len(dialogues) == 3 and header.startswith("Below are a series of dialogues")
    text = response_text(header, dialogues, 2, "How do I boil an egg?")
    assert text.count("-----") == 3 and text.endswith("Human:  How do I boil an egg?\n\nAssistant:")
    assert dialogues[1] in text and dialogues[2] not in text
