"""Best-of-n and plain generation on a real local Ray cluster (tiny model, tiny reward model),
then the leaderboard from those outputs with the reward-model annotator."""

import json

import pytest

from raylign.generation.best_of_n import BestOfNConfig, run, select_best
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig

pytestmark = pytest.mark.integration

INSTRUCTIONS = ["Name three colours.", "What is the capital of France?", "Write a haiku about rain.",
                "Give me a tip for sleeping well.", "Explain what a reward model is."]


def test_select_best_keeps_the_argmax_per_prompt():
    rows = [
        {"prompt_uid": "0", "response": "a", "reward": 0.1},
        {"prompt_uid": "0", "response": "b", "reward": 0.7},
        {"prompt_uid": "1", "response": "c", "reward": -1.0},
        {"prompt_uid": "0", "response": "d", "reward": 0.7},  # a tie keeps the first
        {"prompt_uid": "1", "response": "e", "reward": -2.0},
    ]
    best = select_best(rows)
    assert [(b["response"], b["num_candidates"]) for b in best] == [("b", 3), ("c", 2)]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bon") / "instructions.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "dataset": "test"}) + "\n" for i in INSTRUCTIONS))
    return path


def _config(model, prompts, reward_model, output, n=4, samplers=2):
    return BestOfNConfig(
        model=str(model),
        data={"path": str(prompts)},
        sampling=SamplingConfig(backend="hf", num_samples=n, max_new_tokens=12, dtype="float32", num_samplers=samplers,
                                temperature=1.0, top_p=0.9),
        reward=RewardConfig(kind="actor", model=str(reward_model), max_length=128, num_cpus=0.25),
        prompts_per_batch=2,
        output=str(output),
    )


@pytest.mark.slow
def test_best_of_n_then_leaderboard(ray_cluster, tiny_model_dir, tiny_reward_model_dir, prompts_file, tmp_path):
    from raylign.evaluation.leaderboard_cli import main as leaderboard_main
    from raylign.scoring.reward_model import RewardScorer

    out = tmp_path / "bon.json"
    summary = run(_config(tiny_model_dir, prompts_file, tiny_reward_model_dir, out))
    assert (summary["prompts"], summary["outputs"], summary["candidates"], summary["n"]) == (5, 5, 20, 4)
    outputs = json.loads(out.read_text())
    assert [o["instruction"] for o in outputs] == INSTRUCTIONS  # prompt order kept
    assert {o["generator"] for o in outputs} == {f"{tiny_model_dir.name}_best_of_4"}
    candidates = [json.loads(line) for line in open(summary["candidates_file"])]
    assert len(candidates) == 20
    scorer = RewardScorer(tiny_reward_model_dir, max_length=128)
    for i, o in enumerate(outputs):
        mine = [c for c in candidates if c["prompt_uid"] == str(i)]
        assert o["reward"] == max(c["reward"] for c in mine) and o["num_candidates"] == 4
        kept = next(c for c in mine if c["reward"] == o["reward"])
        assert o["output"] == kept["response"].strip()
        # The reward is the reward model's score of the (instruction, response) pair, recomputed here.
        [again] = scorer.score([{"prompt": o["instruction"]}], [kept["response"]])
        assert again == pytest.approx(o["reward"], abs=1e-3)
    assert summary["mean_best_reward"] >= summary["mean_first_sample_reward"]

    # Plain outputs (n = 1, no scorer) are the baseline; the leaderboard annotates with the tiny RM.
    ref = tmp_path / "ref.json"
    plain = run(_config(tiny_model_dir, prompts_file, tiny_reward_model_dir, ref, samplers=1), best_of_n=False)
    assert (plain["outputs"], plain["candidates"], plain["n"]) == (5, 5, 1)
    assert all("reward" not in o for o in json.loads(ref.read_text()))
    results = tmp_path / "lb" / "results.json"
    rc = leaderboard_main(["--model-outputs", str(out), "--reference-outputs", str(ref), "--annotator",
                           f"rm:{tiny_reward_model_dir}", "--output", str(results)])
    assert rc == 0
    [row] = json.loads(results.read_text())
    annotations = json.loads((tmp_path / "lb" / "results_annotations.json").read_text())
    expected = []
    for a in annotations:
        s1, s2 = scorer.score([{"prompt": a["instruction"]}] * 2, [a["output_1"], a["output_2"]])
        expected.append(1.5 if a["output_1"].strip() == a["output_2"].strip() else (2.0 if s2 > s1 else 1.0))
    assert [a["preference"] for a in annotations] == expected
    assert row["win_rate"] == pytest.approx(100 * sum(p - 1 for p in expected) / len(expected))
    assert row["name"].endswith("_best_of_4") and row["n_total"] == 5

    # n samples with no reward: AlpacaFarm multi-sample lists, which the annotators expand into pairs.
    many = tmp_path / "samples.json"
    listed = run(_config(tiny_model_dir, prompts_file, tiny_reward_model_dir, many, n=3, samplers=1), best_of_n=False,
                 samples=True)
    assert (listed["outputs"], listed["candidates"], listed["n"]) == (5, 15, 3)
    rows = json.loads(many.read_text())
    assert [r["instruction"] for r in rows] == INSTRUCTIONS and all(len(r["output"]) == 3 for r in rows)
    from raylign.feedback.annotators import as_pairs

    assert len(as_pairs(rows)) == 15  # 3 pairs per prompt
